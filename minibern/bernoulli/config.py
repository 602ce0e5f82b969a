"""The θ-learning settings, :class:`GateConfig`, and what a run records of them.

Each field is one CLI flag of ``python -m minibern train`` (``--kappa``, ``--theta-lr``, ...).
:data:`RETIRED` lists the settings of the snap rules this code no longer has: runs record them
at their off values (metrics.json's ``gate_config``, a checkpoint's gate settings), so files
stay comparable with recorded runs and an old checkpoint resumes exactly when they were off.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from minibern import backend as B
from minibern.bernoulli.averaging import check_window
from minibern.bernoulli.objective import check_theta
from minibern.training.resume import RETIRED_SETTINGS

np = B.host

#: ``estimator`` names (:func:`minibern.bernoulli.estimators.make_estimator`).
ESTIMATORS = ("first-order", "removal", "exact", "compensated")

#: The removed snap rules' settings at the values that turned them off (``snap_tol`` = 0) and
#: their default patiences. A checkpoint saved with other values cannot be continued by this
#: code (also one whose patiences differ while ``snap_tol`` was 0, although they were unused
#: then: such a run resumes with the code that trained it).
RETIRED = {"snap_tol": 0.0, "keep_patience": 50, "keep_after": 5.0, "zero_patience": 30}
RETIRED_SETTINGS.update({("gates", key): " (a setting of the snap rules, which this code no "
                         "longer has: continue that run with the code that trained it)"
                         for key in RETIRED})


@dataclass
class GateConfig:
    """The θ-learning settings (the CLI's ``--kappa``, ``--theta-lr``, ...).

    Visits per step (``subset``, ``first_subset``) are the cheapest setting of the estimator
    table (docs/derivations/estimators.md, "Measured: the estimator table"); a model may visit
    fewer (:data:`MODEL_VISITS`, :func:`gate_config_for`, which the CLI uses). ``average_visits``
    is W of (C3); ``decide_alpha`` the level α of the decision rule (C9), 0 to turn it off;
    ``audit`` the end-of-run check (C11)–(C12). ``kappa_per_param`` and
    ``kappa_expected_params`` price a unit by its parameters, (B14) and (B14′).
    ``theta_bound_epochs`` E > 0 keeps θ inside [b, 1 − b], b = ``theta_bound``, until epoch E,
    so that no estimate made at near-random weights puts a gate on a vertex, (R7) of
    docs/derivations/compensated.md (0: off). ``fused_estimator`` computes the removal estimate
    of every gate layer in one pass (:mod:`minibern.bernoulli.removal_fused`: fewer array
    operations, other rounding). What these defaults give on MNIST, with and
    without the rule: docs/RESULTS.md.
    """

    estimator: str = "removal"
    kappa: float = 5.5
    kappa_per_param: bool = False
    kappa_expected_params: bool = False
    theta_lr: float = 50.0
    theta_decay: float | None = 5.0
    theta_warmup: float = 0.0
    theta_init: float = 1.0
    hyperprior: bool = True
    gamma: float = 0.5
    subset: int | None = 16
    first_subset: int | None = 16
    prune: bool = True
    prune_patience: int = 30
    snapshot_every: int = 0
    average_visits: int = 20
    decide_alpha: float = 0.05
    decide_min_visits: int = 10
    decide_at_one: bool = False
    audit: bool = True
    theta_bound: float = 0.05
    theta_bound_epochs: float = 0.0
    fused_estimator: bool = False

    def validate(self) -> "GateConfig":
        """Raise ValueError naming the first bad field, its value and the fix (NaN and infinity
        are refused everywhere)."""
        for name in ("kappa", "theta_lr", "theta_init", "gamma", "theta_decay", "theta_warmup",
                     "decide_alpha", "theta_bound", "theta_bound_epochs"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float))
                                          and not isinstance(value, bool) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; expected one of "
                             f"{', '.join(ESTIMATORS)}")
        for name in ("subset", "first_subset"):
            check_visits(getattr(self, name), name)
        if self.fused_estimator and self.estimator != "removal":
            raise ValueError(f"--fused-estimator computes the removal estimator, not "
                             f"{self.estimator!r}; use it with --estimator removal")
        check_theta(np.asarray(self.theta_init), "theta_init")
        if not self.kappa >= 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa!r}; use e.g. --kappa 5.5")
        if self.kappa_per_param and self.kappa_expected_params:
            raise ValueError("kappa_per_param and kappa_expected_params are two ways to price a "
                             "unit; choose one (--kappa-per-param or --kappa-expected-params)")
        if not self.theta_lr > 0:
            raise ValueError(f"theta_lr must be > 0, got {self.theta_lr!r}")
        if not self.theta_warmup >= 0:
            raise ValueError(f"theta_warmup must be >= 0 (epochs; 0: no ramp), got "
                             f"{self.theta_warmup!r}")
        if self.theta_decay is not None and not self.theta_decay > 0:
            raise ValueError(f"theta_decay must be > 0 (epochs), got {self.theta_decay!r}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {self.gamma!r}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0 (0: at epoch ends only), got "
                             f"{self.snapshot_every!r}")
        check_window(self.average_visits)
        if not 0 <= self.decide_alpha < 1:
            raise ValueError(f"decide_alpha must lie in [0, 1) (0: no decision rule), got "
                             f"{self.decide_alpha!r}; use e.g. --decide-alpha 0.05")
        if not 0 < self.theta_bound < 0.5:
            raise ValueError(f"theta_bound must lie in (0, 0.5), got {self.theta_bound!r}; use "
                             "e.g. --theta-bound 0.05")
        if not self.theta_bound_epochs >= 0:
            raise ValueError(f"theta_bound_epochs must be >= 0 (epochs; 0: off), got "
                             f"{self.theta_bound_epochs!r}")
        for name in ("prune_patience", "decide_min_visits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        return self


def check_visits(value, name: str = "subset"):
    """Gates visited per step: a positive int, or None for all; ValueError otherwise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


#: Gates visited per step where a model's costs call for other values than GateConfig's: the
#: fields of GateConfig to override, by model name (docs/derivations/estimators.md, "Visits per
#: step by model"). LeNet-5-Caffe's first two gate layers have 20 and 50 filters, and a visit to
#: one of them re-runs the network from its consumer on (conv2 or fc1, then the rest) for every
#: example that the flip changes.
MODEL_VISITS = {"lenet5": {"first_subset": 2, "subset": 4}}


def gate_config_for(model: str, **settings) -> GateConfig:
    """:class:`GateConfig` with ``model``'s visits per step (:data:`MODEL_VISITS`), then
    ``settings`` (which win)."""
    config = GateConfig(**{**MODEL_VISITS.get(model, {}), **settings})
    if config.fused_estimator and model not in FUSED_MODELS:
        raise ValueError(f"--fused-estimator runs chains of Dense layers "
                         f"({', '.join(FUSED_MODELS)}), not {model}'s conv gates; leave it off "
                         "for this model")
    if config.estimator in DENSE_ONLY and model not in DENSE_ONLY[config.estimator]:
        raise ValueError(f"--estimator {config.estimator} re-fits dense consumers only "
                         f"({', '.join(DENSE_ONLY[config.estimator])}), not {model}'s conv gates; "
                         "use --estimator removal for this model")
    return config


#: Estimators that support only some models' gates: ``{estimator: models}`` (the compensated
#: estimate re-fits a Dense consumer of dense activations, docs/derivations/compensated.md).
DENSE_ONLY = {"compensated": ("lenet300",)}

#: Models whose gates ``--fused-estimator`` runs (chains of Dense layers,
#: :mod:`minibern.bernoulli.removal_fused`).
FUSED_MODELS = ("lenet300",)


#: Settings a run records only when they are on (``theta_bound_epochs`` > 0,
#: ``fused_estimator``): runs without them write the same files as before the settings existed.
RECORDED_WHEN_ON = {"theta_bound_epochs": ("theta_bound", "theta_bound_epochs"),
                    "fused_estimator": ("fused_estimator",)}


def recorded_config(config: GateConfig) -> dict:
    """The settings as a run records them: every field, and the :data:`RETIRED` ones at their
    off values, in the order the fields once had; :data:`RECORDED_WHEN_ON` only when on."""
    fields = asdict(config)
    for switch, names in RECORDED_WHEN_ON.items():
        if not fields[switch]:
            for name in names:
                del fields[name]
    split = list(fields).index("prune")  # where the retired settings stood
    before, after = list(fields)[:split], list(fields)[split:]
    return {**{key: fields[key] for key in before}, **RETIRED,
            **{key: fields[key] for key in after}}


def gate_settings(config: GateConfig) -> dict:
    """The gate settings a resumed run must share with its checkpoint (``Hook.settings``): a
    checkpoint saved with a :data:`RETIRED` setting on differs from them there."""
    return {"gates": recorded_config(config)}
