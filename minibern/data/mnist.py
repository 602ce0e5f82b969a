"""Load MNIST from its four IDX files into host arrays, with a fixed validation split.

Files
-----
A folder *has MNIST* when each of these four files is in it, gzipped (``NAME.gz``, as the
mirrors serve them) or raw (``NAME``, as :func:`~minibern.data.fetch.fetch_mnist` writes them;
raw is read when both exist)::

    train-images-idx3-ubyte   60000 x 28 x 28 images
    train-labels-idx1-ubyte   60000 labels
    t10k-images-idx3-ubyte    10000 x 28 x 28 images
    t10k-labels-idx1-ubyte    10000 labels

Which folder (:func:`find_mnist_dir`): the ``data_dir`` argument if given; else the environment
variable ``MINIBERN_DATA``; else ``data/mnist/`` in the source checkout (when minibern runs from
a checkout that has a ``data/`` folder); else the user cache ``$XDG_CACHE_HOME/minibern/mnist``
(default ``~/.cache/minibern/mnist``).

Split
-----
The **last 5,000** images of the 60,000-image training file are the validation set and the
**first 55,000** are the training set. The split is fixed, not random, so every run (and every
backend) sees the same sets. The 10,000-image test file is only for final reporting: choose
hyper-parameters and early-stopping points on the validation set, never on the test set.

Arrays
------
Images are ``float32`` scaled to [0, 1] (pixel / 255), shape ``(N, 1, 28, 28)`` (NCHW) or
``(N, 784)`` with ``flatten=True`` (row-major pixels; a reshape, not a copy). Labels are
``int64`` in 0..9, shape ``(N,)``. All arrays are host NumPy arrays; move a batch to the device
with :func:`minibern.backend.asarray`. Training and validation arrays are views of one
60,000-row array.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from minibern.backend import host as np
from minibern.data import fetch
from minibern.data.files import (FILE_NAMES, MnistError, find_file, find_mnist_dir, missing_files,
                                 where_to_put)
from minibern.data.idx import read_idx

IMAGE_SHAPE = (28, 28)
N_TRAIN_FILE = 60_000   # images in the training file
N_VAL = 5_000           # the last N_VAL of them are the validation set
N_TRAIN = N_TRAIN_FILE - N_VAL  # the first N_TRAIN of them are the training set (N of (B15))
N_TEST = 10_000
N_CLASSES = 10

@dataclass(frozen=True)
class MNIST:
    """The MNIST splits as host arrays (see the module docstring for the split and scaling).

    Attributes
    ----------
    train_images : numpy.ndarray of float32, shape (55000, 1, 28, 28) or (55000, 784)
    train_labels : numpy.ndarray of int64, shape (55000,)
    val_images : numpy.ndarray of float32, shape (5000, 1, 28, 28) or (5000, 784)
        The last 5,000 images of the training file.
    val_labels : numpy.ndarray of int64, shape (5000,)
    test_images : numpy.ndarray of float32, shape (10000, 1, 28, 28) or (10000, 784)
    test_labels : numpy.ndarray of int64, shape (10000,)
    directory : pathlib.Path
        The folder the files were read from.
    """

    train_images: object = field(repr=False)
    train_labels: object = field(repr=False)
    val_images: object = field(repr=False)
    val_labels: object = field(repr=False)
    test_images: object = field(repr=False)
    test_labels: object = field(repr=False)
    directory: Path | None = None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}={getattr(self, name).shape}" for name in
                           ("train_images", "val_images", "test_images"))
        return f"MNIST({shapes}, directory='{self.directory}')"


def _read_images(path: Path, count: int):
    images = read_idx(path, ndim=3)
    if images.shape != (count, *IMAGE_SHAPE):
        raise MnistError(
            f"{path}: expected {count} images of {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} pixels, shape "
            f"{(count, *IMAGE_SHAPE)}, found shape {images.shape}; this is not the MNIST file "
            f"of that name: delete it and run `python -m minibern fetch-mnist`"
        )
    scaled = images.astype(np.float32)
    np.divide(scaled, np.float32(255), out=scaled)
    return scaled.reshape(count, 1, *IMAGE_SHAPE)


def _read_labels(path: Path, count: int):
    labels = read_idx(path, ndim=1)
    if labels.shape != (count,):
        raise MnistError(
            f"{path}: expected {count} labels, shape ({count},), found shape {labels.shape}; "
            f"this is not the MNIST file of that name: delete it and run "
            f"`python -m minibern fetch-mnist`"
        )
    bad = labels >= N_CLASSES
    if bad.any():
        first = int(np.argmax(bad))
        raise MnistError(
            f"{path}: labels must be digits 0..{N_CLASSES - 1}, found {int(bad.sum())} out of "
            f"range (e.g. label {int(labels[first])} at index {first}); the file is corrupt: "
            f"delete it and run `python -m minibern fetch-mnist`"
        )
    return labels.astype(np.int64)


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True,
               flatten: bool = False) -> MNIST:
    """Load MNIST as host arrays, split into train (55,000), validation (5,000) and test (10,000).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        The folder holding the four files; default :func:`find_mnist_dir`.
    download : bool
        If files are missing, fetch them into that folder with
        :func:`~minibern.data.fetch.fetch_mnist` (True, the default) or raise (False).
    flatten : bool
        Images of shape ``(N, 784)`` instead of ``(N, 1, 28, 28)``.

    Returns
    -------
    MNIST
        ``train_images`` (55000, 1, 28, 28), ``val_images`` (5000, 1, 28, 28) and
        ``test_images`` (10000, 1, 28, 28) float32 in [0, 1] (``(N, 784)`` when flattened);
        ``*_labels`` int64 of shape (N,).

    Raises
    ------
    MnistError
        Files missing (with ``download=False``) or unobtainable, wrong shapes, labels
        outside 0..9.
    IdxError
        A file is not a valid IDX file (truncated, corrupt gzip, ...).
    """
    directory = find_mnist_dir(data_dir)
    missing = missing_files(directory)
    if missing:
        if not download:
            raise MnistError(
                f"MNIST not found in {directory} (missing {', '.join(missing)}).\n"
                f"Run `python -m minibern fetch-mnist` (or call load_mnist(download=True)), "
                f"or {where_to_put(directory)}."
            )
        fetch.fetch_mnist(directory)

    paths = {role: find_file(directory, name) for role, name in FILE_NAMES.items()}
    train_images = _read_images(paths["train_images"], N_TRAIN_FILE)
    train_labels = _read_labels(paths["train_labels"], N_TRAIN_FILE)
    test_images = _read_images(paths["test_images"], N_TEST)
    test_labels = _read_labels(paths["test_labels"], N_TEST)
    if flatten:
        pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
        train_images = train_images.reshape(N_TRAIN_FILE, pixels)
        test_images = test_images.reshape(N_TEST, pixels)

    split = N_TRAIN_FILE - N_VAL
    return MNIST(
        train_images=train_images[:split], train_labels=train_labels[:split],
        val_images=train_images[split:], val_labels=train_labels[split:],
        test_images=test_images, test_labels=test_labels,
        directory=directory,
    )
