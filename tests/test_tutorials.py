"""The tutorials run end to end in quick mode, leave their figures, and show what they teach;
``python -m minibern plot`` redraws the figures of a recorded run."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.host_only
PNG = b"\x89PNG\r\n\x1a\n"


def _run(args, timeout=300):
    pytest.importorskip("matplotlib")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _tutorial(name, out, *extra):
    return _run([REPO / "tutorials" / name, "--quick", "--out", out, *extra])


def _result(stdout, number):
    """The tutorial's one-line result (the last line, which names it)."""
    line = stdout.strip().splitlines()[-1]
    assert line.startswith(f"tutorial {number}: "), line
    return line


def _assert_pngs(folder, *names):
    for name in names:
        assert (folder / name).read_bytes()[:8] == PNG, name


def _worst_and_bound(line):
    match = re.search(r"worst rel_err ([0-9.e+-]+) over (\d+) checks \(bound ([0-9.e+-]+)\)", line)
    assert match, line
    return float(match[1]), int(match[2]), float(match[3])


def test_tutorial_1_dense_layer_passes_its_gradient_checks(tmp_path):
    out = _tutorial("01_dense_layer_by_hand.py", tmp_path)
    worst, count, bound = _worst_and_bound(_result(out, 1))
    assert count == 8 and bound <= 1e-7 and worst < bound
    every = [float(v) for v in re.findall(r"rel_err \S+?=([0-9.e+-]+)", out)]
    assert len(every) == 8 and max(every) < bound
    wrong = float(re.search(r"a wrong G_b shows ([0-9.]+)", out)[1])
    assert wrong > 1e3 * bound  # the check rejects a wrong gradient
    _assert_pngs(tmp_path, "dense_gradcheck.png")


def test_tutorial_2_convolution_matches_loops_and_finite_differences(tmp_path):
    out = _tutorial("02_convolution_as_im2col.py", tmp_path)
    worst, count, bound = _worst_and_bound(_result(out, 2))
    assert count == 10 and bound <= 1e-7 and worst < bound
    assert re.search(r"max \|GEMM − loops\| = 0\.0e\+00", out)
    _assert_pngs(tmp_path, "im2col.png")


def test_tutorial_3_hand_loop_equals_trainer_and_loss_falls(mnist_dir, tmp_path):
    out = _tutorial("03_lenet300_without_gates.py", tmp_path, "--data", mnist_dir)
    assert "the hand-written loop and Trainer agree bit for bit after 50 steps" in _result(out, 3)
    _assert_pngs(tmp_path, "hand_loop_loss.png", "loss.png", "val_error.png", "epoch_seconds.png")
    initial = float(re.search(r"initial loss should be about ln 10 = 2\.30: got ([0-9.]+)", out)[1])
    assert abs(initial - np.log(10)) < 0.2
    hand = [float(v) for v in re.findall(r"step 7: step +\d+/50: mean loss of the last \d+ steps "
                                         r"([0-9.]+)", out)]
    assert len(hand) == 5 and hand[-1] < 0.5 * hand[0]  # the hand-written loop learns
    compared = re.search(r"step 8: hand loop against Trainer after 50 steps: max \|weight "
                         r"difference\| (\S+) over 6 arrays; mean loss ([0-9.]+) against "
                         r"([0-9.]+)", out)
    assert compared and float(compared[1]) == 0.0 and compared[2] == compared[3], out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert f"{metrics['train_loss'][0]:.6f}" == compared[2]  # the run at scale began the same way
    assert metrics["train_loss"][1] < metrics["train_loss"][0]
    assert metrics["test_error"] < 0.3


def test_tutorial_4_theta_reaches_0_or_1_only_with_the_hyperprior(tmp_path):
    out = _tutorial("04_one_bernoulli_gate.py", tmp_path)
    _result(out, 4)
    _assert_pngs(tmp_path, "hyperprior.png", "flattened_objective.png", "theta_trajectories.png")
    with np.load(tmp_path / "theta_final.npz") as final:
        flat, fixed, relevant = final["hyperprior"], final["fixed_gamma"], final["relevant"]
        gamma = float(final["gamma"])
    np.testing.assert_array_equal(flat, relevant.astype(float))  # exactly 1 and exactly 0
    assert not np.isin(fixed, (0.0, 1.0)).any()
    assert np.all(np.abs(fixed[~relevant] - gamma) < 0.1)  # the noise inputs are not pruned


