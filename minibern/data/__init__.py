"""MNIST on the host: file names and folders (:mod:`.files`), IDX parsing (:mod:`.idx`), verified
downloading (:mod:`.fetch`), loading and splitting (:mod:`.mnist`); each imports only those
listed before it.

    from minibern.data import load_mnist
    mnist = load_mnist()                 # fetches into the default folder if missing
    mnist.train_images.shape             # (55000, 1, 28, 28) float32 in [0, 1]
    mnist.val_images.shape               # (5000, 1, 28, 28): the LAST 5,000 training images

All arrays are host NumPy arrays; move batches to the device with
:func:`minibern.backend.asarray`.
"""
from minibern.data.fetch import fetch_mnist, main_fetch
from minibern.data.files import MnistError, find_mnist_dir
from minibern.data.idx import IdxError, parse_idx, read_idx
from minibern.data.mnist import MNIST, load_mnist

__all__ = ["read_idx", "parse_idx", "IdxError", "load_mnist", "find_mnist_dir", "MNIST",
           "MnistError", "fetch_mnist", "main_fetch"]
