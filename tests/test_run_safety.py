"""Nothing is lost when runs collide or recover: one writer per run directory, resumes that keep
the audit and refuse other thread counts, checkpoints checked field by field, size limits on
local data, and one message (no traceback) for every failure of the tutorials and the runner."""
import contextlib
import gzip
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minibern.cli import train as cli
from minibern.data import fetch, idx
from minibern.training import checkpoint as ckpt
from minibern.training.lock import LOCK_NAME, RunLocked, run_lock
from minibern.training.resume import THREADS_KEY, resume_problems, thread_counts
from minibern.training.trainer import TrainConfig, TrainingDiverged

REPO = Path(__file__).resolve().parents[1]
GATED = ["--model", "lenet300", "--gates", "--epochs", "1", "--train-subset", "300",
         "--width-mult", "0.25", "--quiet"]
PLAIN = ["--model", "lenet300", "--epochs", "1", "--train-subset", "200", "--width-mult",
         "0.1", "--quiet"]

pytestmark = pytest.mark.host_only


def _train(*args):
    """``python -m minibern train`` in this process; its exit status."""
    try:
        return cli.main(list(args))
    except SystemExit as exit_:
        return exit_.code


def _python(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, **kwargs)


def _rewrite_meta(path, change):
    arrays, meta = ckpt.read_npz(path)
    change(meta, arrays)
    ckpt.write_npz(path, arrays, meta)


# -- 1: resuming a finished run keeps what it does not recompute ----------------------------------
def test_resuming_a_finished_gated_run_keeps_and_recomputes_its_audit(mnist_dir, tmp_path):
    out = tmp_path / "run"
    assert _train(*GATED, "--data", str(mnist_dir), "--out", str(out)) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["decisions"]["audited_projection"] > 0
    files = {name: (out / name).read_bytes() for name in ("checkpoint.npz", "history.npz")}
    assert _train(*GATED, "--data", str(mnist_dir), "--out", str(out), "--resume") == 0
    assert json.loads((out / "metrics.json").read_text()) == first
    (out / "metrics.json").unlink()  # killed during the export, before metrics.json
    (out / "model.npz").unlink()
    assert _train(*GATED, "--data", str(mnist_dir), "--out", str(out), "--resume") == 0
    assert json.loads((out / "metrics.json").read_text()) == first
    assert {name: (out / name).read_bytes() for name in files} == files


# -- 2: one writer per run directory -------------------------------------------------------------
def test_a_run_directory_in_use_is_refused_and_left_alone(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = _python("-c", "import sys; from minibern.training.lock import run_lock\n"
                     f"with run_lock({str(out)!r}):\n print('locked', flush=True); sys.stdin.read()",
                     stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _train(*PLAIN, "--data", str(mnist_dir), "--out", str(out)) == 2
        assert f"in use by another run (process {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        holder.communicate("")
    assert not (out / LOCK_NAME).exists()  # released on exit
    assert _train(*PLAIN, "--data", str(mnist_dir), "--out", str(out)) == 0
    assert not (out / LOCK_NAME).exists()


def test_a_stale_lock_of_a_killed_run_is_taken_over_with_a_message(tmp_path):
    killed = _python("-c", "import os, sys; from minibern.training.lock import run_lock\n"
                     f"with run_lock({str(tmp_path)!r}):\n print('locked', flush=True); "
                     "sys.stdin.read()", stdin=subprocess.PIPE)
    assert killed.stdout.readline().strip() == "locked"
    killed.kill()
    killed.communicate()
    notes = []
    with run_lock(tmp_path, notes.append):
        with run_lock(tmp_path):  # re-entrant within a process
            pass
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert notes == [f"took over {tmp_path / LOCK_NAME}: its run (process {killed.pid}) ended "
                     "without releasing it"]
    assert not (tmp_path / LOCK_NAME).exists()


def test_sweep_forwards_sigterm_to_its_run_and_waits_for_it(mnist_dir, tmp_path):
    runner = tmp_path / "runner.py"
    runner.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'experiments')!r})\nimport sweep\n"
        "sweep.GRIDS['long'] = {'about': 'one long run', 'runs': {'long_seed0': "
        "['--model', 'lenet300', '--width-mult', '0.05', '--train-subset', '200', "
        "'--batch-size', '10', '--epochs', '1000']}}\n"
        f"sys.exit(sweep.run_main(['run', 'long', '--root', {str(tmp_path)!r}, '--jobs', '1', "
        f"'--data', {str(mnist_dir)!r}]))\n")
    sweep = _python(str(runner), start_new_session=True)
    run = tmp_path / "long" / "long_seed0"
    try:
        while not (run / "checkpoint.npz").exists():  # the child is training
            assert sweep.poll() is None, sweep.communicate()
            time.sleep(0.2)
        child = int((run / LOCK_NAME).read_text())
        sweep.send_signal(signal.SIGTERM)
        _, err = sweep.communicate(timeout=120)
    finally:  # whatever happens, no process of this test outlives it
        if sweep.poll() is None or not (run / LOCK_NAME).exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 128 + signal.SIGTERM, err
    assert "sweep stopped by SIGTERM" in err and "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the run ended with the sweep
    assert not (run / LOCK_NAME).exists()
    assert "terminated (SIGTERM)" in (tmp_path / "long" / "long_seed0.stderr").read_text()


