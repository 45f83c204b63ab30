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
:func:`element_kcl`, :func:`element_cocontent`
                              KCL and co-content of a :class:`~fastres.circuit.Circuit`,
                              element by element (the physics checks of the solvers)
============================  =======================================================
"""
from __future__ import annotations

import math

import numpy as np

from fastres.circuit import CurrentSource, Diode, Resistor, VoltageSource
from fastres.devices import PiecewiseLinear, Shockley

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


# =============================================================================================
# Linear solves with the Jacobian
# =============================================================================================
def newton_direction(J, r):
    """Newton direction ``dx = -J^-1 r`` (V): ``J`` (..., nF, nF) S, ``r`` (..., nF) A."""
    return -np.linalg.solve(J, r[..., None])[..., 0]


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
