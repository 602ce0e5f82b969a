"""The fast kernels (minibern.kernels) against the reference layers, the naive loops and the
float64 numerical VJP: both im2col layouts, cache blocks, budget chunks, skipped input
gradients, float32 only, and the switch between the two paths.

Every fast Conv2D path (channel-major (L7) and channels-last (L7b) columns, one block or many,
one budget chunk or many, with or without the input gradient) must give the numbers of the
naive loop and of the float64 numerical VJP; the fast and reference layers must agree to
float32 rounding (max pooling and im2col/col2im: exactly); a training step must never compute
in float64 on either path.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minibern import backend as B
from minibern import gradcheck as G
from minibern import kernels
from minibern import layers as L
from minibern.bernoulli.gate import BernoulliGate
from minibern.bernoulli.gated_models import build_model
from minibern.kernels import conv as fast_conv
from minibern.kernels import pool as fast_pool
from minibern.kernels.im2col import col2im, col2im_rows, im2col, im2col_rows
from minibern.losses import softmax_cross_entropy
from minibern.optim import SGD
from tests import naive

LAYOUTS = ["channels_first", "channels_last"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fast():
    """The fast kernels, whatever the environment asks for: these tests are about them."""
    with kernels.using("fast"):
        yield


def _float64(host):
    return B.asarray(np.asarray(host, np.float64))


def _random_conv(rng, layout, dtype="float64"):
    n, c, f = (int(v) for v in rng.integers(1, 4, size=3))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    h, w = kh + int(rng.integers(0, 5)), kw + int(rng.integers(0, 5))
    layer = L.Conv2D(c, f, (kh, kw), stride=stride, pad=pad, rng=rng, dtype=dtype)
    layer.layout = layout
    layer.params["b"] = B.asarray(rng.standard_normal(f).astype(dtype))
    return layer, rng.standard_normal((n, c, h, w))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(5))
def test_conv2d_both_layouts_match_loop(layout, seed, fast):
    layer, x = _random_conv(np.random.default_rng(700 + seed), layout)
    got = B.to_numpy(layer.forward(_float64(x)))
    want = naive.conv2d(x, B.to_numpy(layer.params["W"]), B.to_numpy(layer.params["b"]),
                        layer.stride, layer.pad)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)
    assert layer._col.rows == (layout == "channels_last")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", range(4))
def test_conv2d_both_layouts_gradients(layout, seed, fast):
    rng = np.random.default_rng(800 + seed)
    layer, x = _random_conv(rng, layout)
    report = G.check_layer(layer, x, rng=rng, tol=1e-6)
    assert set(report.errors) == {"x", "W", "b"}


@pytest.mark.parametrize("layout", LAYOUTS + ["auto"])
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1)])
def test_conv2d_blocks_chunks_and_param_backward_agree(layout, stride, pad, fast):
    """Tiny cache blocks (one example each) and tiny budget chunks give the one-pass numbers;
    param_backward gives backward's gradients and no input gradient."""
    rng = np.random.default_rng(31 + stride)
    x = _float64(rng.standard_normal((7, 3, 9, 8)))
    reference = L.Conv2D(3, 4, (3, 2), stride=stride, pad=pad, rng=1, dtype="float64")
    reference.layout = layout
    y = reference.forward(x)
    dout = _float64(rng.standard_normal(y.shape))
    dx = B.to_numpy(reference.backward(dout))
    grads = {k: B.to_numpy(v) for k, v in reference.grads.items()}
    per_example = int(np.prod(y.shape[2:])) * 3 * 3 * 2 * 8
    for block_bytes, max_col_bytes in [(1, 1 << 30), (3 * per_example, 1 << 30),
                                       (1, 2 * per_example), (1 << 30, 3 * per_example)]:
        layer = L.Conv2D(3, 4, (3, 2), stride=stride, pad=pad, rng=1, dtype="float64",
                         max_col_bytes=max_col_bytes)
        layer.layout, layer.block_bytes = layout, block_bytes
        np.testing.assert_allclose(B.to_numpy(layer.forward(x)), B.to_numpy(y), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(B.to_numpy(layer.backward(dout)), dx, rtol=1e-12, atol=1e-12)
        for key, want in grads.items():
            np.testing.assert_allclose(B.to_numpy(layer.grads[key]), want, rtol=1e-12,
                                       atol=1e-12 * np.abs(want).max())
        layer.grads = {"W": None, "b": None}
        assert layer.param_backward(dout) is None
        for key, want in grads.items():
            np.testing.assert_allclose(B.to_numpy(layer.grads[key]), want, rtol=1e-12,
                                       atol=1e-12 * np.abs(want).max())


def test_conv2d_auto_layout_picks_the_longer_copy_run(fast):
    conv1, conv2 = L.Conv2D(1, 20, 5), L.Conv2D(20, 50, 5)
    conv1.forward(B.asarray(np.zeros((2, 1, 28, 28), np.float32)))   # KW·C = 5 < OW = 24
    conv2.forward(B.asarray(np.zeros((2, 20, 12, 12), np.float32)))  # KW·C = 100 ≥ OW = 8
    assert not conv1._col.rows and conv2._col.rows
    conv1.layout = "rows"
    with pytest.raises(ValueError, match="layout must be one of auto, channels_first, channels_last"):
        conv1.forward(B.asarray(np.zeros((2, 1, 28, 28), np.float32)))


def test_conv2d_chunked_batches_equal_one_batch(fast):
    rng = np.random.default_rng(5)
    x = _float64(rng.standard_normal((7, 2, 6, 6)))
    dout = _float64(rng.standard_normal((7, 3, 4, 4)))
    whole = L.Conv2D(2, 3, 3, rng=1, dtype="float64")
    # one example's buffer is 4*4*2*3*3*8 = 2304 bytes: chunks of 2 examples
    chunked = L.Conv2D(2, 3, 3, rng=1, dtype="float64", max_col_bytes=2 * 2304)
    assert len(fast_conv.chunks(chunked, x.shape, 8)) == 4
    # GEMMs of other shapes may run other BLAS kernels: compare on each result's scale
    y = B.to_numpy(whole.forward(x))
    np.testing.assert_allclose(B.to_numpy(chunked.forward(x)), y, rtol=1e-13,
                               atol=1e-13 * np.abs(y).max())
    dx = B.to_numpy(whole.backward(dout))
    np.testing.assert_allclose(B.to_numpy(chunked.backward(dout)), dx, rtol=1e-12,
                               atol=1e-12 * np.abs(dx).max())
    for key in ("W", "b"):  # sums over chunks: compare on the gradient's scale (summation order)
        want = B.to_numpy(whole.grads[key])
        np.testing.assert_allclose(B.to_numpy(chunked.grads[key]), want, rtol=1e-12,
                                   atol=1e-12 * np.abs(want).max())


def test_conv2d_refuses_an_example_larger_than_the_budget(fast):
    layer = L.Conv2D(2, 3, 3, max_col_bytes=1000)
    with pytest.raises(ValueError, match="im2col buffer needs 1152 bytes.*max_col_bytes=1000"):
        layer.forward(B.asarray(np.zeros((1, 2, 6, 6), np.float32)))



@pytest.mark.parametrize("seed", range(5))
def test_im2col_rows_is_the_transposed_im2col_and_col2im_rows_its_adjoint(seed):
    rng = np.random.default_rng(900 + seed)
    n, c = (int(v) for v in rng.integers(1, 4, size=2))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    stride, pad = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    shape = (n, c, kh + int(rng.integers(0, 6)), kw + int(rng.integers(0, 6)))
    oh, ow = (shape[2] + 2 * pad - kh) // stride + 1, (shape[3] + 2 * pad - kw) // stride + 1
    x = B.asarray(rng.standard_normal(shape))
    rows = B.to_numpy(im2col_rows(x, (kh, kw), stride, pad))
    cols = B.to_numpy(im2col(x, (kh, kw), stride, pad))
    # (L7b) and (L7) hold the same numbers: (n,oy,ox),(ky,kx,c) vs (c,ky,kx),(n,oy,ox)
    np.testing.assert_array_equal(rows.reshape(n, oh, ow, kh, kw, c),
                                  cols.reshape(c, kh, kw, n, oh, ow).transpose(3, 4, 5, 1, 2, 0))
    y = rng.standard_normal(rows.shape)
    lhs = float(np.sum(rows * y))
    rhs = float(np.sum(B.to_numpy(x) * B.to_numpy(col2im_rows(B.asarray(y), shape, (kh, kw), stride, pad))))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)  # (L13)


