"""Plain-numpy twins of the fastres kernels (the stumpy model: every kernel's twin in one file).

Each function here is written again from the equations that the kernels' module docstrings
state (``kernels/devices.py``, ``stamping.py``, ``newton.py``, ``adjoint.py``, ``updates.py``),
for clarity, not speed: dense matrices, ``np.linalg.solve``, broadcasting. Nothing here calls a
``fastres.kernels`` function; the tests compare each kernel against its twin here.

Units: volts (V), amperes (A), siemens (S), watts (W, the unit of a co-content ``V*A``).

============================  =======================================================
twin                          kernel(s) it is compared with
============================  =======================================================
:func:`shockley`, :func:`pwl`, :func:`diode`
                              ``devices.diode_ig``, ``diode_phi``, ``diode_dphi``,
                              ``diode_move``
:func:`kcl`                   ``stamping.assemble`` (residual and Jacobian)
:func:`source_currents`       ``stamping.source_currents``
:func:`newton_direction`      ``stamping.schur_newton_direction``
:func:`adjoint_solve`         ``adjoint.adjoint_solve``, ``adjoint.adjoint_range``
:func:`drop_square_difference`
                              ``updates.drop_square_terms``, ``updates.fixed_from_terms``
:func:`sgd_step`              ``updates.drop_square_step_rows``, ``updates.fixed_from_step``,
                              ``updates.block_column_sums``
:func:`reference_solve`       the whole DC solver (``fastres.solve``)
:func:`reduce_to_last`        ``wires.factor``, ``wires.back_substitute``
:func:`drop_square_sums`      ``wires.drop_square_sums``
:func:`element_kcl`, :func:`element_cocontent`
                              KCL and co-content of a :class:`~fastres.circuit.Circuit`,
                              element by element (the physics checks of the solvers)
============================  =======================================================
"""
from __future__ import annotations

import math

import numpy as np

from fastres.circuit import Circuit, CurrentSource, Diode, Resistor, VoltageSource
from fastres.devices import PiecewiseLinear, Shockley
from fastres.errors import CircuitError, ConvergenceError

#: the ``kind`` codes of the two diode models (``dkind`` entries of a compiled circuit)
SHOCKLEY = Shockley.kind
PWL = PiecewiseLinear.kind


