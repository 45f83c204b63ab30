"""Minibatch training of a layered analog network, all state in one HDF5 run file.

``train(cfg, path)`` runs a :class:`~fastres.config.TrainConfig`, writing one crash-safe
checkpoint per epoch; ``resume(path)`` continues a run and ends bit-identical to an
uninterrupted one (same machine, same thread count).

A :class:`Trainer` wires four roles, each swappable: the network (the circuit and its
solver), an estimator (:mod:`fastres.estimators`: EqProp variants or the exact gradient), a
reducer (:mod:`fastres.reducers`: one process or MPI) and an optimiser
(:mod:`fastres.optimizers`: bounded SGD). One step: the estimator solves this rank's share of
the minibatch, the reducer combines the shares, the gradient terms are formed once, and the
optimiser updates the conductances; :class:`StepStats` carries what happened.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields

import numba
import numpy as np

from .version import __version__
from .config import (DIVERGENCE_LOSS_GROWTH, DIVERGENCE_PINNED_FRACTION, PINNED_TOLERANCE,
                     TrainConfig, run_config)
from .datasets import load_data
from .eqprop import EqProp, eqprop_gradient, exact_gradient, phases_from_states, relative_error
from .errors import FastresError
from .estimators import make_estimator
from .evaluate import evaluate, layer_voltages
from .crossbar import DROP_SAMPLES, evaluate_wired, make_network, wired_gradcheck, wired_phases
from .network import LayeredNetwork  # noqa: F401 (the ideal network; make_network picks)
from .pulsed import make_optimizer
from .reducers import make_reducer
from .solver import Newton
from .store import RunStore, generator_state, restore_generator


@dataclass
class StepStats:
    """What one training step (or the sum of several) did. Losses in V^2, times in s."""

    samples: int = 0
    loss: float = 0.0             # summed over samples
    errors: int = 0               # misclassified samples
    free_iterations: int = 0      # Newton iterations, summed over samples
    nudged_iterations: int = 0
    nonconverged: int = 0         # samples left out of the update
    free_seconds: float = 0.0     # this rank's free phase
    nudged_seconds: float = 0.0   # this rank's nudged phases
    solver_seconds: float = 0.0   # kernel arrays and all phases
    comm_seconds: float = 0.0     # the reduction
    update_seconds: float = 0.0   # gradient terms and the optimiser
    pulses: int = 0               # programming pulses (pulsed devices)

    def __iadd__(self, other: "StepStats") -> "StepStats":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


class Trainer:
    """The network, its conductances and the roles that train them (no hidden global state)."""

    def __init__(self, cfg: TrainConfig, comm=None):
        self.cfg = cfg
        self.net = make_network(cfg)  # with crossbar wires when cfg.wires has them
        self.alg = Newton.from_config(cfg.solver)
        self.estimator = make_estimator(cfg.estimator)
        self.reducer = make_reducer(comm)
        self.optimizer = make_optimizer(cfg, cfg.lr, cfg.run.seed)
        self.params = None
        self.lr_factor = 1.0  # lr_decay ** (epoch - 1), set per epoch
        self.last_power = float("nan")  # W, mean static power per test inference (evaluate)
        self.loss_floor = None  # V^2: the lowest loss seen (first minibatch, epochs); see divergence()

    @property
    def comm(self):
        return self.reducer.comm

    def init_state(self, rng):
        """Initial conductances (drawn from ``rng``) and a fresh optimiser state."""
        self.params = self.net.init_params(rng, *self.cfg.network.init_range())
        self.optimizer.init(self.params)

    def load_state(self, params, optimizer_state):
        """Conductances (checked against the network: shapes, finite, within [g_min, g_max])
        and optimiser state of a checkpoint."""
        params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.net.check_params(params)
        self.params = params
        self.optimizer.load(optimizer_state, self.params)

    def beta(self) -> float:
        """Absolute beta (S): ``beta_rel`` times the mean output-node conductance."""
        return self.estimator.beta(self.params, self.net.L)

    def step(self, X, y, rng) -> StepStats:
        """One minibatch ``X`` (B, n_in), ``y`` (B,): this rank's share of the phases, the
        reduction over ranks, then the optimiser's update of the conductances."""
        B = X.shape[0]
        lo, hi = self.reducer.share(B)
        t0 = time.perf_counter()
        U = self.net.input_voltages(X)
        seen = self.optimizer.apparent(self.params)  # read noise, if the devices have it
        # W1's column sums: from the fused update, or from the read of noisy devices if it formed them
        colsum = (self.optimizer.column_sums(self.params) if seen is self.params
                  else getattr(seen, "w1_colsum", None))
        system = self.net.system(seen, colsum)
        # a rank's share gets its own input array, as BLAS may round differently on a view
        Ush = U if (lo, hi) == (0, B) else self.net.input_voltages(X[lo:hi])
        prob = self.net.problem(seen, X[lo:hi], system=system, U=Ush)
        st = self.estimator.states(prob, y[lo:hi], self.alg, rng)
        t1 = time.perf_counter()
        st = self.reducer.reduce(st, B, lo, hi)
        t2 = time.perf_counter()
        if self.net.wired:  # each device's own drop, wire nodes recovered from the states
            ph = wired_phases(self.net, system, U, y, st, self.cfg.estimator.target_volts)
        else:
            ph = phases_from_states(self.net, U, y, st, self.cfg.estimator.target_volts, fused_first=True)
        pred = np.argmax(self.net.outputs(ph.free), axis=1)
        pulses = self.optimizer.step(self.params, ph, self.lr_factor) or 0
        t3 = time.perf_counter()
        return StepStats(B, float(ph.loss.sum()), int(np.sum(pred != y)), ph.stats.free_iterations,
                         ph.stats.nudged_iterations, ph.stats.nonconverged, st.stats.free_seconds,
                         st.stats.nudged_seconds, t1 - t0, t2 - t1, t3 - t2, int(pulses))

    def evaluate(self, X, y):
        """(mean loss V^2, error fraction, predictions, non-converged count) on a dataset; with
        several ranks each solves a contiguous share and the results are combined."""
        lo, hi = 0, X.shape[0]
        comm = self.comm
        if comm is not None:
            bounds = np.linspace(0, X.shape[0], comm.Get_size() + 1).astype(int)
            lo, hi = bounds[comm.Get_rank()], bounds[comm.Get_rank() + 1]
        run_eval = evaluate_wired if self.net.wired else evaluate
        extra = {"drop_samples": DROP_SAMPLES} if self.net.wired else {}
        ev = run_eval(self.net, self.params, X[lo:hi], y[lo:hi], self.cfg.estimator.target_volts,
                      self.alg, self.cfg.solver.eval_batch, **extra)
        pred, loss_sum, bad, power = ev.pred, ev.loss_sum, ev.nonconverged, ev.power_sum
        if comm is not None:
            pred = np.concatenate(comm.allgather(pred))
            loss_sum = comm.allreduce(loss_sum)
            bad = comm.allreduce(bad)
            power = comm.allreduce(power)
        self.last_power = power / X.shape[0]  # W, mean static power per inference
        if self.net.wired:  # V, on this rank's first samples (see evaluate_wired)
            self.last_worst_drop = getattr(ev, "worst_drop", float("nan"))
        return loss_sum / X.shape[0], float(np.mean(pred != y)), pred, bad

    def hidden_voltages(self, X):
        return layer_voltages(self.net, self.params, X, self.alg)

    def gradcheck(self, X, y):
        """Relative error of the configured EqProp estimator (centered for random-sign and
        exact) against the exact gradient on ``X``, ``y``."""
        tv = self.cfg.estimator.target_volts
        est = self.cfg.estimator.estimator
        est = "centered" if est in ("random-sign", "exact") else est
        if self.net.wired:
            return wired_gradcheck(self.net, self.params, X, y, tv, self.beta(), est, self.alg)
        exact, _, _ = exact_gradient(self.net, self.params, X, y, tv, self.alg)
        g, _, _, _ = eqprop_gradient(self.net, self.params, X, y, EqProp(self.beta(), est), tv, self.alg)
        return relative_error(g, exact)


