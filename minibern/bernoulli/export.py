r"""Export the deterministic network to a plain ``.npz`` that NumPy alone can run.

Derivation: docs/derivations/export.md, (X1)–(X4).
:func:`load_network` reads it back into engine layers; ``tutorials/10_predict_with_numpy_only.py``
runs it with NumPy alone (a file meant to be copied out of the project).

Format (version 1)
------------------
One ``.npz`` of host arrays, read with ``numpy.load(path, allow_pickle=False)``:

``format``       0-d str ``"minibern-export"``
``version``      0-d int, :data:`FORMAT_VERSION`
``input_shape``  int64 (d,): one example's raw input, ``(784,)`` or ``(1, 28, 28)``
``n_ops``        0-d int K; the network is ``op0`` applied first, … ``op{K-1}`` last
``op{k}/kind``   0-d str, one of :data:`KINDS`; ``op{k}/name`` the layer it came from

and per kind (float arrays in the net's dtype, float32 by default):

=========== ========================================================================
``select``  ``index`` int64 (K,), ``in_features`` int: ``y = x[:, index]`` (L20)
``dense``   ``W`` (D, M), ``b`` (M,): ``y = x @ W + b`` (L1)
``conv``    ``W`` (F, C, KH, KW), ``b`` (F,), ``stride``, ``pad`` ints (L8), (L14)
``maxpool`` ``size``, ``stride`` ints (L15)
``relu``    ``y = max(x, 0)`` (L5)
``flatten`` ``(N, C, H, W) -> (N, C·H·W)``, C-order (L17)
=========== ========================================================================

Gates
-----
There are no gate ops: every :class:`~minibern.bernoulli.gate.BernoulliGate` is replaced by its
evaluation mask ξ_i = 1[θ_i ≥ ½] and *dropped*, so the exported arrays are the pruned network.
A gate commutes with the ReLU/max-pool layers between it and the next Dense/Conv2D (X1); that
consumer keeps only the rows (input channels; across a Flatten, the H·W-row block of each
channel) of units with ξ_i = 1 (X2)–(X3); the producer of those units loses the matching
columns (filters) and bias entries (X3); a gate on the raw 2-D input becomes a ``select`` op,
composed with a ``SelectFeatures`` already in front (X4). Where units cannot be dropped (a gate
on raw 4-D image channels, or on the flattened features of a conv) ξ multiplies the consumer's
rows instead, (X2). An all-zero gate, and a gate after the last linear layer, raise ValueError.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass

from minibern import backend as B
from minibern import layers as L
from minibern.training import checkpoint as ckpt

np = B.host

FORMAT_NAME = "minibern-export"
FORMAT_VERSION = 1

#: The engine layer of each op kind (each rebuilds itself from its record: ``from_op``).
LAYERS = {layer.op_kind: layer for layer in (L.SelectFeatures, L.Dense, L.Conv2D, L.ReLU,
                                             L.MaxPool2D, L.Flatten)}
KINDS = tuple(LAYERS)

#: Axes of a linear op's W along which its (input units, output units) lie: Dense W is (D, M),
#: Conv2D W is (F, C, KH, KW).
UNIT_AXES = {"dense": (0, 1), "conv": (1, 0)}


def _width(op) -> int:
    """Number of output units (features, filters) of a linear op, as the gates count them."""
    if op["kind"] == "select":
        return op["index"].size
    return op["W"].shape[UNIT_AXES[op["kind"]][1]]


def _drop_outputs(op, keep) -> None:
    """Remove the producer's output units not in ``keep`` (X3), or compose the index (X4)."""
    if op["kind"] == "select":
        op["index"] = op["index"][keep]  # (X4)
    else:
        op["W"] = np.take(op["W"], keep, axis=UNIT_AXES[op["kind"]][1])  # (X3)
        op["b"] = op["b"][keep]  # (X3)


