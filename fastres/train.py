"""Minibatch Equilibrium-Propagation training of a layered analog network, state in HDF5.

``TrainConfig`` is the whole run configuration (stored in the run file); ``train(cfg, path)``
runs it, writing one crash-safe checkpoint per epoch; ``resume(path)`` continues a run and ends
bit-identical to an uninterrupted one (same machine, same thread count).

Learning rates are dimensionless: a step changes a conductance by
``-lr * g_max^2 * dC/dg`` (``dC/dg`` in V^2/S), i.e. they act on conductances measured in units
of ``g_max``. ``beta`` is given relative to the mean output-node conductance (``beta_rel``), so
the nudge moves the outputs by about ``beta_rel`` volts per volt of error whatever the device
range.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from . import __version__
from .eqprop import (ESTIMATORS, EqProp, PhaseStats, States, eqprop_gradient, eqprop_states, exact_gradient,
                     loss_and_grad, phases_from_states, relative_error)
from .errors import FastresError
from .kernels import updates as _updates
from .network import LayeredNetwork, NetworkSpec, make_diode, turn_on_volts
from .solve import Newton
from .store import RunStore, generator_state, restore_generator


PARALLEL_MIN_UPDATE = 1 << 20  # conductances: below this a serial update pass is faster
UPDATE_BLOCKS = 16  # fixed row blocks of the fused input-layer update (threads take blocks)


class ConfigError(FastresError, ValueError):
    """A bad training configuration value; the message names the option."""


def parse_arch(arch) -> tuple:
    if isinstance(arch, (list, tuple)):
        sizes = tuple(int(s) for s in arch)
    else:
        try:
            sizes = tuple(int(s) for s in str(arch).split("-"))
        except ValueError:
            raise ConfigError(f"arch {arch!r}: expected sizes like 784-100-10") from None
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
        raise ConfigError(f"arch {arch!r}: need at least an input and an output layer, all sizes > 0")
    return sizes


@dataclass
class TrainConfig:
    """Every option of a training run (units: V, S, ohm; lr dimensionless, see module doc)."""

    arch: str = "784-100-10"
    dataset: str = "mnist"
    data: str | None = None
    diode: str = "shockley"
    diode_params: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 20
    lr: list | None = None
    momentum: float = 0.0
    lr_decay: float = 0.9
    beta_rel: float = 0.1
    estimator: str = "centered"
    target_volts: float = 0.5
    input_volts: float = 100.0
    bias_volts: float = 1.0
    rail_lo: float | None = None  # None: the diode's turn-on voltage, so nodes clamp at 0 V
    rail_hi: float = 100.0  # at the inputs' full scale: upper diodes never conduct (see below)
    g_min: float = 1e-7
    g_max: float = 1e-4
    init_lo: float = 1e-7
    init_hi: float = 5e-5
    gain: float = 1.0
    output_diodes: bool = False
    paired: bool | None = None  # hidden layers as rectifying / mirrored halves; None: if 2+ hidden
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    eval_batch: int = 10000
    gradcheck_every: int = 0
    gradcheck_samples: int = 16
    reltol: float = 1e-12
    vntol: float = 1e-12
    abstol: float = 1e-15
    maxiter: int = 100
    store_samples: int = 256
    mlp_activation: str = "auto"  # the --baseline mlp hidden activation; auto: like the diodes

    def __post_init__(self):
        self.validate()

    @property
    def sizes(self) -> tuple:
        return parse_arch(self.arch)

    def validate(self):
        sizes = self.sizes
        if self.lr is None:  # the input layer sees 2 n_in sources and learns faster at a larger rate
            self.lr = [100.0] + [30.0] * (len(sizes) - 2)
        if isinstance(self.lr, (int, float)):
            self.lr = [float(self.lr)] * (len(sizes) - 1)
        self.lr = [float(v) for v in self.lr]
        if len(self.lr) != len(sizes) - 1:
            raise ConfigError(f"lr: need one learning rate per layer ({len(sizes) - 1}), got {len(self.lr)}")
        if any(not math.isfinite(v) or v < 0 for v in self.lr):
            raise ConfigError(f"lr {self.lr}: learning rates must be finite and >= 0")
        if self.dataset not in ("mnist", "fashion-mnist"):
            raise ConfigError(f"unknown dataset {self.dataset!r}: use 'mnist' or 'fashion-mnist'")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        for key in ("epochs", "batch_size", "eval_batch", "maxiter"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key}={getattr(self, key)!r} must be >= 1")
        if not (math.isfinite(self.beta_rel) and self.beta_rel > 0):
            raise ConfigError(f"beta_rel={self.beta_rel!r} must be a finite number > 0 (the nudging strength)")
        if not (0 < self.lr_decay <= 1):
            raise ConfigError(f"lr_decay={self.lr_decay!r} must be in (0, 1] (a factor per epoch)")
        if not (0 <= self.momentum < 1):
            raise ConfigError(f"momentum={self.momentum!r} must be in [0, 1)")
        if not (0 < self.init_lo <= self.init_hi <= self.g_max and self.g_min <= self.init_lo):
            raise ConfigError("initial conductances must satisfy g_min <= init_lo <= init_hi <= g_max")
        if self.paired is not None and not isinstance(self.paired, bool):
            raise ConfigError(f"paired={self.paired!r} must be true, false or unset (auto)")
        if self.mlp_activation not in ("auto", "hardtanh", "relu"):
            raise ConfigError(f"mlp_activation={self.mlp_activation!r}: use auto, hardtanh or relu")
        self.spec()  # validates the physical options

    def is_paired(self) -> bool:
        """Paired hidden layers (see :mod:`fastres.network`): ``paired``, or by default when
        there are two or more hidden layers, all of even size -- unpaired, a layer after the
        first sees only non-negative voltages through positive conductances and never reaches
        its diodes."""
        if self.paired is not None:
            return self.paired
        hidden = self.sizes[1:-1]
        return len(hidden) >= 2 and all(h % 2 == 0 for h in hidden)

    def one_sided(self) -> bool:
        """True when the upper clipping diodes can never conduct: every node voltage is a
        weighted mean of source voltages (times the amplifier gains), so a node stays below
        ``input_volts * gain^(L-1)``; the activation is then a rectifier (ReLU-like)."""
        reach = max(abs(self.input_volts), abs(self.bias_volts)) * max(1.0, self.gain) ** (len(self.sizes) - 2)
        return self.rail_hi >= reach

    def baseline_activation(self) -> str:
        """The MLP baseline's hidden activation: the one the diodes make (see one_sided)."""
        if self.mlp_activation != "auto":
            return self.mlp_activation
        return "relu" if self.one_sided() else "hardtanh"

    def lower_rail(self) -> float:
        """The lower rail (V): ``rail_lo``, or by default the diode's turn-on voltage, which puts
        the lower clamp of every hidden node at 0 V (a rectifier at 0 V, like a ReLU)."""
        if self.rail_lo is not None:
            return float(self.rail_lo)
        try:
            return turn_on_volts(make_diode(self.diode, **dict(self.diode_params)))
        except FastresError as exc:
            raise ConfigError(str(exc)) from None

    def spec(self) -> NetworkSpec:
        try:
            return NetworkSpec(sizes=self.sizes, diode=self.diode, diode_params=dict(self.diode_params),
                               input_volts=self.input_volts, bias_volts=self.bias_volts,
                               rail_lo=self.lower_rail(), rail_hi=self.rail_hi, g_min=self.g_min,
                               g_max=self.g_max, gain=self.gain, output_diodes=self.output_diodes,
                               paired=self.is_paired())
        except FastresError as exc:
            raise ConfigError(str(exc)) from None

    def newton(self) -> Newton:
        return Newton(reltol=self.reltol, vntol=self.vntol, abstol=self.abstol, maxiter=self.maxiter)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_stored(cls, d: dict) -> "TrainConfig":
        """The config of a run file: options it predates take the value they had then
        (``paired``: absent means a run from before paired layers existed, so unpaired)."""
        d = dict(d)
        d.setdefault("paired", False)
        return cls.from_dict(d)

    @classmethod
    def from_file(cls, path) -> dict:
        """Options from a TOML (``.toml``) or JSON file, as a dict (merge, then ``from_dict``)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        try:
            if path.suffix == ".toml":
                import tomllib
                return tomllib.loads(text)
            return json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is a config error
            raise ConfigError(f"{path}: cannot parse config file: {exc}") from None


def load_data(cfg: TrainConfig):
    """The configured dataset (subset if asked), checked against the architecture."""
    from .datasets import load, subset
    data = load(cfg.dataset, cfg.data)
    n_classes = _n_classes(data)  # of the whole dataset: a small subset may miss a class
    if cfg.n_train or cfg.n_test:
        data = subset(data, cfg.n_train, cfg.n_test)
    check_data(cfg, data, n_classes)
    return data


def _n_classes(data) -> int:
    return int(max(data.y_train.max(), data.y_test.max())) + 1


def check_data(cfg: TrainConfig, data, n_classes=None):
    """The architecture fits the data: input size = pixels, output size = ``n_classes``
    (default: the largest label + 1)."""
    sizes = cfg.sizes
    if data.x_train.shape[1] != sizes[0]:
        raise ConfigError(f"arch {cfg.arch}: the input size must be {data.x_train.shape[1]} for {cfg.dataset}")
    n_classes = _n_classes(data) if n_classes is None else n_classes
    if sizes[-1] != n_classes:
        raise ConfigError(f"arch {cfg.arch}: the output size must be {n_classes} for {cfg.dataset}")


class Trainer:
    """Holds the network, parameters and optimiser state of a run (no hidden global state)."""

    def __init__(self, cfg: TrainConfig, comm=None):
        self.cfg = cfg
        self.net = LayeredNetwork(cfg.spec(), cfg.newton())
        self.vel = None
        self.params = None
        self.comm = comm  # an mpi4py communicator for data parallelism (see fastres.parallel)
        self.lr_factor = 1.0  # cfg.lr_decay ** (epoch - 1), set per epoch
        self.t_comm = 0.0
        self.w1_colsum = None  # column sums of W1 (S), kept up to date by the fused update
        self._w1 = None  # the W1 array those sums belong to
        self._blocks = None

    def _sum_w1(self):
        """Column sums of W1 with the fused update's fixed block structure (so a resumed run
        continues bit-identically)."""
        W = self.params["W1"]
        self._w1 = W
        self._blocks = np.empty((UPDATE_BLOCKS, W.shape[1]))
        self.w1_colsum = np.empty(W.shape[1])
        _updates.block_column_sums(W, self._blocks, self.w1_colsum)

    def init_state(self, rng):
        self.params = self.net.init_params(rng, self.cfg.init_lo, self.cfg.init_hi)
        self.vel = {k: np.zeros_like(v) for k, v in self.params.items()}

    def beta(self) -> float:
        """Absolute beta (S): ``beta_rel`` times the mean output-node conductance."""
        L = self.net.L
        G = float(np.mean(self.params[f"W{L}"].sum(axis=0) + self.params[f"B{L}"]))
        return self.cfg.beta_rel * G

    def step(self, X, y, rng, lo=0, hi=None):
        """One minibatch ``X`` (B, n_in), ``y`` (B,): EqProp phases, then the fused SGD step.

        With a communicator this rank solves only samples ``lo:hi`` of the minibatch; the
        equilibrium states travel in ONE contiguous buffer summed by one Allreduce (each rank
        fills its own samples' rows, the others contribute exact zeros), after which every rank
        holds the whole batch's states and applies the same update -- bit-identical for any
        number of ranks. Returns (per-step sums: loss, errors, free iterations, nudged
        iterations, non-converged; solver s, update s)."""
        cfg = self.cfg
        hi = X.shape[0] if hi is None else hi
        eq = EqProp(self.beta(), cfg.estimator)
        t0 = time.perf_counter()
        if self._w1 is not self.params["W1"]:  # new or replaced parameters (start, resume)
            self._sum_w1()
        arrays = self.net.arrays(self.params, self.w1_colsum)
        st = eqprop_states(self.net, self.params, X[lo:hi], y[lo:hi], eq, cfg.target_volts, rng, arrays)
        t1 = time.perf_counter()
        if self.comm is not None:
            st = self._allreduce_states(st, X.shape[0], lo, hi)
        t2 = time.perf_counter()
        ph = phases_from_states(self.net, X, y, st, cfg.target_volts, fused_first=True)
        pred = np.argmax(self.net.outputs(ph.free), axis=1)
        sums = np.array([ph.loss.sum(), np.sum(pred != y), ph.stats.free_iterations,
                         ph.stats.nudged_iterations, ph.stats.nonconverged, st.stats.free_seconds,
                         st.stats.nudged_seconds], dtype=np.float64)
        gscale = cfg.g_max * cfg.g_max * self.lr_factor
        threads = numba.get_num_threads()
        opt = (cfg.momentum, cfg.g_min, cfg.g_max)
        # the input layer: fused, the gradient never materialised
        uT, d, col = ph.first
        _updates.fixed_from_step(self.params["W1"], uT, d, col, ph.scale, self.vel["W1"],
                                 cfg.lr[0] * gscale, *opt, self._blocks, self.w1_colsum)
        for l in range(1, self.net.L + 1):
            lr = cfg.lr[l - 1] * gscale
            for key in (f"W{l}", f"B{l}") if l > 1 else ("B1",):
                row, col, prod = ph.terms[key]
                W = self.params[key].reshape(len(row), len(col))
                args = (W, row, col, prod, ph.scale, self.vel[key].reshape(W.shape), lr, *opt)
                if W.size >= PARALLEL_MIN_UPDATE and threads > 1:
                    _updates.drop_square_step(*args, threads)
                else:
                    _updates.drop_square_step_rows(*args, 0, W.shape[0])
        t3 = time.perf_counter()
        self.t_comm += t2 - t1
        return sums, t1 - t0, t3 - t2

    def _allreduce_states(self, st: States, B, lo, hi) -> States:
        from mpi4py import MPI
        nF = st.free.shape[1]
        buf = np.zeros(3 * B * nF + B + 3)
        view = buf[:3 * B * nF].reshape(3, B, nF)
        view[0, lo:hi] = st.free
        view[1, lo:hi] = st.xa
        view[2, lo:hi] = st.xb
        buf[3 * B * nF + lo:3 * B * nF + hi] = st.ok
        buf[-3:] = (st.stats.free_iterations, st.stats.nudged_iterations, st.stats.nonconverged)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        ok = buf[3 * B * nF:3 * B * nF + B] > 0.5
        stats = PhaseStats(int(buf[-3]), int(buf[-2]), int(buf[-1]), B)
        return States(view[0], view[1], view[2], ok, st.scale, stats)

    def evaluate(self, X, y, batch=10000):
        """(mean loss, error fraction, predictions, non-converged count) on a dataset; with a
        communicator each rank solves a contiguous share and the results are combined."""
        lo, hi = 0, X.shape[0]
        if self.comm is not None:
            bounds = np.linspace(0, X.shape[0], self.comm.Get_size() + 1).astype(int)
            lo, hi = bounds[self.comm.Get_rank()], bounds[self.comm.Get_rank() + 1]
        arrays = self.net.arrays(self.params)
        loss_sum, preds, bad = 0.0, [np.zeros(0, dtype=np.int64)], 0
        for s in range(lo, hi, batch):
            Xb = X[s:min(s + batch, hi)]
            b = self.net.source_currents(Xb, self.params, arrays)
            x, _, st = self.net.solve_b(b, arrays, x0=self.net.initial_guess(b, self.params, arrays), check=False)
            out = self.net.outputs(x)
            C, _ = loss_and_grad(out, y[s:s + Xb.shape[0]], self.cfg.target_volts)
            loss_sum += float(C.sum())
            preds.append(np.argmax(out, axis=1))
            bad += int(np.sum(st != 0))
        pred = np.concatenate(preds)
        if self.comm is not None:
            pred = np.concatenate(self.comm.allgather(pred))
            loss_sum = self.comm.allreduce(loss_sum)
            bad = self.comm.allreduce(bad)
        return loss_sum / X.shape[0], float(np.mean(pred != y)), pred, bad

    def hidden_voltages(self, X):
        arrays = self.net.arrays(self.params)
        b = self.net.source_currents(X, self.params, arrays)
        x, _, _ = self.net.solve_b(b, arrays, x0=self.net.initial_guess(b, self.params, arrays), check=False)
        return {f"v_layer{l}": self.net.layer(x, l).copy() for l in range(1, self.net.L + 1)}

    def gradcheck(self, X, y):
        exact, _, _ = exact_gradient(self.net, self.params, X, y, self.cfg.target_volts)
        g, _, _, _ = eqprop_gradient(self.net, self.params, X, y,
                                     EqProp(self.beta(), "centered" if self.cfg.estimator == "random-sign"
                                            else self.cfg.estimator), self.cfg.target_volts)
        return relative_error(g, exact)


class Progress:
    """A one-line progress display on stderr (samples/s, loss, error)."""

    def __init__(self, total, epoch, epochs, enabled=True):
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, done, loss, err):
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        frac = done / self.total
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        sys.stderr.write(f"\repoch {self.epoch}/{self.epochs} [{bar}] {done}/{self.total} "
                         f"{rate:,.0f} samples/s loss {loss:.4f} err {100 * err:.2f}%")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


def _meta(cfg, data, comm=None):
    return {"fastres_version": __version__, "seed": cfg.seed, "dataset": cfg.dataset,
            "dataset_checksums": data.checksums, "data_root": str(data.root),
            "numba_threads": numba.get_num_threads(), "kind": "eqprop",
            "mpi_ranks": 1 if comm is None else comm.Get_size()}


def run_epochs(trainer: Trainer, store: RunStore | None, data, rng, first_epoch, step, log=print,
               progress=True):
    """Train epochs ``first_epoch..cfg.epochs``, checkpointing each; returns the last metrics.

    With ``trainer.comm`` (K ranks), every rank draws the same permutation from the same ``rng``
    and takes a contiguous share of each global minibatch, so the global batch and the learning
    rule do not depend on K; only rank 0 has a ``store`` and writes.
    """
    cfg = trainer.cfg
    comm = trainer.comm
    rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    N = data.x_train.shape[0]
    bs = cfg.batch_size
    gc_X, gc_y = data.x_test[:cfg.gradcheck_samples], data.y_test[:cfg.gradcheck_samples]
    metrics = None
    for epoch in range(first_epoch, cfg.epochs + 1):
        t_start = time.perf_counter()
        trainer.t_comm = 0.0
        trainer.lr_factor = cfg.lr_decay ** (epoch - 1)
        perm = rng.permutation(N)
        tot = np.zeros(7)
        t_solve = t_update = 0.0
        bar = Progress(N, epoch, cfg.epochs, progress and rank == 0)
        for k in range(0, N, bs):
            idx = perm[k:k + bs]
            cut = np.linspace(0, len(idx), size + 1).astype(int)  # this rank's share
            sums, ts, tu = trainer.step(data.x_train[idx], data.y_train[idx], rng,
                                        cut[rank], cut[rank + 1])
            tot += sums
            t_solve += ts
            t_update += tu
            step += 1
            done = min(k + bs, N)
            bar.update(done, tot[0] / done, tot[1] / done)
        bar.close()
        t_train = time.perf_counter() - t_start
        test_loss, test_err, test_pred, test_bad = trainer.evaluate(data.x_test, data.y_test, cfg.eval_batch)
        metrics = {
            "epoch": epoch, "train_loss": tot[0] / N, "train_error": tot[1] / N,
            "test_loss": test_loss, "test_error": test_err, "epoch_seconds": t_train,
            "eval_seconds": time.perf_counter() - t_start - t_train,
            "samples_per_second": N / t_train, "solver_seconds": t_solve, "update_seconds": t_update,
            "comm_seconds": trainer.t_comm, "python_seconds": t_train - t_solve - t_update - trainer.t_comm,
            "free_iterations": tot[2] / N, "nudged_iterations": tot[3] / N,
            "nonconverged": int(tot[4]), "eval_nonconverged": test_bad, "beta": trainer.beta(),
            "free_phase_seconds": tot[5], "nudged_phase_seconds": tot[6],
            "ranks": size,
        }
        if rank == 0:
            if cfg.gradcheck_every and epoch % cfg.gradcheck_every == 0:
                metrics["gradcheck_rel_error"] = trainer.gradcheck(gc_X, gc_y)
            samples = {"test_pred": test_pred.astype(np.int16), "test_label": data.y_test.astype(np.int16)}
            samples.update(trainer.hidden_voltages(data.x_test[:cfg.store_samples]))
            store.write_checkpoint(epoch, trainer.params, trainer.vel, generator_state(rng),
                                   extra={"step": step}, metrics=metrics, extra_arrays=samples)
            log(f"epoch {epoch}/{cfg.epochs}: train loss {metrics['train_loss']:.4f} error "
                f"{100 * metrics['train_error']:.2f}% | test loss {test_loss:.4f} error {100 * test_err:.2f}% | "
                f"{t_train:.1f} s ({metrics['samples_per_second']:,.0f} samples/s; solver {t_solve:.1f} s, "
                f"update {t_update:.1f} s" + (f", comm {trainer.t_comm:.1f} s, {size} ranks" if size > 1 else "")
                + f") | non-converged {int(tot[4])}")
        if comm is not None:
            comm.Barrier()  # the checkpoint is on disk before any rank starts the next epoch
    return metrics


def train(cfg: TrainConfig, path, *, overwrite=False, log=print, progress=True, comm=None):
    """Run ``cfg`` from scratch, writing the run file ``path``. Returns the last epoch's metrics.

    ``comm``: an mpi4py communicator for data-parallel training (rank 0 writes the file)."""
    rank = 0 if comm is None else comm.Get_rank()
    cfg = dataclasses.replace(cfg, paired=cfg.is_paired())  # stored resolved, never "auto"
    data = load_data(cfg)
    rng = np.random.default_rng(cfg.seed)
    trainer = Trainer(cfg, comm)
    trainer.init_state(rng)
    store = None
    if rank == 0:
        store = RunStore.create(path, config=cfg.to_dict(), meta=_meta(cfg, data, comm), params=trainer.params,
                                overwrite=overwrite, rng_state=generator_state(rng))
        log(f"fastres {__version__}: EqProp {cfg.arch} ({cfg.diode} diodes) on {cfg.dataset} "
            f"({data.x_train.shape[0]} train / {data.x_test.shape[0]} test), seed {cfg.seed}, "
            f"{numba.get_num_threads()} threads"
            + (f" x {comm.Get_size()} MPI ranks" if comm is not None else "") + f" -> {path}")
    if comm is not None:
        comm.Barrier()
    return run_epochs(trainer, store, data, rng, 1, 0, log, progress)


def resume(path, *, epochs=None, log=print, progress=True, comm=None):
    """Continue the run in ``path`` from its latest checkpoint (optionally to more ``epochs``).

    Any number of ranks can resume a run, whatever number started it."""
    rank = 0 if comm is None else comm.Get_rank()
    store = RunStore.open(path, writable=(rank == 0))
    d = store.config
    if epochs is not None:
        d["epochs"] = int(epochs)
    cfg = TrainConfig.from_stored(d)
    ck = store.load_checkpoint()
    if ck.epoch >= cfg.epochs:
        if rank == 0:
            log(f"{path}: already trained to epoch {ck.epoch} of {cfg.epochs}; nothing to do")
        return None
    data = load_data(cfg)
    if data.checksums != store.meta.get("dataset_checksums"):
        raise FastresError(f"{path}: the dataset found at {data.root} differs from the one the run started with")
    trainer = Trainer(cfg, comm)
    trainer.params = {k: np.array(v, dtype=np.float64) for k, v in ck.params.items()}
    trainer.vel = {k: np.array(ck.optimizer[k], dtype=np.float64) for k in trainer.params}
    rng = restore_generator(ck.rng_state)
    if rank == 0:
        log(f"resuming {path} from epoch {ck.epoch} (of {cfg.epochs})"
            + (f" on {comm.Get_size()} MPI ranks" if comm is not None else ""))
    return run_epochs(trainer, store if rank == 0 else None, data, rng, ck.epoch + 1,
                      int(ck.extra.get("step", 0)), log, progress)
