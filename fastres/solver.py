"""The solver: one contract for "a system the kernels solve", one function that solves it.

``solve(problem, alg) -> result``: a problem is data (a :class:`DCProblem` of a circuit, or a
:class:`~fastres.network.NetworkProblem` of a layered network), ``alg`` a :class:`Newton`
config, and the result carries the solution, the iterations, the residual, the per-sample
status and a ``converged`` flag. Every problem reduces to a :class:`KernelSystem` (the
batch-independent arrays, documented once here) and a batch (source currents ``b`` and the
fixed voltages that diodes touch); :func:`solve_system` is the only place that chooses the
serial or the parallel kernel, and :func:`check_converged` the only place that turns statuses
into a :class:`~fastres.errors.ConvergenceError`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
import numba
import numpy as np

from .circuit import Circuit
from .compiled import CompiledCircuit
from .errors import CircuitError, ConfigError, ConvergenceError
from .kernels import guess as _guess
from .kernels import newton as _newton
from .kernels.blocks import block_range
from .kernels import stamping as _stamping
from .kernels.status import Status
from .system import KernelSystem

#: status code -> text (kept for callers of the old name; see :class:`Status`)
STATUS_TEXT = {int(s): s.text for s in Status}


def chunks(B: int) -> int:
    """Number of sample chunks for a batch of B samples.

    1 (the caller runs the serial kernel) with one Numba thread or one sample; otherwise one to
    four chunks per thread (each chunk allocates its scratch once; several per thread balance
    the load). Measured on the 2-core machine (OpenMP threading layer), two threads solve even
    2 samples of a 12-node network faster than one, and a minibatch of 20 samples of 784-100-10
    2.2x faster, so there is no small-batch serial cut-off.
    """
    t = numba.get_num_threads()
    if t == 1 or B < 2:
        return 1
    return max(1, min(B, t * max(1, min(4, B // (64 * t)))))


@contextmanager
def dynamic_chunks():
    """Within the block, Numba's parallel loops hand out their iterations (chunks of samples)
    one at a time to whichever thread is free (``numba.set_parallel_chunksize(1)``) instead
    of in fixed shares: a thread slowed by other work on its core, or by samples that need more
    Newton steps, takes fewer chunks. For per-sample kernels only, whose results do not depend
    on which thread solves a chunk; the previous setting is restored on exit."""
    old = numba.set_parallel_chunksize(1)
    try:
        yield
    finally:
        numba.set_parallel_chunksize(old)


@dataclass(frozen=True)
class Newton:
    """Damped Newton with an energy line search (the algorithm config).

    ``reltol`` (relative), ``vntol`` (V) and ``abstol`` (A) are SPICE-style tolerances, much
    tighter by default than SPICE's 1e-3 / 1e-6 / 1e-12: a sample has converged when its last
    step is below ``vntol + reltol*max|v|`` and its KCL residual below
    ``abstol + reltol*max|source current|``. ``structure='auto'`` eliminates an independent set of
    nodes (a layer) before factoring; ``'dense'`` factors the full Jacobian. ``threads`` limits
    Numba's threads (None: all). ``aids``: a sample that plain Newton does not solve is tried
    again by gmin stepping, then by source stepping (the result's ``aid`` says which one solved
    it); samples plain Newton solves are not affected.
    """

    reltol: float = 1e-12
    vntol: float = 1e-12
    abstol: float = 1e-15
    maxiter: int = 100
    structure: str = "auto"
    threads: int | None = None
    linear: str = "auto"
    aids: bool = True

    def __post_init__(self):
        for key in ("reltol", "vntol", "abstol"):
            val = getattr(self, key)
            if not (np.isfinite(val) and val >= 0):
                raise ConfigError(f"Newton.{key}={val!r} must be a finite number >= 0")
        if int(self.maxiter) < 1:
            raise ConfigError(f"Newton.maxiter={self.maxiter!r} must be >= 1")
        if self.structure not in ("auto", "dense"):
            raise ConfigError(f"Newton.structure={self.structure!r}: use 'auto' or 'dense'")
        if self.linear not in ("auto", "schur", "cg"):
            raise ConfigError(f"Newton.linear={self.linear!r}: use 'auto', 'schur' or 'cg'")

    @classmethod
    def from_config(cls, cfg) -> "Newton":
        """From a run's ``solver`` config section (:class:`fastres.config.SolverConfig`)."""
        return cls(reltol=cfg.reltol, vntol=cfg.vntol, abstol=cfg.abstol, maxiter=cfg.maxiter,
                   linear=cfg.linear)


