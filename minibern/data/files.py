"""Where MNIST lives: the four file names, the folder search, and the error both loaders raise.

The bottom of :mod:`minibern.data`: :mod:`~minibern.data.mnist` (loading) and
:mod:`~minibern.data.fetch` (downloading) both import it, and it imports neither, so the two
need not import each other.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the MNIST folder.
ENV_VAR = "MINIBERN_DATA"

#: The four MNIST files (raw names; the gzipped ones add ``.gz``), keyed by role.
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# The source checkout this module runs from (…/minibern/data/files.py -> the checkout root).
_CHECKOUT = Path(__file__).resolve().parents[2]


class MnistError(ValueError):
    """MNIST is missing, fails its checksum, has the wrong shape or labels, or cannot be fetched."""


def default_mnist_dir() -> Path:
    """The MNIST folder used when neither an argument nor ``MINIBERN_DATA`` names one.

    ``data/mnist/`` in the source checkout when minibern runs from a checkout that has a
    ``data/`` folder (recognised by its ``setup.cfg`` or ``pyproject.toml``, so an installed
    package never writes next to ``site-packages``); otherwise
    ``$XDG_CACHE_HOME/minibern/mnist`` (default ``~/.cache/minibern/mnist``).
    """
    is_checkout = any((_CHECKOUT / marker).is_file() for marker in ("setup.cfg", "pyproject.toml"))
    if is_checkout and (_CHECKOUT / "data").is_dir():
        return _CHECKOUT / "data" / "mnist"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "minibern" / "mnist"


def find_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder MNIST is read from (and fetched into): ``data_dir``, else ``$MINIBERN_DATA``,
    else :func:`default_mnist_dir`. The folder need not exist or hold the files yet."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_mnist_dir()


def find_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` if it exists, else ``directory/name.gz`` if that does, else None."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(directory: Path) -> list[str]:
    """The raw names of the MNIST files that ``directory`` holds neither raw nor gzipped."""
    return [name for name in FILE_NAMES.values() if find_file(Path(directory), name) is None]


def where_to_put(directory: Path) -> str:
    """A sentence saying where to put which four files (for error messages)."""
    names = "\n".join(f"    {name}.gz  (or {name}, uncompressed)" for name in FILE_NAMES.values())
    return (f"put the four MNIST IDX files into {directory}, gzipped or raw:\n{names}\n"
            f"or set {ENV_VAR} to a folder that holds them")
