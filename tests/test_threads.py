"""Kernel threads (minibern.kernels.threads): blocks on a pool, with the numbers a thread count
fixes.

The element-wise kernels split over threads must give exactly the numbers of the unsplit
kernel (each output element is computed by the same operations in the same order); the
layers whose matrix products split too must agree with one thread to float32 rounding and
repeat their own bits; the split must cover every example once; an error in a block must
surface; bad thread counts are refused with the fix; the BLAS goes to one thread and back.
Only the fast kernels split: these tests run them, and check that the reference layers hand
nothing to the pool.
"""
import threading

import numpy as np
import pytest

from minibern import backend as B
from minibern import kernels
from minibern import layers as L
from minibern.kernels import blas
from minibern.kernels import pool as fast_pool
from minibern.kernels import threads as T
from minibern.kernels.im2col import col2im, col2im_rows, im2col, im2col_rows


@pytest.fixture(autouse=True)
def threads_as_found():
    """Every test runs the fast kernels, and leaves the kernel threads unread and the BLAS at
    its own thread count."""
    with kernels.using("fast"):
        yield
    T._use(None)


@pytest.fixture
def always_split(monkeypatch):
    """Split every kernel, however small, over three threads."""
    monkeypatch.setattr(T, "MIN_PARALLEL_BYTES", 0)
    with T.using_threads(3):
        yield