def test_tutorial_5_removal_is_unbiased_and_first_order_is_not(tmp_path):
    out = _tutorial("05_estimating_delta.py", tmp_path)
    _result(out, 5)
    _assert_pngs(tmp_path, "delta_estimators.png")
    with np.load(tmp_path / "delta_estimates.npz") as found:
        exact = found["exact"]
        z = {name: (found[name].mean(0) - exact) / (found[name].std(0, ddof=1)
                                                    / np.sqrt(len(found[name])))
             for name in ("removal", "first_order")}
    assert np.abs(z["removal"]).max() < 3.5
    assert np.abs(z["first_order"]).max() > 10


def test_tutorial_6_and_10_the_main_job_and_its_numpy_only_model(mnist_dir, tmp_path):
    out = _tutorial("06_gated_lenet300.py", tmp_path, "--data", mnist_dir)
    assert "tutorial 6: gated LeNet-300-100, 2 epochs: architecture" in _result(out, 6)
    # the step written by hand agrees with the library's steps on the same seed ...
    hand = re.search(r"hand step = library step after (\d+) steps: masks, visits and weights "
                     r"identical; max \|θ_hand − θ_library\| = (\S+), max \|ḡ_hand − "
                     r"ḡ_library\| = (\S+) over (\d+) gates \((\d+) left 1\)", out)
    assert hand, out[-3000:]
    assert int(hand[1]) >= 2 and float(hand[2]) < 1e-9 and float(hand[3]) < 1e-12
    assert int(hand[4]) == 784 + 75 + 25 and int(hand[5]) > 0  # ... and θ moved
    # ... and removing a unit at θ = 0 shrinks its arrays by one without changing the logits
    removed = re.search(r"fc1\.W \(784, 75\) → \(784, 74\), fc1\.b \(75,\) → \(74,\), fc2\.W "
                        r"\(75, 25\) → \(74, 25\).*changed by at most (\S+) ", out)
    assert removed and float(removed[1]) < 1e-12, out[-3000:]
    _assert_pngs(tmp_path, "theta_trajectories.png", "input_pixels.png", "theta_hist.png",
                 "units_per_layer.png", "theta_decided.png", "val_error.png",
                 "epoch_seconds.png")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [g["name"] for g in metrics["gates"]] == ["gate_in", "gate1", "gate2"]
    assert sum(g["at_zero"] for g in metrics["gates"]) > 0  # some gates decided at 0 ...
    assert metrics["decided_1e-2"] > 0.5  # ... and most within 0.01 of 0 or 1
    with np.load(tmp_path / "history.npz") as history:
        assert len(history["theta_snapshot_steps"]) >= 5 * metrics["epochs"]
    assert metrics["export_test_error"] == metrics["test_error"]
    out = _run([REPO / "tutorials" / "10_predict_with_numpy_only.py", tmp_path / "model.npz",
                "--data", mnist_dir])
    assert f"test error {100 * metrics['test_error']:.2f}% on 10000 images" in _result(out, 10)