# -- 3: thread counts ------------------------------------------------------------------------------
def test_resume_under_other_thread_counts_is_refused_naming_them(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(*PLAIN, "--data", str(mnist_dir), "--out", str(out)) == 0
    _, meta = ckpt.read_npz(out / "checkpoint.npz")
    assert meta[THREADS_KEY] == thread_counts()
    capsys.readouterr()
    assert _train(*PLAIN, "--epochs", "2", "--threads", "2", "--data", str(mnist_dir),
                  "--out", str(out), "--resume") == 2
    assert "kernel threads: 1 in the checkpoint, 2 now (set --threads 1" in capsys.readouterr().err
    saved = {"kernel_threads": 1, "blas_threads": 4}
    assert resume_problems({"config": {}, "epoch": 1, THREADS_KEY: saved}, TrainConfig(), [],
                           {"kernel_threads": 1, "blas_threads": 1}) == [
        "blas threads: 4 in the checkpoint, 1 now (set OMP_NUM_THREADS=4 and "
        "OPENBLAS_NUM_THREADS=4)"]


def test_a_checkpoint_without_thread_counts_resumes_and_says_so(mnist_dir, tmp_path):
    out = tmp_path / "run"
    assert _train(*PLAIN, "--data", str(mnist_dir), "--out", str(out)) == 0
    _rewrite_meta(out / "checkpoint.npz", lambda meta, arrays: meta.pop(THREADS_KEY))
    assert _train(*PLAIN, "--epochs", "2", "--data", str(mnist_dir), "--out", str(out),
                  "--resume") == 0
    assert "does not record the thread counts" in (out / "train.log").read_text()


# -- 5: checkpoints checked field by field ---------------------------------------------------------
@pytest.mark.parametrize("damage,message", [
    (lambda meta, arrays: meta.pop("config"), "its meta lacks 'config'"),
    (lambda meta, arrays: meta.update(epoch="one"), "meta 'epoch' is 'one', expected"),
    (lambda meta, arrays: meta.update(batch_rng=[1]), "meta 'batch_rng' is [1], expected"),
    (lambda meta, arrays: arrays.pop("param/fc1.W"), "parameter fc1.W is missing"),
    (lambda meta, arrays: arrays.update({"param/fc2.b": np.zeros(3, np.float32)}),
     "parameter fc2.b is float32 (3,), expected float"),
    (lambda meta, arrays: arrays.pop("history/val_error"), "history/val_error has 0 entries"),
])
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_field(damage, message,
                                                                      mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(*PLAIN, "--data", str(mnist_dir), "--out", str(out)) == 0
    _rewrite_meta(out / "checkpoint.npz", damage)
    before = (out / "checkpoint.npz").read_bytes()
    status = _train(*PLAIN, "--epochs", "2", "--data", str(mnist_dir),
                    "--out", str(out), "--resume")
    err = capsys.readouterr().err
    assert status in (1, 2) and message in err and str(out / "checkpoint.npz") in err, err
    assert "bug" not in err
    assert (out / "checkpoint.npz").read_bytes() == before


def test_a_local_gz_is_decompressed_under_the_download_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "MAX_FILE_BYTES", 1000)
    bomb = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 7, 208]) + bytes(2000)))
    with pytest.raises(idx.IdxError, match="decompresses to more than 1000 bytes"):
        idx.read_idx(bomb, 1)
    raw = tmp_path / "big-idx1-ubyte"
    raw.write_bytes(bytes(1001))
    with pytest.raises(idx.IdxError, match="1001 bytes, more than the 1000"):
        idx.read_idx(raw, 1)


def test_a_mistyped_data_folder_is_not_left_behind(tmp_path):
    target = tmp_path / "dta" / "mnsit"
    with pytest.raises(fetch.MnistError):
        fetch.fetch_mnist(target, sources=[(tmp_path / "nowhere").as_uri() + "/"],
                          log=lambda line: None)
    assert not (tmp_path / "dta").exists()


