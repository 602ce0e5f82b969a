"""The snap and prune conditions (minibern.bernoulli.rules) and the per-gate state they update
(minibern.bernoulli.state), on hand-made arrays."""
import numpy as np

from minibern.bernoulli.rules import keep_rule, prune_rule, streak, zero_rule
from minibern.bernoulli.state import FIELDS, GateState


def test_streak_counts_consecutive_observations_and_resets():
    run = np.array([0, 3, 5, 2], dtype=np.int64)
    out = streak(np.array([True, True, False, False]), run)
    np.testing.assert_array_equal(out, [1, 4, 0, 0])
    np.testing.assert_array_equal(run, [0, 3, 5, 2])  # pure: the input is not modified
    assert out.dtype == np.int64


def test_keep_rule_waits_for_the_warm_up_then_needs_the_patience():
    high = np.array([49, 50, 80])
    assert keep_rule(high, patience=50, clock=4.99, after=5.0) is None
    np.testing.assert_array_equal(keep_rule(high, patience=50, clock=5.0, after=5.0),
                                  [False, True, True])


def test_zero_and_prune_rules_are_patience_thresholds():
    np.testing.assert_array_equal(zero_rule(np.array([29, 30, 31]), 30), [False, True, True])
    np.testing.assert_array_equal(prune_rule(np.array([0, 30, 2]), 30), [False, True, False])


def test_gate_state_keeps_saves_and_restores_every_field_together():
    state = GateState(4)
    state.high[:] = [1, 2, 3, 4]
    state.frozen[:] = [True, False, True, False]
    state.zero_run[:] = [0, 7, 0, 9]
    state.keep(np.array([False, True, True, False]))
    saved = state.state_dict()
    assert set(saved) == set(FIELDS)
    np.testing.assert_array_equal(saved["high"], [2, 3])
    np.testing.assert_array_equal(saved["frozen"], [False, True])
    np.testing.assert_array_equal(saved["zero_run"], [7, 0])
    assert all(value.shape == (2,) and value.dtype == np.dtype(FIELDS[key])
               for key, value in saved.items())
    saved["high"][0] = 99  # a copy
    assert state.high[0] == 2
    other = GateState(2)
    other.load_state_dict({k: v for k, v in state.state_dict().items()
                           if k not in ("marked", "left_zero", "came_back")})  # older files
    np.testing.assert_array_equal(other.high, [2, 3])
    assert not other.marked.any()


def test_mark_records_gates_that_leave_zero_or_come_back():
    state = GateState(3)
    state.mark(np.array([True, True, False]), np.array([0.0, 0.0, 0.0]))
    state.mark(np.zeros(3, dtype=bool), np.array([0.3, 0.7, 0.9]))
    np.testing.assert_array_equal(state.marked, [True, True, False])
    np.testing.assert_array_equal(state.left_zero, [True, True, False])
    np.testing.assert_array_equal(state.came_back, [False, True, False])
