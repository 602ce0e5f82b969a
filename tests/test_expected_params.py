"""The expected parameter count (B14′) of docs/derivations/bernoulli_objective.md: its unit costs
are its θ-gradient (float64 finite differences), at a vertex it is the kept network's parameter
count, and layouts it cannot price are refused."""
import numpy as np
import pytest

from minibern import gradcheck as G
from minibern import layers as L
from minibern.bernoulli import objective as O
from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.gated_models import build_model
from minibern.bernoulli.topology import gate_layers, weight_blocks
from minibern.training.summary import count_parameters

KAPPA = 0.03
MODELS = [("lenet300", 0.05), ("lenet5", 0.2)]


def _flat(thetas: dict):
    return np.concatenate(list(thetas.values()))


def _unflat(names_sizes, x):
    out, start = {}, 0
    for name, size in names_sizes:
        out[name] = x[start:start + size]
        start += size
    return out


@pytest.mark.parametrize("model,width", MODELS)
def test_unit_costs_are_the_gradient_of_the_expected_count(model, width):
    net = build_model(model, width, gates=True)
    blocks = weight_blocks(net)
    rng = np.random.default_rng(3)
    thetas = {name: rng.uniform(0.05, 0.95, gate.n_units) for _, name, gate in gate_layers(net)}
    sizes = [(name, theta.size) for name, theta in thetas.items()]
    numeric = G.numerical_vjp(
        lambda x: O.expected_parameters(blocks, _unflat(sizes, x), KAPPA)[0], _flat(thetas))
    analytic = _flat(O.expected_parameters(blocks, thetas, KAPPA)[1])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("model,width", MODELS)
def test_at_a_vertex_the_expected_count_is_the_kept_networks(model, width):
    net = build_model(model, width, gates=True)
    rng = np.random.default_rng(7)
    thetas = {name: (rng.random(gate.n_units) < 0.6).astype(float)
              for _, name, gate in gate_layers(net)}
    value = O.expected_parameters(weight_blocks(net), thetas, 1.0)[0]
    kept = {name: int(theta.sum()) for name, theta in thetas.items()}
    assert value == count_parameters(net, kept=kept)
    assert value < count_parameters(net)


def test_a_unit_costs_its_weights_to_the_kept_units_on_both_sides():
    net = build_model("lenet300", 0.05, gates=True)  # 784-15-5-10
    thetas = {name: np.ones(gate.n_units) for _, name, gate in gate_layers(net)}
    thetas["gate_in"][:684] = 0.0  # 100 inputs expected to be kept
    costs = O.expected_parameters(weight_blocks(net), thetas, 1.0)[1]
    assert costs["gate_in"][0] == 15  # its weights to h1
    assert costs["gate1"][0] == 100 + 1 + 5  # from the kept inputs, its bias, to h2
    assert costs["gate2"][0] == 15 + 1 + 10


def test_two_gates_on_one_side_of_a_layer_are_refused():
    rng = np.random.default_rng(0)
    net = L.Sequential(("fc1", L.Dense(6, 4, rng=rng)), ("gate_a", BernoulliGate(4)),
                       ("gate_b", BernoulliGate(4)), ("fc2", L.Dense(4, 2, rng=rng)))
    with pytest.raises(ValueError, match="at most one on each side.*--kappa-per-param"):
        weight_blocks(net)


def test_both_unit_prices_at_once_are_refused():
    with pytest.raises(ValueError, match="choose one"):
        GateConfig(kappa_per_param=True, kappa_expected_params=True).validate()


def test_unit_prices_follow_removed_units_at_once():
    """After units leave the arrays, every κ_i of (B14′) is for the new widths before the next
    step: the end-of-run audit may come first."""
    from minibern import backend as B
    from minibern.bernoulli.audit import full_data_gradients
    from minibern.bernoulli.hook import GateTrainer
    net = build_model("lenet300", 0.05, gates=True)  # 784-15-5-10
    hook = GateTrainer(net, GateConfig(kappa=KAPPA, kappa_expected_params=True), n_data=1000)
    hook.load_structure({"unit_index/gate1": np.arange(3, 15)})  # 3 h1 units removed
    for _, name, gate in hook.gates:
        assert hook.kappa[name].shape == (gate.n_units,)
    assert hook.kappa["gate_in"][0] == pytest.approx(KAPPA * 12)  # weights to the 12 h1 left
    rng = np.random.default_rng(0)
    images = B.asarray(rng.random((20, 784)).astype(np.float32))
    labels = B.asarray(rng.integers(0, 10, 20))
    gradients = full_data_gradients(net, images, labels, hook.kappa, 1000)
    assert gradients["gate1"].shape == (12,)