def _consume(op, xi, producer, ops, input_width, gate_name) -> None:
    """Fold the pending mask ``xi`` into the consumer ``op``'s rows / input channels."""
    axis = UNIT_AXES[op["kind"]][0]
    rows = op["W"].shape[axis]
    if rows % xi.size:
        raise ValueError(f"layer {op['name']!r} has {rows} inputs, which cannot follow a gate over "
                         f"{xi.size} units; fix the gate's n_units or the layer's input size")
    group = rows // xi.size  # H·W rows per channel across a Flatten (L17), else 1
    keep = np.flatnonzero(xi)
    if producer is None and input_width is None:  # cannot drop: multiply rows, (X2)
        factor = np.repeat(xi, group).astype(op["W"].dtype)
        shape = [1] * op["W"].ndim
        shape[axis] = -1
        op["W"] = op["W"] * factor.reshape(shape)  # (X2)
        return
    if producer is not None:
        _drop_outputs(producer, keep)  # (X3)
    else:  # a gate on the raw 2-D input: select the kept features in front, (X4)
        ops.insert(0, {"kind": "select", "name": gate_name, "index": keep.astype(np.int64),
                       "in_features": input_width})
    rows_kept = (keep[:, None] * group + np.arange(group)).ravel()
    op["W"] = np.take(op["W"], rows_kept, axis=axis)  # (X3)


@dataclass
class _Fold:
    """What the walk of :func:`deterministic_ops` carries from the gates to the next linear op.

    ``xi`` is the pending 0/1 mask over the current units (X1), ``gate`` the last gate that
    contributed to it (for messages), ``producer`` the op whose output units ``xi`` is over when
    they can be dropped (X3), ``raw_width`` the raw 2-D input's width while nothing linear came
    before (X4).
    """

    xi: object = None
    gate: str | None = None
    producer: dict | None = None
    raw_width: int | None = None

    def add_gate(self, name: str, mask) -> None:
        """Multiply the gate's evaluation mask (n,) into ``xi``; two gates on the same units
        multiply (X1), a feature gate after a channel gate repeats each channel's ξ_c."""
        if self.xi is not None and self.xi.size != mask.size:  # a feature gate after a channel gate
            self.xi = np.repeat(self.xi, mask.size // self.xi.size)
            self.producer = self.raw_width = None
        self.xi = mask if self.xi is None else self.xi * mask  # (X1)
        self.gate = name
        if not self.xi.any():
            what = (f"all {mask.size} θ are below ½" if not mask.any() else
                    f"with the gates before it, it keeps none of its {mask.size} units")
            raise ValueError(
                f"gate {name!r}: {what}, so the deterministic network's output no longer "
                "depends on its input and cannot be exported — keep at least one unit "
                "(e.g. retrain with a smaller κ)")
        if self.producer is not None and _width(self.producer) != self.xi.size:
            self.producer = None  # e.g. a gate on the flattened features of a conv
        if self.raw_width is not None and self.raw_width != self.xi.size:
            self.raw_width = None


def deterministic_ops(net) -> list[dict]:
    r"""The deterministic network of ``net`` as a list of op dicts of host arrays, gates folded.

    Parameters
    ----------
    net : minibern.layers.Sequential
        Of Dense, Conv2D, MaxPool2D, ReLU, Flatten, SelectFeatures and BernoulliGate layers,
        with ``net.input_shape`` set. It is only read; its mode does not matter.

    Returns
    -------
    list of dict
        ``{"kind", "name", ...arrays/ints}`` in the order of the module docstring's table.

    Notes
    -----
    A gate multiplies unit i by ξ_i = 1[θ_i ≥ ½]. With h the consumer's input before the gate,
    K = {i : ξ_i = 1}, D_ξ = diag(ξ) and, for a producer, h_i = g(x W'_{:,i} + b'_i):

    .. math::
        \max(\xi_c a, 0) = \xi_c \max(a, 0), \qquad
        \max_j \xi_c a_j = \xi_c \max_j a_j \qquad (\xi_c \ge 0)              \tag{X1}

        (\xi \odot h)\, W = h\, (D_\xi W), \qquad
        \textstyle\sum_c (\xi_c h_c) \star W_{f,c} = \sum_c h_c \star (\xi_c W_{f,c})   \tag{X2}

        (\xi \odot h)\, W = h_K\, W_{K,:}, \qquad
        h_K = g(x\, W'_{:,K} + b'_K)                                              \tag{X3}

        (\xi \odot x)\, W = x[:, K]\, W_{K,:}                                       \tag{X4}

    (X1) moves ξ past ReLU and max-pooling to the next Dense/Conv2D; across a Flatten ξ_c
    covers the rows c·H·W … c·H·W + H·W − 1. (X3) drops rows and the producer's columns
    (filters, bias entries); (X4) is the ``select`` op for gates on the raw 2-D input.
    """
    input_shape = tuple(getattr(net, "input_shape", ()) or ())
    if not input_shape:
        raise ValueError("net has no input_shape; set e.g. net.input_shape = (784,) before exporting")
    ops: list[dict] = []
    # Raw 2-D input with nothing linear before: gates on it become a select op (X4).
    fold = _Fold(raw_width=input_shape[0] if len(input_shape) == 1 else None)
    for name, layer in net:
        if layer.is_gate:
            fold.add_gate(name, layer.deterministic_mask())
            continue
        # ReLU and max-pooling commute with the pending ξ (X1); across a Flatten ξ_c covers a
        # block of H·W rows; a linear layer takes ξ into its rows (X2)–(X4)
        op = layer.export_op(name)
        if layer.is_linear:
            if fold.xi is not None:
                _consume(op, fold.xi, fold.producer, ops, fold.raw_width, fold.gate)
            fold = _Fold(producer=op)
        elif layer.selects_inputs:
            if fold.xi is not None:  # a gate on the raw inputs, then a select: xi[index] is pending
                fold.xi = fold.xi[layer.index]
            fold.producer, fold.raw_width = op, None
        ops.append(op)
    if fold.xi is not None:
        raise ValueError(f"gate {fold.gate!r} follows the last Dense/Conv2D layer, so there is no "
                         "layer to fold it into; remove it or add a linear layer after it")
    return ops


def export_npz(net, path):
    """Write the deterministic ``net`` to ``path`` (atomically) in the module's format.

    Parameters
    ----------
    net : minibern.layers.Sequential
        See :func:`deterministic_ops`.
    path : str or os.PathLike
        The ``.npz`` to write; a previous file there is replaced only once the new one is
        complete (:func:`minibern.training.checkpoint.write_npz`: temp file + ``os.replace``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    ops = deterministic_ops(net)
    arrays = {"format": np.array(FORMAT_NAME), "version": np.array(FORMAT_VERSION),
              "input_shape": np.array(net.input_shape, dtype=np.int64),
              "n_ops": np.array(len(ops))}
    for k, op in enumerate(ops):
        for key, value in op.items():
            arrays[f"op{k}/{key}"] = np.asarray(value)
    return ckpt.write_npz(path, arrays)


def load_network(path) -> L.Sequential:
    """The network of an exported ``.npz`` as engine layers on the current backend (evaluation
    only: its deterministic ops need no gates). Raises ValueError for a file that is not one."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz ({error}); export it again") from error
    try:
        version = int(arrays.get("version", -1))
    except (TypeError, ValueError):
        version = None
    if str(arrays.get("format", "")) != FORMAT_NAME or version != FORMAT_VERSION:
        raise ValueError(f"{path} is not a {FORMAT_NAME} model of version {FORMAT_VERSION}; "
                         "re-export it with minibern.bernoulli.export.export_npz")
    try:
        return _network(arrays, path)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is a damaged {FORMAT_NAME} model ({type(error).__name__}: "
                         f"{error}); export it again") from error


