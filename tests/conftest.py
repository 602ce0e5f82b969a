"""Every test runs once per array backend: numpy, strict (and cupy where a GPU is present).

The backend list can be narrowed with ``MINIBERN_TEST_BACKENDS=numpy,strict``. Tests that only
touch host data (file parsing, the CLI's argument checks) carry ``pytest.mark.host_only`` and
run once, under numpy.
"""
import os

import pytest

from minibern import backend as B


def _test_backends():
    requested = os.environ.get("MINIBERN_TEST_BACKENDS")
    if requested:
        return [name.strip() for name in requested.split(",") if name.strip()]
    names = ["numpy", "strict"]
    if B.cupy_available():
        names.append("cupy")
    return names


def pytest_configure(config):
    config.addinivalue_line("markers", "host_only: runs once (numpy); touches no device arrays")


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        host_only = metafunc.definition.get_closest_marker("host_only") is not None
        names = ["numpy"] if host_only else _test_backends()
        metafunc.parametrize("backend_name", names, scope="function")


@pytest.fixture(autouse=True)
def backend_name(request):
    """The backend this test runs under; set for the test's duration."""
    return request.param


@pytest.fixture(autouse=True)
def _use_backend(backend_name):
    with B.use_backend(backend_name) as backend:
        yield backend


@pytest.fixture
def xp(_use_backend):
    """The current backend's array-creation module."""
    return _use_backend.xp


def _find_shared_mnist():
    from pathlib import Path

    candidates = [os.environ.get("MINIBERN_DATA"),
                  str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").exists():
            return Path(candidate)
        if candidate and (Path(candidate) / "train-images-idx3-ubyte").exists():
            return Path(candidate)
    return None


@pytest.fixture
def mnist_dir():
    """The shared MNIST IDX files (MINIBERN_DATA or ../shared/data/mnist); skip if absent."""
    directory = _find_shared_mnist()
    if directory is None:
        pytest.skip("MNIST not found: set MINIBERN_DATA to a folder holding the four IDX files")
    return directory


@pytest.fixture(scope="session")
def mnist():
    """The shared MNIST as host arrays (loaded once per test session)."""
    from minibern.data import load_mnist

    directory = _find_shared_mnist()
    if directory is None:
        pytest.skip("MNIST not found: set MINIBERN_DATA to a folder holding the four IDX files")
    return load_mnist(directory, download=False)
