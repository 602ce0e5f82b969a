"""Training on MNIST: a short run learns, runs repeat exactly, checkpoints resume bit for bit,
divergence stops cleanly, and the CLI rejects bad arguments with exit code 2."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minibern import backend as B
from minibern.models import build_model
from minibern.training import checkpoint as ckpt
from minibern.training.resume import RUN_FILES
from minibern.training.trainer import (Hook, TrainConfig, Trainer, TrainingDiverged,
                                       device_splits, run_rngs)

REPO = Path(__file__).resolve().parents[1]


def _trainer(mnist, **overrides):
    config = TrainConfig(**{"model": "lenet300", "epochs": 1, "train_subset": 2000, **overrides})
    net = build_model(config.model, config.width_mult, seed=run_rngs(config.seed)[0])
    splits = device_splits(mnist, net.input_shape, config.train_subset)
    return Trainer(net, splits, config, log=lambda *_: None)


def test_short_training_learns_and_writes_every_file(mnist, tmp_path):
    # 300 steps of LeNet-300-100 on 10,000 images
    trainer = _trainer(mnist, epochs=3, train_subset=10000)
    metrics = trainer.fit(tmp_path)
    assert metrics["val_error"] < 0.15  # chance is 0.9
    assert metrics["test_error"] < 0.15
    assert trainer.global_step == 300
    assert trainer.history["train_loss"][-1] < trainer.history["train_loss"][0]
    for name in ("checkpoint.npz", "history.npz"):
        assert (tmp_path / name).is_file()
    assert len(metrics["epoch_seconds"]) == 3 and metrics["architecture"] == [784, 300, 100]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_same_seed_same_backend_same_weights(mnist):
    runs = [_trainer(mnist, seed=3, train_subset=500) for _ in range(2)]
    other = _trainer(mnist, seed=4, train_subset=500)
    for trainer in runs + [other]:
        trainer.fit()
    a, b, c = (B.to_numpy(t.net.named_parameters()["fc2.W"]) for t in runs + [other])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_names_epoch_and_step_and_keeps_checkpoint(mnist, tmp_path):
    trainer = _trainer(mnist, train_subset=500, epochs=2, optimizer="sgd", lr=0.01)
    trainer.config.epochs = 1
    trainer.fit(tmp_path)
    trainer.config.epochs = 2
    trainer.optimizer.lr = 1e30
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch 2, step \d+"):
        trainer.fit(tmp_path)
    _, meta = ckpt.read_npz(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 1


def test_exploding_loss_is_divergence_and_keeps_the_last_good_checkpoint(mnist, tmp_path):
    # defect 4: Adam at lr 1e6 ended with exit 0, loss 3e17 and 89 % test error
    trainer = _trainer(mnist, train_subset=500)
    trainer.fit(tmp_path)
    kept = (tmp_path / "checkpoint.npz").read_bytes()
    trainer.config.epochs, trainer.optimizer.lr = 2, 1e6
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 2: its mean loss \S+ is above "
                       r"10 x ln 10 = 23.03.*checkpoint \(end of epoch 1\) is kept"):
        trainer.fit(tmp_path)
    assert (tmp_path / "checkpoint.npz").read_bytes() == kept
    # a large --init-scale starts far above 10 ln C and still trains: not divergence
    assert _trainer(mnist, train_subset=500, init_scale=5.0).fit()["epochs"] == 1


class _PoisonLastStep(Hook):
    """A hook that makes fc1.W NaN after the last step of epoch 2 (the loss stays finite)."""

    def after_step(self, trainer):
        if trainer.epoch == 1 and trainer.step == 4:
            trainer.net.set_parameter("fc1.W", trainer.net.named_parameters()["fc1.W"] * float("nan"))


def test_non_finite_weights_are_never_checkpointed_nor_resumed(mnist, tmp_path):
    # defect 5: a checkpoint holding NaN was called "the last good one"
    trainer = _trainer(mnist, train_subset=500, epochs=2)
    trainer.hooks.append(_PoisonLastStep())
    with pytest.raises(TrainingDiverged, match=r"weights became non-finite \(param/fc1.W\) in "
                       r"epoch 2.*the last good checkpoint \(end of epoch 1\) is kept"):
        trainer.fit(tmp_path)
    arrays, meta = ckpt.read_npz(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 1 and np.isfinite(arrays["param/fc1.W"]).all()
    arrays["param/fc2.b"] = arrays["param/fc2.b"] * np.nan
    ckpt.write_npz(tmp_path / "checkpoint.npz", arrays, meta)
    with pytest.raises(ckpt.CheckpointError, match=r"non-finite weights \(param/fc2.b\)"):
        _trainer(mnist, train_subset=500, epochs=2).fit(tmp_path, resume=True)


@pytest.mark.host_only
def test_cli_divergence_exits_1_without_traceback(mnist_dir, tmp_path):
    done = _train("--model", "lenet300", "--epochs", "2", "--train-subset", "500", "--lr", "1e6",
                  "--data", str(mnist_dir), "--out", str(tmp_path), "--quiet")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: training diverged in epoch 1" in done.stderr
    assert "no checkpoint of this run was written" in done.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_temporaries_of_a_killed_run_are_removed(mnist, tmp_path):
    # defect 6: .checkpoint.npz.*.tmp files (MBs each) were never cleaned up
    left = [tmp_path / f".{name}.k1ll3d.tmp" for name in RUN_FILES]
    for path in left + [tmp_path / ".notes.txt.tmp"]:
        path.write_bytes(b"partial")
    lines = []
    trainer = _trainer(mnist, train_subset=200)
    trainer.log = lines.append
    trainer.fit(tmp_path)
    assert not any(path.exists() for path in left)
    assert (tmp_path / ".notes.txt.tmp").exists()  # not a run file's: not ours to delete
    assert sum("left by a run killed while writing" in line for line in lines) == len(left)


@pytest.mark.host_only
def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint .* is unreadable.*delete it"):
        ckpt.read_npz(bad)


def _cli(*args, **kwargs):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "minibern", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.host_only
def test_killed_run_resumes_to_identical_weights(mnist_dir, tmp_path):
    common = ["--model", "lenet300", "--epochs", "4", "--train-subset", "6000", "--seed", "2",
              "--data", str(mnist_dir), "--batch-size", "50"]
    straight = _cli(*common, "--out", str(tmp_path / "straight"))
    killed = _cli(*common, "--out", str(tmp_path / "killed"))
    for line in killed.stdout:
        if line.startswith("checkpoint saved: epoch 1"):
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    _, meta = ckpt.read_npz(tmp_path / "killed" / "checkpoint.npz")
    assert 1 <= meta["epoch"] < 4, "the run must be killed before it finished"
    resumed = _cli(*common, "--out", str(tmp_path / "killed"), "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in out
    straight.communicate(timeout=300)
    assert straight.returncode == 0
    a, meta_a = ckpt.read_npz(tmp_path / "straight" / "checkpoint.npz")
    b, meta_b = ckpt.read_npz(tmp_path / "killed" / "checkpoint.npz")
    assert meta_a["epoch"] == meta_b["epoch"] == 4
    params = [k for k in a if k.startswith(("param/", "opt/"))]
    assert len(params) == 6 + 12
    for key in params:
        assert np.array_equal(a[key], b[key]), key
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for key in ("model", "seed", "backend", "epochs", "architecture", "params",
                "flops_per_example", "val_error", "test_error", "epoch_seconds"):
        assert key in metrics
    assert len(metrics["epoch_seconds"]) == 4


@pytest.mark.host_only
@pytest.mark.parametrize("args,message", [
    (["--model", "lenet7"], "invalid choice: 'lenet7'"),
    (["--model", "lenet300", "--epochs", "0"], "epochs must be a positive integer, got 0"),
    (["--model", "lenet300", "--lr", "-1"], "lr must be a positive number, got -1.0"),
    (["--model", "lenet300", "--batch-size", "ten"], "invalid int value: 'ten'"),
    (["--model", "lenet300", "--width-mult", "0"], "width_mult must be a positive number"),
    (["--model", "lenet300", "--backend", "tpu"], "invalid choice: 'tpu'"),
    (["--model", "lenet300", "--momentum", "1.5"], "momentum must lie in [0, 1), got 1.5"),
    (["--model", "lenet300", "--weight-decay", "nan"], "weight_decay must be a finite number"),
    (["--model", "lenet300", "--momentum", "nan"], "momentum must be a finite number, got nan"),
    (["--model", "lenet300", "--gates", "--theta-init", "nan"], "theta_init must be a finite"),
    (["--model", "lenet300", "--gates", "--snap-tol", "0.01"], "unrecognized arguments"),
    (["--model", "lenet300", "--gates", "--theta-lr", "inf"], "theta_lr must be a finite number"),
    (["--model", "lenet300", "--threads", "0"], "threads must be a positive whole number"),
])
def test_bad_cli_arguments_exit_2_with_a_message(args, message, tmp_path):
    done = _cli(*args, "--out", str(tmp_path / "run"))
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2
    assert message in err


def _train(*args):
    """``python -m minibern train ARGS`` to completion: the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "minibern", "train", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _files(folder):
    return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}


