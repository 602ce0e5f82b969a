"""The IDX parser on synthetic files: good files roundtrip, every kind of damage is refused
with a message that names the file and the problem."""
import gzip
import struct

import numpy as np
import pytest

from minibern.data import IdxError, parse_idx, read_idx

pytestmark = pytest.mark.host_only


def idx_bytes(array, type_code=0x08, dims=None):
    """The IDX encoding of a uint8 array (header dims overridable to build bad files)."""
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}i", *dims)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def labels():
    return np.random.default_rng(0).integers(0, 10, size=37, dtype=np.uint8)


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


def test_labels_roundtrip(tmp_path, labels):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes(labels))
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (37,)
    np.testing.assert_array_equal(out, labels)
    assert idx_bytes(labels)[:4] == b"\x00\x00\x08\x01"  # MNIST's label magic 0x00000801


def test_images_roundtrip_and_writable(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(images))
    out = read_idx(path)
    assert out.shape == (5, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)
    assert out.flags.writeable and out.flags.c_contiguous
    assert idx_bytes(images)[:4] == b"\x00\x00\x08\x03"  # MNIST's image magic 0x00000803


def test_four_dims_and_parse_bytes(images):
    cube = images.reshape(5, 2, 14, 28)
    np.testing.assert_array_equal(parse_idx(idx_bytes(cube)), cube)
    np.testing.assert_array_equal(parse_idx(bytearray(idx_bytes(cube))), cube)


def test_gzipped_file(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(path), images)


def test_gzip_detected_by_magic_without_gz_name(tmp_path, labels):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(path), labels)


def raises_idx_error(path, *words):
    with pytest.raises(IdxError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert "fetch-mnist" in message  # the fix
    assert isinstance(info.value, ValueError)
    return message


def test_truncated_data(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:1000])
    raises_idx_error(path, "expected 3936 bytes", "found 1000", "truncated")


def test_truncated_header(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:10])
    raises_idx_error(path, "16-byte IDX header", "found only 10", "truncated")
    path.write_bytes(b"\x00\x00")
    raises_idx_error(path, "found 2 bytes", "truncated")


def test_trailing_bytes(tmp_path, labels):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes(labels) + b"junk")
    raises_idx_error(path, "expected 45 bytes", "found 49", "4 trailing bytes")


def test_count_disagrees_with_header(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(images[:4], dims=(6, 28, 28)))  # header claims 6 images, has 4
    raises_idx_error(path, "6 x 28 x 28", "expected 4720 bytes", "found 3152")


def test_wrong_magic(tmp_path, labels):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34" + idx_bytes(labels)[2:])
    raises_idx_error(path, "bad magic number 0x12340801", "0x00000803")


def test_gzip_under_raw_name_is_detected_and_named(labels):
    message = str(pytest.raises(IdxError, parse_idx, gzip.compress(idx_bytes(labels)),
                                "labels.bin").value)
    assert "labels.bin" in message and "gzip" in message


@pytest.mark.parametrize("code, kind", [(0x0D, "float32"), (0x0C, "int32"), (0x42, "unknown")])
def test_unsupported_type_code(tmp_path, labels, code, kind):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes(labels, type_code=code))
    raises_idx_error(path, f"type code 0x{code:02X}", kind, "0x08")


@pytest.mark.parametrize("ndim", [0, 5])
def test_bad_number_of_dims(tmp_path, ndim):
    path = tmp_path / "x-idx-ubyte"
    path.write_bytes(bytes([0, 0, 8, ndim]) + b"\x00\x00\x00\x01" * ndim + b"\x07")
    raises_idx_error(path, f"says {ndim} dimensions", "1 to 4")


def test_negative_dim(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", -3))
    raises_idx_error(path, "negative", "-3")


def test_corrupt_gzip(tmp_path, images):
    packed = bytearray(gzip.compress(idx_bytes(images)))
    packed[len(packed) // 2] ^= 0xFF
    packed[len(packed) // 2 + 1] ^= 0xFF
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))
    raises_idx_error(path, "corrupt or truncated gzip")


def test_truncated_gzip(tmp_path, images):
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-100])
    raises_idx_error(path, "corrupt or truncated gzip")


def test_gz_name_but_not_gzip(tmp_path, labels):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(labels))
    raises_idx_error(path, "gzip")
