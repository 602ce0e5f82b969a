"""Every test runs once per array backend: numpy, strict (and cupy where a GPU is present).

The backend list can be narrowed with ``MINIBERN_TEST_BACKENDS=numpy,strict``. Tests that only
touch host data (file parsing, the CLI's argument checks) carry ``pytest.mark.host_only`` and
run once, under numpy.

A test that asks for the ``kernels_name`` fixture (or a module with
``pytestmark = pytest.mark.usefixtures("kernels_name")``) runs once per kernel path,
``fast`` and ``reference`` (:mod:`minibern.kernels`), on every backend.
"""
import os

import pytest

from minibern import backend as B
from minibern import kernels


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
    if "kernels_name" in metafunc.fixturenames:
        metafunc.parametrize("kernels_name", kernels.NAMES, indirect=True, scope="function")


@pytest.fixture(autouse=True)
def backend_name(request):
    """The backend this test runs under; set for the test's duration."""
    return request.param


@pytest.fixture(autouse=True)
def _use_backend(backend_name):
    with B.use_backend(backend_name) as backend:
        yield backend


@pytest.fixture
def kernels_name(request):
    """The kernel path (``fast`` or ``reference``) the layers run on for this test."""
    with kernels.using(request.param) as name:
        yield name


@pytest.fixture
def xp(_use_backend):
    """The current backend's array-creation module."""
    return _use_backend.xp


_MNIST = {}  # the session's MNIST folder, or why it could not be had; tests skipped for it


def _mnist_directory():
    """The folder a user's run reads MNIST from (``MINIBERN_DATA``, else the default), fetched
    and SHA-256 verified there by the package if missing — once per session. Files already in
    place are used as they are, so a valid ``MINIBERN_DATA`` never triggers a download."""
    if "directory" not in _MNIST:
        from minibern.data import MnistError, fetch_mnist, find_mnist_dir
        from minibern.data.mnist import missing_files

        directory = find_mnist_dir()
        _MNIST.update(directory=directory, why=None, skipped=0)
        if missing_files(directory):
            try:
                fetch_mnist(directory, log=lambda line: None)
            except (MnistError, OSError) as error:
                _MNIST.update(directory=None, why=str(error).splitlines()[0])
    if _MNIST["directory"] is None:
        _MNIST["skipped"] += 1
        pytest.skip(f"MNIST unavailable: {_MNIST['why']}")
    return _MNIST["directory"]


def pytest_terminal_summary(terminalreporter):
    """Say loudly how many tests did not run for want of MNIST, and why."""
    if _MNIST.get("skipped"):
        terminalreporter.write_sep(
            "!", f"{_MNIST['skipped']} tests SKIPPED: MNIST could not be fetched", red=True)
        terminalreporter.write_line(f"why: {_MNIST['why']}", red=True)
        terminalreporter.write_line("fix: run `python -m minibern fetch-mnist`, or set "
                                    "MINIBERN_DATA to a folder holding the four IDX files",
                                    red=True)


@pytest.fixture
def mnist_dir():
    """The MNIST folder (see :func:`_mnist_directory`); skips, counted, if it cannot be had."""
    return _mnist_directory()


@pytest.fixture(scope="session")
def mnist():
    """MNIST as host arrays (loaded once per test session)."""
    from minibern.data import load_mnist

    return load_mnist(_mnist_directory(), download=False)
