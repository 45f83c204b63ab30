"""``fastres train --baseline mlp``: the same-size software MLP on the same data and schedule.

The MLP has the analog network's layer sizes, its batch size, epochs and seed, the activation
the diodes make (``TrainConfig.baseline_activation``: relu when the upper rail is out of reach,
as with the default rails, hardtanh for two-sided clipping) and the squared error on one-hot
targets; it is trained
with backpropagation (:mod:`fastres.baseline`) and stored in an HDF5 run file like an EqProp run
(``meta.kind = "mlp"``), so the paper's comparison is reproduced in one tool.

On a pulsed device model (``--device``, not ``ideal``) every weight and bias is one device of
that model (:class:`~fastres.pulsed.WeightDevices`: ``w = w_max (g - g_mid) / (g_max -
g_mid)``, ``w_max`` = :data:`~fastres.baseline.DEVICE_RANGE` times the layer's Glorot bound,
``g_min``/``g_max`` the network's), drawn from the run's seed like EqProp's, with the same
pulses, noise, spreads, read noise and accumulate-then-pulse: EqProp on a device is compared
with backpropagation on the same device. The final checkpoint keeps the device state
(optimiser group: conductances ``g.K`` in S and the per-device arrays) and each epoch's pulses.
"""
from __future__ import annotations

import numpy as np

from .version import __version__
from .datasets import load_data
from .baseline import MLPConfig, device_weight_ranges, init_params, train_mlp
from .errors import ConfigError, FastresError
from .pulsed import WeightDevices
from .store import RunStore, generator_state


def train_baseline(cfg, path, *, overwrite=False, log=print):
    data = load_data(cfg)
    try:
        mcfg = MLPConfig(sizes=cfg.sizes, batch_size=cfg.optimizer.batch_size, epochs=cfg.run.epochs, seed=cfg.run.seed,
                         activation=cfg.baseline_activation(), target_scale=cfg.run.mlp_target,
                         **({"lr": cfg.run.mlp_lr if len(cfg.run.mlp_lr) > 1 else cfg.run.mlp_lr[0]}
                            if cfg.run.mlp_lr is not None else {}))
    except ValueError as exc:  # MLPConfig's own validation: a bad option, not a bug
        raise ConfigError(f"MLP baseline: {exc}") from None
    meta = {"fastres_version": __version__, "seed": cfg.run.seed, "dataset": cfg.data.dataset,
            "dataset_checksums": data.checksums, "data_root": str(data.root), "kind": "mlp",
            "mlp_config": repr(mcfg)}
    net = cfg.network

    def make_device():  # None: exact weights; the same devices each call (drawn from the seed)
        if cfg.device.ideal:
            return None
        return WeightDevices(cfg.device, device_weight_ranges(mcfg), net.g_min, net.g_max, cfg.run.seed)
    device = make_device()
    on = "" if device is None else f", on {cfg.device.preset}/{cfg.device.resolved_params()['model']} devices"
    log(f"fastres {__version__}: backprop MLP baseline {cfg.network.arch} ({mcfg.activation}{on}) on "
        f"{cfg.data.dataset}, seed {cfg.run.seed} -> {path}")
    rows = []

    def on_epoch(row):
        rows.append(row)
        log(f"epoch {row['epoch']}/{cfg.run.epochs}: train error {100 * row['train_error']:.2f}% | "
            f"test error {100 * row['test_error']:.2f}% | {row['epoch_seconds']:.1f} s"
            + (f" | {row['pulses']:,} pulses" if "pulses" in row else ""))

    init = init_params(mcfg, np.random.Generator(np.random.PCG64(cfg.run.seed)))  # what train_mlp starts from
    if device is not None:
        make_device().init(init)  # programmed onto the devices, as train_mlp does
    try:
        params, history = train_mlp(mcfg, data, on_epoch=on_epoch, device=device)
    except FloatingPointError as exc:
        raise FastresError(f"MLP baseline: {exc}") from None
    store = RunStore.create(path, config=cfg.resolved().to_dict(), meta=meta, params=init, overwrite=overwrite)
    for row in history:
        m = {k: float(v) for k, v in row.items() if np.isscalar(v) and k != "epoch"}
        m["epoch"] = int(row["epoch"])
        if row is history[-1]:  # the final weights are the one checkpoint after the start
            seed_state = generator_state(np.random.Generator(np.random.PCG64(cfg.run.seed)))
            store.write_checkpoint(m["epoch"], params, {} if device is None else device.state(),
                                   seed_state, metrics=m,
                                   extra={"note": "baseline runs are not resumable; rng_state is "
                                                  "the seed's initial state"})
        else:
            store.append_epoch(m)
    return history[-1]
