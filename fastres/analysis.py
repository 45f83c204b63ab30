"""Read a training run file for analysis: metrics, conductances, stored samples, the network.

Usage::

    from fastres.analysis import open_run

    run = open_run("RUN.h5")
    run.config, run.meta                    # dicts (as stored)
    run.metrics["test_error"]               # one value per finished epoch (numpy arrays)
    run.metrics.table()                     # [{"epoch": 1, "test_error": ..., ...}, ...]
    run.epochs                              # checkpoint epochs, 0 = initial conductances
    run.conductances(5)                     # {"W1": (1568, 100) S, "B1": ..., ...}
    run.samples(5)                          # test_pred, test_label, v_layer1, ... of epoch 5
    tn = run.network(5)                     # TrainedNetwork: .net, .params, .solve(X), .predict(X)
    run.summary()                           # best/last error, timing, conductances at bounds, ...
    evaluate_run("RUN.h5")                  # test/train error recomputed from the conductances
    export_netlist("RUN.h5", "OUT.cir", sample=3)   # the trained network as an ngspice deck

The run's configuration is migrated from the file's layout version (:mod:`fastres.config`),
so ``run.config`` is the flat option dict and ``run.train_config()`` the sectioned
:class:`~fastres.config.TrainConfig` for files of every layout version. Nothing here imports
the training code: the network is rebuilt from the config alone.

Live runs: the trainer replaces the whole file atomically at every commit (see
:mod:`fastres.store`), and a :class:`Run` keeps no HDF5 handle: every call opens, reads and
closes the file. ``run.snapshot()`` reads metrics and the checkpoint list from ONE version of
the file, so the two always agree (``len(metrics) == len(epochs) - 1`` for an EqProp run);
``summary()`` and :func:`fastres.report.make_report` work from one snapshot. Reading
``run.metrics`` and then ``run.epochs`` separately can straddle a commit. Checkpoints are
append-only, so any epoch listed in a snapshot stays readable.

Errors: a missing, truncated, corrupt or non-fastres file raises
:class:`~fastres.store.StoreError` whose message starts with the file's path.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TrainConfig, run_config
from .datasets import DatasetError, load_data
from .errors import FastresError
from .evaluate import evaluate
from .crossbar import DROP_SAMPLES, evaluate_wired, make_network, with_wires
from .network import LayeredNetwork
from .solver import Newton, solve
from .store import RunStore, Snapshot, StoreError

__all__ = ["open_run", "Run", "Metrics", "RunSnapshot", "TrainedNetwork", "StoreError",
           "bound_fractions", "layer_names", "evaluate_run", "load_run_data", "export_netlist",
           "status_line"]

#: Relative tolerance for "at a bound": the optimiser clips to g_min / g_max exactly, so any
#: tolerance far below the spacing of trained values works; this one absorbs float round-off.
BOUND_RTOL = 1e-9


class Metrics(dict):
    """``{name: 1-D numpy array}``, one row per finished epoch (``epoch`` first)."""

    def __len__(self) -> int:  # number of rows, not of names
        return 0 if "epoch" not in self else int(len(self["epoch"]))

    @property
    def names(self) -> list:
        return list(self.keys())

    def table(self) -> list:
        """The rows as a list of ``{name: python scalar}`` dicts (``epoch`` an int; NaN where a
        metric was not reported that epoch)."""
        rows = []
        for i in range(len(self)):
            row = {}
            for k, v in self.items():
                x = v[i].item()
                row[k] = int(x) if k == "epoch" else x
            rows.append(row)
        return rows

    def column(self, name) -> np.ndarray | None:
        """A metric's array, or None if the run never reported it."""
        return self.get(name)


@dataclass(frozen=True)
class RunSnapshot:
    """Metrics and checkpoint epochs of one version of the file."""

    metrics: Metrics
    epochs: list          # checkpoint epochs (0 = initial conductances)
    latest: int           # the latest checkpoint epoch