def test_im2col_and_col2im_write_into_views_of_larger_buffers():
    rng = np.random.default_rng(5)
    x = B.asarray(rng.standard_normal((5, 2, 6, 7)))
    kernel, oh, ow = (3, 2), 4, 6
    whole_cols, whole_rows = im2col(x, kernel), im2col_rows(x, kernel)
    xp = B.get_backend().xp
    big_cols = xp.zeros((2 * 3 * 2, 5 * oh * ow))
    big_rows = xp.zeros((5 * oh * ow, 3 * 2 * 2))
    for n0, n1 in [(0, 2), (2, 5)]:
        im2col(x[n0:n1], kernel, out=big_cols.reshape(2, 3, 2, 5, oh, ow)[:, :, :, n0:n1])
        im2col_rows(x[n0:n1], kernel, out=big_rows.reshape(5, oh, ow, 3, 2, 2)[n0:n1])
    np.testing.assert_array_equal(B.to_numpy(big_cols), B.to_numpy(whole_cols))
    np.testing.assert_array_equal(B.to_numpy(big_rows), B.to_numpy(whole_rows))
    for fold, col in ((col2im, whole_cols), (col2im_rows, whole_rows)):
        dx = xp.full((5, 2, 6, 7), 7.0)
        want = B.to_numpy(fold(col, (5, 2, 6, 7), kernel))
        got = fold(col, (5, 2, 6, 7), kernel, out=dx)
        assert got is dx  # overwritten, not added to the 7s
        np.testing.assert_array_equal(B.to_numpy(dx), want)
    with pytest.raises(ValueError, match=r"im2col: out has shape \(2, 3, 2, 4, 4, 6\)"):
        im2col(x, kernel, out=xp.zeros((2, 3, 2, 4, 4, 6)))