# -- smaller items ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--kappa", "-5"], "--kappa set(s) the Bernoulli gates, but this run has none"),
    (["--no-audit"], "--no-audit set(s) the Bernoulli gates"),
    (["--out", ""], "--out '' names no run directory"),
])
def test_options_that_would_do_nothing_are_refused(args, message, mnist_dir, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)  # where --out '' would write
    assert _train(*PLAIN, "--data", str(mnist_dir), "--out", str(tmp_path / "run"), *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_divergence_from_the_initial_scale_names_it(mnist):
    from minibern.models import build_model
    from minibern.training.trainer import Trainer, device_splits, run_rngs

    config = TrainConfig(model="lenet300", epochs=1, train_subset=500, init_scale=50.0, lr=0.5,
                         weight_decay=0.1)
    net = build_model("lenet300", seed=run_rngs(0)[0], init_scale=50.0)
    trainer = Trainer(net, device_splits(mnist, net.input_shape, 500), config, log=lambda _: None)
    with pytest.raises(TrainingDiverged, match=r"lower the learning rate \(now 0.5\), "
                       r"--init-scale \(now 50.0\) or --weight-decay \(now 0.1\)"):
        trainer.fit()


def test_sweep_names_an_unreadable_or_unexported_run(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "experiments"))
    import sweep

    monkeypatch.setitem(sweep.GRIDS, "g", {"about": "x", "runs": {"a_seed0": [], "b_seed0": []}})
    broken, unexported = tmp_path / "g" / "a_seed0", tmp_path / "g" / "b_seed0"
    broken.mkdir(parents=True)
    unexported.mkdir()
    (broken / "metrics.json").write_text("{not json")
    (unexported / "metrics.json").write_text(json.dumps({"export_error": "a gate kept no unit"}))
    with pytest.raises(sweep.SweepError, match="a_seed0/metrics.json is unreadable"):
        sweep.train(tmp_path, "g", "a_seed0", [], None)
    with pytest.raises(sweep.SweepError, match="model.npz was not written"):
        sweep.train(tmp_path, "g", "b_seed0", [], None)
    assert sweep.run_main(["table", "g", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unreadable" in err


def test_plot_names_a_corrupt_run_file_without_calling_it_a_bug(tmp_path, capsys):
    from minibern import plots

    (tmp_path / "metrics.json").write_text("[1, 2]")
    np.savez(tmp_path / "history.npz", train_loss=np.zeros(2), val_error=np.zeros(2))
    assert plots.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot plot {tmp_path}") and "bug" not in err


# -- 4: the tutorials share the CLI's error handling ------------------------------------------------
@pytest.mark.parametrize("script,args,env,status,message", [
    ("01_dense_layer_by_hand.py", ["--seed", "-1"], {}, 2, "--seed must be a non-negative"),
    ("07_why_the_hyperprior_matters.py", ["--epochs", "0"], {}, 2, "--epochs must be a positive"),
    ("01_dense_layer_by_hand.py", [], {"MINIBERN_THREADS": "x"}, 2, "MINIBERN_THREADS must be"),
    ("01_dense_layer_by_hand.py", [], {"MINIBERN_BACKEND": "tpu"}, 2, "unknown backend 'tpu'"),
    ("01_dense_layer_by_hand.py", ["--out", "FILE"], {}, 2, "is not a folder"),
    ("03_lenet300_without_gates.py", ["--quick", "--data", "BAD"], {}, 1,
     "corrupt or truncated gzip data"),
])
def test_a_tutorial_failure_is_one_message_without_traceback(script, args, env, status, message,
                                                             tmp_path):
    (tmp_path / "FILE").write_text("")
    (tmp_path / "BAD").mkdir()
    for name in fetch.FILE_NAMES.values():
        (tmp_path / "BAD" / f"{name}.gz").write_bytes(b"\x1f\x8bjunk")
    args = [str(tmp_path / a) if a in ("FILE", "BAD") else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    process = _python(str(REPO / "tutorials" / script), *args, env=env)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    assert message in err and "Traceback" not in err, err


def _tutorial_10():
    spec = importlib.util.spec_from_file_location(
        "tutorial10", REPO / "tutorials" / "10_predict_with_numpy_only.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(n_ops, *ops):
    model = {"format": np.array("minibern-export"), "version": np.array(1),
             "n_ops": np.array(n_ops), "input_shape": np.array([4])}
    for i, op in enumerate(ops):
        model.update({f"op{i}/{key}": np.asarray(value) for key, value in op.items()})
    return model


@pytest.mark.parametrize("model,message", [
    (_model(3, {"kind": "dense", "W": np.ones((4, 2)), "b": np.zeros(2)}),
     "n_ops is 3, but the file holds 1 ops"),
    (_model(10**9, {"kind": "dense", "W": np.ones((4, 2)), "b": np.zeros(2)}), "n_ops is 1000000000"),
    (_model(2, {"kind": "select", "index": [0, 9]}, {"kind": "dense", "W": np.ones((2, 2)),
                                                     "b": np.zeros(2)}),
     "select index outside the 4 features"),
    (_model(1, {"kind": "relu"}), "no dense or conv layer"),
    (_model(1, {"kind": "dense", "W": np.ones((4, 2))}), "op 0 of the model lacks b"),
    (_model(1, {"kind": "dense", "W": np.ones((3, 2)), "b": np.zeros(2)}), "do not fit together"),
])
def test_tutorial_10_refuses_a_damaged_model(model, message):
    with pytest.raises(ValueError, match=message):
        _tutorial_10().predict(model, np.zeros((2, 4), np.float32))


def test_run_lock_refuses_a_second_process(tmp_path):
    holder = _python("-c", "import sys; from minibern.training.lock import run_lock\n"
                     f"with run_lock({str(tmp_path)!r}):\n print('locked', flush=True); "
                     "sys.stdin.read()", stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"process {holder.pid} holds"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.communicate("")