@dataclass
class TrainedNetwork:
    """A run's network rebuilt with one checkpoint's conductances.

    ``net`` is a :class:`~fastres.network.LayeredNetwork`, ``params`` the conductances (S),
    ``config`` the :class:`~fastres.config.TrainConfig` of the run, ``epoch`` the checkpoint,
    ``alg`` the run's Newton settings.
    """

    net: LayeredNetwork
    params: dict
    config: TrainConfig
    epoch: int
    alg: Newton = field(default_factory=Newton)

    def __iter__(self):  # allows ``net, params = run.network()``
        yield self.net
        yield self.params

    def solve(self, X) -> np.ndarray:
        """Free-node voltages (B, nF) in V (kernel order, see ``net.node_names()``) for pixels
        ``X`` (B, n_in) in [0, 1]; raises ConvergenceError if a sample does not converge."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return solve(self.net.problem(self.params, X), self.alg).x

    def outputs(self, X) -> np.ndarray:
        """Class outputs ``V(op_k) - V(on_k)`` (B, n_classes) in V."""
        return self.net.outputs(self.solve(X))

    def predict(self, X) -> np.ndarray:
        """Predicted classes (B,)."""
        return np.argmax(self.outputs(X), axis=1)

    def node_voltages(self, x) -> dict:
        """``{node name: volts}`` of every free node for ONE sample's pixels ``x`` (n_in,)."""
        v = self.solve(np.asarray(x, dtype=np.float64)[None, :])[0]
        return dict(zip(self.net.node_names(), v.tolist()))

    def circuit(self, x, title=None):
        """The network with pixels ``x`` (n_in,) as a :class:`~fastres.circuit.Circuit`."""
        return self.net.to_circuit(self.params, np.asarray(x, dtype=np.float64), title=title)


def layer_names(params: dict) -> list:
    """Layer numbers ``l`` with conductances ``W{l}`` in ``params``, sorted."""
    out = []
    for k in params:
        if k.startswith("W") and k[1:].isdigit():
            out.append(int(k[1:]))
    return sorted(out)


def bound_fractions(params: dict, g_min: float, g_max: float) -> dict:
    """Per layer ``l`` (``W{l}`` and ``B{l}`` together): fraction of conductances at ``g_min``
    and at ``g_max`` (within a relative ``BOUND_RTOL``). Returns
    ``{l: {"g_min": f, "g_max": f, "count": n}}``."""
    out = {}
    for l in layer_names(params):
        parts = [np.ravel(params[f"W{l}"])]
        for bias in (f"B{l}", f"b{l}"):
            if bias in params:
                parts.append(np.ravel(params[bias]))
        g = np.concatenate(parts)
        n = g.size
        lo = int(np.count_nonzero(g <= g_min * (1 + BOUND_RTOL)))
        hi = int(np.count_nonzero(g >= g_max * (1 - BOUND_RTOL)))
        out[l] = {"g_min": lo / n if n else math.nan, "g_max": hi / n if n else math.nan,
                  "count": n}
    return out


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[np.isfinite(a)]


