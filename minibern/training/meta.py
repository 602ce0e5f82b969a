"""The JSON meta of a checkpoint, checked before anything trusts it.

:meth:`Trainer.state <minibern.training.trainer.Trainer.state>` writes one JSON document beside
the arrays (``__meta__``, see :mod:`.checkpoint`). A checkpoint whose zip is intact may still
carry a meta that is damaged or not ours: a missing ``config`` would let any settings resume it,
a non-integer epoch or a malformed random state would fail deep inside the loop. Every field a
resume reads is checked here for its type, and the first bad one is named with the fix.
"""
from __future__ import annotations

from minibern.training.checkpoint import CheckpointError


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_rng_state(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("bit_generator"), str)
            and isinstance(value.get("state"), dict))


def _is_number_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_dict_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


#: meta field -> (check, what it must be). ``hook_settings`` and ``threads`` (the thread counts)
#: are optional: checkpoints written before they were recorded lack them.
REQUIRED = {
    "epoch": (_is_int, "the number of epochs trained, an integer >= 0"),
    "global_step": (_is_int, "the number of steps trained, an integer >= 0"),
    "optimizer_steps": (_is_int, "the optimiser's step count, an integer >= 0"),
    "config": (lambda v: isinstance(v, dict) and isinstance(v.get("model"), str),
               "the run's TrainConfig, an object naming at least its model"),
    "batch_rng": (_is_rng_state, "a NumPy bit-generator state"),
    "gate_rng": (_is_rng_state, "a NumPy bit-generator state"),
    "hooks": (_is_dict_list, "a list of the hooks' states (objects)"),
    "first_loss": (_is_number_or_none, "a number or null"),
    "n_classes": (lambda v: v is None or _is_int(v), "an integer or null"),
}
OPTIONAL = {
    "hook_settings": (_is_dict_list, "a list of the hooks' settings (objects)"),
    "threads": (lambda v: isinstance(v, dict) and all(
        value is None or _is_int(value) for value in v.values()),
        "the run's thread counts, an object of integers"),
}


def check_meta(path, meta) -> None:
    """Raise :class:`CheckpointError` naming checkpoint ``path``, the first missing or malformed
    meta field, what it must be, and the fix."""
    fix = ("the checkpoint is damaged or was not written by minibern: delete it to start the "
           "run over, or choose another --out; nothing was changed")
    if not isinstance(meta, dict) or not meta:
        raise CheckpointError(f"checkpoint {path} has no run description (__meta__); {fix}")
    for fields, required in ((REQUIRED, True), (OPTIONAL, False)):
        for key, (valid, expected) in fields.items():
            if key not in meta:
                if required:
                    raise CheckpointError(f"checkpoint {path}: its meta lacks {key!r} "
                                          f"({expected}); {fix}")
                continue
            if not valid(meta[key]):
                raise CheckpointError(f"checkpoint {path}: meta {key!r} is {meta[key]!r:.80}, "
                                      f"expected {expected}; {fix}")