def test_sequential_without_input_gradient_skips_only_what_nobody_needs(kernels_name):
    rng = np.random.default_rng(3)
    calls = []

    class Spy(L.ReLU):
        def backward(self, dout):
            calls.append("spy")
            return super().backward(dout)

    def build():
        return L.Sequential(("select", L.SelectFeatures(np.array([4, 0, 2, 5]), 6)),
                            ("spy", Spy()), ("fc1", L.Dense(4, 3, rng=1, dtype="float64")),
                            ("relu", L.ReLU()), ("fc2", L.Dense(3, 2, rng=2, dtype="float64")))
    x = _float64(rng.standard_normal((5, 6)) + 0.1)
    dout = _float64(rng.standard_normal((5, 2)))
    full, lean = build(), build()
    full.forward(x)
    dx = full.backward(dout)
    assert dx.shape == (5, 6) and calls == ["spy"]
    lean.forward(x)
    calls.clear()
    assert lean.backward(dout, input_grad=False) is None
    assert calls == []  # the leading stateless layers are skipped
    for name, grad in full.named_gradients().items():
        np.testing.assert_allclose(B.to_numpy(lean.named_gradients()[name]), B.to_numpy(grad),
                                   rtol=1e-13)


def test_a_gate_in_front_still_gets_its_statistics(kernels_name):
    net = L.Sequential(("gate", BernoulliGate(4)), ("fc", L.Dense(4, 2, rng=0, dtype="float64")))
    x = _float64(np.random.default_rng(0).standard_normal((3, 4)))
    net.forward(x)
    assert net.backward(_float64(np.ones((3, 2))), input_grad=False) is None
    assert net["gate"].grad_xi is not None and net["fc"].grads["W"] is not None


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
@pytest.mark.parametrize("gates", [False, True])
def test_training_step_never_computes_in_float64(name, gates, backend_name, kernels_name,
                                                  monkeypatch):
    """Every ufunc and array function applied to device arrays during a float32 training step
    (forward, loss, backward, SGD update) returns float32 (or a non-float) — no silent upcast.
    The strict backend routes every operation through StrictArray, where we watch them."""
    if backend_name != "strict":
        pytest.skip("the strict backend sees every operation on device arrays")
    seen = []
    ufunc_hook, function_hook = B.StrictArray.__array_ufunc__, B.StrictArray.__array_function__

    def record(result, what):
        for item in result if isinstance(result, tuple) else (result,):
            dtype = getattr(item, "dtype", None)
            if dtype is not None and dtype.kind == "f" and dtype != np.float32:
                seen.append(f"{what} -> {dtype}")
        return result

    monkeypatch.setattr(B.StrictArray, "__array_ufunc__", lambda self, ufunc, method, *a, **k:
                        record(ufunc_hook(self, ufunc, method, *a, **k), f"{ufunc.__name__}.{method}"))
    monkeypatch.setattr(B.StrictArray, "__array_function__", lambda self, func, types, a, k:
                        record(function_hook(self, func, types, a, k), func.__name__))
    net = build_model(name, seed=0, gates=gates)
    rng = np.random.default_rng(0)
    for gate in (layer for _, layer in net if isinstance(layer, BernoulliGate)):
        gate.theta[:] = 0.7  # undecided: masks are sampled
        gate.rng = rng
    x = B.asarray(rng.random((4,) + net.input_shape, dtype=np.float32))
    labels = B.asarray(rng.integers(0, 10, 4))
    optimizer = SGD(lr=0.01, momentum=0.9)
    for _ in range(2):
        loss, dlogits = softmax_cross_entropy(net.forward(x), labels, check=False)
        net.backward(dlogits, input_grad=False)
        optimizer.step(net)
    assert loss.dtype == np.float32 and dlogits.dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.named_gradients().values())
    assert seen == []


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 3), (2, 3)])
def test_maxpool_in_blocks_of_examples_matches_one_block(size, stride, monkeypatch, fast):
    rng = np.random.default_rng(size + stride)
    x = _float64(rng.integers(0, 3, size=(5, 2, 9, 8)).astype(np.float64))  # many ties
    whole = L.MaxPool2D(size, stride)
    y = whole.forward(x)
    dout = _float64(rng.standard_normal(y.shape))
    dx = B.to_numpy(whole.backward(dout))
    monkeypatch.setattr(fast_pool, "PLANES_BYTES", 1)  # one example per block
    blocked = L.MaxPool2D(size, stride)
    np.testing.assert_array_equal(B.to_numpy(blocked.forward(x)), B.to_numpy(y))
    np.testing.assert_array_equal(B.to_numpy(blocked.backward(dout)), dx)
    np.testing.assert_array_equal(B.to_numpy(blocked._argmax), B.to_numpy(whole._argmax))