class Run:
    """Read-only view of one run file; holds no HDF5 handle (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        store = RunStore.open(self.path)
        self._train_config = run_config(store)
        self._config = self._train_config.to_flat()
        self._meta = store.meta
        self._created = self._meta.get("created")
        self.layout_version = store.layout_version

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ---- plumbing
    def _store(self) -> RunStore:
        """A fresh read-only store; refuses a file replaced by a different run meanwhile."""
        store = RunStore.open(self.path)
        created = store.meta.get("created")
        if created != self._created:
            raise StoreError(f"{self.path}: the run file was replaced by a different run "
                             f"(created {created}, the one opened was created {self._created}); "
                             f"open it again")
        return store

    # ---- static information
    @property
    def config(self) -> dict:
        """The run configuration as flat ``{option: value}`` (a copy), migrated from the file's
        layout version."""
        import copy
        return copy.deepcopy(self._config)

    @property
    def meta(self) -> dict:
        """Provenance metadata (a copy)."""
        import copy
        return copy.deepcopy(self._meta)

    @property
    def kind(self) -> str:
        """``"eqprop"`` for an analog network, ``"mlp"`` for a backprop baseline run."""
        return str(self._meta.get("kind", "eqprop"))

    @property
    def configured_epochs(self) -> int | None:
        e = self._config.get("epochs")
        return None if e is None else int(e)

    def train_config(self) -> TrainConfig:
        """The run's :class:`~fastres.config.TrainConfig` (sections)."""
        return self._train_config

    # ---- growing information
    def snapshot(self) -> RunSnapshot:
        """Metrics, checkpoint epochs and latest checkpoint from one version of the file."""
        s: Snapshot = self._store().snapshot()
        return RunSnapshot(Metrics(s.metrics), list(s.checkpoints), int(s.latest_checkpoint))

    @property
    def metrics(self) -> Metrics:
        """Per-epoch metrics (read now); ``.table()`` gives the rows as dicts."""
        return self.snapshot().metrics

    @property
    def epochs(self) -> list:
        """Epochs of the stored checkpoints (read now); 0 holds the initial conductances."""
        return self.snapshot().epochs

    @property
    def latest_epoch(self) -> int:
        return self.snapshot().latest

    def checkpoint(self, epoch=None):
        """The full :class:`~fastres.store.Checkpoint` ``epoch`` (None = latest)."""
        return self._store().load_checkpoint(epoch)

    def conductances(self, epoch=None) -> dict:
        """``{name: array}`` of checkpoint ``epoch`` (None = latest), in siemens."""
        if self.kind == "mlp":
            raise StoreError(f"{self.path}: a backprop MLP baseline run; its parameters are "
                             f"weights, not conductances")
        return self.checkpoint(epoch).params

    def samples(self, epoch=None) -> dict:
        """Per-sample arrays stored with checkpoint ``epoch`` (None = latest): ``test_pred``,
        ``test_label`` (whole test set), ``v_layer1``... (node voltages, V, of the first
        ``store_samples`` test samples; the last layer is the output layer)."""
        store = self._store()
        if epoch is None:
            epoch = store.latest_checkpoint
        return store.samples(epoch)

    def network(self, epoch=None, wire_ohms=None, tile=None) -> TrainedNetwork:
        """The network rebuilt from the config with checkpoint ``epoch``'s conductances;
        ``wire_ohms`` (ohm), ``tile`` (cells or "whole"): deployed on these crossbar wires
        instead of the stored ones (:func:`fastres.crossbar.with_wires`)."""
        if self.kind == "mlp":
            raise StoreError(f"{self.path}: a backprop MLP baseline run has no analog network")
        cfg = with_wires(self.train_config(), wire_ohms, tile)
        ck = self.checkpoint(epoch)
        net = make_network(cfg)
        params = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in ck.params.items()}
        try:
            net.check_params(params)
        except FastresError as exc:
            raise StoreError(f"{self.path}: checkpoint {ck.epoch} does not fit the configured "
                             f"network {cfg.network.arch}: {exc}") from None
        return TrainedNetwork(net, params, cfg, ck.epoch, Newton.from_config(cfg.solver))

    def bound_fractions(self, epoch=None) -> dict:
        """:func:`bound_fractions` of checkpoint ``epoch`` with the run's g_min / g_max."""
        return bound_fractions(self.conductances(epoch), float(self._config["g_min"]),
                               float(self._config["g_max"]))

    # ---- summary
    def summary(self, snapshot: RunSnapshot | None = None) -> dict:
        """Key numbers of the run, all taken from one snapshot of the file.

        Errors are fractions (not %), times in s. ``None`` where the run did not record a
        quantity (e.g. no finished epoch yet).
        """
        snap = self.snapshot() if snapshot is None else snapshot
        m = snap.metrics
        cfg = self._config
        out = {
            "path": str(self.path),
            "kind": self.kind,
            "arch": cfg.get("arch"),
            "diode": cfg.get("diode"),
            "dataset": cfg.get("dataset"),
            "seed": cfg.get("seed"),
            "configured_epochs": self.configured_epochs,
            "epochs": len(m),
            "latest_checkpoint": snap.latest,
            "complete": self.configured_epochs is not None and snap.latest >= self.configured_epochs,
            "g_min": cfg.get("g_min"),
            "g_max": cfg.get("g_max"),
        }

        def col(name):
            a = m.get(name)
            return None if a is None else np.asarray(a, dtype=np.float64)

        te = col("test_error")
        if te is not None and np.any(np.isfinite(te)):
            i = int(np.nanargmin(te))
            out["best_test_error"] = float(te[i])
            out["best_epoch"] = int(m["epoch"][i])
            out["last_test_error"] = float(te[-1])
            out["last_epoch"] = int(m["epoch"][-1])
        else:
            out.update(best_test_error=None, best_epoch=None, last_test_error=None,
                       last_epoch=int(m["epoch"][-1]) if len(m) else None)
        for name in ("train_error", "test_loss", "train_loss"):
            a = col(name)
            out[f"last_{name}"] = float(a[-1]) if a is not None and len(a) else None
        es = col("epoch_seconds")
        f = _finite(es) if es is not None else np.zeros(0)
        out["mean_epoch_seconds"] = float(np.mean(f)) if f.size else None
        out["total_train_seconds"] = float(np.sum(f)) if f.size else None
        sps = col("samples_per_second")
        f = _finite(sps) if sps is not None else np.zeros(0)
        out["mean_samples_per_second"] = float(np.mean(f)) if f.size else None
        out["last_samples_per_second"] = float(sps[-1]) if f.size else None
        for name, key in (("nonconverged", "nonconverged_train_total"),
                          ("eval_nonconverged", "nonconverged_eval_total")):
            a = col(name)
            out[key] = int(np.nansum(a)) if a is not None and len(a) else None
        sp = col("static_power_w")  # W, mean per test inference
        out["last_static_power_w"] = float(sp[-1]) if sp is not None and len(sp) else None
        pu = col("pulses")
        out["last_pulses"] = int(pu[-1]) if pu is not None and len(pu) else None
        out["total_pulses"] = int(np.nansum(pu)) if pu is not None and len(pu) else None
        out["device"] = cfg.get("preset", "ideal") if cfg.get("model") in (None, "ideal") else \
            f"{cfg.get('preset')}/{cfg.get('model')}"
        gc = col("gradcheck_rel_error")
        f = _finite(gc) if gc is not None else np.zeros(0)
        out["gradcheck_recorded"] = bool(f.size)
        out["last_gradcheck_rel_error"] = float(f[-1]) if f.size else None
        if self.kind != "mlp" and "g_min" in cfg and "g_max" in cfg:
            bf = self.bound_fractions(snap.latest)
            out["bounds_epoch"] = snap.latest
            out["at_bounds"] = {l: {"g_min": v["g_min"], "g_max": v["g_max"]} for l, v in bf.items()}
        else:
            out["bounds_epoch"] = None
            out["at_bounds"] = {}
        return out