@pytest.mark.host_only
@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("parts", range(1, 5))
def test_split_covers_every_example_once(n, parts):
    blocks = T.split(n, parts)
    covered = [i for start, stop in blocks for i in range(start, stop)]
    assert covered == list(range(n))
    assert len(blocks) == min(n, parts)
    sizes = [stop - start for start, stop in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.host_only
def test_blocks_run_on_pool_threads_and_cover_the_examples(always_split):
    seen = []
    lock = threading.Lock()

    def kernel(start, stop):
        with lock:
            seen.append((start, stop, threading.current_thread() is threading.main_thread()))

    T.over_blocks(kernel, 7, 1, B.host)
    assert sorted((a, b) for a, b, _ in seen) == [(0, 2), (2, 4), (4, 7)]
    assert sum(on_main for _, _, on_main in seen) == 1  # the caller takes one block


@pytest.mark.host_only
def test_device_arrays_small_kernels_and_nested_calls_stay_unsplit(monkeypatch):
    calls = []
    with T.using_threads(3):
        T.over_blocks(lambda a, b: calls.append((a, b)), 6, T.MIN_PARALLEL_BYTES - 1, B.host)
        T.over_blocks(lambda a, b: calls.append((a, b)), 6, 1 << 30, B.strict_xp)
        monkeypatch.setattr(T, "MIN_PARALLEL_BYTES", 0)
        inner = []

        def outer(start, stop):
            T.over_blocks(lambda a, b: inner.append((start, a, b)), 5, 1, B.host)

        T.over_blocks(outer, 6, 1, B.host)
    assert calls == [(0, 6), (0, 6)]
    assert sorted(inner) == [(0, 0, 5), (2, 0, 5), (4, 0, 5)]  # each block ran whole inside


class _LazyFuture:
    """A future whose work runs only when asked for its outcome: a block is done only if
    ``over_blocks`` waits for it."""

    def __init__(self, kernel, start, stop):
        self.work = (kernel, start, stop)

    def exception(self):
        kernel, start, stop = self.work
        try:
            kernel(start, stop)
        except Exception as error:  # noqa: BLE001 - handed back like a real future
            return error
        return None


@pytest.mark.host_only
@pytest.mark.parametrize("failing", [0, 2])  # the caller's own block, a pool block
def test_an_error_in_one_block_is_raised_after_every_block_finished(failing, always_split,
                                                                    monkeypatch):
    monkeypatch.setattr(T, "_submit", lambda kernel, blocks: [_LazyFuture(kernel, *block)
                                                              for block in blocks])
    finished = []

    def kernel(start, stop):
        if start == failing:
            raise ValueError(f"block {start} failed")
        finished.append(start)

    with pytest.raises(ValueError, match=f"block {failing} failed"):
        T.over_blocks(kernel, 6, 1, B.host)
    assert sorted(finished) == sorted({0, 2, 4} - {failing})
    calls = []  # and the calling thread splits again afterwards
    T.over_blocks(lambda a, b: calls.append((a, b)), 6, 1, B.host)
    assert sorted(calls) == [(0, 2), (2, 4), (4, 6)]


def _split_and_whole(compute):
    """``compute()`` with one thread and split over three threads: both results, as host arrays."""
    with T.using_threads(1):
        whole = [B.to_numpy(a) for a in compute()]
    with T.using_threads(3):
        split = [B.to_numpy(a) for a in compute()]
    return whole, split


@pytest.mark.host_only
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1), (1, 2)])
def test_im2col_kernels_split_over_threads_give_the_same_bits(stride, pad, monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_BYTES", 0)
    rng = np.random.default_rng(stride + 3 * pad)
    x = rng.standard_normal((7, 3, 9, 8)).astype(np.float32)
    kernel = (3, 2)

    def compute():
        col = im2col(x, kernel, stride, pad)
        rows = im2col_rows(x, kernel, stride, pad)
        into = np.full(x.shape, np.nan, np.float32)  # every element must be written
        return (col, rows, col2im(col * 1.5, x.shape, kernel, stride, pad),
                col2im_rows(rows - 0.25, x.shape, kernel, stride, pad),
                col2im(col, x.shape, kernel, stride, pad, out=into))

    whole, split = _split_and_whole(compute)
    for a, b in zip(whole, split):
        np.testing.assert_array_equal(a, b)
    assert not np.isnan(split[-1]).any()


@pytest.mark.host_only
@pytest.mark.parametrize("size,stride,height", [(2, 2, 8), (2, 2, 9), (3, 2, 9), (2, 3, 9)])
def test_maxpool_split_over_threads_gives_the_same_bits(size, stride, height, monkeypatch):
    monkeypatch.setattr(T, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(fast_pool, "PLANES_BYTES", 1)  # blocks of planes inside each thread's block
    rng = np.random.default_rng(size * stride + height)
    x = rng.integers(0, 3, size=(7, 2, height, 8)).astype(np.float32)  # many ties; 8: tiled

    def compute():
        pool = L.MaxPool2D(size, stride)
        y = pool.forward(x)
        return y, pool._argmax, pool.backward(np.arange(y.size, dtype=np.float32).reshape(y.shape))

    whole, split = _split_and_whole(compute)
    for a, b in zip(whole, split):
        np.testing.assert_array_equal(a, b)


def _conv_step(layout):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 10, 10)).astype(np.float32)
    dout = rng.standard_normal((6, 4, 5, 5)).astype(np.float32)

    def compute():
        conv = L.Conv2D(3, 4, 3, stride=2, pad=1, rng=0)
        conv.layout = layout
        per_example = 5 * 5 * 3 * 3 * 3 * 4  # OH·OW·C·KH·KW·itemsize
        conv.block_bytes = 3 * per_example  # cache blocks of 3 examples, each split again
        conv.max_col_bytes = 4 * per_example  # chunks of 4: backward unfolds x again
        y = conv.forward(x)
        dx = conv.backward(dout)
        return y, dx, conv.grads["W"], conv.grads["b"]

    return compute


def _dense_step():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    dout = rng.standard_normal((7, 6)).astype(np.float32)

    def compute():
        dense = L.Dense(5, 6, rng=0)
        y = dense.forward(x)
        dx = dense.backward(dout)
        return y, dx, dense.grads["W"], dense.grads["b"]

    return compute


@pytest.fixture
def submitted(monkeypatch):
    """The names of the kernels handed to the pool; every kernel, however small, may split."""
    monkeypatch.setattr(T, "MIN_PARALLEL_BYTES", 0)
    names = set()
    submit = T._submit
    monkeypatch.setattr(T, "_submit", lambda kernel, blocks: names.add(kernel.__name__)
                        or submit(kernel, blocks))
    return names


@pytest.fixture
def products_split(submitted):
    """Every kernel split, products too; skipped where NumPy's BLAS cannot be set to one
    thread from Python (then the products never split)."""
    if blas.get_threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose threads minibern can set")
    return submitted


#: The layers' kernels that hold matrix products, by step.
PRODUCT_KERNELS = {"conv channels_first": {"unfold_and_multiply", "input_gradient", "filters"},
                   "conv channels_last": {"unfold_and_multiply", "input_gradient", "columns"},
                   "dense": {"output_rows", "weight_columns", "input_rows"}}