def pinned_fraction(params, g_min, g_max, tol=PINNED_TOLERANCE) -> float:
    """Fraction of all conductances (every ``W{l}`` and ``B{l}``) within ``tol * (g_max -
    g_min)`` (S) of ``g_min`` or ``g_max``: pinned at a bound, where a clipped step stops."""
    band = tol * (g_max - g_min)
    pinned = total = 0
    for a in params.values():
        pinned += int(np.count_nonzero((a <= g_min + band) | (a >= g_max - band)))
        total += a.size
    return pinned / max(total, 1)


def divergence(train_loss, loss_floor, params, g_min, g_max) -> dict:
    """Is the run diverging? ``train_loss`` (V^2, this epoch's mean) against ``loss_floor``
    (the lowest loss seen before: the first minibatch's at the initial conductances or an
    earlier epoch's mean) and the conductances ``params`` (S) against ``[g_min, g_max]``.

    Returns ``loss_growth`` (``train_loss / loss_floor``), ``pinned_fraction``
    (:func:`pinned_fraction`) and ``diverged`` (1 when the loss is not finite, grew by
    :data:`~fastres.config.DIVERGENCE_LOSS_GROWTH` or more, or at least
    :data:`~fastres.config.DIVERGENCE_PINNED_FRACTION` of the conductances are pinned; else 0).
    """
    growth = float(train_loss) / loss_floor if loss_floor and loss_floor > 0 else float("nan")
    pinned = pinned_fraction(params, g_min, g_max)
    diverged = (not np.isfinite(train_loss) or (np.isfinite(growth) and growth >= DIVERGENCE_LOSS_GROWTH)
                or pinned >= DIVERGENCE_PINNED_FRACTION)
    return {"loss_growth": growth, "pinned_fraction": pinned, "diverged": int(diverged)}