@pytest.mark.host_only
@pytest.mark.parametrize("name", RUN_FILES)
def test_new_run_never_overwrites_an_earlier_runs_files(name, tmp_path):
    # defect 2: the guard looked at checkpoint.npz alone
    (tmp_path / name).write_bytes(b"an earlier run")
    done = _train("--model", "lenet300", "--out", str(tmp_path))
    assert done.returncode == 2 and "already holds a run" in done.stderr
    assert "pass --resume" in done.stderr and "Traceback" not in done.stderr
    assert _files(tmp_path) == {name: b"an earlier run"}


@pytest.mark.host_only
def test_resume_without_a_checkpoint_is_refused(tmp_path):
    # defect 5: --resume with no checkpoint quietly started from scratch
    done = _train("--model", "lenet300", "--out", str(tmp_path), "--resume")
    assert done.returncode == 2 and "no checkpoint.npz to resume from" in done.stderr
    (tmp_path / "metrics.json").write_text("{}")
    done = _train("--model", "lenet300", "--out", str(tmp_path), "--resume")
    assert done.returncode == 2 and "it holds metrics.json" in done.stderr
    assert _files(tmp_path) == {"metrics.json": b"{}"}
    done = _train("--model", "lenet300", "--out", str(tmp_path / "metrics.json"))
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr


@pytest.mark.host_only
def test_resume_uses_the_checkpoints_settings_or_names_the_difference(mnist_dir, tmp_path):
    # defect 1: resuming a gated run without --gates dropped θ and rewrote every file
    quick = ["--model", "lenet300", "--epochs", "1", "--train-subset", "500", "--quiet",
             "--data", str(mnist_dir), "--out", str(tmp_path)]
    first = _train(*quick, "--gates")
    assert first.returncode == 0, first.stderr
    before = _files(tmp_path)
    assert {"checkpoint.npz", "metrics.json", "model.npz", "train.log"} <= set(before)
    for extra, named in (([], "trained with --gates, this run is without"),
                         (["--gates", "--kappa", "3"], "gates kappa: 5.5 in the checkpoint, 3.0 now"),
                         (["--gates", "--no-prune"], "gates prune: True in the checkpoint, False"),
                         (["--gates", "--lr", "0.01"], "lr: 0.001 in the checkpoint, 0.01 now"),
                         (["--gates", "--train-subset", "600"], "train_subset: 500 in the"),
                         (["--gates", "--epochs", "0"], "epochs must be a positive integer")):
        done = _train(*quick, "--epochs", "2", *extra, "--resume")
        assert done.returncode == 2 and named in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert _files(tmp_path) == before, extra
    more = _train(*quick, "--gates", "--epochs", "2", "--resume")  # the one allowed change
    assert more.returncode == 0, more.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2


def test_trainer_refuses_a_checkpoint_of_other_settings(mnist, tmp_path):
    _trainer(mnist, train_subset=200).fit(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match=r"lr: 0.001 in the checkpoint, 0.002 now"):
        _trainer(mnist, train_subset=200, lr=2e-3, epochs=2).fit(tmp_path, resume=True)
    with pytest.raises(ckpt.CheckpointError, match=r"has trained 1 epochs, 0 asked for"):
        trainer = _trainer(mnist, train_subset=200)
        trainer.config.epochs = 0
        trainer.fit(tmp_path, resume=True)