#: ``DCProblem.guess`` values: the start of a solve without ``v0`` (see :class:`DCProblem`)
GUESSES = ("auto", "clipped", "linear", "zero")
#: the clipped start (:func:`clipped_start`): Newton steps on the whole circuit from the linear
#: start, each solved by block Gauss-Seidel, until a step moves no node by more than
#: ``CLIPPED_TOL`` (V) or after ``CLIPPED_STEPS``; a step's inner sweeps stop when an update of
#: the ``K`` block is below ``CLIPPED_INNER_TOL`` times the step (at most ``CLIPPED_INNER_MAX``
#: sweeps). Measured on the 784-100-10 deck of ``benchmarks/netlist_speed.py`` (README, "The
#: netlist path").
CLIPPED_STEPS = 12
CLIPPED_TOL = 1e-7
CLIPPED_INNER_TOL = 1e-4
CLIPPED_INNER_MAX = 20

#: ``aid`` codes of a result: the continuation aid that solved a sample plain Newton did not
AID_TEXT = {int(_newton.AID_NONE): "none", int(_newton.AID_GMIN): "gmin stepping",
            int(_newton.AID_SOURCE): "source stepping"}


class _Result:
    """What every solve result has: ``iterations`` (B,) Newton steps, ``residual`` (B,) the
    final max |KCL residual| (A), ``status`` (B,) int64 codes of :class:`Status`, and ``aid``
    (B,) int64: 0 plain Newton (or nothing solved the sample), 1 gmin stepping, 2 source
    stepping (:data:`AID_TEXT`; see :class:`Newton`)."""

    _aid = None

    @property
    def aid(self) -> np.ndarray:
        """(B,) int64 continuation aid per sample (0 none, 1 gmin stepping, 2 source stepping)."""
        return np.zeros(self.status.shape[0], dtype=np.int64) if self._aid is None else self._aid

    @property
    def converged(self) -> np.ndarray:
        """(B,) bool: the samples that converged."""
        return self.status == Status.CONVERGED

    @property
    def retcode(self) -> Status:
        """``Status.CONVERGED`` if every sample converged, else the first failed sample's status."""
        bad = np.flatnonzero(self.status != Status.CONVERGED)
        return Status.CONVERGED if bad.size == 0 else Status(int(self.status[bad[0]]))

    @property
    def batch_size(self) -> int:
        return self.status.shape[0]


@dataclass
class DCSolution(_Result):
    """Result of solving a :class:`DCProblem`.

    ``v`` (B, n_nodes) node voltages in V (columns in ``nodes`` order, ground excluded; built on
    first access from the free-node solution ``x`` (B, nF) and the held voltages ``vfix``);
    ``iterations``, ``residual``, ``status``, ``converged``, ``retcode``: see the base class.
    """

    nodes: list
    x: np.ndarray
    vfix: np.ndarray
    slots: np.ndarray
    scales: np.ndarray
    iterations: np.ndarray
    residual: np.ndarray
    status: np.ndarray
    _v: np.ndarray | None = field(default=None, repr=False)

    @property
    def v(self) -> np.ndarray:
        if self._v is None:
            v = np.empty((self.x.shape[0], len(self.nodes)))
            free = self.slots >= 0
            v[:, free] = self.x[:, self.slots[free]]
            v[:, ~free] = self.vfix[:, -self.slots[~free] - 1]
            if np.any(self.scales != 1.0):
                v *= self.scales
            self._v = v
        return self._v

    def voltage(self, node) -> np.ndarray:
        """Voltages (V) of one node over the batch, shape (B,)."""
        name = str(node).lower()
        if name in ("0", "gnd"):
            return np.zeros(self.x.shape[0])
        try:
            j = self.nodes.index(name)
        except ValueError:
            raise KeyError(f"no node named {node!r}") from None
        slot = self.slots[j]
        v = self.x[:, slot] if slot >= 0 else self.vfix[:, -slot - 1]
        return v * self.scales[j]

    def as_dict(self, sample: int = 0) -> dict:
        """``{node: volts}`` for one sample."""
        return {n: float(self.voltage(n)[sample]) for n in self.nodes}