# =============================================================================================
# Diode equations
# =============================================================================================
def _columns(p, v):
    """``v`` and the five parameter columns of ``p``, broadcast together, as writable float
    arrays (``p`` (5,) or (..., 5) rows, its last axis the parameters)."""
    v = np.asarray(v, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return [np.array(a, dtype=np.float64) for a in np.broadcast_arrays(v, *(p[..., k] for k in range(5)))]


def shockley(p, v):
    """SPICE level-1 junction (ngspice ``dioload.c``, RS = 0, no breakdown) with gmin in parallel.

    ``p`` is a parameter row ``[IS (A), vte = N k T / q (V), gmin (S), vmax (V), 0]``, shape
    (5,), or rows (..., 5) broadcasting against ``v`` (V, anode - cathode, any shape). Returns
    the current ``i`` (A), the conductance ``g = di/dv`` (S) and the co-content
    ``phi = integral_0^v i(u) du`` (W), each of the broadcast shape::

        -3 vte <= v <= vmax : i = IS (exp(v/vte) - 1)
        v > vmax            : the tangent of that exponential at vmax (a numerical guard)
        v < -3 vte          : i = -IS (1 + (3 vte / (e v))^3)          (ngspice's reverse cubic)
        everywhere          : + gmin v

    A NaN voltage gives NaN.
    """
    v, IS, vte, gmin, vmax, _ = _columns(p, v)
    i = np.full(v.shape, np.nan)
    g = np.full(v.shape, np.nan)
    phi = np.full(v.shape, np.nan)
    lo = -3.0 * vte

    m = (v >= lo) & (v <= vmax)  # the exponential
    e = np.exp(v[m] / vte[m])
    i[m] = IS[m] * (e - 1.0)
    g[m] = IS[m] * e / vte[m]
    # integral_0^v IS (exp(u/vte) - 1) du
    phi[m] = IS[m] * vte[m] * np.expm1(v[m] / vte[m]) - IS[m] * v[m]

    m = v > vmax  # the exponential's tangent at vmax: i(vmax) + g(vmax) (v - vmax)
    em = np.exp(vmax[m] / vte[m])
    i0 = IS[m] * (em - 1.0)
    g0 = IS[m] * em / vte[m]
    phi0 = IS[m] * vte[m] * np.expm1(vmax[m] / vte[m]) - IS[m] * vmax[m]
    d = v[m] - vmax[m]
    i[m] = i0 + g0 * d
    g[m] = g0
    phi[m] = phi0 + i0 * d + 0.5 * g0 * d * d

    m = v < lo  # the reverse cubic, c = (3 vte / e)^3
    c = (3.0 * vte[m] / math.e) ** 3
    vr = v[m]
    i[m] = -IS[m] * (1.0 + c / vr**3)
    g[m] = 3.0 * IS[m] * c / vr**4
    # phi(-3 vte) of the exponential, plus integral_{-3 vte}^v -IS (1 + c u^-3) du
    phi_lo = IS[m] * vte[m] * math.expm1(-3.0) + 3.0 * IS[m] * vte[m]
    phi[m] = phi_lo - IS[m] * (vr - lo[m]) + 0.5 * IS[m] * c * (1.0 / vr**2 - 1.0 / lo[m] ** 2)

    return i + gmin * v, g + gmin, phi + 0.5 * gmin * v * v


def pwl(p, v):
    """Piecewise-linear diode (XSPICE ``sidiode`` with epsilon = revepsilon = 0).

    ``p`` is a parameter row ``[gon (S), goff (S), vfwd (V), vrev (V, > 0, may be inf),
    grev (S)]``, shape (5,), or rows (..., 5) broadcasting against ``v`` (V, any shape).
    Returns current (A), conductance (S) and co-content (W), each of the broadcast shape::

        v >= vfwd        : i = goff vfwd + gon (v - vfwd)
        -vrev < v < vfwd : i = goff v
        v <= -vrev       : i = -goff vrev + grev (v + vrev)
    """
    v, gon, goff, vfwd, vrev, grev = _columns(p, v)
    i = np.array(goff * v)
    g = goff.copy()
    phi = np.array(0.5 * goff * v * v)

    m = v >= vfwd
    d = v[m] - vfwd[m]
    i[m] = goff[m] * vfwd[m] + gon[m] * d
    g[m] = gon[m]
    phi[m] = 0.5 * goff[m] * vfwd[m] ** 2 + goff[m] * vfwd[m] * d + 0.5 * gon[m] * d * d

    m = v <= -vrev  # never where vrev = inf
    d = v[m] + vrev[m]
    i[m] = -goff[m] * vrev[m] + grev[m] * d
    g[m] = grev[m]
    phi[m] = 0.5 * goff[m] * vrev[m] ** 2 - goff[m] * vrev[m] * d + 0.5 * grev[m] * d * d
    return i, g, phi


def diode(kind, p, v):
    """Current (A), conductance (S), co-content (W) of diodes of either model.

    Either one diode -- ``kind`` a scalar, ``p`` its row (5,), ``v`` (V) any shape -- or ``nD``
    diodes -- ``kind`` (nD,), ``p`` (nD, 5), ``v`` (..., nD), the last axis the diodes.
    """
    kind = np.asarray(kind)
    if kind.ndim == 0:
        return (shockley if int(kind) == SHOCKLEY else pwl)(p, v)
    p = np.asarray(p, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    out = [np.full(v.shape, np.nan) for _ in range(3)]
    for code, model in ((SHOCKLEY, shockley), (PWL, pwl)):
        m = kind == code
        if m.any():
            for o, val in zip(out, model(p[m], v[..., m])):
                o[..., m] = val
    return tuple(out)


# =============================================================================================
# Stamping: residual, Jacobian, source currents
# =============================================================================================
def dense_conductance(GKK, GKE, gEE):
    """The resistor Jacobian ``G_FF = [[GKK, GKE], [GKE^T, diag(gEE)]]`` (S), (nF, nF)."""
    return np.block([[GKK, GKE], [GKE.T, np.diag(gEE)]])


def linear_solve(GKK, GKE, gEE, b):
    """The resistor network alone: ``x`` (B, nF) V solving ``G_FF x = b`` for source currents
    ``b`` (B, nF) A (twin of ``kernels/guess.py``)."""
    return np.linalg.solve(dense_conductance(GKK, GKE, gEE), np.asarray(b, dtype=np.float64).T).T


def newton_steps(GKK, GKE, gEE, b, x, vdfix, da, db, dkind, dpar, steps=1):
    """``steps`` plain Newton steps ``x <- x - J(x)^-1 r(x)`` on the free nodes (no line
    search), the dense twin of the clipped start's steps (``kernels/guess.py``'s
    ``clipped_start_range``, whose block Gauss-Seidel inner solve converges to this step).
    ``x`` (B, nF) V the start, ``b`` (B, nF) A, ``vdfix`` (B or 1, nXd) V; returns the new
    (B, nF) V (residual and Jacobian from :func:`kcl`)."""
    x = np.array(x, dtype=np.float64)
    for _ in range(steps):
        r, J = kcl(GKK, GKE, gEE, b, x, vdfix, da, db, dkind, dpar)
        x = x - np.linalg.solve(J, r[..., None])[..., 0]
    return x


def incidence(da, db, nF):
    """(nF, nD) diode incidence on the free nodes: +1 at the anode, -1 at the cathode (an
    index >= nF is a fixed node, which has no row)."""
    A = np.zeros((nF, len(da)))
    for k, (a, c) in enumerate(zip(da, db)):
        if a < nF:
            A[a, k] += 1.0
        if c < nF:
            A[c, k] -= 1.0
    return A


def kcl(GKK, GKE, gEE, b, x, vdfix, da, db, dkind, dpar):
    """KCL residual and full dense Jacobian on the free nodes of a compiled circuit.

    ``x`` (B, nF) free-node voltages (V); ``b`` (B, nF) or (nF,) source currents (A);
    ``vdfix`` (B, nXd) or (1, nXd) the fixed voltages (V) that diodes touch. Diode ``k`` sits
    between entries ``da[k]`` (anode) and ``db[k]`` (cathode) of ``vext = [x | vdfix]``.
    Returns ``r = G_FF x - b + A i(v)`` (B, nF) (A, current leaving each free node) and
    ``J = G_FF + A diag(g(v)) A^T`` (B, nF, nF) (S), ``A`` the :func:`incidence`.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    B, nF = x.shape
    G = dense_conductance(GKK, GKE, gEE)
    vdfix = np.asarray(vdfix, dtype=np.float64)
    vdfix = np.broadcast_to(vdfix, (B, vdfix.shape[1]))
    vext = np.concatenate([x, vdfix], axis=1)
    v = vext[:, da] - vext[:, db]
    i, g, _ = diode(dkind, dpar, v)
    A = incidence(da, db, nF)
    r = x @ G.T - b + i @ A.T
    J = G + np.einsum("ik,bk,jk->bij", A, g, A)
    return r, J


def source_currents(U, P, col0, b0, inj):
    """Free-node source currents (B, nF) in A: ``inj + b0``, plus ``U @ P`` added to the
    columns ``col0 : col0 + P.shape[1]``.

    ``U`` (B, nU) source voltages (V), ``P`` (nU, nP) conductances (S), ``b0`` (nF,) and ``inj``
    (B, nF) or (1, nF) currents (A).
    """
    b = np.broadcast_to(inj + b0, (U.shape[0], b0.shape[0])).copy()
    b[:, col0:col0 + P.shape[1]] += U @ P
    return b


def node_clamp(v, cur, diag, rlo, rhi, IS, vte, iterations=6):
    """Twin of kernels/layered.node_clamp (the network's feed-forward start): scalar Newton
    per node against its two Shockley diodes, steps limited to 0.1 V; returns the new ``v``."""
    for _ in range(iterations):
        ehi = np.exp(np.minimum((v - rhi) / vte, 700.0))
        elo = np.exp(np.minimum((rlo - v) / vte, 700.0))
        f = diag * v - cur + IS * (ehi - elo)
        fp = diag + IS * (ehi + elo) / vte
        v = v - np.clip(f / fp, -0.1, 0.1)
    return v


# =============================================================================================
# Linear solves with the Jacobian
# =============================================================================================
def newton_direction(J, r):
    """Newton direction ``dx = -J^-1 r`` (V): ``J`` (..., nF, nF) S, ``r`` (..., nF) A."""
    return -np.linalg.solve(J, r[..., None])[..., 0]


def step_noise(GKK, GKE, gEE, b, x, vdfix, da, db, dkind, dpar, factor):
    """The Newton step (V) that round-off in the residual alone can produce, per free node:
    ``J^-1 dr`` with ``dr = factor eps (|J| |x| + |b| + |A| |i| + g |v_fixed|)`` (A), ``x``
    (nF,) V, ``b`` (nF,) A, ``vdfix`` (nXd,) V; ``|A| |i|`` sums each diode's current magnitude
    at its free ends, ``g |v_fixed|`` its conductance times the voltage of a fixed end. The
    twin of ``kernels/newton.py``'s ``_step_noise``."""
    r, J = kcl(GKK, GKE, gEE, b, x[None], vdfix[None], da, db, dkind, dpar)
    J = J[0]
    nF = x.shape[0]
    vext = np.concatenate([x, vdfix])
    i, g, _ = diode(dkind, dpar, vext[da] - vext[db])
    dr = np.abs(J) @ np.abs(x) + np.abs(b) + np.abs(incidence(da, db, nF)) @ np.abs(i)
    for k in range(da.shape[0]):
        a, c = da[k], db[k]
        if a < nF and c >= nF:
            dr[a] += g[k] * abs(vext[c])
        if c < nF and a >= nF:
            dr[c] += g[k] * abs(vext[a])
    return np.abs(np.linalg.solve(J, factor * np.finfo(float).eps * dr))


def adjoint_solve(J, rhs):
    """``J^-1 rhs`` per sample: ``J`` (B, nF, nF) S, ``rhs`` (B, nF) (any unit u); result u/S."""
    return np.linalg.solve(J, rhs[..., None])[..., 0]


# =============================================================================================
# Equilibrium-Propagation updates
# =============================================================================================
def drop_square_difference(ua, va, ub, vb):
    """``D[i, j] = sum_s (ua[s,i] - va[s,j])^2 - (ub[s,i] - vb[s,j])^2`` (V^2), (n_from, n_to).

    ``ua, ub`` (B, n_from), ``va, vb`` (B, n_to) volts: the from- and to-voltages of every
    conductance in two phases, summed over the batch.
    """
    da = ua[:, :, None] - va[:, None, :]
    db = ub[:, :, None] - vb[:, None, :]
    return (da**2 - db**2).sum(axis=0)


def sgd_step(W, grad, vel, lr, momentum, g_lo, g_hi):
    """One SGD step with momentum and clipping; returns new ``(W, vel, column sums of W)``.

    ``W`` (n, m) conductances (S), ``grad`` (n, m) their gradient (V^2/S), ``vel`` (n, m) the
    momentum buffer (V^2/S), ``lr`` (S^2/V^2). With ``momentum > 0``: ``vel = momentum vel +
    grad``, ``W = clip(W - lr vel, g_lo, g_hi)``; with ``momentum == 0``: ``vel`` is left as it
    is and ``W = clip(W - lr grad, g_lo, g_hi)``. The column sums (m,) are in S.
    """
    if momentum > 0.0:
        vel = momentum * vel + grad
        step = vel
    else:
        vel = vel.copy()
        step = grad
    W = np.clip(W - lr * step, g_lo, g_hi)
    return W, vel, W.sum(axis=0)


# =============================================================================================
# A circuit's KCL and co-content, element by element
# =============================================================================================
def _diode_model_eval(circuit, d, v):
    p = d.model.params(temp=circuit.temp, tnom=circuit.tnom, gmin=circuit.gmin)
    return diode(d.model.kind, p, v)


def element_kcl(circuit, volts, sample=0):
    """Net current (A) leaving each free node, as a dict, and the largest element current (A).

    ``volts`` maps every non-ground node name to its voltage (V); current-source values are
    taken at ``sample`` (a scalar value serves every sample). Written element by element from
    the :class:`~fastres.circuit.Circuit`, with :func:`diode` for the diodes.
    """
    v = dict(volts)
    v["0"] = 0.0
    net = {n: 0.0 for n in list(circuit.nodes) + ["0"]}
    biggest = 0.0

    def flow(a, b, i):  # current i (A) from node a to node b
        nonlocal biggest
        biggest = max(biggest, abs(i))
        net[a] += i
        net[b] -= i

    for e in circuit.elements.values():
        if isinstance(e, Resistor):
            flow(e.a, e.b, e.g * (v[e.a] - v[e.b]))
        elif isinstance(e, Diode):
            i, _, _ = _diode_model_eval(circuit, e, v[e.anode] - v[e.cathode])
            flow(e.anode, e.cathode, float(i))
        elif isinstance(e, CurrentSource):
            val = np.atleast_1d(e.value)
            flow("0", e.node, float(val[min(sample, val.size - 1)]))
    held = {e.node for e in circuit.of_type(VoltageSource)} | {"0"}
    return {n: i for n, i in net.items() if n not in held}, biggest


def element_cocontent(circuit, volts):
    """Total co-content (W) of the resistors, diodes and current sources at node voltages
    ``volts`` (V, a dict over the non-ground nodes); current sources must be scalar.

    Its minimum over the free-node voltages is the DC operating point.
    """
    v = dict(volts)
    v["0"] = 0.0
    E = 0.0
    for e in circuit.elements.values():
        if isinstance(e, Resistor):
            E += 0.5 * e.g * (v[e.a] - v[e.b]) ** 2
        elif isinstance(e, Diode):
            E += float(_diode_model_eval(circuit, e, v[e.anode] - v[e.cathode])[2])
        elif isinstance(e, CurrentSource):
            E -= float(e.value) * v[e.node]
    return E


# =============================================================================================
# The reference DC solver
# =============================================================================================
# An independent plain-numpy DC solver: the reference the tests and benchmarks compare against.
#
# reference_solve shares nothing with the production solver except the Circuit data and the
# device parameter rows (model.params(...)): it builds the full nodal system straight from the
# circuit's elements, evaluates the diode equations with the vectorised :func:`diode` above and
# runs a textbook batched Newton iteration (dense np.linalg.solve of the full free-node Jacobian,
# Armijo backtracking on the circuit's co-content). Clarity comes before speed.
#
# Equations (units: V, A, S). With x the free-node voltages and u all node voltages (ground = 0),
# the KCL residual of every free node (current leaving the node) is
#
#     r(x) = G_ff x + G_fx v_fix - i_inj + A i_d(v_d),     v_d = u[anode] - u[cathode]
#
# G is the resistor Laplacian, A the (free nodes x diodes) incidence matrix (+1 anode, -1 cathode)
# and i_d the diode currents (anode -> cathode), see shockley() and pwl(). The Jacobian is
# J = G_ff + A diag(g_d) A^T with g_d = di_d/dv (S).
#
# Above vmax = params[3] (where the current reaches the model's imax, 1e6 A by default) the
# exponential is continued by its tangent, so that the co-content stays finite from any start
# (e.g. a 5 V source across a diode at the zero initial guess). That guard does not change any
# solution it does not reach: a sample whose solution has a diode beyond vmax raises
# ConvergenceError.

_ARMIJO = 1e-4
_MAX_HALVINGS = 60
# A Newton step below this (V) is taken in full without a line search: it lies deep in the
# quadratic-convergence region of every diode (vte >= ~1 mV), and the residual norm there may be
# at its round-off floor, where "sufficient decrease" cannot be measured.
_SMALL_STEP = 1e-9


def _source_values(circuit, sources):
    """Source values with overrides: ({name: (B,) array}, B)."""
    vals = {e.name: e.value for e in circuit.elements.values()
            if isinstance(e, (VoltageSource, CurrentSource))}
    for name, val in (sources or {}).items():
        key = str(name).strip().lower()
        if key not in vals:
            raise CircuitError(f"reference_solve: no voltage or current source named {name!r}")
        vals[key] = np.asarray(val, dtype=np.float64)
    sizes = {np.size(v) for v in vals.values() if np.ndim(v) == 1}
    if len(sizes) > 1:
        raise CircuitError(f"reference_solve: sources have different batch sizes {sorted(sizes)}")
    B = sizes.pop() if sizes else 1
    return {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (B,)) for k, v in vals.items()}, B


class _System:
    """The nodal equations of one circuit (the batch-independent parts)."""

    def __init__(self, circuit: Circuit):
        self.nodes = circuit.nodes
        held = {}
        for e in circuit.of_type(VoltageSource):
            if e.node in held:
                raise CircuitError(f"node {e.node!r} is held by two voltage sources")
            held[e.node] = e.name
        self.free = [n for n in self.nodes if n not in held]
        self.fixed = list(held)                     # nodes held by a voltage source
        self.vsrc_of_fixed = [held[n] for n in self.fixed]
        if not self.free:
            raise CircuitError("reference_solve: every node is held by a voltage source")
        nF, nX = len(self.free), len(self.fixed)
        # column of each node in the full voltage vector u = [free | fixed | ground]
        col = {n: k for k, n in enumerate(self.free)}
        col.update({n: nF + k for k, n in enumerate(self.fixed)})
        col["0"] = nF + nX
        self.col = col
        n_all = nF + nX + 1

        # resistor Laplacian on all nodes (ground included, then its row/column dropped)
        res = circuit.of_type(Resistor)
        a = np.array([col[r.a] for r in res], dtype=np.int64)
        b = np.array([col[r.b] for r in res], dtype=np.int64)
        g = np.array([r.g for r in res], dtype=np.float64)
        L = np.zeros((n_all, n_all))
        np.add.at(L, (a, a), g)
        np.add.at(L, (b, b), g)
        np.add.at(L, (a, b), -g)
        np.add.at(L, (b, a), -g)
        self.Gff = L[:nF, :nF].copy()               # (nF, nF) S
        self.Gfx = L[:nF, nF:nF + nX].copy()        # (nF, nX) S

        # diodes: full incidence D (n_all, nD), params
        dio = circuit.of_type(Diode)
        nD = len(dio)
        self.D = np.zeros((n_all, nD))
        for k, d in enumerate(dio):
            self.D[col[d.anode], k] += 1.0
            self.D[col[d.cathode], k] -= 1.0
        self.D[n_all - 1] = 0.0                     # ground voltage is zero anyway
        self.A = self.D[:nF].copy()                 # (nF, nD) free-node incidence
        self.A2 = self.A**2                         # diagonal Jacobian stamps
        for d in dio:
            if not isinstance(d.model, (Shockley, PiecewiseLinear)):
                raise CircuitError(f"reference_solve: unsupported diode model {d.model!r}")
        self.dkind = np.array([SHOCKLEY if isinstance(d.model, Shockley) else PWL for d in dio],
                              dtype=np.int64)
        self.dpar = np.array([d.model.params(temp=circuit.temp, tnom=circuit.tnom, gmin=circuit.gmin)
                              for d in dio], dtype=np.float64).reshape(nD, 5)
        # diodes between two distinct free nodes give off-diagonal Jacobian stamps
        both = [(k, col[d.anode], col[d.cathode]) for k, d in enumerate(dio)
                if col[d.anode] < nF and col[d.cathode] < nF and d.anode != d.cathode]
        self.off_k = np.array([t[0] for t in both], dtype=np.int64)
        self.off_a = np.array([t[1] for t in both], dtype=np.int64)
        self.off_c = np.array([t[2] for t in both], dtype=np.int64)
        self.isrc = [(e.name, col[e.node]) for e in circuit.of_type(CurrentSource)
                     if col[e.node] < nF]

    def evaluate(self, x, bconst, vdfix):
        """At free-node voltages ``x`` (b, nF) V: the linear part ``G_ff x + b`` (A) of the
        residual, the full KCL residual (A) (b, nF), the diode conductances (S) and co-contents
        (W), (b, nD). An overflowing exponential gives inf/nan, which the line search rejects."""
        vd = x @ self.A + vdfix
        with np.errstate(over="ignore", invalid="ignore"):
            i, g, phi = diode(self.dkind, self.dpar, vd)
            rlin = x @ self.Gff.T + bconst
            r = rlin + i @ self.A.T
        return rlin, r, g, phi

    def jacobian(self, g):
        """(b, nF, nF) Jacobian ``G_ff + A diag(g) A^T`` (S)."""
        b, n = g.shape[0], self.Gff.shape[0]
        J = np.broadcast_to(self.Gff, (b, n, n)).copy()
        idx = np.arange(n)
        J[:, idx, idx] += g @ self.A2.T
        if self.off_k.size:
            gk = g[:, self.off_k]
            np.subtract.at(J, (slice(None), self.off_a, self.off_c), gk)
            np.subtract.at(J, (slice(None), self.off_c, self.off_a), gk)
        return J


def _newton(sys, bconst, vdfix, tol, maxiter):
    """Damped Newton for one chunk of samples; returns free voltages (b, nF) and converged (b,).

    The operating point minimises the co-content ``E(x) = x.G_ff.x / 2 + b.x + sum phi_d(v_d)``
    (convex; its gradient is the residual, its Hessian the Jacobian), so the Newton step is a
    descent direction and backtracking (halving ``t``) until the Armijo condition
    ``E(x + t dx) - E(x) <= 1e-4 t r.dx`` holds converges from any start. The linear part of the
    energy change is computed exactly as ``t rlin.dx + t^2/2 dx.G.dx``; the diodes' part is a
    difference of co-contents, allowed a round-off slack of 16 eps sum|phi|.
    """
    eps = np.finfo(np.float64).eps
    nb, nF = bconst.shape
    x = np.zeros((nb, nF))
    done = np.zeros(nb, dtype=bool)
    rlin, r, g, phi = sys.evaluate(x, bconst, vdfix)
    for _ in range(maxiter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        xa, ba, vfa = x[act], bconst[act], vdfix[act]
        dx = newton_direction(sys.jacobian(g[act]), r[act])
        step = np.max(np.abs(dx), axis=1)
        slope = np.einsum("bi,bi->b", r[act], dx)                   # dE/dt at t = 0 (W), < 0
        s1 = np.einsum("bi,bi->b", rlin[act], dx)
        s2 = np.einsum("bi,ij,bj->b", dx, sys.Gff, dx)
        phi0 = phi[act]
        t = np.ones(act.size)
        ok = np.zeros(act.size, dtype=bool)
        new = [np.empty_like(a) for a in (xa, rlin[act], r[act], g[act], phi0)]
        todo = np.arange(act.size)
        for _ in range(_MAX_HALVINGS + 1):
            xt = xa[todo] + t[todo, None] * dx[todo]
            ev = sys.evaluate(xt, ba[todo], vfa[todo])
            tt = t[todo]
            with np.errstate(over="ignore", invalid="ignore"):
                dphi = (ev[3] - phi0[todo]).sum(axis=1)
                dE = tt * s1[todo] + 0.5 * tt * tt * s2[todo] + dphi
                slack = 16.0 * eps * (np.abs(ev[3]).sum(axis=1) + np.abs(phi0[todo]).sum(axis=1))
                acc = (dE <= _ARMIJO * tt * slope[todo] + slack) & np.isfinite(ev[1]).all(axis=1)
            # a tiny step is taken in full (deep in the quadratic region; see _SMALL_STEP)
            acc |= (tt == 1.0) & (step[todo] <= _SMALL_STEP)
            for arr, val in zip(new, (xt, *ev)):
                arr[todo] = val
            ok[todo] = acc
            todo = todo[~acc]
            if todo.size == 0:
                break
            t[todo] *= 0.5
        if todo.size:
            raise ConvergenceError(
                f"reference_solve: line search failed for {todo.size} samples", samples=act[todo])
        x[act], rlin[act], r[act], g[act], phi[act] = new
        done[act] = step < tol  # the undamped Newton step (taken in full): the distance left
    return x, done


def reference_solve(circuit, sources=None, *, tol=1e-13, maxiter=200, chunk=1024):
    """DC operating point of ``circuit`` for a batch of source values, in plain numpy.

    Parameters
    ----------
    circuit : :class:`~fastres.circuit.Circuit` (a :class:`CompiledCircuit` is accepted and its
        ``.circuit`` used; none of its matrices are).
    sources : ``{source name: value}`` overrides, each a scalar or an array of shape (B,) in V
        (voltage sources) or A (current sources); sources not given keep their circuit values.
    tol : convergence threshold (V): a sample stops when its (undamped, hence taken in full)
        Newton step ``max|dx|`` is below ``tol``.
    maxiter : Newton iterations per sample.
    chunk : samples solved together (bounds the (chunk, nF, nF) Jacobian's memory).

    Returns
    -------
    (nodes, V) : ``nodes`` the non-ground node names (``circuit.nodes`` order) and ``V`` the
        node voltages, shape (B, len(nodes)), in V (held nodes included).

    Raises :class:`~fastres.errors.ConvergenceError` when a sample does not converge, or its
    solution has a Shockley diode beyond the ``imax`` guard.
    """
    if not isinstance(circuit, Circuit):
        circuit = getattr(circuit, "circuit", None)
        if not isinstance(circuit, Circuit):
            raise TypeError("reference_solve needs a Circuit (or a CompiledCircuit)")
    sys = _System(circuit)
    vals, B = _source_values(circuit, sources)
    nF, nX = len(sys.free), len(sys.fixed)
    vfix = np.zeros((B, nX))
    for k, name in enumerate(sys.vsrc_of_fixed):
        vfix[:, k] = vals[name]
    inj = np.zeros((B, nF))
    for name, c in sys.isrc:
        inj[:, c] += vals[name]
    bconst = vfix @ sys.Gfx.T - inj                           # (B, nF) A
    vdfix = vfix @ sys.D[nF:nF + nX]                          # (B, nD) V: fixed part of v_d
    x = np.empty((B, nF))
    for s in range(0, B, max(1, int(chunk))):
        sl = slice(s, min(B, s + int(chunk)))
        xs, done = _newton(sys, bconst[sl], vdfix[sl], tol, maxiter)
        if not done.all():
            bad = np.flatnonzero(~done) + s
            raise ConvergenceError(
                f"reference_solve: {bad.size} samples did not converge in {maxiter} iterations"
                f" (first: sample {int(bad[0])})", samples=bad)
        x[sl] = xs
    sh = sys.dkind == SHOCKLEY
    if sh.any():
        beyond = ((x @ sys.A + vdfix)[:, sh] > sys.dpar[sh, 3]).any(axis=1)
        if beyond.any():
            bad = np.flatnonzero(beyond)
            raise ConvergenceError(
                f"reference_solve: {bad.size} samples have a Shockley diode beyond its imax guard"
                f" current (first: sample {int(bad[0])})", samples=bad)
    V = np.empty((B, len(sys.nodes)))
    for j, n in enumerate(sys.nodes):
        c = sys.col[n]
        V[:, j] = x[:, c] if c < nF else vfix[:, c - nF]
    return list(sys.nodes), V


# ---------------------------------------------------------------------------- pulsed devices

def pulsed_move(model, g, n, lo, hi, s, step_up, step_down, a_up, a_down, p_max, tab_up, tab_down):
    """Twin of ``kernels.pulses.move``, one pulse at a time (S): ``n`` signed whole pulses
    from ``g`` between bounds ``lo``/``hi`` (arrays of one shape), step scale ``s``.

    linear: each pulse +- s step; soft bounds: each pulse s step (hi - g)/r up, s step (g - lo)/r
    down; exponential (NeuroSim): the pulse position on G(P) = lo + B (1 - exp(-P/A)) found by
    bisection, advanced by s per pulse; table: the position by interpolation of the inverse
    curve, advanced by s per pulse.
    """
    g = np.array(g, dtype=np.float64, copy=True)
    n = np.asarray(n, dtype=np.float64)
    lo, hi, s = (np.broadcast_to(np.asarray(a, dtype=np.float64), g.shape) for a in (lo, hi, s))
    r = hi - lo
    out = g.copy()
    for idx in np.ndindex(g.shape):
        k = int(abs(n[idx]))
        up = n[idx] > 0
        x = g[idx]
        if model in ("linear", "soft-bounds"):
            for _ in range(k):
                if model == "linear":
                    x += s[idx] * (step_up if up else -step_down)
                elif up:
                    x += s[idx] * step_up * (hi[idx] - x) / r[idx]
                else:
                    x -= s[idx] * step_down * (x - lo[idx]) / r[idx]
        elif model == "exponential":
            a = (a_up if up else a_down)[idx] if np.ndim(a_up) else (a_up if up else a_down)
            A = a * p_max
            B = r[idx] / (1 - np.exp(-p_max / A))

            def G(P):
                return B * (1 - np.exp(-P / A))  # distance from the starting bound

            dist = (x - lo[idx]) if up else (hi[idx] - x)
            lo_p, hi_p = 0.0, 1e6 * p_max
            for _ in range(200):  # bisection for the pulse position
                mid = 0.5 * (lo_p + hi_p)
                lo_p, hi_p = (mid, hi_p) if G(mid) < dist else (lo_p, mid)
            P = 0.5 * (lo_p + hi_p)
            for _ in range(k):
                P += s[idx]
            x = lo[idx] + G(P) if up else hi[idx] - G(P)
        else:  # table
            m = len(tab_up) - 1
            pulses = np.arange(m + 1, dtype=np.float64)
            g01 = (x - lo[idx]) / r[idx]
            if up:
                pos = np.interp(g01, tab_up, pulses)
                for _ in range(k):
                    pos += s[idx]
                x = lo[idx] + r[idx] * np.interp(pos, pulses, tab_up)
            else:
                pos = np.interp(g01, tab_down[::-1], pulses[::-1])
                for _ in range(k):
                    pos += s[idx]
                x = lo[idx] + r[idx] * np.interp(pos, pulses, tab_down)
        out[idx] = x
    return out


def pulsed_sgd_step(W, grad, vel, lr, momentum, acc, lo, hi, s, stuck, model, step_nominal, step_up,
                    step_down, a_up, a_down, p_max, tab_up, tab_down, max_pulses, accumulate):
    """Twin of the fused pulsed step (``kernels.pulses.pulse_terms`` / ``pulse_fixed``) with
    deterministic rounding and no write noise, in numpy: momentum SGD's desired change
    ``-lr (momentum vel + grad)`` of every conductance ``W`` (S), rounded to whole pulses (with
    accumulate-then-pulse: added to ``acc``, whole steps fired towards zero), at most
    ``max_pulses``, applied one pulse at a time by :func:`pulsed_move`, clipped to the device's
    ``[lo, hi]``; stuck devices get their pulses but keep their conductance. Returns
    ``(W, vel, acc, pulses)`` new
    (the per-device arrays flat, in ``W``'s row-major order)."""
    vel = momentum * vel + grad if momentum > 0 else vel.copy()
    step = vel if momentum > 0 else grad
    desired = ((W - lr * step) - W).ravel()
    acc = acc.copy()
    if accumulate:
        acc = acc + desired
        n = np.trunc(acc / step_nominal)
    else:
        n = np.floor(desired / step_nominal + 0.5)
    n = np.clip(n, -max_pulses, max_pulses)
    if accumulate:
        acc = acc - n * step_nominal
    g = pulsed_move(model, W.ravel(), n, lo, hi, s, step_up, step_down, a_up, a_down, p_max,
                    tab_up, tab_down)
    g = np.where((n != 0) & (stuck == 0), np.clip(g, lo, hi), W.ravel())
    return g.reshape(W.shape), vel, acc, n


_M64 = (1 << 64) - 1


def splitmix64(x):
    """splitmix64 on a Python int (mod 2^64), twin of ``kernels.pulses.splitmix64``."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _ziggurat(layers=128, r=3.442619855899, v=9.91256303526217e-3):
    x = [v / np.exp(-0.5 * r * r), r]
    f = np.exp(-0.5 * r * r)
    for _ in range(2, layers):
        x.append(np.sqrt(-2.0 * np.log(v / x[-1] + f)))
        f = np.exp(-0.5 * x[-1] ** 2)
    x.append(0.0)
    return np.array(x), r


def device_bits(key, i):
    """Twin of ``kernels.pulses.device_bits``: the ``i``-th output of splitmix64 started at
    ``key``, ``splitmix64(key + i gamma)``."""
    return splitmix64((int(key) + int(i) * 0x9E3779B97F4A7C15) & _M64)


def normal_zig(key, i):
    """Twin of ``kernels.pulses.normal_zig`` in plain Python: the ziggurat (Doornik's layout)
    on the counter-based draws ``h0 = device_bits(key, i)``, then ``splitmix64(h0 + k)``,
    k = 1, 2, ..."""
    X, R = _ziggurat()
    h0 = device_bits(key, i)
    k = 0

    def draw():
        nonlocal k
        h = h0 if k == 0 else splitmix64((h0 + k) & _M64)
        k += 1
        return h

    def unit(h):  # (0, 1)
        return ((h >> 11) + 0.5) * 2.0 ** -53
    while True:
        h = draw()
        layer = h & 127
        u = 2.0 * unit(h) - 1.0
        if abs(u) < X[layer + 1] / X[layer]:
            return u * X[layer]
        if layer == 0:
            while True:
                x = np.log(unit(draw())) / R
                y = np.log(unit(draw()))
                if -2.0 * y >= x * x:
                    return x - R if u < 0 else R - x
        x = u * X[layer]
        f0 = np.exp(-0.5 * (X[layer] ** 2 - x * x))
        f1 = np.exp(-0.5 * (X[layer + 1] ** 2 - x * x))
        if f1 + unit(draw()) * (f0 - f1) < 1.0:
            return x


def reduce_to_last(K, k):
    """Twin of ``wires.factor`` (the root) and ``wires.back_substitute``: the SPD matrix ``K``
    (N, N) in S reduced to its last ``k`` positions, ``S = K_ee - K_eo K_oo^-1 K_oe`` (k, k),
    and the map ``w_e -> w`` (N, B) of the voltages that leave every other node without
    injected current, ``w_o = -K_oo^-1 K_oe w_e``."""
    o = K.shape[0] - k
    X = -np.linalg.solve(K[:o, :o], K[:o, o:])
    S = K[o:, o:] + K[o:, :o] @ X
    return S, lambda we: np.vstack([X @ we, we])


def drop_square_sums(w, prow, pcol, nb):
    """Twin of ``wires.drop_square_sums``: per cell, the squared drops ``w[prow] - w[pcol]``
    (V) summed over the first ``nb`` states minus over the others (V^2)."""
    d = w[prow] - w[pcol]
    return np.sum(d[:, :nb] ** 2, axis=1) - np.sum(d[:, nb:] ** 2, axis=1)
