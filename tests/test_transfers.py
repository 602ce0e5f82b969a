"""Host↔device transfers counted by the strict backend: the counter itself, and a gated
training step that makes a small constant number of them (docs/derivations/estimators.md,
"Transfers per step")."""
import numpy as np
import pytest

from minibern import backend as B
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.estimators import make_estimator
from minibern.bernoulli.gated_models import lenet5_caffe, lenet300_100
from minibern.bernoulli.hook import GateTrainer
from minibern.bernoulli.topology import gate_layers
from minibern.training.trainer import Split, TrainConfig, Trainer
from minibern.training.transfers import StepTransfers

#: A gated step after the first: one mask per gate layer and the estimator's visited gates
#: to the device, the estimator's sums back, the loss and one pair count per gate layer.
GATED_STEP = {"to_device": 4, "to_host": 1, "scalars": 4}


def _strict_only(backend_name):
    if backend_name != "strict":
        pytest.skip("only the strict backend counts transfers")


def test_counter_sees_each_kind_of_transfer(backend_name):
    _strict_only(backend_name)
    host = np.arange(6.0).reshape(2, 3)
    with B.counting_transfers() as outer:
        x = B.asarray(host)
        y = B.asarray(x)  # already on the device: no copy
        assert y is not None and outer.as_dict() == {"to_device": 1, "to_host": 0, "scalars": 0}
        with B.counting_transfers() as inner:
            B.to_numpy(x * 2)
            total = B.to_float(x.sum())
            xp = B.get_array_module(x)
            count = int(xp.flatnonzero(x > 1).shape[0])  # a data-sized result: one count read
            assert bool((x > 4).any())
            picked = x[x > 2]  # boolean indexing, data-sized
        assert (total, count, picked.shape) == (15.0, 4, (3,))
        assert inner.as_dict() == {"to_device": 0, "to_host": 1, "scalars": 4}
        assert inner.total == 5
    assert outer.as_dict() == {"to_device": 1, "to_host": 1, "scalars": 4}


def test_numpy_arrays_are_not_counted(backend_name):
    if backend_name != "numpy":
        pytest.skip("the numpy backend has no device")
    before = B.transfer_counts().as_dict()
    with B.counting_transfers() as counts:
        x = B.asarray(np.ones(3))
        B.to_float(B.to_numpy(x).sum())
    assert counts.total == 0 and B.transfer_counts().as_dict() == before


def _gated_step_counts(build, width, subset, batch, steps=3, fused=False):
    net = build(width, seed=0, gates=True, theta_init=0.9)  # every gate undecided: masks drawn
    rng = np.random.default_rng(0)
    images = rng.random((batch * steps, *net.input_shape), dtype=np.float32)
    labels = rng.integers(0, 10, batch * steps)
    splits = {"train": Split(B.asarray(images), B.asarray(labels)),
              "val": Split(B.asarray(images[:batch]), B.asarray(labels[:batch]))}
    hook = GateTrainer(net, GateConfig(subset=subset, first_subset=subset,
                                       fused_estimator=fused), 1000)
    probe = StepTransfers()  # last: it sees the other hooks' transfers
    trainer = Trainer(net, splits, TrainConfig(epochs=1, batch_size=batch),
                      hooks=[hook, probe], log=lambda *_: None)
    hook.before_fit(trainer)
    trainer.train_epoch()
    return probe.per_step()  # the steps after the first


@pytest.mark.parametrize("width", [0.5, 1.0])
@pytest.mark.parametrize("subset", [8, 32])
def test_gated_lenet300_step_makes_a_constant_number_of_transfers(width, subset, backend_name):
    _strict_only(backend_name)
    assert _gated_step_counts(lenet300_100, width, subset, batch=50) == [GATED_STEP] * 2


@pytest.mark.parametrize("subset", [8, 32])
def test_the_fused_estimator_reads_back_one_pair_count_for_all_layers(subset, backend_name):
    """--fused-estimator: one flatnonzero for every layer, the layers' split points and the
    sums come back: 2 copies to the host and 2 scalar pulls (the loss, the pair count)."""
    _strict_only(backend_name)
    fused = {"to_device": 4, "to_host": 2, "scalars": 2}
    assert _gated_step_counts(lenet300_100, 1.0, subset, batch=50, fused=True) == [fused] * 2


@pytest.mark.parametrize("subset", [2, 8])
def test_gated_lenet5_step_makes_the_same_transfers_for_any_number_of_visits(subset, backend_name):
    _strict_only(backend_name)
    assert _gated_step_counts(lenet5_caffe, 0.5, subset, batch=8) == [GATED_STEP] * 2


def test_op_counter_counts_each_kind_of_device_operation(backend_name):
    """A known sequence: every ufunc, array function, creation, gather, item assignment and
    copy is one operation; views, reshapes and uploads (transfers) are none."""
    _strict_only(backend_name)
    host = np.arange(6.0)
    with B.counting_ops() as outer:
        x = B.asarray(host)  # an upload: a transfer, not an operation
        xp = B.get_array_module(x)
        with B.counting_ops() as inner:
            y = x + 1  # ufunc
            y.sum()  # ufunc (a reduction)
            index = xp.zeros(2, dtype=np.int64)  # create
            xp.take(y, index)  # function
            y[index]  # index (a gather)
            view = y[1:3].reshape(2, 1)  # views: none
            y[:2] = 5.0  # index (an assignment)
            y.astype(np.float32)  # method
        assert view.shape == (2, 1)
        assert inner.by_kind == {"ufunc": 2, "function": 1, "create": 1, "index": 2,
                                 "method": 1}
        assert inner.total == 7
    assert outer.total == inner.total  # the upload counted as a transfer only


def test_numpy_arrays_make_no_operations(backend_name):
    if backend_name != "numpy":
        pytest.skip("the numpy backend has no device")
    with B.counting_ops() as counts:
        (B.asarray(np.ones(3)) + 1).sum()
    assert counts.total == 0


def _estimate_ops(batch, subset):
    net = lenet300_100(0.2, seed=0, gates=True, theta_init=0.9)
    rng = np.random.default_rng(0)
    images = B.asarray(rng.random((batch, *net.input_shape), dtype=np.float32))
    labels = B.asarray(rng.integers(0, 10, batch))
    for _, _, gate in gate_layers(net):
        gate.rng = rng
    net.forward(images)
    estimator = make_estimator("removal", subset, subset)
    with B.counting_ops() as counts:
        estimator.estimate(net, images, labels, rng=rng)
    return counts.total


def test_the_removal_estimate_is_a_fixed_number_of_device_operations(backend_name):
    """The batch's and every layer's flipped losses are one cross-entropy and one scatter:
    the operations of an estimate depend on the network's layers, not on the batch or the
    gates visited."""
    _strict_only(backend_name)
    assert _estimate_ops(8, 2) == _estimate_ops(16, 2) == _estimate_ops(16, 5)
