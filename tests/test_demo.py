"""The README's demo trains, and is reproducible: same seed and backend, same numbers."""
import subprocess
import sys

import pytest

from minibern.cli.demo import run_demo


def test_demo_learns_and_repeats_exactly(backend_name):
    first = run_demo(seed=3, epochs=4, log=lambda *_: None)
    again = run_demo(seed=3, epochs=4, log=lambda *_: None)
    assert first["test_accuracy"] > 0.8  # 4 classes: chance is 0.25
    assert first["train_accuracy"] == again["train_accuracy"]
    assert first["test_accuracy"] == again["test_accuracy"]


@pytest.mark.host_only
def test_cli_demo_and_unknown_command():
    ok = subprocess.run([sys.executable, "-m", "minibern", "demo", "--epochs", "1"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "test accuracy" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "minibern", "trian"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'trian'" in bad.stderr


@pytest.mark.host_only
@pytest.mark.parametrize("args,message", [(["--epochs", "0"], "epochs must be an integer >= 1"),
                                          (["--epochs", "-3"], "epochs must be an integer >= 1"),
                                          (["--seed", "-1"], "seed must be an integer >= 0")])
def test_cli_demo_refuses_bad_arguments(args, message):
    # defect 8: demo validated none of its arguments
    done = subprocess.run([sys.executable, "-m", "minibern", "demo", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