@dataclass
class DCProblem:
    """A DC operating-point problem: a circuit, source overrides and an optional start.

    ``sources`` maps a source name to volts/amperes, a scalar or an array of shape (B,) (a batch
    of B samples). ``v0`` is a warm start: node voltages (V) of shape (n_nodes,) or (B, n_nodes)
    in ``circuit.nodes`` order, or a previous :class:`DCSolution`.

    ``guess`` chooses the start when there is no ``v0``: ``"linear"`` the solution of the
    resistor network alone (every diode removed; one factor shared by the batch, see
    :func:`linear_start`), ``"clipped"`` the linear start with the diodes put back by Newton
    steps solved by block Gauss-Seidel (:func:`clipped_start`; where not every diode joins an
    eliminated node to a held one, the linear start), ``"zero"`` 0 V everywhere, ``"auto"`` (default) the
    clipped start where it applies, else the linear start when every diode joins a free node
    to a held one (clipping diodes, as in a layered network;
    :attr:`CompiledCircuit.clipping_only`), else 0 V. Where the resistor network alone is
    singular, the start is 0 V. The answer is the same to the solver's tolerance whatever the
    start; only the iterations differ.
    """

    circuit: Circuit | CompiledCircuit
    sources: dict = field(default_factory=dict)
    v0: object = None
    guess: str = "auto"
    _prepared: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _b: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _vdfix: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.guess not in GUESSES:
            raise ConfigError(f"DCProblem.guess={self.guess!r}: use one of {', '.join(GUESSES)}")

    what = "DC solve"
    cache = None

    def prepared(self, structure: str = "auto"):
        """``(compiled circuit, vfix (B, nX) V, inj (B, nF) A or None)``, computed once and
        cached. ``vfix`` is the transposed view of :meth:`CompiledCircuit.source_rows`'s
        ``rows`` (built one source at a time, no per-sample work in Python)."""
        if self._prepared is None or self._prepared[0] != structure:
            cc = self.circuit
            if isinstance(cc, Circuit):
                cc = cc.compile(structure)
            elif not isinstance(cc, CompiledCircuit):
                raise TypeError("DCProblem.circuit must be a Circuit or CompiledCircuit, "
                                f"not {type(cc).__name__}")
            rows, inj = cc.source_rows(self.sources)
            self._prepared = (structure, cc, rows.T, inj)
        return self._prepared[1:]

    # -- the solve protocol (see solve) ------------------------------------------------------
    def system(self, alg) -> KernelSystem:
        return self.prepared(alg.structure)[0].system

    def batch(self, alg):
        """``(b (B, nF) A, vdfix (B, nXd) V)``."""
        cc, vfix, inj = self.prepared(alg.structure)
        b = held_currents(vfix.T, cc, inj)
        vdfix = np.ascontiguousarray(vfix[:, cc.dfix]) if cc.dfix.size else np.zeros((1, 0))
        self._b, self._vdfix = b, vdfix
        return b, vdfix

    def start(self, alg, B) -> np.ndarray:
        """A fresh (B, nF) start (V): ``v0`` if given, else the start ``guess`` chooses."""
        cc = self.prepared(alg.structure)[0]
        if self.v0 is not None or self.guess == "zero" or cc.nF == 0:
            return _start(cc, self.v0, B)
        if self.guess == "auto" and not cc.clipping_only:
            return _start(cc, None, B)
        if self._b is not None and self._b.shape[0] == B:
            b, vdfix = self._b, self._vdfix
        else:
            b, vdfix = self.batch(alg)
        x = None
        if self.guess in ("auto", "clipped"):
            x = clipped_start(cc, b, vdfix)
        if x is None:
            x = linear_start(cc, b)
        return _start(cc, None, B) if x is None else x

    def solution(self, alg, x, it, res, st) -> DCSolution:
        cc, vfix, _ = self.prepared(alg.structure)
        return DCSolution(nodes=cc.nodes, x=x, vfix=vfix, slots=cc.slots, scales=cc.scales,
                          iterations=it, residual=res, status=st)


