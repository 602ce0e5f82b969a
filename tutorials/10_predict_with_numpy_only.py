"""Tutorial 10: run the pruned network that training exported, with NumPy alone.

What you learn
    That the deterministic network is plain data: ``model.npz`` (written by tutorial 6 and
    ``python -m minibern train --gates``) is an ordered list of ops — select, dense, conv, relu,
    maxpool, flatten — with every Bernoulli gate already folded away and its pruned units
    dropped, and the twenty lines of step 1 run it. The rest of the file is what a program that
    strangers run also needs: reading the file and refusing a damaged one with a message that
    says what to do (step 2), and reading MNIST's IDX files (step 3). It imports nothing but
    NumPy and the standard library, so it can be copied anywhere.
Read alongside
    docs/derivations/export.md, (X1)–(X4) (why folding the gates changes no output); the ops'
    equations in docs/derivations/layers.md: (L20) select, (L1) dense, (L7)–(L8) and (L14)
    conv, (L5) ReLU, (L15) max-pooling, (L17) flatten; minibern/bernoulli/export.py writes the
    format.
Figures
    none: this file must run where only NumPy is installed (tests/test_export.py checks its
    imports), so it draws nothing.
You should see (the last line; the model of tutorial 6's full run, seed 0)
    tutorial 10: runs/tutorial6/model.npz with NumPy alone: test error 1.97% on 10000 images;
    training reported 1.97%
Time on a 2-core CPU
    about a second (LeNet-300-100; a few seconds for a LeNet-5); there is no --quick.

    python tutorials/10_predict_with_numpy_only.py runs/tutorial6/model.npz --data data/mnist

From your own code: ``predict(model, images)`` -> int labels (N,); ``logits(model, images)`` ->
float (N, classes). ``model``: the path of an exported ``.npz`` or its dict of arrays.
``images``: (N, 784), (N, 28, 28) or (N, 1, 28, 28), reshaped to the model's ``input_shape``.
Scale them as minibern's MNIST loader does: float pixel / 255 in [0, 1]. uint8 images are taken
as raw pixels and divided by 255 here; float images are used as given.
"""
# %% [markdown]
# The format (minibern/bernoulli/export.py): arrays named `format` ("minibern-export"),
# `version`, `input_shape`, `n_ops`, and for op i its `op{i}/kind` and the arrays that kind
# needs: `index` (select), `W`, `b` (dense; conv also `pad`, `stride`), `size`, `stride`
# (maxpool). No gate is left: each one's ξ = 1[θ ≥ ½] was folded into the next linear layer
# (X1)–(X2), and the units with ξ = 0 were cut out of the arrays (X3)–(X4).

# %% 1. The predictor: every op of the file, in order
# This is all the computing there is. A dense layer is one product, a convolution a product
# over the sliding windows (the im2col of tutorial 2, as a NumPy view instead of a copy).
import argparse
import gzip
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view as windows


def run_ops(ops, x):
    """The exported network on a batch x of shape (N, *input_shape); returns logits (N, K)."""
    for op in ops:
        kind = str(op["kind"])
        if kind == "select":  # (L20): x (N, D) → (N, K), the input pixels that kept their gate
            x = x[:, in_range(op["index"], x.shape[1])]
        elif kind == "dense":  # (L1): x (N, D) @ W (D, M) + b (M,) → (N, M)
            x = x @ op["W"] + op["b"]
        elif kind == "conv":  # (L7)–(L8): x (N, C, H, W), W (F, C, KH, KW) → (N, F, OH, OW)
            p, s, kh, kw = int(op["pad"]), int(op["stride"]), *op["W"].shape[2:]
            x = windows(np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))), (kh, kw), axis=(2, 3))
            x = x[:, :, ::s, ::s]  # (N, C, OH, OW, KH, KW): every s-th window (L14), a view
            x = np.einsum("nchwij,fcij->nfhw", x, op["W"], optimize=True)  # Σ over c, ky, kx
            x = x + op["b"][:, None, None]
        elif kind == "maxpool":  # (L15): the largest entry of each k×k window, every s pixels
            k, s = int(op["size"]), int(op["stride"])
            x = windows(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))  # (N, C, OH, OW)
        elif kind == "relu":  # (L5)
            x = np.maximum(x, 0)
        elif kind == "flatten":  # (L17): (N, C, H, W) → (N, C·H·W), C order
            x = x.reshape(len(x), -1)
        else:
            raise ValueError(f"unknown op kind {kind!r}; re-export the model with this minibern")
    return x