def _network(arrays: dict, path) -> L.Sequential:
    """The engine layers of an export's ``arrays`` (see :func:`load_network`)."""
    layers = []
    for k in range(int(arrays["n_ops"])):
        op = {key.split("/", 1)[1]: value for key, value in arrays.items()
              if key.startswith(f"op{k}/")}
        kind, name = str(op["kind"]), str(op["name"])
        if kind not in LAYERS:
            raise ValueError(f"{path}: unknown op kind {kind!r}; re-export it with this minibern")
        layer = LAYERS[kind].from_op(op)
        layers.append((f"op{k}_{name}", layer))
    net = L.Sequential(*layers)
    net.input_shape = tuple(int(s) for s in arrays["input_shape"])
    return net.eval()


def export_and_score(net, path, images, labels, batch_size: int = 1000) -> float:
    """Export ``net`` to ``path`` and return the error rate of the *file* on host ``images``.

    The file is read back by :func:`load_network` and evaluated by the engine, so this checks
    the export end to end; on the test set it equals the engine's ``test_error``. ``images``
    (N, ...) are scaled as the MNIST loader scales them; ``labels`` int (N,).
    """
    export_npz(net, path)
    exported = load_network(path)
    images = np.asarray(images).reshape((len(images),) + exported.input_shape)
    wrong = 0
    for start in range(0, len(images), batch_size):
        logits = exported.forward(B.asarray(images[start:start + batch_size]))
        wrong += int((B.to_numpy(logits).argmax(axis=1)
                      != np.asarray(labels)[start:start + batch_size]).sum())
    return wrong / len(images)