def _start(cc: CompiledCircuit, v0, B):
    x = np.zeros((B, cc.nF))
    if v0 is None:
        return x
    if isinstance(v0, DCSolution):
        if v0.nodes != cc.nodes or v0.x.shape[1] != cc.nF or v0.x.shape[0] not in (1, B):
            raise CircuitError("warm start: the solution is of a different circuit or batch size")
        x[:] = v0.x
        return x
    v0 = np.asarray(v0, dtype=np.float64)
    if v0.shape[-1] != len(cc.nodes) or v0.ndim > 2 or (v0.ndim == 2 and v0.shape[0] not in (1, B)):
        raise CircuitError(f"warm start has shape {v0.shape}, expected ({B}, {len(cc.nodes)})")
    if not np.all(np.isfinite(v0)):
        raise CircuitError("warm start contains NaN or Inf")
    col = {n: j for j, n in enumerate(cc.nodes)}
    cols = [col[n] for n in cc.free_nodes]
    x[:] = np.atleast_2d(v0)[:, cols]  # free nodes are never amplifier outputs: scale 1
    return x


def source_currents(U, P, col0, b0, inj) -> np.ndarray:
    """Free-node source currents (B, nF) in A: ``inj + b0`` plus ``U @ P`` into columns
    ``col0:col0 + P.shape[1]`` (see :func:`fastres.kernels.stamping.source_currents`)."""
    B = U.shape[0]
    b = np.empty((B, b0.shape[0]))
    n = chunks(B)
    if n == 1:
        _stamping.source_currents_range(U, P, col0, b0, inj, 0, B, b)
    else:
        _stamping.source_currents(U, P, col0, b0, inj, n, b)
    return b


def linear_start(cc: CompiledCircuit, b) -> np.ndarray | None:
    """Free-node voltages (B, nF) in V of the resistor network alone (every diode removed)
    under source currents ``b`` (B, nF) A: ``G_FF x = b`` per sample with one factor shared by
    the batch (:attr:`CompiledCircuit.linear_factor`; kernel
    :func:`fastres.kernels.guess.linear_start_range`, serial). For a layered network this is the
    feed-forward pass without clipping; on the 784-100-10 deck of
    ``benchmarks/netlist_speed.py`` Newton then takes 4.5 instead of 5.5 iterations, the first
    ones cheaper. None where the resistor network alone is singular; a sample whose result is
    not finite starts at 0 V."""
    fac = cc.linear_factor
    if fac is None:
        return None
    L, inv = fac
    b = np.ascontiguousarray(b, dtype=np.float64)
    B = b.shape[0]
    x = np.empty((B, cc.nF))
    _guess.linear_start_range(L, cc.GKE, inv, b, 0, B, x, np.empty(cc.nK), np.empty(cc.nE))
    return x


