"""One way to build a run: the network, its data splits, the gate hook and the trainer.

The CLI (``python -m minibern train``), the tutorials that train a gated network as a whole
(7–9, 11) and ``experiments/moving_weights.py`` build a run here, so a run of theirs is the run
the CLI would make with the same settings (tutorial 6 builds the same pieces one by one, to
show them):

1. the network of ``config.model`` at ``config.width_mult``, its weights drawn from the run's
   weight stream (:func:`~minibern.training.trainer.run_rngs`), gated at the paper's sites
   (:data:`~minibern.bernoulli.gated_models.GATE_SITES`) when there is a ``gate_config``;
2. the splits on the backend (:func:`~minibern.training.trainer.device_splits`);
3. the :class:`~minibern.bernoulli.hook.GateTrainer`, priced for the training split's N (B15),
   after any ``hooks`` of the caller;
4. the :class:`~minibern.training.trainer.Trainer`.
"""
from __future__ import annotations

from dataclasses import replace

from minibern.bernoulli.config import GateConfig
from minibern.bernoulli.gated_models import build_model
from minibern.bernoulli.hook import GateTrainer
from minibern.training.trainer import (TrainConfig, Trainer, device_splits, run_rngs,
                                       steps_per_epoch)


def build_network(config: TrainConfig, gate_config: GateConfig | None = None):
    """The run's network: ``config.model`` drawn from the run's weight stream, with gates at θ₀
    = ``gate_config.theta_init`` if ``gate_config`` is given."""
    return build_model(config.model, config.width_mult, seed=run_rngs(config.seed)[0],
                       init=config.init, init_scale=config.init_scale,
                       gates=gate_config is not None,
                       theta_init=gate_config.theta_init if gate_config else 1.0)


def build_run(config: TrainConfig, data, gate_config: GateConfig | None = None, *, net=None,
              hooks=(), log=print, snapshots_per_epoch: int = 0, progress_stream=None) -> Trainer:
    """The :class:`~minibern.training.trainer.Trainer` of a run (module docstring).

    Parameters
    ----------
    config : TrainConfig
    data : minibern.data.MNIST
        Host arrays; ``config.train_subset`` of the training images are used.
    gate_config : GateConfig, optional
        Gate the network and learn θ with these settings; ``None``: an un-gated run.
    net : minibern.layers.Sequential, optional
        The run's network, if the caller drew it already with :func:`build_network` (to look
        at it or hand it to a hook first); default: drawn here.
    hooks : sequence of Hook
        The caller's hooks, run before the gate hook.
    log : callable
    snapshots_per_epoch : int
        With gates, record θ this many times per epoch (``gate_config.snapshot_every`` set
        from the steps per epoch); 0 keeps ``gate_config.snapshot_every``.
    """
    net = build_network(config, gate_config) if net is None else net
    splits = device_splits(data, net.input_shape, config.train_subset)
    hooks = list(hooks)
    if gate_config is not None:
        if snapshots_per_epoch:
            steps = steps_per_epoch(splits["train"].size, config.batch_size)
            gate_config = replace(gate_config,
                                  snapshot_every=max(1, steps // snapshots_per_epoch))
        hooks.append(GateTrainer(net, gate_config, splits["train"].size))
    return Trainer(net, splits, config, hooks=hooks, log=log, progress_stream=progress_stream)