@pytest.mark.host_only
@pytest.mark.parametrize("step", sorted(PRODUCT_KERNELS))
def test_layers_split_over_threads_agree_and_repeat_their_bits(step, products_split):
    compute = _dense_step() if step == "dense" else _conv_step(step.split()[1])
    whole, split = _split_and_whole(compute)
    assert PRODUCT_KERNELS[step] <= products_split  # every product was handed to the pool
    with T.using_threads(3):
        again = [B.to_numpy(a) for a in compute()]
    for a, b, c in zip(whole, split, again):
        np.testing.assert_array_equal(b, c)  # a thread count fixes the bits
        # the BLAS sums a product's terms in an order that depends on the product's shape,
        # so a split product may differ from the whole one in the last bits
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(np.abs(a).max()))


@pytest.mark.host_only
@pytest.mark.parametrize("step", sorted(PRODUCT_KERNELS) + ["pool"])
def test_reference_layers_hand_nothing_to_the_pool(step, submitted):
    """The reference path is the layers' own lines: with three threads set, and every kernel
    however small allowed to split, it runs everything on the calling thread (the fast path,
    run the same way, hands its element-wise kernels to the pool at least)."""
    if step == "pool":
        x = np.random.default_rng(3).standard_normal((6, 2, 8, 8)).astype(np.float32)

        def compute():
            layer = L.MaxPool2D(2)
            y = layer.forward(x)
            return y, layer.backward(y)
    else:
        compute = _dense_step() if step == "dense" else _conv_step(step.split()[1])
    with kernels.using("reference"), T.using_threads(3):
        compute()
    assert submitted == set()
    with T.using_threads(3):
        compute()
    assert submitted or (step == "dense" and blas.get_threads() is None)


@pytest.mark.host_only
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_conv_with_whole_products_keeps_the_bits_of_one_thread(layout, monkeypatch):
    """Where the products stay whole (a BLAS minibern cannot set), only the element-wise
    kernels split, and those keep every bit."""
    monkeypatch.setattr(T, "MIN_PARALLEL_BYTES", 0)
    compute = _conv_step(layout)
    with T.using_threads(1):
        whole = [B.to_numpy(a) for a in compute()]
    with T.using_threads(3):
        monkeypatch.setattr(T, "_products", False)
        split = [B.to_numpy(a) for a in compute()]
    for a, b in zip(whole, split):
        np.testing.assert_array_equal(a, b)


@pytest.mark.host_only
def test_kernel_threads_take_the_blas_to_one_thread_and_give_it_back():
    found = blas.get_threads()
    if found is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose threads minibern can set")
    blas.set_threads(2)  # a count to give back that is not one
    try:
        with T.using_threads(1):
            assert not T.splits_products()
            assert blas.get_threads() == 2
            with T.using_threads(2):
                assert T.splits_products()
                assert blas.get_threads() == 1
                with T.using_threads(3):  # still one BLAS thread, the count to restore kept
                    assert blas.get_threads() == 1
            assert blas.get_threads() == 2
            assert not T.splits_products()
    finally:
        T._use(None)
        blas.set_threads(found)


@pytest.mark.host_only
@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_thread_counts_are_refused_with_the_fix(value, monkeypatch):
    monkeypatch.setattr(T, "_threads", None)
    monkeypatch.setenv(T.ENV_VAR, value)
    with pytest.raises(ValueError, match=f"MINIBERN_THREADS must be a positive whole number.*"
                                         f"{T.ENV_VAR}=1"):
        T.get_threads()
    for count in (0, value, True, 1.5):
        with pytest.raises(ValueError, match="threads must be a positive whole number.*use 1"):
            T.set_threads(count)


@pytest.mark.host_only
def test_one_thread_unless_asked_for_more(monkeypatch):
    monkeypatch.delenv(T.ENV_VAR, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # BLAS's setting is not ours
    assert T.default_threads() == 1
    monkeypatch.setenv(T.ENV_VAR, " 5 ")
    assert T.default_threads() == 5
    monkeypatch.setattr(T, "_threads", None)
    assert T.get_threads() == 5
    with T.using_threads(2):
        assert T.get_threads() == 2
    assert T.get_threads() == 5