def divergence_note(d: dict) -> str:
    """The epoch line's report of a diverging run ('' when it is not)."""
    if not d["diverged"]:
        return ""
    return (f" | DIVERGING: loss {d['loss_growth']:.3g}x its lowest, "
            f"{100 * d['pinned_fraction']:.1f}% of conductances at their bounds (lower the learning rates)")


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


def _meta(cfg: TrainConfig, data, comm=None):
    return {"fastres_version": __version__, "seed": cfg.run.seed, "dataset": cfg.data.dataset,
            "dataset_checksums": data.checksums, "data_root": str(data.root),
            "numba_threads": numba.get_num_threads(), "kind": "eqprop",
            "mpi_ranks": 1 if comm is None else comm.Get_size()}


def run_epochs(trainer: Trainer, store: RunStore | None, data, rng, first_epoch, step, log=print,
               progress=True):
    """Train epochs ``first_epoch..epochs``, checkpointing each; returns the last metrics.

    With several ranks, every rank draws the same permutation from the same ``rng`` and takes
    a contiguous share of each global minibatch (see :mod:`fastres.reducers`), so the global
    batch and the learning rule do not depend on their number; only rank 0 has a ``store``.
    """
    cfg = trainer.cfg
    comm = trainer.comm
    rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    epochs = cfg.run.epochs
    N = data.x_train.shape[0]
    bs = cfg.optimizer.batch_size
    ns = cfg.estimator.gradcheck_samples
    gc_X, gc_y = data.x_test[:ns], data.y_test[:ns]
    metrics = None
    for epoch in range(first_epoch, epochs + 1):
        t_start = time.perf_counter()
        trainer.lr_factor = cfg.optimizer.lr_decay ** (epoch - 1)
        perm = rng.permutation(N)
        tot = StepStats()
        bar = Progress(N, epoch, epochs, progress and rank == 0)
        for k in range(0, N, bs):
            idx = perm[k:k + bs]
            st = trainer.step(data.x_train[idx], data.y_train[idx], rng)
            if trainer.loss_floor is None and np.isfinite(st.loss):  # the first minibatch: the
                trainer.loss_floor = st.loss / st.samples                # initial conductances' loss
            tot += st
            step += 1
            done = min(k + bs, N)
            bar.update(done, tot.loss / done, tot.errors / done)
        bar.close()
        t_train = time.perf_counter() - t_start
        test_loss, test_err, test_pred, test_bad = trainer.evaluate(data.x_test, data.y_test)
        metrics = {
            "epoch": epoch, "train_loss": tot.loss / N, "train_error": tot.errors / N,
            "test_loss": test_loss, "test_error": test_err, "epoch_seconds": t_train,
            "eval_seconds": time.perf_counter() - t_start - t_train,
            "samples_per_second": N / t_train, "solver_seconds": tot.solver_seconds,
            "update_seconds": tot.update_seconds, "comm_seconds": tot.comm_seconds,
            "python_seconds": t_train - tot.solver_seconds - tot.update_seconds - tot.comm_seconds,
            "free_iterations": tot.free_iterations / N, "nudged_iterations": tot.nudged_iterations / N,
            "nonconverged": int(tot.nonconverged), "eval_nonconverged": test_bad, "beta": trainer.beta(),
            "free_phase_seconds": tot.free_seconds, "nudged_phase_seconds": tot.nudged_seconds,
            "ranks": size, "static_power_w": trainer.last_power,
        }
        div = divergence(metrics["train_loss"], trainer.loss_floor, trainer.params, cfg.network.g_min,
                         cfg.network.g_max)
        metrics.update(div)
        if np.isfinite(metrics["train_loss"]):
            trainer.loss_floor = min(trainer.loss_floor or np.inf, metrics["train_loss"])
        if trainer.net.wired:
            metrics["worst_line_drop_v"] = trainer.last_worst_drop
        if not cfg.device.ideal:
            metrics["pulses"] = int(tot.pulses)
        if rank == 0:
            every = cfg.estimator.gradcheck_every
            if every and epoch % every == 0:
                metrics["gradcheck_rel_error"] = trainer.gradcheck(gc_X, gc_y)
            samples = {"test_pred": test_pred.astype(np.int16), "test_label": data.y_test.astype(np.int16)}
            samples.update(trainer.hidden_voltages(data.x_test[:cfg.run.store_samples]))
            store.write_checkpoint(epoch, trainer.params, trainer.optimizer.state(), generator_state(rng),
                                   extra={"step": step, "loss_floor": trainer.loss_floor}, metrics=metrics,
                                   extra_arrays=samples)
            log(f"epoch {epoch}/{epochs}: train loss {metrics['train_loss']:.4f} error "
                f"{100 * metrics['train_error']:.2f}% | test loss {test_loss:.4f} error {100 * test_err:.2f}% | "
                f"{t_train:.1f} s ({metrics['samples_per_second']:,.0f} samples/s; solver {tot.solver_seconds:.1f} s, "
                f"update {tot.update_seconds:.1f} s"
                + (f", comm {tot.comm_seconds:.1f} s, {size} ranks" if size > 1 else "")
                + f") | non-converged {int(tot.nonconverged)}" + divergence_note(div))
        if comm is not None:
            comm.Barrier()  # the checkpoint is on disk before any rank starts the next epoch
    return metrics