def test_tutorial_7_only_the_hyperprior_puts_theta_on_0_or_1(mnist_dir, tmp_path):
    out = _tutorial("07_why_the_hyperprior_matters.py", tmp_path, "--data", mnist_dir)
    _result(out, 7)
    _assert_pngs(tmp_path, "ablation_trajectories.png", "ablation_hist.png")
    edge = re.search(r"should be ln\(1e6\) = 13\.82\): got ([0-9.]+) at γ = 0\.5,", out)
    edge = float(edge[1])
    assert edge == round(np.log(1e6), 2)  # fixed γ's slope at the box's edge, (B6)
    runs = {}
    for folder in ("hyperprior", "fixed_gamma"):
        metrics = json.loads((tmp_path / folder / "metrics.json").read_text())
        with np.load(tmp_path / folder / "history.npz") as history:
            runs[folder] = metrics, history["theta_snapshots"]
    (with_prior, with_theta), (fixed, fixed_theta) = runs["hyperprior"], runs["fixed_gamma"]
    assert with_prior["decided_1e-3"] > fixed["decided_1e-3"] + 0.2
    assert not np.isin(fixed_theta, (0.0, 1.0)).any()  # never on a corner, at any snapshot
    assert sum(g["removed"] for g in fixed["gates"]) == 0
    assert np.isin(with_theta[-1], (0.0, 1.0)).mean() > 0.5
    assert sum(g["removed"] for g in with_prior["gates"]) > 0


def test_tutorial_8_gated_lenet5_moves_its_gates_and_draws_conv1(mnist_dir, tmp_path):
    out = _tutorial("08_gated_lenet5.py", tmp_path, "--data", mnist_dir)
    assert "tutorial 8: gated LeNet-5-Caffe, 2 epochs: architecture" in _result(out, 8)
    _assert_pngs(tmp_path, "conv1_filters.png", "theta_trajectories.png", "theta_hist.png",
                 "units_per_layer.png")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [g["name"] for g in metrics["gates"]] == ["gate_conv1", "gate_conv2", "gate_fc1"]
    with np.load(tmp_path / "history.npz") as history:
        snaps = history["theta_snapshots"]
    assert snaps.shape[1] == sum(g["total"] for g in metrics["gates"])
    assert (snaps[-1] < 1.0).sum() > 0 and (snaps.min(axis=0) < 0.5).any()  # some gates moved
    counts = re.search(r"gates per layer should be \[([\d, ]+)\] .*: got \[([\d, ]+)\]", out)
    assert counts and counts[1] == counts[2] == ", ".join(str(g["total"])
                                                          for g in metrics["gates"])
    kept = re.search(r"conv1 filters kept \[([\d, ]*)\], switched off \[([\d, ]*)\]", out)
    assert kept and len(re.findall(r"\d+", kept[1] + " " + kept[2])) == metrics["gates"][0]["total"]


def _largest_deviation(folder, names):
    """Independently of the tutorial: the largest |deviation| (%) of a start's mean kept units
    from their mean over the starts, over the layers, for run directories ``<name>_seed<k>``."""
    means = np.array([np.mean([json.loads(path.read_text())["architecture"]
                               for path in folder.glob(f"{name}_seed*/metrics.json")], axis=0)
                      for name in names])
    return float(np.abs(100 * (means / means.mean(axis=0) - 1)).max())


def test_tutorial_9_measures_the_spread_of_its_own_grid_and_of_the_recorded_runs(mnist_dir,
                                                                                  tmp_path):
    out = _tutorial("09_robustness.py", tmp_path, "--data", mnist_dir)
    line = _result(out, 9)
    _assert_pngs(tmp_path, "robustness.png", "kept_per_epoch.png")
    assert "keeps a third: largest deviation should be +71.4 %: got +71.4 %" in out
    found = re.search(r"starts (\d+) % in (\S+), (outside|within) ±15 %; (\d+) % after 40 "
                      r"epochs\), .* narrows it to (\d+) % \((\S+)\); your own grid "
                      r"\(2 starts, 12 runs\): (\d+) %", line)
    assert found, line
    recorded = REPO / "experiments" / "runs"
    default = _largest_deviation(recorded / "robustness",
                                 [f"width{w}_scale1" for w in (1, 2, 4)])
    compensated = _largest_deviation(recorded / "compensated",
                                     [f"compensated_width{w}" for w in (1, 2, 4)])
    assert int(found[1]) == round(default) and int(found[5]) == round(compensated)
    assert (found[3] == "outside") == (default > 15) and compensated < default
    own = tmp_path / "runs" / "quick"
    assert int(found[7]) == round(_largest_deviation(own, ["width0.25_scale1",
                                                           "width0.5_scale1"]))
    assert len(list(own.glob("*/metrics.json"))) == 12
    # each run was built with the starting point its name gives, and kept fewer units than it had
    run = json.loads((own / "width0.25_scale2_seed1" / "metrics.json").read_text())
    assert (run["config"]["width_mult"], run["config"]["init_scale"], run["seed"]) == (0.25, 2, 1)
    assert run["config"]["epochs"] == 3 and run["config"]["train_subset"] == 3000
    assert sum(run["architecture"]) < sum(run["architecture_start"])