# ---------------------------------------------------------------------------------------------
# The reference layers and the fast kernels agree.
# ---------------------------------------------------------------------------------------------
def _both_paths(make_layer, x, dout_seed):
    """forward, dx and the gradients of ``make_layer()`` on each kernel path, as host arrays."""
    results = {}
    for name in kernels.NAMES:
        with kernels.using(name):
            layer = make_layer()
            y = layer.forward(B.asarray(x))
            dout = np.random.default_rng(dout_seed).standard_normal(y.shape).astype(x.dtype)
            dx = layer.backward(B.asarray(dout))
            results[name] = {"y": B.to_numpy(y), "dx": B.to_numpy(dx),
                             **{key: B.to_numpy(g) for key, g in layer.grads.items()}}
    return results["reference"], results["fast"]


def _assert_float32_close(reference, fast):
    """Equal up to float32 rounding of sums in another order, on each array's scale."""
    assert reference.keys() == fast.keys()
    for key, want in reference.items():
        got = fast[key]
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape, key
        scale = float(np.abs(want).max()) or 1.0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=key)


@pytest.mark.parametrize("seed", range(4))
def test_dense_reference_and_fast_agree(seed):
    rng = np.random.default_rng(1000 + seed)
    n, d, m = (int(v) for v in rng.integers(1, 40, size=3))
    x = rng.standard_normal((n, d)).astype(np.float32)
    reference, fast_path = _both_paths(lambda: L.Dense(d, m, rng=seed), x, seed)
    _assert_float32_close(reference, fast_path)