@pytest.mark.host_only
def test_failed_export_after_resume_leaves_no_stale_model(mnist_dir, tmp_path, monkeypatch, capsys):
    # defect 3: the previous model.npz stayed beside the new metrics.json, exit 0
    from minibern.bernoulli import export
    from minibern.cli import train as cli_train

    quick = ["--model", "lenet300", "--epochs", "1", "--train-subset", "300", "--quiet",
             "--data", str(mnist_dir), "--out", str(tmp_path)]
    assert cli_train.main(quick) == 0 and (tmp_path / "model.npz").is_file()

    def refuse(*_args, **_kwargs):
        raise ValueError("gate 'gate1': all 100 θ are below ½")
    monkeypatch.setattr(export, "export_and_score", refuse)
    assert cli_train.main(quick + ["--epochs", "2", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "model.npz not written: gate 'gate1'" in err and "earlier epochs was removed" in err
    assert not (tmp_path / "model.npz").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and "all 100 θ" in metrics["export_error"]


@pytest.mark.host_only
def test_cli_usage_problems_of_the_machine_end_in_a_message(tmp_path):
    # defect 11: an unusable backend or run directory gave a traceback
    (tmp_path / "file").write_text("")
    done = _train("--model", "lenet300", "--out", str(tmp_path / "file" / "run"))
    assert done.returncode == 2 and "cannot write the run directory" in done.stderr
    assert "Traceback" not in done.stderr
    if not B.cupy_available():
        env = {**os.environ, "MINIBERN_BACKEND": "cupy"}
        done = subprocess.run([sys.executable, "-m", "minibern", "train", "--model", "lenet300",
                               "--out", str(tmp_path / "run")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "needs CuPy" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


@pytest.mark.host_only
@pytest.mark.parametrize("error,status,message", [
    (MemoryError(), 1, "out of memory (backend numpy); lower --batch-size (now 100)"),
    (OSError(28, "No space left on device"), 1, "No space left on device; the last checkpoint"),
    (KeyboardInterrupt(), 130, "interrupted; the last checkpoint, if any, is kept"),
    (KeyError("surprise"), 1, "unexpected KeyError: 'surprise'; this is a bug"),
], ids=["memory", "disk-full", "interrupt", "bug"])
def test_cli_faults_during_a_run_end_in_a_message(error, status, message, mnist_dir, tmp_path,
                                                  monkeypatch, capsys):
    # defect 11: file system, memory and unexpected errors during a run gave tracebacks
    from minibern.cli import train as cli_train

    quick = ["--model", "lenet300", "--epochs", "2", "--train-subset", "200", "--quiet",
             "--data", str(mnist_dir), "--out", str(tmp_path)]
    assert cli_train.main(quick[:3] + ["1"] + quick[4:]) == 0
    kept = (tmp_path / "checkpoint.npz").read_bytes()

    def fail(*_args, **_kwargs):
        raise error
    monkeypatch.setattr(ckpt, "write_npz", fail)
    assert cli_train.main(quick + ["--resume"]) == status
    assert message in capsys.readouterr().err
    assert (tmp_path / "checkpoint.npz").read_bytes() == kept
    log = (tmp_path / "train.log").read_text()
    assert message in log
    assert ("Traceback" in log) == isinstance(error, KeyError)  # a bug's traceback is kept there


@pytest.mark.host_only
def test_every_command_ends_an_unexpected_error_in_a_message(monkeypatch, capsys):
    from minibern import __main__ as entry
    from minibern.cli import demo

    for error, status in ((OSError(13, "Permission denied"), 1), (ZeroDivisionError("x"), 1),
                          (KeyboardInterrupt(), 130)):
        def fail(_argv, error=error):
            raise error
        monkeypatch.setattr(demo, "main", fail)
        assert entry.main(["demo"]) == status
        assert capsys.readouterr().err.startswith("error: ")


def test_a_setting_the_checkpoint_predates_matches_only_while_it_is_off():
    """A checkpoint written before a gate setting existed resumes while the setting is off now
    (False / 0), and is refused, naming it, when it is on."""
    from minibern.bernoulli.config import GateConfig, gate_settings
    from minibern.training.resume import resume_problems
    config = TrainConfig(model="lenet300", epochs=2)
    saved = gate_settings(GateConfig())["gates"]
    del saved["theta_warmup"], saved["kappa_expected_params"]
    meta = {"config": {}, "epoch": 1, "hook_settings": [{"gates": saved}]}
    assert resume_problems(meta, config, [gate_settings(GateConfig())]) == []
    problems = resume_problems(meta, config, [gate_settings(GateConfig(theta_warmup=1.0))])
    assert problems == ["gates theta_warmup: None in the checkpoint, 1.0 now"]
    assert resume_problems(meta, config, [gate_settings(GateConfig(kappa=2.0))]) == [
        "gates kappa: 5.5 in the checkpoint, 2.0 now"]


def test_a_checkpoint_of_the_removed_snap_rules_resumes_only_if_they_were_off():
    """Checkpoints record the snap rules' settings (no longer in GateConfig): at their off
    values the run resumes; with the rules on it is refused with a line saying why."""
    from minibern.bernoulli.config import RETIRED, GateConfig, gate_settings
    from minibern.training.resume import resume_problems
    config = TrainConfig(model="lenet300", epochs=2)
    saved = gate_settings(GateConfig())["gates"]
    assert {key: saved[key] for key in RETIRED} == RETIRED
    meta = {"config": {}, "epoch": 1, "hook_settings": [{"gates": {**saved, "snap_tol": 0.01}}]}
    problems = resume_problems(meta, config, [gate_settings(GateConfig())])
    assert len(problems) == 1
    assert problems[0].startswith("gates snap_tol: 0.01 in the checkpoint, 0.0 now (a setting "
                                  "of the snap rules, which this code no longer has")
    meta["hook_settings"] = [{"gates": saved}]
    assert resume_problems(meta, config, [gate_settings(GateConfig())]) == []


def _cli_configs(argv):
    """(TrainConfig, GateConfig or None, snapshots per epoch) of ``python -m minibern train
    ARGV`` for a new run, as the CLI completes them."""
    from minibern.cli.train import (build_parser, complete_args, config_from_args,
                                    gate_config_from_args)
    argv = [*argv, "--out", "unused"]
    parser = build_parser()
    args = parser.parse_args(argv)
    complete_args(parser, args, argv)
    return (config_from_args(args), gate_config_from_args(args) if args.gates else None,
            args.snapshots_per_epoch)


@pytest.mark.parametrize("grid,run", [("lenet300", "gated_seed0"), ("lenet300", "plain_seed0"),
                                      ("lenet5", "gated_seed0"), ("lenet5", "plain_seed0")])
def test_the_cli_defaults_are_the_recipe_the_results_page_reports(grid, run):
    """``--model M [--gates]`` and nothing else is the run docs/RESULTS.md reports for M: the
    configuration of that grid's run (experiments/grids.py), field by field."""
    sys.path.insert(0, str(REPO / "experiments"))
    from grids import GRIDS

    recorded = GRIDS[grid]["runs"][run]
    bare = ["--model", recorded[recorded.index("--model") + 1],
            *(["--gates"] if "--gates" in recorded else [])]
    assert _cli_configs(bare) == _cli_configs(recorded)
    config, _, _ = _cli_configs(bare)
    assert config.lr_decay is not None and config.epochs > TrainConfig.epochs  # not the dataclass's


def test_a_flag_given_overrides_the_recipe():
    config, gates, per_epoch = _cli_configs(["--model", "lenet300", "--gates", "--epochs", "3",
                                             "--lr-decay", "0", "--snapshot-every", "0"])
    assert (config.epochs, config.lr_decay, gates.snapshot_every, per_epoch) == (3, None, 0, 0)
    config, gates, per_epoch = _cli_configs(["--model", "lenet5", "--gates"])
    assert gates.snapshot_every == 0 and per_epoch == 5  # set from the steps per epoch


@pytest.mark.host_only
def test_resume_takes_the_settings_the_checkpoint_recorded(mnist_dir, tmp_path):
    """A run started with other values than today's defaults (no learning-rate decay, epoch-end
    snapshots, as before the recipe became the default) continues from its own command."""
    quick = ["--model", "lenet300", "--gates", "--train-subset", "300", "--quiet",
             "--data", str(mnist_dir), "--out", str(tmp_path)]
    first = _train(*quick, "--epochs", "1", "--lr-decay", "0", "--snapshot-every", "0",
                   "--kappa", "3")
    assert first.returncode == 0, first.stderr
    more = _train(*quick, "--epochs", "2", "--resume")
    assert more.returncode == 0, more.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["config"]["lr_decay"] is None
    assert metrics["gate_config"]["kappa"] == 3.0 and metrics["gate_config"]["snapshot_every"] == 0
    with np.load(tmp_path / "history.npz") as history:
        assert len(history["theta_snapshot_steps"]) == 2  # one per epoch, as recorded
    refused = _train(*quick, "--epochs", "3", "--lr-decay", "5", "--resume")
    assert refused.returncode == 2 and "lr_decay: None in the checkpoint, 5.0 now" in refused.stderr


def test_snapshots_within_the_epoch_never_repeat_its_end(mnist):
    """Five steps per epoch, a snapshot every step: the epoch's last step is recorded once (by
    the epoch's end), so every period's mean gradient has estimates behind it."""
    from minibern.bernoulli.config import GateConfig
    from minibern.bernoulli.run import build_run

    config = TrainConfig(model="lenet300", epochs=2, train_subset=500, width_mult=0.1)
    trainer = build_run(config, mnist, GateConfig(), log=lambda *_: None, snapshots_per_epoch=5)
    trainer.fit()
    assert trainer.history["theta_snapshot_steps"] == list(range(1, 11))
    periods = np.asarray(trainer.history["gradient_snapshots"])
    assert np.all(np.abs(periods).max(axis=1) > 0)