def open_run(path) -> Run:
    """Open a run file read-only (validates it; raises StoreError naming the file)."""
    return Run(path)


# --------------------------------------------------------------------------- run-level tasks

def load_run_data(run: Run, data_dir=None):
    """The run's dataset (subset as configured), verified against the run's checksums; found
    in ``data_dir``, else the config's directory and the search path, else the directory the
    run was trained from."""
    cfg = run.train_config()
    if data_dir:
        cfg = cfg.replace(data=str(data_dir))
    try:
        data = load_data(cfg)
    except DatasetError:
        root = run.meta.get("data_root")
        if data_dir or not root or not Path(root).is_dir():
            raise
        data = load_data(cfg.replace(data=root))  # the directory the run was trained from
    want = run.meta.get("dataset_checksums")
    if want and data.checksums != want:
        raise FastresError(f"{run.path}: the {cfg.data.dataset} files found at {data.root} differ from "
                           f"the ones the run was trained on (sha256 mismatch); pass --data DIR")
    return data


def evaluate_run(path, epoch=None, data_dir=None, wire_ohms=None, tile=None) -> dict:
    """Test and train error of a run's checkpoint, recomputed from its conductances:
    ``{"run", "epoch", "test_error", "train_error", "test_loss", "train_loss" (V^2),
    "epoch_seconds", "nonconverged", "samples", "static_power_w" (the mean static power per
    test inference, W), "pulses" (programming pulses of that epoch, pulsed devices; else None),
    "eval_seconds", "diverged" (the epoch's divergence flag, 0 or 1; None in files from before
    the detection), "pinned_fraction" (of the checkpoint's conductances, see
    :func:`fastres.train.divergence`), "wire_ohms", "tile", "worst_line_drop_v" (the largest
    line IR drop over the first ``crossbar.DROP_SAMPLES`` test samples, V; None without
    wires)}``. ``wire_ohms``, ``tile``: evaluate the conductances on these crossbar wires
    instead of the run's own (an ideal-trained run deployed on wires)."""
    run = open_run(path)
    if run.kind == "mlp":
        raise FastresError(f"{path}: an MLP baseline run; its errors are in its metrics")
    from .train import pinned_fraction  # here: importing analysis does not load the trainer
    tn = run.network(epoch, wire_ohms, tile)
    cfg = tn.config
    data = load_run_data(run, data_dir)  # falls back to where the run was trained from
    t0 = time.perf_counter()
    out = {}
    worst = None
    for split, X, y in (("test", data.x_test, data.y_test), ("train", data.x_train, data.y_train)):
        if tn.net.wired:
            ev = evaluate_wired(tn.net, tn.params, X, y, cfg.estimator.target_volts, tn.alg,
                                cfg.solver.eval_batch, drop_samples=DROP_SAMPLES if split == "test" else 0)
            worst = ev.worst_drop if split == "test" else worst
        else:
            ev = evaluate(tn.net, tn.params, X, y, cfg.estimator.target_volts, tn.alg, cfg.solver.eval_batch)
        out[split] = (ev.loss_sum / X.shape[0], float(np.mean(ev.pred != y)), ev.nonconverged,
                      ev.power_sum / X.shape[0])
    m = run.metrics
    rows = np.flatnonzero(m["epoch"] == tn.epoch) if "epoch" in m else []
    epoch_seconds = float(m["epoch_seconds"][rows[0]]) if len(rows) else None
    return {"run": str(path), "epoch": tn.epoch, "test_error": out["test"][1],
            "train_error": out["train"][1], "test_loss": out["test"][0], "train_loss": out["train"][0],
            "epoch_seconds": epoch_seconds, "nonconverged": out["test"][2] + out["train"][2],
            "samples": int(data.x_test.shape[0] + data.x_train.shape[0]),
            "static_power_w": out["test"][3],
            "pulses": int(m["pulses"][rows[0]]) if len(rows) and "pulses" in m else None,
            "eval_seconds": time.perf_counter() - t0,
            "diverged": _stored_flag(m, "diverged", rows),
            "pinned_fraction": pinned_fraction(tn.params, cfg.network.g_min, cfg.network.g_max),
            "wire_ohms": cfg.wires.wire_ohms, "tile": cfg.wires.tile, "worst_line_drop_v": worst}


