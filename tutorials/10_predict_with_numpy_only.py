"""Tutorial 10: run the pruned network that training exported, with NumPy alone.

What you learn
    That the deterministic network is plain data: ``model.npz`` (written by tutorial 6 and
    ``python -m minibern train``) is an ordered list of ops — select, dense, conv, relu,
    maxpool, flatten — with every Bernoulli gate already folded away and its pruned units
    dropped, and a few lines of NumPy run it. This file imports nothing but NumPy (and the
    standard library), so it can be copied anywhere.
Read alongside
    docs/derivations/export.md, (X1)–(X4) (why folding the gates changes no output), and
    minibern/bernoulli/export.py (the format).
Output
    the test error of ``model.npz`` on MNIST's 10,000 test images; it equals the
    ``test_error`` that training reported. Under a second on a CPU.

    python tutorials/10_predict_with_numpy_only.py runs/tutorial6/model.npz --data data/mnist

``predict(model, images)`` -> int labels (N,); ``logits(model, images)`` -> float (N, classes).
``model``: the path of an exported ``.npz`` or its dict of arrays.
``images``: (N, 784), (N, 28, 28) or (N, 1, 28, 28), reshaped to the model's ``input_shape``.
Scale them as minibern's MNIST loader does: float pixel / 255 in [0, 1]. uint8 images are taken
as raw pixels and divided by 255 here; float images are used as given.
"""
import argparse
import gzip
import sys
import zlib
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view as windows

FORMAT, VERSION = "minibern-export", 1

#: Each op kind and the arrays it needs (a damaged file is refused before anything runs).
NEEDS = {"select": ("index",), "dense": ("W", "b"), "conv": ("W", "b", "pad", "stride"),
         "maxpool": ("size", "stride"), "relu": (), "flatten": ()}
MAX_FILE_BYTES = 64 * 2**20  # more than any MNIST file holds


def _check(m, ops):
    """ValueError naming the first op a damaged model gets wrong, or a model with no layers."""
    for i, op in enumerate(ops):
        kind = str(op.get("kind", ""))
        missing = [key for key in NEEDS.get(kind, ()) if key not in op]
        if kind not in NEEDS or missing:
            what = (f"has an unknown op kind {kind!r}" if kind not in NEEDS
                    else f"lacks {', '.join(missing)}")
            raise ValueError(f"op {i} of the model {what}; export it again")
        if kind == "select" and not (op["index"].ndim == 1 and op["index"].dtype.kind in "iu"):
            raise ValueError(f"op {i} (select): its index is not a list of integers; export it again")
    if not any(str(op["kind"]) in ("dense", "conv") for op in ops):
        raise ValueError("the model has no dense or conv layer (a damaged or empty export); "
                         "export it again")