@pytest.mark.parametrize("layout", LAYOUTS + ["auto"])
@pytest.mark.parametrize("seed", range(4))
def test_conv2d_reference_and_fast_agree(layout, seed):
    rng = np.random.default_rng(1100 + seed)
    n, c, f = (int(v) for v in rng.integers(1, 6, size=3))
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    x = rng.standard_normal((n, c, kh + int(rng.integers(0, 7)),
                             kw + int(rng.integers(0, 7)))).astype(np.float32)

    def make():
        layer = L.Conv2D(c, f, (kh, kw), stride=stride, pad=pad, rng=seed)
        layer.set_parameter("b", B.asarray(np.linspace(-1, 1, f, dtype=np.float32)))
        layer.layout, layer.block_bytes = layout, 1 + seed * 500  # a few cache blocks
        return layer

    reference, fast_path = _both_paths(make, x, seed)
    _assert_float32_close(reference, fast_path)


@pytest.mark.parametrize("size,stride,shape", [(2, 2, (3, 4, 8, 6)), (2, 1, (2, 3, 5, 7)),
                                               (3, 2, (2, 2, 7, 6)), (1, 1, (1, 2, 3, 3))])
def test_maxpool_reference_and_fast_give_the_same_numbers(size, stride, shape):
    x = np.random.default_rng(size + stride).integers(0, 3, size=shape).astype(np.float32)
    reference, fast_path = _both_paths(lambda: L.MaxPool2D(size, stride), x, 7)
    for key in reference:  # comparisons and copies only: the same bits
        np.testing.assert_array_equal(fast_path[key], reference[key], err_msg=key)


@pytest.mark.parametrize("seed", range(4))
def test_reference_and_fast_im2col_give_the_same_numbers(seed):
    rng = np.random.default_rng(1200 + seed)
    n, c = (int(v) for v in rng.integers(1, 4, size=2))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    stride, pad = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    shape = (n, c, kh + int(rng.integers(0, 6)), kw + int(rng.integers(0, 6)))
    x = B.asarray(rng.standard_normal(shape).astype(np.float32))
    col = L.im2col(x, (kh, kw), stride, pad)
    np.testing.assert_array_equal(B.to_numpy(im2col(x, (kh, kw), stride, pad)), B.to_numpy(col))
    y = B.asarray(rng.standard_normal(tuple(col.shape)).astype(np.float32))
    np.testing.assert_array_equal(B.to_numpy(col2im(y, shape, (kh, kw), stride, pad)),
                                  B.to_numpy(L.col2im(y, shape, (kh, kw), stride, pad)))


def test_conv2d_backward_runs_the_kernels_its_forward_ran(backend_name):
    rng = np.random.default_rng(13)
    x = B.asarray(rng.standard_normal((3, 2, 7, 7)))
    dout = B.asarray(rng.standard_normal((3, 4, 5, 5)))
    want = {}
    for name in kernels.NAMES:
        with kernels.using(name):
            layer = L.Conv2D(2, 4, 3, rng=0, dtype="float64")
            layer.forward(x)
            want[name] = B.to_numpy(layer.backward(dout))
        other = "fast" if name == "reference" else "reference"
        with kernels.using(name):
            layer.forward(x)
        with kernels.using(other):  # switched between forward and backward
            np.testing.assert_array_equal(B.to_numpy(layer.backward(dout)), want[name])
    np.testing.assert_allclose(want["fast"], want["reference"], rtol=1e-12, atol=1e-12)


@pytest.mark.host_only
def test_kernels_switch_refuses_bad_names_and_restores():
    before = kernels.current()
    for bad in ("quick", "", None, 1):
        with pytest.raises(ValueError, match=r"kernels must be one of fast, reference, got .*"
                                             r"minibern.kernels.use\('reference'\)"):
            kernels.use(bad)
    assert kernels.current() == before
    with kernels.using(" Reference ") as name:
        assert name == "reference" and not kernels.fast()
        with kernels.using("fast"):
            assert kernels.fast()
        assert kernels.current() == "reference"
    assert kernels.current() == before


@pytest.mark.host_only
def test_environment_variable_picks_the_kernels():
    code = "from minibern import kernels; print(kernels.current())"
    env = {key: value for key, value in os.environ.items() if key != kernels.ENV_VAR}
    env["PYTHONPATH"] = str(REPO)
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True, cwd=REPO)
    assert default.stdout.strip() == "fast"
    env[kernels.ENV_VAR] = "reference"
    chosen = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True, cwd=REPO)
    assert chosen.stdout.strip() == "reference"
    env[kernels.ENV_VAR] = "slow"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode != 0 and "MINIBERN_KERNELS must be one of fast, reference" in bad.stderr