def _stored_flag(m, name, rows):
    """An integer metric of the given row, None where it is absent or NaN (back-filled)."""
    if not len(rows) or name not in m or not np.isfinite(m[name][rows[0]]):
        return None
    return int(m[name][rows[0]])


def export_netlist(path, out, sample, epoch=None, data_dir=None, wire_ohms=None, tile=None) -> dict:
    """Write the run's network (checkpoint ``epoch``, default latest) driven by test sample
    ``sample`` as an ngspice deck ``out`` (with crossbar wires, every wire segment; ``wire_ohms``,
    ``tile``: on these wires instead of the run's own). Returns ``{"epoch", "sample", "label", "pred",
    "outputs" (V, per class), "nodes" ({name: V} of the output nodes), "text"}``."""
    from .netlist import write_netlist
    run = open_run(path)
    tn = run.network(epoch, wire_ohms, tile)
    data = load_run_data(run, data_dir)
    n = data.x_test.shape[0]
    if not 0 <= sample < n:
        raise FastresError(f"{path}: --sample {sample} out of range: the run's test set has "
                           f"{n} samples (0..{n - 1})")
    x = data.x_test[sample]
    label = int(data.y_test[sample])
    volts = tn.node_voltages(x)
    ncls = tn.net.spec.sizes[-1]
    outputs = np.array([volts[f"op{k}"] - volts[f"on{k}"] for k in range(ncls)])
    pred = int(np.argmax(outputs))
    cfg = tn.config
    title = (f"fastres {cfg.network.arch} {cfg.network.diode} network from {Path(path).name} epoch "
             f"{tn.epoch}, {cfg.data.dataset} test sample {sample}")
    text = write_netlist(tn.circuit(x, title=title))
    head, _, rest = text.partition("\n")
    comments = [
        f"* run file: {Path(path).resolve()}",
        f"* checkpoint epoch {tn.epoch}; inputs: {cfg.data.dataset} test sample {sample} (label {label})",
        f"* class k output = V(op<k>) - V(on<k>); fastres predicts class {pred}",
        "* fastres output voltages (V): " + " ".join(f"{k}:{v:.12g}" for k, v in enumerate(outputs)),
    ]
    text = head + "\n" + "\n".join(comments) + "\n" + rest
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FastresError(f"{out}: cannot write netlist: {exc.strerror or exc}") from None
    nodes = {f"{s}{k}": volts[f"{s}{k}"] for k in range(ncls) for s in ("op", "on")}
    return {"epoch": tn.epoch, "sample": sample, "label": label, "pred": pred,
            "outputs": outputs, "nodes": nodes, "text": text}


