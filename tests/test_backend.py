"""The array backend: selection, errors, edges, seeded randomness, and the strict tag."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minibern
from minibern import backend as B

PACKAGE_DIR = Path(minibern.__file__).resolve().parent


#: Modules allowed to import numpy, with the reason.
NUMPY_IMPORTERS = {
    "backend.py": "the backend itself",
}


@pytest.mark.host_only
def test_no_module_but_backend_imports_numpy_or_cupy():
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.name in NUMPY_IMPORTERS and path.parent == PACKAGE_DIR:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PACKAGE_DIR)}:{node.lineno} imports {n}"
                          for n in names if n.split(".")[0] in ("numpy", "cupy")]
    assert offenders == []
    assert len(list(PACKAGE_DIR.rglob("*.py"))) > 5  # the scan saw the package


@pytest.mark.host_only
def test_unknown_backend_names_value_and_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'.*numpy, cupy, strict"):
        minibern.set_backend("cuda")


@pytest.mark.host_only
def test_missing_cupy_says_how_to_install():
    if B.cupy_available():
        pytest.skip("CuPy and a GPU are present here")
    with pytest.raises(B.BackendUnavailableError, match=r"pip install minibern\[gpu\]"):
        minibern.set_backend("cupy")


@pytest.mark.host_only
def test_use_backend_restores_previous():
    minibern.set_backend("numpy")
    with minibern.use_backend("strict") as backend:
        assert backend.name == "strict"
        assert minibern.get_backend().name == "strict"
    assert minibern.get_backend().name == "numpy"


@pytest.mark.host_only
def test_environment_variable_picks_default_backend():
    code = "import minibern; print(minibern.get_backend().name)"
    env = dict(os.environ, MINIBERN_BACKEND="strict")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=PACKAGE_DIR.parent)
    assert out.stdout.strip() == "strict"
    env["MINIBERN_BACKEND"] = "tpu"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=PACKAGE_DIR.parent)
    assert bad.returncode != 0 and "unknown backend 'tpu'" in bad.stderr


def test_asarray_to_numpy_roundtrip(backend_name):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    device = B.asarray(host)
    assert B.get_array_module(device) is B.get_backend().xp
    back = B.to_numpy(device)
    assert type(back) is np.ndarray and back.dtype == np.float32
    np.testing.assert_array_equal(back, host)


def test_same_seed_same_numbers_on_every_backend(backend_name):
    drawn = B.to_numpy(B.random_normal(B.make_rng(7), (4, 3), scale=0.5))
    with B.use_backend("numpy"):
        reference = B.to_numpy(B.random_normal(B.make_rng(7), (4, 3), scale=0.5))
    np.testing.assert_array_equal(drawn, reference)
    assert drawn.dtype == np.float32
    assert not np.array_equal(drawn, B.to_numpy(B.random_normal(B.make_rng(8), (4, 3))))


@pytest.mark.host_only
def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        B.make_rng("0")
    with pytest.raises(TypeError, match="seed must be an int"):
        B.make_rng(None)


@pytest.mark.host_only
def test_strict_arrays_refuse_host_arrays_like_a_device():
    with B.use_backend("strict"):
        device = B.asarray(np.ones((2, 2), np.float32))
        host = np.ones((2, 2), np.float32)
        with pytest.raises(TypeError, match="host numpy.ndarray.*asarray"):
            device + host
        with pytest.raises(TypeError, match="host numpy.ndarray"):
            np.concatenate([device, host])
        with pytest.raises(TypeError, match="host numpy.ndarray"):
            device[0] = host[0]
        with pytest.raises(TypeError, match="host numpy.ndarray"):
            B.get_array_module(device, host)
        # scalars mix freely, results stay tagged
        assert isinstance(device * 2.0 + np.float32(1), B.StrictArray)
        assert isinstance(device @ device, B.StrictArray)
        assert isinstance(B.get_backend().xp.zeros(3), B.StrictArray)


@pytest.mark.host_only
def test_require_float_array_names_the_fix():
    with pytest.raises(TypeError, match=r"dtype int64.*astype\('float32'\)"):
        B.require_float_array(np.arange(3), "x")
    with pytest.raises(TypeError, match="must be an array"):
        B.require_float_array([1.0, 2.0], "x")
    with pytest.raises(TypeError, match="not a floating type"):
        B.dtype_of("int32")


def test_shared_zeros_match_shape_dtype_and_backend_and_refuse_writes(backend_name):
    small = B.asarray(np.ones((2, 3), dtype=np.float32))
    big = B.asarray(np.ones((4, 5, 6), dtype=np.float64))
    for x in (small, big, B.asarray(np.ones((7, 9), dtype=np.float32))):
        zeros = B.shared_zeros_like(x)
        assert zeros.shape == x.shape and zeros.dtype == x.dtype
        assert B.get_array_module(zeros) is B.get_array_module(x)  # no backend mixing
        assert not B.to_numpy(zeros).any()
    if backend_name == "numpy":
        with pytest.raises(ValueError, match="read-only"):
            B.shared_zeros_like(small)[0, 0] = 1.0


@pytest.mark.host_only
def test_the_strict_backend_lives_in_its_own_module_behind_the_backend_names():
    from minibern import strict

    for name in ("StrictArray", "strict_xp", "TransferCounts", "transfer_counts",
                 "reset_transfer_counts", "counting_transfers"):
        assert getattr(B, name) is getattr(strict, name), name
    assert strict.np is np  # the NumPy the backend loaded, not a second import
    tree = ast.parse((PACKAGE_DIR / "strict.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name and name.startswith("minibern")}