def train(cfg: TrainConfig, path, *, overwrite=False, log=print, progress=True, comm=None):
    """Run ``cfg`` from scratch, writing the run file ``path``. Returns the last epoch's metrics.

    ``comm``: an mpi4py communicator for data-parallel training (rank 0 writes the file)."""
    rank = 0 if comm is None else comm.Get_rank()
    cfg = cfg.resolved()  # stored resolved, never "auto"
    data = load_data(cfg)
    rng = np.random.default_rng(cfg.run.seed)
    trainer = Trainer(cfg, comm)
    trainer.init_state(rng)
    store = None
    if rank == 0:
        store = RunStore.create(path, config=cfg.to_dict(), meta=_meta(cfg, data, comm), params=trainer.params,
                                overwrite=overwrite, rng_state=generator_state(rng))
        kind = "exact-gradient" if cfg.estimator.estimator == "exact" else "EqProp"
        log(f"fastres {__version__}: {kind} {cfg.describe()} "
            f"({data.x_train.shape[0]} train / {data.x_test.shape[0]} test), seed {cfg.run.seed}, "
            f"{numba.get_num_threads()} threads"
            + (f" x {comm.Get_size()} MPI ranks" if comm is not None else "") + f" -> {path}")
    if comm is not None:
        comm.Barrier()
    return run_epochs(trainer, store, data, rng, 1, 0, log, progress)


def resume(path, *, epochs=None, data_dir=None, log=print, progress=True, comm=None):
    """Continue the run in ``path`` from its latest checkpoint, also one killed before its
    first epoch (checkpoint 0). ``epochs``: train to this many epochs instead, recorded in the
    file's config; ``data_dir``: where the dataset is now (its checksums must match).

    Any number of ranks can resume a run, whatever number started it."""
    rank = 0 if comm is None else comm.Get_rank()
    store = RunStore.open(path, writable=(rank == 0))
    if store.meta.get("kind", "eqprop") != "eqprop":
        raise FastresError(f"{path}: a {store.meta.get('kind')} baseline run; only EqProp runs resume "
                           f"(train the baseline again with --baseline mlp)")
    cfg = run_config(store)
    if data_dir is not None:
        cfg = cfg.replace(data=str(data_dir))
    if epochs is not None and int(epochs) != cfg.run.epochs:
        old = cfg.run.epochs
        cfg = cfg.replace(epochs=int(epochs))
        if rank == 0:  # the file says what it is being trained to (watch, report, summary)
            stored = store.config
            if store.layout_version == 1:
                stored["epochs"] = cfg.run.epochs
            else:
                stored["run"]["epochs"] = cfg.run.epochs
            store.update_config(stored, {"epochs": [old, cfg.run.epochs], "command": sys.argv,
                                         "at_checkpoint": store.latest_checkpoint})
    ck = store.load_checkpoint()
    if ck.epoch >= cfg.run.epochs:
        if rank == 0:
            log(f"{path}: already trained to epoch {ck.epoch} of {cfg.run.epochs}; nothing to do")
        return None
    data = load_data(cfg)
    if data.checksums != store.meta.get("dataset_checksums"):
        raise FastresError(f"{path}: the dataset found at {data.root} differs from the one the run started with")
    trainer = Trainer(cfg, comm)
    try:
        trainer.load_state(ck.params, ck.optimizer)
    except FastresError as exc:
        raise FastresError(f"{path}: checkpoint {ck.epoch} cannot be resumed: {exc}") from None
    rng = restore_generator(ck.rng_state)
    trainer.loss_floor = ck.extra.get("loss_floor")  # absent in files from before it: the next minibatch's
    if rank == 0:
        log(f"resuming {path} from epoch {ck.epoch} (of {cfg.run.epochs})"
            + (f" on {comm.Get_size()} MPI ranks" if comm is not None else ""))
    return run_epochs(trainer, store if rank == 0 else None, data, rng, ck.epoch + 1,
                      int(ck.extra.get("step", 0)), log, progress)