def clipped_start(cc: CompiledCircuit, b, vdfix, steps=None, tol=None, inner_tol=None,
                  inner_max=None) -> np.ndarray | None:
    """Free-node voltages (B, nF) in V close to the solution of a circuit whose every diode
    joins a node of the eliminated set ``E`` to a held node (a layered network's clipping
    diodes): the linear start (:func:`linear_start`), then Newton steps on the whole circuit,
    each solved by block Gauss-Seidel sweeps (``E`` diagonal, ``K`` by one Cholesky factor of
    ``GKK`` shared by the batch; kernel :func:`fastres.kernels.guess.clipped_start`, chunks of
    samples in parallel), with the settings ``CLIPPED_*`` of this module unless given. ``b``
    (B, nF) source currents (A), ``vdfix`` (B or 1, nXd) the held voltages diodes touch (V).
    None where the circuit is not of that form (:attr:`CompiledCircuit.clipped_factor`)."""
    fac, clip = cc.linear_factor, cc.clipped_factor
    if fac is None or clip is None:
        return None
    L, inv = fac
    LK, ptr, idx, side, col = clip
    steps = CLIPPED_STEPS if steps is None else int(steps)
    tol = CLIPPED_TOL if tol is None else float(tol)
    inner_tol = CLIPPED_INNER_TOL if inner_tol is None else float(inner_tol)
    inner_max = CLIPPED_INNER_MAX if inner_max is None else int(inner_max)
    if steps < 0 or inner_max < 1 or not (tol >= 0.0) or not (inner_tol > 0.0):
        raise ConfigError(f"clipped start: need steps >= 0, inner_max >= 1, tol >= 0 and "
                          f"inner_tol > 0 (got steps={steps}, inner_max={inner_max}, tol={tol}, "
                          f"inner_tol={inner_tol})")
    b = np.ascontiguousarray(b, dtype=np.float64)
    B = b.shape[0]
    x = np.empty((B, cc.nF))
    n = chunks(B)
    args = (L, LK, cc.GKE, cc.gEE, inv, b, vdfix, cc.dkind, cc.dpar, ptr, idx, side, col,
            steps, tol, inner_tol, inner_max)
    if n == 1:
        _guess.clipped_start_range(*args, 0, B, x)
    else:
        with dynamic_chunks():
            _guess.clipped_start(*args, n, x)
    return x


