"""The tutorials run end to end (quick mode) and leave their figures and run files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.host_only


def test_tutorial_1_quick(mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    done = subprocess.run([sys.executable, str(REPO / "tutorials" / "01_mnist_lenet300.py"),
                           "--quick", "--data", str(mnist_dir), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tutorial 1: LeNet-300-100, 1 epochs, test error" in done.stdout
    for name in ("loss.png", "val_error.png", "epoch_seconds.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_error"] < 0.3


def test_tutorial_2_quick(mnist_dir, tmp_path):
    pytest.importorskip("matplotlib")
    done = subprocess.run([sys.executable, str(REPO / "tutorials" / "02_bernoulli_gates_lenet300.py"),
                           "--quick", "--data", str(mnist_dir), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tutorial 2: gated LeNet-300-100, 2 epochs: architecture" in done.stdout
    for name in ("theta_hist.png", "theta_decided.png", "units_per_layer.png", "val_error.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [g["name"] for g in metrics["gates"]] == ["gate_in", "gate1", "gate2"]
    assert metrics["export_test_error"] == metrics["test_error"]
    assert (tmp_path / "model.npz").stat().st_size > 0