def _ops(m):
    if not isinstance(m, dict):
        try:
            with np.load(m, allow_pickle=False) as archive:
                m = {key: archive[key] for key in archive.files}
        except Exception as error:
            raise ValueError(f"{m} is not a readable .npz ({error}); export it again") from error
    if str(m.get("format", "")) != FORMAT or str(m.get("version", "")) != str(VERSION):
        raise ValueError(f"not a {FORMAT} model of version {VERSION} (format {m.get('format')}, "
                         f"version {m.get('version')}); re-export it with minibern.bernoulli.export")
    try:
        present = {key.split("/")[0] for key in m if key.startswith("op") and "/" in key}
        n_ops = int(m["n_ops"])
        if not 1 <= n_ops <= len(present):
            raise ValueError(f"n_ops is {n_ops}, but the file holds {len(present)} ops")
        ops = [{} for _ in range(n_ops)]
        for key in m:
            name, _, field = key.partition("/")
            if name.startswith("op") and name[2:].isdigit() and int(name[2:]) < n_ops:
                ops[int(name[2:])][field] = m[key]
        tuple(int(s) for s in m["input_shape"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"a damaged {FORMAT} model ({type(error).__name__}: {error}); "
                         "export it again") from error
    _check(m, ops)
    return m, ops


def logits(model, images, batch_size=1000):
    m, ops = _ops(model)
    x = np.asarray(images)
    x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x  # as the loader
    shape = tuple(int(s) for s in m["input_shape"])
    if x.ndim < 1 or int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise ValueError(f"images of shape {x.shape} do not fit the model's input {shape}: give "
                         f"(N, ...) with {int(np.prod(shape))} values per image, e.g. (N, 784), "
                         "(N, 28, 28) or (N, 1, 28, 28)")
    x = x.reshape((x.shape[0],) + shape)
    try:
        return np.concatenate([_run(ops, x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])
    except (IndexError, TypeError, ValueError) as error:  # arrays that do not fit each other
        raise ValueError(f"the model's ops do not fit together ({type(error).__name__}: "
                         f"{error}); the file is damaged: export it again") from error


def _run(ops, x):
    for op in ops:
        kind = str(op["kind"])
        if kind == "select":
            if op["index"].size and not 0 <= op["index"].min() <= op["index"].max() < x.shape[1]:
                raise IndexError(f"select index outside the {x.shape[1]} features it selects from")
            x = x[:, op["index"]]
        elif kind == "dense":
            x = x @ op["W"] + op["b"]
        elif kind == "conv":
            p, s, kh, kw = int(op["pad"]), int(op["stride"]), *op["W"].shape[2:]
            x = windows(np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))), (kh, kw), axis=(2, 3))
            x = np.einsum("nchwij,fcij->nfhw", x[:, :, ::s, ::s], op["W"], optimize=True)
            x = x + op["b"][:, None, None]
        elif kind == "maxpool":
            k, s = int(op["size"]), int(op["stride"])
            x = windows(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))
        elif kind in ("relu", "flatten"):
            x = np.maximum(x, 0) if kind == "relu" else x.reshape(len(x), -1)
        else:
            raise ValueError(f"unknown op kind {kind!r}; re-export the model with this minibern")
    return x


def predict(model, images, batch_size=1000):
    return logits(model, images, batch_size).argmax(axis=1)


def read_idx(path, ndim):
    """An MNIST IDX file (gzipped or not) of ``ndim`` dimensions as a uint8 array: magic
    0x000008 then ``ndim``, big-endian dims, the bytes. ValueError naming the file if it is not."""
    path = Path(path)
    if not path.exists() and Path(str(path) + ".gz").exists():
        path = Path(str(path) + ".gz")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise OSError(f"more than the {MAX_FILE_BYTES} bytes any MNIST file holds")
    except (OSError, EOFError, zlib.error) as error:  # missing, unreadable, corrupt gzip
        raise ValueError(f"cannot read {path} ({error}); point --data at a folder holding "
                         "MNIST's t10k IDX files") from error
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if raw[:4] != bytes([0, 0, 8, ndim]) or len(raw) != 4 + 4 * ndim + int(np.prod(shape)):
        raise ValueError(f"{path} is not an unsigned-byte IDX file of {ndim} dimension(s) "
                         f"(magic {raw[:4].hex()}, {len(raw)} bytes); replace it with a good copy")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an exported model.npz")
    parser.add_argument("--data", default="data/mnist", help="folder with MNIST's t10k IDX files")
    args = parser.parse_args(argv)
    try:
        images = read_idx(Path(args.data) / "t10k-images-idx3-ubyte", 3)
        labels = read_idx(Path(args.data) / "t10k-labels-idx1-ubyte", 1)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} test images but {len(labels)} labels in {args.data}")
        error = float((predict(args.model, images) != labels).mean())
    except ValueError as error:  # every problem of the model or the data, named
        print(f"error: {error}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"error: out of memory running {args.model}; is it a minibern export?",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"tutorial 10: {args.model} with NumPy alone: test error {100 * error:.2f}% "
          f"on {len(labels)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