def status_line(run: Run, snap: RunSnapshot) -> str:
    """One line of a run's latest epoch: errors, speed, non-converged, best so far."""
    m = snap.metrics
    total = run.configured_epochs
    if not len(m):
        return f"{run.path}: epoch 0/{total}: no epoch finished yet"
    i = len(m) - 1
    ep = int(m["epoch"][i])

    def val(name, fmt):
        a = m.get(name)
        if a is None or not np.isfinite(a[i]):
            return None
        return fmt(float(a[i]))

    parts = [f"epoch {ep}/{total}"]
    for label, name, fmt in (
            ("test error", "test_error", lambda v: f"{100 * v:.2f}%"),
            ("train error", "train_error", lambda v: f"{100 * v:.2f}%"),
            ("samples/s", "samples_per_second", lambda v: f"{v:,.0f}"),
            ("epoch time", "epoch_seconds", lambda v: f"{v:.1f} s"),
            ("non-converged", "nonconverged", lambda v: f"{int(v)}")):
        s = val(name, fmt)
        if s is not None:
            parts.append(f"{label} {s}")
    te = m.get("test_error")
    if te is not None and np.any(np.isfinite(te)):
        j = int(np.nanargmin(te))
        parts.append(f"best {100 * float(te[j]):.2f}% (epoch {int(m['epoch'][j])})")
    return "  ".join(parts)
