"""The test error of every epoch (history ``test_error``) and metrics.json's ``val_chosen``.

Recording the test error must leave the run exactly as one that never looked at the test set
(no random draw, no change to the weights or the gates); ``val_chosen`` is the test error at
the epoch of lowest validation error; a checkpoint written before the record resumes with NaN
for its epochs.
"""
import math

import numpy as np
import pytest

from minibern import backend as B
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.run import build_run
from minibern.training import checkpoint as ckpt
from minibern.training.trainer import TrainConfig, Trainer, val_chosen

#: θ₀ = 0.9: every gate undecided from the start, so the masks are drawn at every step and a
#: draw the evaluation made would shift all that follow.
GATES = GateConfig(theta_init=0.9, subset=8, first_subset=8, kappa=3.0, prune_patience=3)


def _gated(mnist, epochs=2, **overrides):
    config = TrainConfig(model="lenet300", epochs=epochs, train_subset=600, width_mult=0.1,
                         batch_size=50, seed=4, **overrides)
    return build_run(config, mnist, GATES, log=lambda *_: None)


def _blind(trainer):
    """``trainer`` made never to evaluate the test split (its test errors read NaN)."""
    def error_rate(split):
        return math.nan if split is trainer.splits["test"] else Trainer.error_rate(trainer, split)
    trainer.error_rate = error_rate
    return trainer


def _state(trainer) -> dict:
    """Everything the run ends with but the test errors: weights, θ, optimiser, both streams,
    the history."""
    arrays, meta = trainer.state()
    history = {k: v for k, v in arrays.items() if k.startswith("history/")
               and k not in ("history/test_error", "history/epoch_seconds")}
    kept = {k: v for k, v in arrays.items() if not k.startswith("history/")}
    streams = {key: meta[key] for key in ("batch_rng", "gate_rng", "global_step")}
    return {**kept, **history}, streams


def test_recording_the_test_error_changes_nothing_in_the_training(mnist):
    seen, blind = _gated(mnist), _blind(_gated(mnist))
    seen.fit()
    blind.fit()
    (arrays_seen, streams_seen), (arrays_blind, streams_blind) = _state(seen), _state(blind)
    assert streams_seen == streams_blind
    assert sorted(arrays_seen) == sorted(arrays_blind)
    assert any(key.startswith("param/") for key in arrays_seen)
    for key, value in arrays_seen.items():
        assert value.tobytes() == arrays_blind[key].tobytes(), key
    assert np.isnan(blind.history["test_error"]).all()
    assert not np.isnan(seen.history["test_error"]).any()


def test_the_history_holds_each_epochs_test_error_and_val_chosen_picks_by_validation(mnist):
    trainer = _gated(mnist, epochs=3)
    metrics = trainer.fit()
    tests, vals = trainer.history["test_error"], trainer.history["val_error"]
    assert len(tests) == len(vals) == 3
    assert tests[-1] == metrics["test_error"] == trainer.error_rate(trainer.splits["test"])
    best = int(np.argmin(vals))
    assert metrics["val_chosen"] == {"epoch": best + 1, "val_error": vals[best],
                                     "test_error": tests[best]}


def test_val_chosen_takes_the_first_of_tied_epochs_and_no_test_error_it_lacks():
    history = {"val_error": [0.3, 0.1, 0.2, 0.1], "test_error": [0.4, math.nan, 0.25, 0.12]}
    assert val_chosen(history) == {"epoch": 2, "val_error": 0.1, "test_error": None}
    history["val_error"][1] = 0.15
    assert val_chosen(history) == {"epoch": 4, "val_error": 0.1, "test_error": 0.12}
    assert val_chosen({"val_error": []}) is None


@pytest.mark.parametrize("drop_key", [True, False])
def test_a_checkpoint_without_the_record_resumes_with_nan_for_its_epochs(mnist, tmp_path,
                                                                         drop_key):
    straight = _gated(mnist)
    straight.fit(tmp_path / "straight")
    first = _gated(mnist, epochs=1)
    first.fit(tmp_path / "old")
    path = tmp_path / "old" / "checkpoint.npz"
    arrays, meta = ckpt.read_npz(path)
    if drop_key:  # as the code before the record wrote it
        del arrays["history/test_error"]
    ckpt.write_npz(path, arrays, meta)
    resumed = _gated(mnist)
    resumed.fit(tmp_path / "old", resume=True)
    tests = resumed.history["test_error"]
    assert len(tests) == 2 and tests[1] == straight.history["test_error"][1]
    assert math.isnan(tests[0]) == drop_key
    with np.load(tmp_path / "old" / "history.npz") as history:
        assert history["test_error"].tobytes() == np.asarray(tests).tobytes()
    for name, value in straight.net.named_parameters().items():
        np.testing.assert_array_equal(B.to_numpy(resumed.net.named_parameters()[name]),
                                      B.to_numpy(value))


def test_the_final_test_error_is_the_last_epochs_record_not_a_second_pass(mnist):
    """metrics.json's ``test_error`` is the history's last entry; the test split is evaluated
    once per epoch, not once more at the end."""
    trainer = _gated(mnist)
    passes = []

    def error_rate(split):
        passes.append(split is trainer.splits["test"])
        return Trainer.error_rate(trainer, split)
    trainer.error_rate = error_rate
    metrics = trainer.fit()
    assert sum(passes) == trainer.config.epochs
    assert metrics["test_error"] == trainer.history["test_error"][-1]
