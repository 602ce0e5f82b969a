"""The MNIST loader on the real files: shapes, dtypes, scaling, the fixed validation split,
folder lookup, raw vs gzipped files, and the errors for missing or damaged files."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import minibern
from minibern.data import MNIST, MnistError, find_mnist_dir, load_mnist, read_idx
from minibern.data import files as files_module

pytestmark = pytest.mark.host_only

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

_CACHE = {}  # loaded once per session: each load reads ~55 MB


@pytest.fixture
def mnist(mnist_dir):
    key = ("nchw", str(mnist_dir))
    if key not in _CACHE:
        _CACHE[key] = load_mnist(mnist_dir, download=False)
    return _CACHE[key]


@pytest.fixture
def raw_dir(mnist_dir, tmp_path_factory):
    """A folder holding decompressed copies of the four shared (gzipped) files."""
    key = ("raw", str(mnist_dir))
    if key not in _CACHE:
        folder = tmp_path_factory.mktemp("mnist-raw")
        for name in NAMES:
            source = mnist_dir / name
            data = source.read_bytes() if source.exists() else \
                gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
            (folder / name).write_bytes(data)
        _CACHE[key] = folder
    return _CACHE[key]


def test_shapes_dtypes_and_ranges(mnist):
    assert isinstance(mnist, MNIST)
    for images, labels, n in [(mnist.train_images, mnist.train_labels, 55000),
                              (mnist.val_images, mnist.val_labels, 5000),
                              (mnist.test_images, mnist.test_labels, 10000)]:
        assert images.shape == (n, 1, 28, 28) and images.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert type(images) is np.ndarray and type(labels) is np.ndarray
        assert images.min() == 0.0 and images.max() == 1.0
        assert labels.min() == 0 and labels.max() == 9
        assert set(np.unique(labels)) == set(range(10))
    assert "55000" in repr(mnist)


def test_scaling_is_pixel_over_255(mnist, mnist_dir):
    raw = read_idx(next(mnist_dir.glob("t10k-images-idx3-ubyte*")))
    np.testing.assert_array_equal(mnist.test_images[:, 0], raw.astype(np.float32) / 255)
    # The first test digit of MNIST is a 7.
    assert mnist.test_labels[0] == 7


def test_validation_is_last_5000_of_training_file(mnist, mnist_dir):
    images = read_idx(next(mnist_dir.glob("train-images-idx3-ubyte*")))
    labels = read_idx(next(mnist_dir.glob("train-labels-idx1-ubyte*")))
    scaled = images / np.float32(255)
    assert np.array_equal(mnist.val_images[:, 0], scaled[55000:])
    assert np.array_equal(mnist.val_labels, labels[55000:])
    assert np.array_equal(mnist.train_images[:, 0], scaled[:55000])
    assert np.array_equal(mnist.train_labels, labels[:55000])


def test_flatten_is_a_view_of_shape_n_784(mnist_dir, mnist):
    flat = load_mnist(mnist_dir, download=False, flatten=True)
    assert flat.train_images.shape == (55000, 784)
    assert flat.val_images.shape == (5000, 784)
    assert flat.test_images.shape == (10000, 784)
    assert flat.train_images.dtype == np.float32
    # a reshape of the loaded array, not a copy: train and val share one buffer
    assert np.shares_memory(flat.train_images, flat.val_images) is False  # disjoint rows ...
    assert flat.train_images.base is flat.val_images.base                 # ... of one array
    np.testing.assert_array_equal(flat.val_images, mnist.val_images.reshape(5000, 784))


def test_raw_folder_loads_the_same_as_gz(raw_dir, mnist):
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)
    raw = load_mnist(raw_dir, download=False)
    for field in ("train_images", "train_labels", "val_images", "val_labels",
                  "test_images", "test_labels"):
        assert np.array_equal(getattr(raw, field), getattr(mnist, field)), field
    assert raw.directory == raw_dir


def test_raw_preferred_over_gz(raw_dir, tmp_path):
    for name in NAMES:
        (tmp_path / name).symlink_to(raw_dir / name)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip: must not be read")
    assert load_mnist(tmp_path, download=False).test_labels[0] == 7


# --------------------------------------------------------------------------------------------
# Which folder
# --------------------------------------------------------------------------------------------
def test_find_mnist_dir_precedence(tmp_path, monkeypatch):
    arg, env = tmp_path / "arg", tmp_path / "env"
    monkeypatch.setenv("MINIBERN_DATA", str(env))
    assert find_mnist_dir(arg) == arg
    assert find_mnist_dir(str(arg)) == arg
    assert find_mnist_dir() == env
    monkeypatch.delenv("MINIBERN_DATA")
    assert find_mnist_dir() == files_module.default_mnist_dir()


def test_default_is_checkout_data_folder(monkeypatch):
    checkout = Path(minibern.__file__).resolve().parents[1]
    if not ((checkout / "setup.cfg").is_file() and (checkout / "data").is_dir()):
        pytest.skip(f"minibern is not running from a checkout with a data/ folder ({checkout})")
    monkeypatch.delenv("MINIBERN_DATA", raising=False)
    assert find_mnist_dir() == checkout / "data" / "mnist"


@pytest.mark.parametrize("layout", ["checkout", "checkout without data/", "data/ but no checkout"])
def test_default_mnist_dir(tmp_path, monkeypatch, layout):
    root = tmp_path / "root"
    root.mkdir()
    if layout != "data/ but no checkout":
        (root / "setup.cfg").write_text("[metadata]\n")
    if layout != "checkout without data/":
        (root / "data").mkdir()
    monkeypatch.setattr(files_module, "_CHECKOUT", root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = (root / "data" / "mnist" if layout == "checkout"
                else tmp_path / "xdg" / "minibern" / "mnist")
    assert files_module.default_mnist_dir() == expected


def test_user_cache_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.setattr(files_module, "_CHECKOUT", tmp_path / "installed")  # not a checkout
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files_module.default_mnist_dir() == tmp_path / "home" / ".cache" / "minibern" / "mnist"


def test_load_uses_env_folder(raw_dir, monkeypatch):
    monkeypatch.setenv("MINIBERN_DATA", str(raw_dir))
    data = load_mnist(download=False)
    assert data.directory == raw_dir and data.test_images.shape == (10000, 1, 28, 28)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def test_missing_files_without_download(tmp_path):
    with pytest.raises(MnistError) as info:
        load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message
    for name in NAMES:
        assert f"{name}.gz" in message
    assert "MINIBERN_DATA" in message and "fetch-mnist" in message


def test_missing_files_with_download_calls_fetch(tmp_path, monkeypatch, raw_dir):
    from minibern.data import fetch

    calls = []

    def fake_fetch(directory, **kwargs):
        calls.append(directory)
        directory.mkdir()
        for name in NAMES:
            (directory / name).symlink_to(raw_dir / name)
        return directory

    monkeypatch.setattr(fetch, "fetch_mnist", fake_fetch)
    target = tmp_path / "new"
    assert load_mnist(target).train_labels.shape == (55000,)
    assert calls == [target]


def _label_file(values):
    values = np.asarray(values, dtype=np.uint8)
    return bytes([0, 0, 8, 1]) + struct.pack(">i", values.size) + values.tobytes()


def test_labels_out_of_range(raw_dir, tmp_path):
    for name in NAMES:
        if name != "train-labels-idx1-ubyte":
            (tmp_path / name).symlink_to(raw_dir / name)
    bad = np.zeros(60000, dtype=np.uint8)
    bad[123] = 12
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_label_file(bad))
    with pytest.raises(MnistError) as info:
        load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert "train-labels-idx1-ubyte" in message and "0..9" in message
    assert "label 12 at index 123" in message


def test_wrong_count(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3]) + struct.pack(">3i", 2, 28, 28) + bytes(2 * 28 * 28))
    for name in NAMES[1:]:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(MnistError) as info:
        load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message
    assert "expected 60000 images" in message and "(2, 28, 28)" in message


def test_a_file_under_another_files_name_is_named_plainly(raw_dir, tmp_path):
    # defect 9: labels with the images' magic number read as "expected 760652741951032500016 bytes"
    for name in NAMES:
        (tmp_path / name).symlink_to(raw_dir / name)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").symlink_to(raw_dir / "t10k-images-idx3-ubyte")
    with pytest.raises(ValueError) as info:
        load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte: the magic number 0x00000803 says 3 dimension(s), " \
           "expected 1" in message and "fetch-mnist" in message
    assert "bytes" not in message


def test_a_folder_that_cannot_be_created_names_the_options_of_both_commands(tmp_path):
    # defect 9: the hint named fetch-mnist's --dir, which train does not have
    from minibern.data import fetch_mnist

    (tmp_path / "file").write_text("")
    with pytest.raises(MnistError, match=r"cannot create the MNIST folder.*`train --data DIR`"):
        fetch_mnist(tmp_path / "file" / "mnist", log=lambda *_: None)