def test_tutorial_9_refuses_a_runs_folder_without_the_recorded_grids(tmp_path):
    """Checked before anything trains: the message names --runs and the missing grids."""
    (tmp_path / "runs" / "robustness").mkdir(parents=True)
    done = subprocess.run([sys.executable, REPO / "tutorials" / "09_robustness.py", "--quick",
                           "--out", tmp_path / "out", "--runs", tmp_path / "runs"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: --runs "), done.stderr
    assert "longer/, compensated/" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_tutorial_11_strict_matches_numpy_bit_for_bit(mnist_dir, tmp_path):
    out = _tutorial("11_on_a_gpu.py", tmp_path, "--data", mnist_dir)
    assert "agree bit for bit" in _result(out, 11)
    _assert_pngs(tmp_path, "backend_theta.png", "transfers_per_step.png")
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert comparison["backend"] == "strict"
    assert comparison["max_theta_diff"] == 0.0 and comparison["max_weight_diff"] == 0.0
    assert comparison["architecture"]["strict"] == comparison["architecture"]["numpy"]
    assert comparison["test_error"]["strict"] == comparison["test_error"]["numpy"]
    assert re.search(r"transfers per training step .*: to_device \d+/\d+", out)
    assert "max |Δθ| should be 0 (strict is NumPy underneath): got 0\n" in out


@pytest.mark.parametrize("model, options, gated", [
    ("lenet300", ["--gates"], True),  # θ recorded five times per epoch by default
    # a small θ step: on 300 images the default may switch off all 5 filters of conv1, and
    # a run whose network cannot be exported ends with exit 1
    ("lenet5", ["--gates", "--width-mult", "0.25", "--theta-lr", "1"], True),
    ("lenet300", [], False)], ids=["lenet300-gated", "lenet5-gated", "lenet300"])
def test_plot_command_draws_every_figure_of_a_recorded_run(mnist_dir, tmp_path, model, options,
                                                           gated):
    run = tmp_path / "run"
    _run(["-m", "minibern", "train", "--model", model, "--epochs", "2", "--train-subset", "300",
          "--quiet", "--data", mnist_dir, "--out", run, *options])
    figures = tmp_path / "figures"
    out = _run(["-m", "minibern", "plot", run, "--out", figures])
    expected = {"loss.png", "val_error.png", "epoch_seconds.png"}
    if gated:
        expected |= {"theta_hist.png", "theta_decided.png", "units_per_layer.png",
                     "theta_trajectories.png"}
    if gated and model == "lenet300":
        expected.add("input_pixels.png")
    if gated:  # several θ snapshots per epoch, each at its own step
        with np.load(run / "history.npz") as history:
            steps = list(history["theta_snapshot_steps"])
        assert len(steps) > 2 * 2 and steps == sorted(set(steps))
    assert {p.name for p in figures.iterdir()} == expected
    _assert_pngs(figures, *expected)
    assert f"{len(expected)} figures in {figures}" in out


def test_plot_command_refuses_a_missing_or_broken_run_directory(tmp_path):
    plot = [sys.executable, "-m", "minibern", "plot"]
    (tmp_path / "metrics.json").write_text("{not json")
    (tmp_path / "history.npz").write_bytes(b"not a zip file")
    for target, message in ((tmp_path / "missing", "is not a directory"),
                            (tmp_path, "cannot plot")):
        done = subprocess.run([*plot, str(target)], capture_output=True, text=True,
                              env={**os.environ, "MPLBACKEND": "Agg"}, cwd=REPO, timeout=120)
        assert done.returncode != 0
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_run_as_a_notebook_a_tutorial_figure_is_saved_and_shown_inline(tmp_path, monkeypatch):
    """Inside a Jupyter kernel the inline backend is kept (no switch to Agg) and every saved
    figure is also handed to IPython's ``display``; as a script nothing is displayed."""
    matplotlib = pytest.importorskip("matplotlib")
    import types

    monkeypatch.syspath_prepend(str(REPO / "tutorials"))
    common = __import__("_common")
    shown = []
    monkeypatch.setattr(common, "_display", shown.append)
    monkeypatch.setattr(common, "_png", lambda path: ("image", str(path)))
    plt = common.pyplot()
    fig, _ = plt.subplots()
    script_path = common.save(fig, tmp_path / "script.png")
    assert shown == [] and script_path.read_bytes()[:8] == PNG

    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    before = matplotlib.get_backend()
    monkeypatch.setattr(matplotlib, "use", lambda name: pytest.fail(f"switched to {name}"))
    plt = common.pyplot()
    fig, _ = plt.subplots()
    common.save(fig, tmp_path / "inline.png")
    assert shown == [fig] and matplotlib.get_backend() == before
    assert common.show([tmp_path / "inline.png"]) == [tmp_path / "inline.png"]
    assert shown[-1] == ("image", str(tmp_path / "inline.png"))


def test_a_failed_check_of_a_tutorial_is_named_as_its_check_not_as_a_bug(tmp_path):
    """An exercise that breaks a tutorial's own ``assert`` ends in one line naming the check and
    its line, exit 1, no traceback; an assertion raised elsewhere (the package) is still
    reported as unexpected."""
    (tmp_path / "elsewhere.py").write_text("def check():\n    assert False, 'inside'\n")
    head = ("import sys\n"
            f"sys.path.insert(0, {str(REPO / 'tutorials')!r})\n"
            "from _common import tutorial_args\n"
            "import elsewhere\n"
            "args = tutorial_args('x', quick='q', out=sys.argv[1], argv=[])\n")
    for name, body, expected in (
            ("99_exercise.py", "assert 1 == 2, 'the hand step and the library differ'\n",
             "error: a check of 99_exercise.py failed (line 6): the hand step and the library "
             "differ"),
            ("98_package.py", "elsewhere.check()\n", "error: unexpected AssertionError: inside")):
        script = tmp_path / name
        script.write_text(head + body)
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(expected), done.stderr


LESSON_SECTIONS = ("What you learn", "Read alongside", "Figures", "You should see",
                   "Time on a 2-core CPU")


@pytest.mark.parametrize("path", sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py")),
                         ids=lambda path: path.name[:2])
def test_every_tutorial_has_the_shape_of_a_lesson(path):
    """The docstring's sections in order (what you learn, what to read, the figures, the final
    line to expect, the time), cells, the result printed as ``tutorial N: …`` and, last, an
    Exercises cell of two or three numbered changes to make; never experiments/ or benchmarks/."""
    import ast

    source = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source))
    starts = [next((i for i, line in enumerate(doc.splitlines()) if line.startswith(section)),
                   -1) for section in LESSON_SECTIONS]
    assert -1 not in starts and starts == sorted(starts), dict(zip(LESSON_SECTIONS, starts))
    number = int(path.name[:2])
    expected = doc.splitlines()[starts[3] + 1].strip()
    assert expected.startswith(f"tutorial {number}: "), expected  # the final line, quoted
    assert source.count("\n# %% ") >= 5 and f'print(f"tutorial {number}: ' in source
    cells = source.split("\n# %%")
    last = cells[-1]
    assert last.startswith(" [markdown]\n# ## Exercises\n"), last[:80]
    items = re.findall(r"^# (\d)\. \*\*", last, flags=re.MULTILINE)
    assert items in (["1", "2"], ["1", "2", "3"]), items
    assert not re.search(r"^\s*(from|import) (experiments|benchmarks)\b|sys\.path\.(insert|append)",
                         source, flags=re.MULTILINE)