def held_currents(rows, cc: CompiledCircuit, inj=None) -> np.ndarray:
    """Free-node source currents (B, nF) in A of a batch: ``inj`` (B, nF) A or None, plus the
    currents from the held voltages ``rows`` (nX, B) V (:meth:`CompiledCircuit.source_rows`)
    through the resistors joining them to free nodes, ``rows.T @ P`` restricted to the block
    of :attr:`CompiledCircuit.source_block`. The product runs in BLAS on the transposed view
    (no copy of ``rows``), one chunk of samples (:func:`~fastres.kernels.blocks.block_range`)
    per Numba thread, in Python threads (BLAS releases the GIL)."""
    B = rows.shape[1]
    r0, r1, c0, c1, Pb = cc.source_block
    b = np.zeros((B, cc.nF)) if inj is None else np.array(inj, dtype=np.float64, order="C")
    if r1 == r0 or c1 == c0 or B == 0:
        return b
    prod = np.empty((B, c1 - c0))
    n = max(1, min(numba.get_num_threads(), B // 256))

    def part(c):
        lo, hi = block_range(B, n, c)
        np.matmul(rows[r0:r1, lo:hi].T, Pb, out=prod[lo:hi])

    if n == 1:
        part(0)
    else:
        with ThreadPoolExecutor(n) as ex:
            list(ex.map(part, range(n)))
    b[:, c0:c1] += prod
    return b


def factor_cache(B, nK, nD):
    """Empty per-sample Schur-factor cache for :func:`solve_kernel`: (factors (B, nK, nK),
    diode conductances (B, nD) in S, valid flags (B,)). Keep it across solves of one circuit with
    the same conductances (EqProp's free and nudged phases) and no longer."""
    return np.empty((B, nK, nK)), np.empty((B, nD)), np.zeros(B, dtype=np.bool_)


def solve_system(system: KernelSystem, b, vdfix, x, alg: Newton, cache=None, aid=None):
    """Run the batched Newton kernel in place on ``x`` (B, nF) V; returns ``(iterations,
    residual (A), status)`` arrays of shape (B,). The one place that picks the serial kernel
    (one thread or one sample) or the parallel one (chunks of samples). ``aid``: an optional
    (B,) int64 array that receives the continuation aid of each sample (see :class:`Newton`).

    ``b`` (B, nF) source currents (A), ``vdfix`` (B or 1, nXd) fixed voltages (V), see
    :class:`KernelSystem`. ``cache``: a :func:`factor_cache` to start from and update, or None.
    Solutions are bit-identical with and without it; it saves refactoring a Jacobian that did
    not change (EqProp's free and nudged phases share one). A system with its own batched solver
    (``solve_batch``, e.g. :class:`fastres.network.LayeredSystem`) solves itself, same contract."""
    own = getattr(system, "solve_batch", None)
    if own is not None:
        return own(b, vdfix, x, alg)
    GKK, GKE, gEE, _, da, db, dkind, dpar = system
    B = x.shape[0]
    it = np.zeros(B, dtype=np.int64)
    res = np.zeros(B)
    st = np.zeros(B, dtype=np.int64)
    n = chunks(B)
    nK, nD = GKK.shape[0], da.shape[0]
    if cache is None:
        cache = factor_cache(0, nK, nD)
    fS, fdg, fvalid = cache
    if (fS.shape != (B, nK, nK) or fdg.shape != (B, nD) or fvalid.shape != (B,)
            or fvalid.dtype != np.bool_) and fS.shape[0] != 0:
        raise ValueError(f"factor cache of shapes {fS.shape}, {fdg.shape}, {fvalid.shape}: expected "
                         f"({B}, {nK}, {nK}), ({B}, {nD}), ({B},) bool (see factor_cache)")
    b = np.ascontiguousarray(b)
    aid = np.zeros(B, dtype=np.int64) if aid is None else aid
    args = (float(alg.reltol), float(alg.vntol), float(alg.abstol), int(alg.maxiter), *cache,
            bool(alg.aids))
    if n == 1:
        _newton.solve_range(GKK, GKE, gEE, b, vdfix, da, db, dkind, dpar, x, *args, 0, B, it, res, st,
                            aid)
    else:
        with dynamic_chunks():
            _newton.solve_b(GKK, GKE, gEE, b, vdfix, da, db, dkind, dpar, x, *args, n, it, res, st,
                            aid)
    return it, res, st


def check_converged(result, what: str = "DC solve") -> None:
    """Raise :class:`~fastres.errors.ConvergenceError` (carrying ``result``) naming the failed
    samples and the first one's status, iterations and residual, unless all converged."""
    st = result.status
    if np.all(st == Status.CONVERGED):
        return
    bad = np.flatnonzero(st != Status.CONVERGED)
    first = int(bad[0])
    raise ConvergenceError(
        f"{what} did not converge for {bad.size} of {st.shape[0]} samples (first: sample {first}, "
        f"{Status(int(st[first])).text}, {int(result.iterations[first])} iterations, "
        f"residual {result.residual[first]:.3g} A)", samples=bad, solution=result)


def solve(problem, alg: Newton = Newton(), *, check: bool = True):
    """Solve the DC operating point of every sample of ``problem``; returns its result type
    (:class:`DCSolution` for a :class:`DCProblem`, a ``NetworkSolution`` for a network).

    A problem provides ``system(alg)`` (a :class:`KernelSystem`), ``batch(alg)`` (``b``,
    ``vdfix``), ``start(alg, B)`` (a fresh (B, nF) starting point, V), ``cache`` (a
    :func:`factor_cache` or None), ``solution(alg, x, it, res, st)`` and ``what`` (its name in
    messages). With ``check=True`` (default) a sample that did not converge raises
    :class:`~fastres.errors.ConvergenceError` (which carries the result); with ``check=False``
    the caller inspects ``result.converged``.
    """
    old = numba.get_num_threads()
    if alg.threads is not None:
        numba.set_num_threads(max(1, min(int(alg.threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        system = problem.system(alg)
        b, vdfix = problem.batch(alg)
        x = problem.start(alg, b.shape[0])
        aid = np.zeros(b.shape[0], dtype=np.int64)
        it, res, st = solve_system(system, b, vdfix, x, alg, problem.cache, aid=aid)
    finally:
        numba.set_num_threads(old)
    result = problem.solution(alg, x, it, res, st)
    result._aid = aid
    if check:
        check_converged(result, problem.what)
    return result