def logits(model, images, batch_size=1000):
    """The network's logits (N, classes) for ``images``; ``model`` is a path or its arrays."""
    m, ops = read_model(model)  # step 2: the file read and checked
    x = model_input(images, m)  # step 2: (N, *input_shape), pixels in [0, 1]
    try:
        return np.concatenate([run_ops(ops, x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])
    except (IndexError, TypeError, ValueError) as error:  # arrays that do not fit each other
        raise ValueError(f"the model's ops do not fit together ({type(error).__name__}: "
                         f"{error}); the file is damaged: export it again") from error


def predict(model, images, batch_size=1000):
    """The predicted class of each image, (N,) ints: the largest logit."""
    return logits(model, images, batch_size).argmax(axis=1)


# %% 2. Reading the file, and refusing a damaged one
# A file from elsewhere may be cut short, from another program or from another version. Each
# problem is found before anything runs and named with the fix (a ValueError), instead of a
# NumPy error from deep inside step 1.
FORMAT, VERSION = "minibern-export", 1

#: Each op kind and the arrays it needs.
NEEDS = {"select": ("index",), "dense": ("W", "b"), "conv": ("W", "b", "pad", "stride"),
         "maxpool": ("size", "stride"), "relu": (), "flatten": ()}


def read_model(model):
    """``(arrays, ops)``: the file's arrays and its ops as a list of dicts, checked."""
    m = model
    if not isinstance(m, dict):
        try:
            with np.load(m, allow_pickle=False) as archive:
                m = {key: archive[key] for key in archive.files}
        except Exception as error:
            raise ValueError(f"{m} is not a readable .npz ({error}); export it again") from error
    if str(m.get("format", "")) != FORMAT or str(m.get("version", "")) != str(VERSION):
        raise ValueError(f"not a {FORMAT} model of version {VERSION} (format {m.get('format')}, "
                         f"version {m.get('version')}); "
                         "re-export it with minibern.bernoulli.export")
    try:
        present = {key.split("/")[0] for key in m if key.startswith("op") and "/" in key}
        n_ops = int(m["n_ops"])
        if not 1 <= n_ops <= len(present):
            raise ValueError(f"n_ops is {n_ops}, but the file holds {len(present)} ops")
        ops = [{} for _ in range(n_ops)]
        for key in m:  # "op3/W" → ops[3]["W"]
            name, _, field = key.partition("/")
            if name.startswith("op") and name[2:].isdigit() and int(name[2:]) < n_ops:
                ops[int(name[2:])][field] = m[key]
        tuple(int(s) for s in m["input_shape"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"a damaged {FORMAT} model ({type(error).__name__}: {error}); "
                         "export it again") from error
    check_ops(ops)
    return m, ops


def check_ops(ops):
    """ValueError naming the first op a damaged model gets wrong, or a model with no layers."""
    for i, op in enumerate(ops):
        kind = str(op.get("kind", ""))
        missing = [key for key in NEEDS.get(kind, ()) if key not in op]
        if kind not in NEEDS or missing:
            what = (f"has an unknown op kind {kind!r}" if kind not in NEEDS
                    else f"lacks {', '.join(missing)}")
            raise ValueError(f"op {i} of the model {what}; export it again")
        if kind == "select" and not (op["index"].ndim == 1 and op["index"].dtype.kind in "iu"):
            raise ValueError(f"op {i} (select): its index is not a list of integers; "
                             "export it again")
    if not any(str(op["kind"]) in ("dense", "conv") for op in ops):
        raise ValueError("the model has no dense or conv layer (a damaged or empty export); "
                         "export it again")


def in_range(index, width):
    """``index`` if every entry selects one of ``width`` features (NumPy would wrap a negative
    one around silently), else IndexError."""
    if index.size and not 0 <= index.min() <= index.max() < width:
        raise IndexError(f"select index outside the {width} features it selects from")
    return index


def model_input(images, m):
    """``images`` as (N, *input_shape); uint8 pixels divided by 255, as minibern's loader does."""
    x = np.asarray(images)
    x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x
    shape = tuple(int(s) for s in m["input_shape"])
    if x.ndim < 1 or int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise ValueError(f"images of shape {x.shape} do not fit the model's input {shape}: give "
                         f"(N, ...) with {int(np.prod(shape))} values per image, e.g. (N, 784), "
                         "(N, 28, 28) or (N, 1, 28, 28)")
    return x.reshape((x.shape[0],) + shape)


# %% 3. MNIST's test set, from its IDX files
# An IDX file is a 4-byte magic number (0, 0, 8 = unsigned bytes, then the number of
# dimensions), each dimension as a big-endian 32-bit integer, then the bytes themselves.
MAX_FILE_BYTES = 64 * 2**20  # more than any MNIST file holds


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


# %% 4. The test error, against the one training reported
# Folding the gates changes no output (X1)–(X4), so the error measured here should equal the
# test_error in the metrics.json that training wrote beside model.npz.
def describe(ops, m):
    """One short word per op: ``select K of D``, ``dense D→M``, ``conv C→F k×k``, ``relu``..."""
    def one(op):
        kind, shape = str(op["kind"]), getattr(op.get("W"), "shape", ())
        if kind == "select":  # an export puts it first, on the D = prod(input_shape) pixels
            return f"select {op['index'].size} of {int(np.prod(m['input_shape']))}"
        if kind == "dense":
            return f"dense {shape[0]}→{shape[1]}"
        if kind == "conv":
            return f"conv {shape[1]}→{shape[0]} {shape[2]}×{shape[3]}"
        return f"maxpool {int(op['size'])}" if kind == "maxpool" else kind
    return ", ".join(one(op) for op in ops)


def reported_error(model_path):
    """The test_error of the metrics.json beside ``model_path``, or None if there is none."""
    try:
        return float(json.loads((Path(model_path).parent / "metrics.json").read_text())
                     ["test_error"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="runs/tutorial6/model.npz",
                        help="an exported model.npz (default: tutorial 6's)")
    parser.add_argument("--data", default=os.environ.get("MINIBERN_DATA") or "data/mnist",
                        help="folder with MNIST's t10k IDX files (default: $MINIBERN_DATA, "
                             "else data/mnist)")
    args = parser.parse_args(argv)
    try:
        m, ops = read_model(args.model)
        print(f"step 2: {args.model}: {len(ops)} ops: {describe(ops, m)}")
        images = read_idx(Path(args.data) / "t10k-images-idx3-ubyte", 3)
        labels = read_idx(Path(args.data) / "t10k-labels-idx1-ubyte", 1)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} test images but {len(labels)} labels in {args.data}")
        print(f"step 3: MNIST test images {images.shape} {images.dtype}, labels {labels.shape}")
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
    reported = reported_error(args.model)
    expected = ("(no metrics.json beside the model)" if reported is None
                else f"{100 * reported:.2f}%")
    print(f"step 4: test error should equal training's {expected}: got {100 * error:.2f}%")
    print(f"tutorial 10: {args.model} with NumPy alone: test error {100 * error:.2f}% "
          f"on {len(labels)} images"
          + ("" if reported is None else f"; training reported {100 * reported:.2f}%"))
    return 0


# %% Result
if __name__ == "__main__":
    in_notebook = "ipykernel" in sys.modules  # run as cells: the defaults, and no exit
    status = main([] if in_notebook else None)
    if not in_notebook:
        sys.exit(status)

# %% [markdown]
# ## Exercises
# 1. **Leave out the ReLUs.** In `run_ops`, make the `relu` branch do nothing (`pass`). Before
#    you run `python tutorials/10_predict_with_numpy_only.py runs/tutorial6/model.npz`,
#    predict: near the trained error, a few points worse, or near chance (90%)? What kind of
#    function of the pixels is the network then?
# 2. **Forget the 1/255.** In `model_input`, drop the division (keep `astype(np.float32)`).
#    Predict whether the error changes much; then explain it: without the biases, a network
#    of dense layers and ReLUs is positively homogeneous, f(255·x) = 255·f(x) (L1), (L5).
#    How far does the bias break this?
# 3. **Count the work.** Add a line to `main` that sums `op["W"].size` over the dense ops.
#    Predict it from the shapes step 1 prints, and compare with the 266,200 weights of the
#    un-gated LeNet-300-100 (tutorial 3): how many times fewer multiply–adds per image?
