"""The decision and prune conditions (minibern.bernoulli.rules), the pruning trigger and its
prune=False measurement (minibern.bernoulli.prune_trigger), and the per-gate state they update
(minibern.bernoulli.state), on hand-made arrays."""
from types import SimpleNamespace

import numpy as np

from minibern.bernoulli.prune_trigger import PruningTrigger, WouldBePruned
from minibern.bernoulli.rules import decide, prune_rule, streak
from minibern.bernoulli.state import FIELDS, GateState


def test_streak_counts_consecutive_observations_and_resets():
    run = np.array([0, 3, 5, 2], dtype=np.int64)
    out = streak(np.array([True, True, False, False]), run)
    np.testing.assert_array_equal(out, [1, 4, 0, 0])
    np.testing.assert_array_equal(run, [0, 3, 5, 2])  # pure: the input is not modified
    assert out.dtype == np.int64


def test_prune_rule_is_a_patience_threshold():
    np.testing.assert_array_equal(prune_rule(np.array([0, 30, 2]), 30), [False, True, False])


def _config(alpha=0.05, at_one=False):
    return SimpleNamespace(decide_alpha=alpha, decide_min_visits=10, decide_at_one=at_one,
                           average_visits=20)


def _state_with_averages(mean, visits=100, var=1e-4):
    state = GateState(len(mean))
    state.mean[:], state.visits[:], state.var[:] = mean, visits, var
    return state


def test_decide_freezes_and_certifies_only_moved_gates_whose_test_agrees_with_their_vertex():
    theta = np.array([0.0, 0.0, 0.0, 1.0, 0.5])
    state = _state_with_averages([0.5, -0.5, 0.5, -0.5, 0.5])  # ḡ > 0 pushes θ towards 0
    moved = np.array([True, True, False, True, True])
    decide(theta, state, moved, _config())
    np.testing.assert_array_equal(state.certified, [True, False, False, False, False])
    np.testing.assert_array_equal(state.frozen, state.certified)
    decide(theta, state, moved, _config(at_one=True))  # (C10′): gates at 1 too
    np.testing.assert_array_equal(state.certified, [True, False, False, True, False])


def test_decide_does_nothing_without_a_level_or_before_the_minimum_visits():
    theta = np.zeros(2)
    state = _state_with_averages([0.5, 0.5], visits=[100, 9])
    decide(theta, state, np.ones(2, dtype=bool), _config(alpha=0.0))
    assert not state.frozen.any()
    decide(theta, state, np.ones(2, dtype=bool), _config())
    np.testing.assert_array_equal(state.certified, [True, False])


def test_trigger_counts_moved_and_frozen_gates_at_zero_until_the_patience():
    state, trigger = GateState(4), PruningTrigger(patience=2)
    state.frozen[3] = True
    theta = np.array([0.0, 0.0, 0.3, 0.0])
    moved = np.array([True, False, True, False])
    for _ in range(2):
        trigger.count(state, theta, moved)
    np.testing.assert_array_equal(state.zero_run, [2, 0, 0, 2])  # unmoved, unfrozen: no visit
    np.testing.assert_array_equal(trigger.ready(state), [True, False, False, True])
    trigger.count(state, np.array([0.1, 0.0, 0.0, 0.0]), moved)
    np.testing.assert_array_equal(state.zero_run, [0, 0, 1, 3])


def test_gate_state_keeps_saves_and_restores_every_field_together():
    state = GateState(4)
    state.mean[:] = [1, 2, 3, 4]
    state.frozen[:] = [True, False, True, False]
    state.zero_run[:] = [0, 7, 0, 9]
    state.keep(np.array([False, True, True, False]))
    saved = state.state_dict()
    assert set(saved) == set(FIELDS)
    np.testing.assert_array_equal(saved["mean"], [2, 3])
    np.testing.assert_array_equal(saved["frozen"], [False, True])
    np.testing.assert_array_equal(saved["zero_run"], [7, 0])
    assert all(value.shape == (2,) and value.dtype == np.dtype(FIELDS[key])
               for key, value in saved.items())
    saved["mean"][0] = 99  # a copy
    assert state.mean[0] == 2
    other = GateState(2)
    old = {k: v for k, v in state.state_dict().items() if k not in ("visits", "certified")}
    other.load_state_dict({**old, "high": np.ones(2), "low": np.ones(2)})  # an older file
    np.testing.assert_array_equal(other.mean, [2, 3])
    assert not other.certified.any() and not hasattr(other, "high")


def test_would_be_pruned_records_gates_that_leave_zero_or_come_back():
    measured = WouldBePruned([(0, "g", SimpleNamespace(n_units=3))])
    measured.mark("g", np.array([True, True, False]), np.array([0.0, 0.0, 0.0]))
    measured.mark("g", np.zeros(3, dtype=bool), np.array([0.3, 0.7, 0.9]))
    assert measured.report() == {"marked": {"g": 2}, "left_zero": {"g": 2}, "came_back": {"g": 1}}
    restored = WouldBePruned([(0, "g", SimpleNamespace(n_units=3))])
    restored.load_state_dict(measured.state_dict())
    np.testing.assert_array_equal(restored.flags["g"]["came_back"], [False, True, False])
