"""Damped Newton iteration on the free-node KCL equations, batched over samples.

The operating point minimises the circuit's co-content (a convex energy) whose gradient is the
KCL residual and whose Hessian is the Jacobian. Each Newton direction is therefore a descent
direction, and a line search on the energy makes the iteration converge from any start.

The line search looks for a step ``t`` (not limited to 1) that satisfies the strong Wolfe
conditions on ``phi(t) = E(x + t dx)``: sufficient decrease (Armijo) and
``|phi'(t)| <= C2 |phi'(0)|``. Because ``phi`` is convex, its derivative is monotone and is
bracketed and solved by a safeguarded Newton iteration (``phi''`` is known from the device
conductances). Allowing ``t > 1`` matters for exponential diodes approached from above, where
the Newton step is only about one ``N vt`` long; the curvature condition stops
overshooting from below. Energy differences are computed without subtracting large numbers
(the linear part as ``t r_lin.dx + t^2/2 dx.G.dx``, each diode from its own terms). A trial
point's diode currents and conductances are reused as the next iterate's, so a full Newton
step costs one exponential per diode.

The Jacobian depends on the state only through the diode conductances, so its Schur factor is
kept with the conductances it was formed from and reused while they stay bitwise equal: a
piecewise-linear diode keeps its conductance within a region, so most steps near a solution,
and EqProp's nudged phases (started from the free state, sharing a cache with it), reuse one
factor. Reuse is exact: the same arithmetic on the same numbers.

Termination (SPICE-style, both required): the last step satisfies
``max|dx| <= tol_v = vntol + reltol * max|x|`` (V), and at every node the KCL residual satisfies
``|r_i| <= max(abstol, J_ii tol_v) + 16 eps J_ii max|x|`` (A): ``r_i / J_ii`` estimates the
voltage error there, and the last term is the round-off floor of evaluating ``J x``. The
residual of that test is formed from every device's current and conductance computed afresh at
the final point, never from values carried between trial points.

Round-off floor of the step test: on an ill-conditioned circuit (a tightly coupled cluster tied
to the rest by a few pS or nS) the residual's round-off alone, through ``J^-1``, moves the
Newton step by far more than ``tol_v``; the iterates then bounce at that level while the
residual test passes, until the iteration limit. Where the residual test passes but the step
test does not, the step is compared node by node with ``tol_v + J^-1 dr``
(:func:`_step_noise`: ``dr`` bounds the residual's evaluation error from the magnitudes of
its terms; ``J`` is an M-matrix, so ``J^-1 >= 0`` and this bounds the step any such error can
cause). That bound is pessimistic, so the steps count as stalled at round-off only after
``STALLS`` consecutive steps within it that did not shrink by ``STALL`` as Newton's steps do
near a solution. This changes no iterate: Newton goes on, and a step that falls below
``tol_v`` still ends in CONVERGED as before. But a solve that then reaches the iteration limit
at a point that passes the fresh residual test ends in ROUNDOFF, not MAXITER: its answer, left
in place, is as accurate as double-precision nodal arithmetic allows for that circuit, which
can be far looser than ``reltol`` (ngspice's answers to the same circuits are off by as much,
and ngspice calls them converged). It is never reported as converged; the continuation aids
are tried as for any failure, and if none converges the sample keeps this answer and status.

Continuation aids (SPICE's fallbacks, only for a sample plain Newton does not solve, so that
every other sample's result is unchanged): gmin stepping (a shunt conductance from every free
node to ground, large at first, then divided by 10 per solve down to nothing, each solve
starting from the last) and, if that fails, source stepping (every source scaled from 0 to 1 in
adaptive steps). Both end with a solve of the circuit itself, judged by the same termination
test; ``aid`` reports per sample which one succeeded (:data:`AID_GMIN`, :data:`AID_SOURCE`).

Status codes per sample (:class:`~fastres.kernels.status.Status`, texts there): 0 converged,
1 iteration limit, 2 line search failed, 3 singular or non-finite Jacobian/residual, 4 converged
with a Shockley diode beyond its ``imax`` guard, 5 stopped at the round-off limit (see above).
"""
import math
from collections import namedtuple

import numpy as np
from numba import njit, prange

from .blocks import block_range
from .devices import (beyond_imax, diode_carries, diode_exp, diode_ig, diode_move,
                      diode_step_limit, param_row as _par)
from .stamping import assemble, gff_matvec, load_sample, schur_newton_direction
from .status import Status

# plain ints (Numba freezes them as constants in the kernels); equal to the Status members
CONVERGED = int(Status.CONVERGED)
MAXITER = int(Status.MAXITER)
ROUNDOFF = int(Status.ROUNDOFF)
LINESEARCH = int(Status.LINESEARCH)
SINGULAR = int(Status.SINGULAR)
BEYOND_IMAX = int(Status.BEYOND_IMAX)

#: per-sample continuation aid (``aid`` output of :func:`solve_b`): which one solved a sample
#: that plain Newton did not (0: none was needed or none succeeded)
AID_NONE = 0
AID_GMIN = 1
AID_SOURCE = 2

EPS = 2.220446049250313e-16
ARMIJO = 1e-4
C2 = 0.1
MAX_LINESEARCH = 60
NOISE = 4.0
STALL = 0.25
STALLS = 2

Workspace = namedtuple("Workspace", [
    "residual", "residual_lin", "step", "g_step", "jac_kk", "jac_e",
    "schur_u", "schur_factor", "schur_rhs", "jac_e_rsqrt",
    "diode_i", "diode_g", "diode_ev", "trial_i", "trial_g", "trial_ev", "factor_g",
    "noise_r", "noise_dx", "step_floor"])
Workspace.__doc__ = """Scratch arrays of one Newton solve (see :func:`workspace`), float64, by name.

``nF = nK + nE`` free nodes, ``nXd`` fixed nodes touched by diodes, ``nD`` diodes:

- ``residual`` (nF,) A: KCL residual ``r = G_FF x - b + i_diodes(x)`` (net current leaving each
  free node).
- ``residual_lin`` (nF,) A: its linear part ``G_FF x - b``.
- ``step`` (nF + nXd,) V: the Newton step on the extended voltage vector; the last ``nXd``
  entries (fixed nodes) stay zero.
- ``g_step`` (nF,) A: ``G_FF step``.
- ``jac_kk`` (nK, nK) S: Jacobian block of the dense node set ``K``.
- ``jac_e`` (nE,) S: diagonal of the Jacobian block of the independent set ``E``.
- ``schur_u`` (nK, nE) S^(1/2): ``GKE diag(jac_e^-1/2)``.
- ``schur_factor`` (nK, nK) S^(1/2): Cholesky factor of the Schur complement, when no factor
  cache is kept.
- ``schur_rhs`` (nK,): right-hand side of the Schur system (A), overwritten by its solution
  (V).
- ``jac_e_rsqrt`` (nE,) S^(-1/2): ``jac_e^-1/2``.
- ``diode_i`` (nD,) A, ``diode_g`` (nD,) S: diode currents and conductances at the iterate.
- ``diode_ev`` (nD,) 1: ``exp(v / vte)`` of each diode where the model caches it, else 0
  (see :func:`~fastres.kernels.devices.diode_move`).
- ``trial_i`` (nD,) A, ``trial_g`` (nD,) S, ``trial_ev`` (nD,) 1: the same at the line
  search's trial point.
- ``factor_g`` (nD,) S: the diode conductances ``schur_factor`` was formed with.
- ``noise_r`` (nF,) A: round-off bound of the residual's evaluation, node by node
  (:func:`_step_noise`).
- ``noise_dx`` (nF,) V: the step that residual noise alone produces, ``J^-1 noise_r``.
- ``step_floor`` (nD,) V: a floor under each diode's first-trial step limit
  (:func:`step_floors`; -inf, which skips nothing, until :func:`solve_range` fills it).
"""


@njit(cache=True)
def step_floors(dkind, dpar, out):
    """``out`` (nD,) V: each diode's step limit at ``v = -inf``
    (:func:`~fastres.kernels.devices.diode_step_limit`, non-decreasing in ``v``), a floor under
    its limit at any voltage (+inf for a model without a limit, -inf where unknown), so that
    :func:`_first_trial` evaluates the limit (a logarithm for a Shockley diode) only for the
    diodes a step could drive past it."""
    for k in range(dkind.shape[0]):
        f = diode_step_limit(dkind[k], dpar[k], -math.inf, 1.0)
        out[k] = f if f == f else -math.inf


@njit(cache=True)
def _first_trial(vext, dxe, da, db, dkind, dpar, floor):
    """First step length of the line search: 1, or less where a diode would be driven above
    its step limit (:func:`~fastres.kernels.devices.diode_step_limit`: for a Shockley diode
    ``vcrit + 10 N vt`` up its exponential, ngspice's critical voltage, which a linearised step
    from below always overshoots). Only a starting point: the line search still brackets and
    may extend the step. ``floor`` (nD,) V from :func:`step_floors` (or -inf): a diode whose
    new voltage stays at or below its floor cannot pass its limit and is skipped (the limit
    is non-decreasing in ``v`` and rounding is monotone, so the result is the same)."""
    t = 1.0
    for k in range(da.shape[0]):
        a = da[k]
        c = db[k]
        h = dxe[a] - dxe[c]
        if h <= 0.0:  # a limit on the voltage concerns only steps up
            continue
        v = vext[a] - vext[c]
        if v + h <= floor[k]:
            continue
        vlim = diode_step_limit(dkind[k], dpar[k], v, h)
        if v + h > vlim:
            t = min(t, (vlim - v) / h)
    return t


@njit(cache=True)
def _residual_small(r, JKK, dE, x, reltol, vntol, abstol):
    """KCL residual test, node by node: ``|r_i| <= max(abstol, J_ii tol_v) + 16 eps J_ii max|x|``.

    ``r_i / J_ii`` estimates the voltage error at node ``i``, so the test asks for the same
    accuracy in volts as the step test (``tol_v = vntol + reltol max|x|``); the last term is the
    round-off floor of evaluating ``J x`` (a stiff diode cannot do better).
    """
    nK = JKK.shape[0]
    nF = r.shape[0]
    xabs = 0.0
    for i in range(nF):
        xabs = max(xabs, abs(x[i]))
    tol_v = vntol + reltol * xabs
    for i in range(nF):
        jii = JKK[i, i] if i < nK else dE[i - nK]
        if not (abs(r[i]) <= max(abstol, jii * tol_v) + 16.0 * EPS * jii * xabs):  # NaN fails
            return False
    return True


@njit(cache=True)
def _step_noise(GKE, b, vext, da, db, di, dg, JKK, dE, S, w):
    """The step (V) that round-off in the residual alone produces, node by node, into
    ``w.noise_dx`` (nF,): ``J^-1 dr`` with ``dr_i = NOISE eps (sum_j |J_ij x_j| + |b_i| +
    sum_d (|i_d| + g_d |v_fixed|))`` (A), the evaluation error bound of ``r_i`` at the point
    ``vext`` (V) (its terms' magnitudes; the ``J x`` terms include the quantisation of every
    voltage to one ulp). The Jacobian of resistors and diodes is an M-matrix, so ``J^-1 >= 0``
    and ``J^-1 dr`` bounds ``|J^-1 e|`` for every error ``|e| <= dr``: a Newton step below it
    (plus the step tolerance) is indistinguishable from round-off. Uses the Schur factor of
    the current Jacobian, ``S`` (nK, nK), which must hold this Jacobian's factor. Returns
    False if the solve fails."""
    nK = JKK.shape[0]
    nE = dE.shape[0]
    nF = nK + nE
    dr = w.noise_r
    for i in range(nK):
        s = abs(b[i])
        for j in range(nK):
            s += abs(JKK[i, j] * vext[j])
        for e in range(nE):
            s += abs(GKE[i, e] * vext[nK + e])
        dr[i] = s
    for e in range(nE):
        dr[nK + e] = abs(b[nK + e]) + abs(dE[e] * vext[nK + e])
    for i in range(nK):
        xi = abs(vext[i])
        for e in range(nE):
            dr[nK + e] += abs(GKE[i, e]) * xi
    for k in range(da.shape[0]):
        a = da[k]
        c = db[k]
        ai = abs(di[k])
        if a < nF:
            dr[a] += ai + (dg[k] * abs(vext[c]) if c >= nF else 0.0)
        if c < nF:
            dr[c] += ai + (dg[k] * abs(vext[a]) if a >= nF else 0.0)
    for i in range(nF):
        dr[i] = -NOISE * EPS * dr[i]  # the direction solves J dx = -r
    nd = w.noise_dx
    if not schur_newton_direction(JKK, GKE, dE, dr, nd, w.schur_u, S, w.schur_rhs,
                                  w.jac_e_rsqrt, False):
        return False
    for i in range(nF):
        nd[i] = abs(nd[i])  # J^-1 >= 0: only round-off of the solve makes an entry negative
    return True


@njit(cache=True)
def _trial(t, g1, g2, vext, dxe, da, db, dkind, dpar, ev, di_t, dg_t, ev_t):
    """Energy change (W), phi'(t) (W), phi''(t) (W) and the energy's round-off scale (W) at
    ``x + t dx``; fills the trial caches.

    Node voltages are quantised (one ulp of ``v``), so a diode carrying ``i`` cannot resolve an
    energy change below about ``|i| ulp(v)``; the returned scale ``sum |i| (|v_a| + |v_b|)``,
    times a few eps, is the floor under which an energy comparison means nothing.
    """
    dEn = t * g1 + 0.5 * t * t * g2
    d1 = g1 + t * g2
    d2 = g2
    scale = 0.0
    for k in range(da.shape[0]):
        a = da[k]
        c = db[k]
        h = dxe[a] - dxe[c]
        # the new voltage exactly as the update x += t*dx will produce it
        wa = vext[a] + t * dxe[a]
        wc = vext[c] + t * dxe[c]
        w = wa - wc
        dphi, i, g, evn = diode_move(dkind[k], _par(dpar, k), vext[a] - vext[c], ev[k], w)
        scale += abs(i) * (abs(wa) + abs(wc))
        di_t[k] = i
        dg_t[k] = g
        ev_t[k] = evn
        dEn += dphi
        d1 += i * h
        d2 += g * h * h
    return dEn, d1, d2, scale


@njit(cache=True)
def _move_only(vext, dxe, da, db, dkind, dpar, ev, di_t, dg_t, ev_t):
    """The trial caches of :func:`_trial` at ``t = 1`` (``x + dx``), without the energy and
    slopes: for the full step taken unchecked at round-off level (``tiny`` in
    :func:`newton_sample`), whose energy nothing reads. The same arithmetic as ``_trial(1.0,
    ...)`` for the values it fills (``t * dxe[a]`` is ``dxe[a]`` exactly)."""
    for k in range(da.shape[0]):
        a = da[k]
        c = db[k]
        wa = vext[a] + 1.0 * dxe[a]
        wc = vext[c] + 1.0 * dxe[c]
        _, i, g, evn = diode_move(dkind[k], _par(dpar, k), vext[a] - vext[c], ev[k], wa - wc)
        di_t[k] = i
        dg_t[k] = g
        ev_t[k] = evn


@njit(cache=True)
def _fresh(GKK, GKE, gEE, b, vext, da, db, dkind, dpar, w, always, assemble_always):
    """Diode currents, conductances and exponentials (``w.diode_i``, ``diode_g``, ``diode_ev``)
    computed afresh at ``vext`` (V), and the residual and Jacobian assembled from them -- if
    ``always`` or ``assemble_always``, or if a current or conductance differs from the one held
    (else the residual and Jacobian held are already those, bit for bit). Without ``always``, only diodes whose move
    carries a value (:func:`~fastres.kernels.devices.diode_carries`) are evaluated: the others'
    moves evaluated the model at exactly this voltage (``_trial`` forms it with the arithmetic
    of the update), so their held values are the fresh ones."""
    di = w.diode_i
    dg = w.diode_g
    ev = w.diode_ev
    changed = always
    for k in range(da.shape[0]):
        if not always and not diode_carries(dkind[k]):
            continue
        vd = vext[da[k]] - vext[db[k]]
        p = _par(dpar, k)
        i, g = diode_ig(dkind[k], p, vd)
        evk = diode_exp(dkind[k], p, vd)  # before the stores: the same exponential as in i, g
        if i != di[k] or g != dg[k]:
            changed = True
        di[k] = i
        dg[k] = g
        ev[k] = evk
    if changed or assemble_always:
        nF = GKK.shape[0] + gEE.shape[0]
        assemble(GKK, GKE, gEE, b, vext[:nF], da, db, di, dg, w.residual_lin, w.residual,
                 w.jac_kk, w.jac_e)


@njit(cache=True)
def newton_sample(GKK, GKE, gEE, b, vext, da, db, dkind, dpar,
                  reltol, vntol, abstol, maxiter, w, S, dgs, valid):
    """Solve one sample in place in ``vext[:nF]`` (V). Returns (iterations, max|r| (A), status,
    valid).

    ``vext`` is the extended voltage vector ``[free nodes | fixed nodes used by diodes]`` (V);
    ``w`` is the :class:`Workspace` of :func:`workspace`. ``S`` (nK, nK) holds the Cholesky
    factor of the Schur complement and ``dgs`` (nD,) the diode conductances (S) it was formed
    with; if ``valid``, they describe this same circuit (the same conductance arrays). The
    Jacobian is a function of the diode conductances alone, so while they stay bitwise equal --
    a piecewise-linear diode that keeps its region -- the factor is reused, bit-identically.
    """
    r = w.residual
    rlin = w.residual_lin
    dxe = w.step
    Gdx = w.g_step
    JKK = w.jac_kk
    dE = w.jac_e
    U = w.schur_u
    y = w.schur_rhs
    q = w.jac_e_rsqrt
    di = w.diode_i
    dg = w.diode_g
    ev = w.diode_ev
    di_t = w.trial_i
    dg_t = w.trial_g
    ev_t = w.trial_ev
    nK = GKK.shape[0]
    nE = gEE.shape[0]
    nF = nK + nE
    nD = da.shape[0]
    x = vext[:nF]
    dx = dxe[:nF]  # dxe[nF:] stays zero: fixed nodes do not move
    _fresh(GKK, GKE, gEE, b, vext, da, db, dkind, dpar, w, True, False)
    it = 0
    noise_prev = 0.0  # the last step (V) found within round-off noise (0: the last one was not)
    stalls = 0  # consecutive such steps that did not shrink by STALL
    limited = False  # steps have stalled at the round-off floor (see the module docstring)
    step_small = nF == 0  # nothing free (every node held): converged as it stands
    while True:
        if step_small:
            # the convergence test never trusts carried values: every device's current and
            # conductance, and the residual, afresh at this point (assembled here: the step
            # that ended small did not)
            _fresh(GKK, GKE, gEE, b, vext, da, db, dkind, dpar, w, False, True)
        rmax = 0.0
        for i in range(nF):
            a = abs(r[i])
            if a > rmax or a != a:  # a NaN sticks (max() would drop it)
                rmax = a
        if not math.isfinite(rmax):
            return it, rmax, SINGULAR, False
        if step_small and _residual_small(r, JKK, dE, x, reltol, vntol, abstol):
            for k in range(nD):
                if beyond_imax(dkind[k], dpar[k], vext[da[k]] - vext[db[k]]):
                    return it, rmax, BEYOND_IMAX, valid
            return it, rmax, CONVERGED, valid
        if it >= maxiter:
            if limited:
                # the steps stalled at the round-off floor: judge the last point afresh; if the
                # residual test passes, it is the round-off-limited answer, left in place
                _fresh(GKK, GKE, gEE, b, vext, da, db, dkind, dpar, w, False, False)
                rmax = 0.0
                for i in range(nF):
                    a = abs(r[i])
                    if a > rmax or a != a:
                        rmax = a
                if _residual_small(r, JKK, dE, x, reltol, vntol, abstol):
                    return it, rmax, ROUNDOFF, valid
            return it, rmax, MAXITER, valid
        refactor = not valid
        if valid:
            for k in range(nD):
                if dg[k] != dgs[k]:
                    refactor = True
                    break
        if not schur_newton_direction(JKK, GKE, dE, r, dx, U, S, y, q, refactor):
            return it, rmax, SINGULAR, False
        if refactor:
            for k in range(nD):
                dgs[k] = dg[k]
            valid = True
        xmax = 0.0
        dxmax = 0.0
        for i in range(nF):
            xmax = max(xmax, abs(x[i]))
            a = abs(dx[i])
            if a > dxmax or a != a:  # a NaN sticks (max() would drop it)
                dxmax = a
        if not math.isfinite(dxmax):
            return it, rmax, SINGULAR, False
        tol_step = vntol + reltol * xmax
        tiny = dxmax <= tol_step  # round-off level: take the full step unchecked
        # the line search's energy terms (W), not needed for a step taken unchecked
        g1 = 0.0
        g2 = 0.0
        slope = 0.0
        lin_scale = 0.0
        if not tiny:
            gff_matvec(GKK, GKE, gEE, dx, Gdx)
            for i in range(nF):
                lin_scale += abs(rlin[i] + b[i]) * abs(x[i]) + abs(b[i]) * abs(x[i])
                g1 += rlin[i] * dx[i]
                g2 += dx[i] * Gdx[i]
                slope += r[i] * dx[i]
        stalled = False
        if not tiny and _residual_small(r, JKK, dE, x, reltol, vntol, abstol) \
                and _step_noise(GKE, b, vext, da, db, di, dg, JKK, dE, S, w):
            # the residual passes but the step does not: is the step within what round-off
            # in the residual alone produces (ill-conditioned circuits, whose iterates bounce
            # at that level for ever)?
            nd = w.noise_dx
            within = True
            for i in range(nF):
                if not (abs(dx[i]) <= tol_step + nd[i]):
                    within = False
                    break
            if within:
                # STALLS times in a row without the step shrinking as Newton's does near a
                # solution: the iteration has stalled at round-off; this point is as close
                # as the arithmetic resolves, and the test at the loop's top judges it afresh
                stalls = stalls + 1 if noise_prev > 0.0 and dxmax >= STALL * noise_prev else 0
                stalled = stalls >= STALLS
                noise_prev = dxmax
            else:
                noise_prev = 0.0
                stalls = 0
        else:
            noise_prev = 0.0
            stalls = 0
        if stalled:
            limited = True  # from now on, an iteration limit is reported as ROUNDOFF
        t = 1.0 if tiny else _first_trial(vext, dxe, da, db, dkind, dpar, w.step_floor)
        lo = 0.0
        hi = math.inf
        accepted = False
        if tiny:
            _move_only(vext, dxe, da, db, dkind, dpar, ev, di_t, dg_t, ev_t)
        for _ in range(0 if tiny else MAX_LINESEARCH):
            dEn, d1, d2, dscale = _trial(t, g1, g2, vext, dxe, da, db, dkind, dpar, ev, di_t, dg_t, ev_t)
            # sufficient decrease, up to the round-off floor of the energy (linear + diode parts)
            decrease = dEn <= ARMIJO * t * slope + 8.0 * EPS * (lin_scale + dscale)
            if not (math.isfinite(dEn) and math.isfinite(d1)) or not decrease or d1 > 0.0:
                if math.isfinite(dEn) and math.isfinite(d1) and decrease \
                        and abs(d1) <= C2 * abs(slope):
                    accepted = True
                    break
                hi = t
            else:
                if abs(d1) <= C2 * abs(slope):
                    accepted = True
                    break
                lo = t
            # next trial: Newton on phi'(t) = 0, safeguarded inside (lo, hi)
            tn = t - d1 / d2 if (math.isfinite(d1) and math.isfinite(d2) and d2 > 0.0) else -1.0
            if hi == math.inf:
                t = tn if tn > 2.0 * lo else 2.0 * lo
            elif tn > lo + 0.01 * (hi - lo) and tn < hi - 0.25 * (hi - lo):
                t = tn
            else:  # Newton would crawl (an exponential seen from above) or leave the bracket
                t = 0.5 * (lo + hi)
            if hi < math.inf and hi - lo <= 1e-14 * hi:
                break
        if not accepted and not tiny:
            if lo > 0.0:  # phi'(lo) < 0 with sufficient decrease: accept the bracket's left end
                t = lo
                _trial(t, g1, g2, vext, dxe, da, db, dkind, dpar, ev, di_t, dg_t, ev_t)
            else:
                return it, rmax, LINESEARCH, valid
        for i in range(nF):
            x[i] += t * dx[i]
        for k in range(nD):
            di[k] = di_t[k]
            dg[k] = dg_t[k]
            ev[k] = ev_t[k]
        step_small = t * dxmax <= tol_step
        if not step_small:  # else the convergence test's fresh evaluation assembles them
            assemble(GKK, GKE, gEE, b, x, da, db, di, dg, rlin, r, JKK, dE)
        it += 1


@njit(cache=True)
def workspace(nK, nE, nD, nXd):
    """The :class:`Workspace` of :func:`newton_sample`, allocated once per thread chunk."""
    nF = nK + nE
    return Workspace(residual=np.empty(nF), residual_lin=np.empty(nF), step=np.zeros(nF + nXd),
                     g_step=np.empty(nF), jac_kk=np.empty((nK, nK)), jac_e=np.empty(nE),
                     schur_u=np.empty((nK, nE)), schur_factor=np.empty((nK, nK)),
                     schur_rhs=np.empty(nK), jac_e_rsqrt=np.empty(nE),
                     diode_i=np.empty(nD), diode_g=np.empty(nD), diode_ev=np.empty(nD),
                     trial_i=np.empty(nD), trial_g=np.empty(nD), trial_ev=np.empty(nD),
                     factor_g=np.empty(nD), noise_r=np.empty(nF), noise_dx=np.empty(nF),
                     step_floor=np.full(nD, -np.inf))


@njit(cache=True)
def _gmin_stepping(GKK, GKE, gEE, b, vext, da, db, dkind, dpar, reltol, vntol, abstol, maxiter,
                   w, S, dgs):
    """Gmin stepping from the start in ``vext`` (V): solve with a shunt conductance ``gs`` (S)
    from every free node to ground, starting at the circuit's largest node conductance and
    divided by 10 after each solve (by less after a failure), each solve starting from the
    last; below ``1e-15`` times the start, the circuit itself is solved from there. Returns
    ``(iterations (all solves), max|r| (A), status, valid)`` of that final solve (``status`` is
    MAXITER if a shunted solve could not be completed)."""
    nK = GKK.shape[0]
    nE = gEE.shape[0]
    nF = nK + nE
    nD = da.shape[0]
    Gk = GKK.copy()
    ge = gEE.copy()
    g0 = 0.0
    for i in range(nK):
        g0 = max(g0, GKK[i, i])
    for e in range(nE):
        g0 = max(g0, gEE[e])
    if not (g0 > 0.0 and math.isfinite(g0)):
        g0 = 1.0
    x = vext[:nF]
    keep = x.copy()
    total = 0
    gs = g0
    last = 0.0  # the last shunt solved (0: none yet)
    factor = 10.0
    for _ in range(200):
        for i in range(nK):
            Gk[i, i] = GKK[i, i] + gs
        for e in range(nE):
            ge[e] = gEE[e] + gs
        it, rm, st, ok = newton_sample(Gk, GKE, ge, b, vext, da, db, dkind, dpar, reltol, vntol,
                                       abstol, maxiter, w, w.schur_factor, w.factor_g, False)
        total += it
        if st == CONVERGED or st == BEYOND_IMAX:
            for i in range(nF):
                keep[i] = x[i]
            last = gs
            if gs < 1e-15 * g0:
                break
            gs = gs / factor
            factor = min(10.0, factor * factor)
        else:
            for i in range(nF):
                x[i] = keep[i]
            if last == 0.0:
                gs = gs * 10.0  # not even the first shunt: a larger one
                if gs > 1e6 * g0:
                    return total, rm, st, False
            else:
                factor = math.sqrt(factor)
                if factor < 1.001:
                    return total, rm, st, False
                gs = last / factor
    it, rm, st, ok = newton_sample(GKK, GKE, gEE, b, vext, da, db, dkind, dpar, reltol, vntol,
                                   abstol, maxiter, w, S, dgs, False)
    return total + it, rm, st, ok


@njit(cache=True)
def _source_stepping(GKK, GKE, gEE, b, vext, vdfix_row, da, db, dkind, dpar, reltol, vntol,
                     abstol, maxiter, w, S, dgs):
    """Source stepping: every source (``b`` (nF,) A, and the fixed voltages ``vdfix_row``
    (nXd,) V that diodes touch) scaled by ``alpha`` from 0 (where 0 V everywhere is the
    answer) up to 1; ``alpha`` grows by a step that doubles after a solve and shrinks by 4 after
    a failure (each solve starts from the last). Returns ``(iterations, max|r| (A), status,
    valid)`` of the solve at ``alpha = 1``, which is the circuit itself."""
    nK = GKK.shape[0]
    nE = gEE.shape[0]
    nF = nK + nE
    nXd = vdfix_row.shape[0]
    bs = np.empty(nF)
    x = vext[:nF]
    for i in range(nF):
        x[i] = 0.0
    keep = x.copy()
    total = 0
    alpha = 0.0
    da_ = 0.125
    rm = 0.0
    st = MAXITER
    for _ in range(400):
        a = min(1.0, alpha + da_)
        for i in range(nF):
            bs[i] = a * b[i]
        for j in range(nXd):
            vext[nF + j] = a * vdfix_row[j]
        if a == 1.0:
            for j in range(nXd):
                vext[nF + j] = vdfix_row[j]
            it, rm, st, ok = newton_sample(GKK, GKE, gEE, b, vext, da, db, dkind, dpar, reltol,
                                           vntol, abstol, maxiter, w, S, dgs, False)
        else:
            it, rm, st, ok = newton_sample(GKK, GKE, gEE, bs, vext, da, db, dkind, dpar, reltol,
                                           vntol, abstol, maxiter, w, w.schur_factor, w.factor_g,
                                           False)
        total += it
        if st == CONVERGED or (st == BEYOND_IMAX and a < 1.0):
            if a == 1.0:
                return total, rm, st, ok
            for i in range(nF):
                keep[i] = x[i]
            alpha = a
            da_ = 2.0 * da_
        else:
            if a == 1.0 and st == BEYOND_IMAX:
                return total, rm, st, ok
            for i in range(nF):
                x[i] = keep[i]
            da_ = 0.25 * da_
            if da_ < 1e-9:
                break
    for j in range(nXd):
        vext[nF + j] = vdfix_row[j]
    return total, rm, st if st != CONVERGED else MAXITER, False


@njit(cache=True)
def solve_range(GKK, GKE, gEE, b, vdfix, da, db, dkind, dpar, x,
                reltol, vntol, abstol, maxiter, fS, fdg, fvalid, aids, lo, hi,
                iterations, residual, status, aid):
    """Solve samples ``lo..hi-1`` in place in ``x`` (serially; see :func:`solve_b`)."""
    nK = GKK.shape[0]
    nE = gEE.shape[0]
    nF = nK + nE
    nXd = vdfix.shape[1]
    w = workspace(nK, nE, da.shape[0], nXd)
    step_floors(dkind, dpar, w.step_floor)
    vext = np.empty(nF + nXd)
    kept = fS.shape[0] > 0
    for s in range(lo, hi):
        load_sample(x, vdfix, s, vext)
        S, dgs, valid = (fS[s], fdg[s], fvalid[s]) if kept else (w.schur_factor, w.factor_g, False)
        it, rm, st, ok = newton_sample(GKK, GKE, gEE, b[s], vext, da, db, dkind, dpar, reltol, vntol,
                                       abstol, maxiter, w, S, dgs, valid)
        used = AID_NONE
        # a sample whose reused cached factor gives a singular or non-finite direction has an
        # inconsistent cache: reported as it is, never masked by an aid
        if aids and st != CONVERGED and st != BEYOND_IMAX and not (st == SINGULAR and valid):
            # plain Newton failed: continuation aids, from the same start; a sample they do not
            # solve keeps plain Newton's result
            plain = vext.copy()
            row = s if vdfix.shape[0] > 1 else 0
            for method in (AID_GMIN, AID_SOURCE):
                load_sample(x, vdfix, s, vext)
                if method == AID_GMIN:
                    it2, rm2, st2, ok2 = _gmin_stepping(GKK, GKE, gEE, b[s], vext, da, db, dkind,
                                                        dpar, reltol, vntol, abstol, maxiter, w,
                                                        S, dgs)
                else:
                    it2, rm2, st2, ok2 = _source_stepping(GKK, GKE, gEE, b[s], vext, vdfix[row],
                                                          da, db, dkind, dpar, reltol, vntol,
                                                          abstol, maxiter, w, S, dgs)
                if st2 == CONVERGED:
                    it, rm, st, ok = it + it2, rm2, st2, ok2
                    used = method
                    break
            if used == AID_NONE:
                for i in range(nF + nXd):
                    vext[i] = plain[i]
                ok = False
        if kept:
            fvalid[s] = ok
        for i in range(nF):
            x[s, i] = vext[i]
        iterations[s] = it
        residual[s] = rm
        status[s] = st
        aid[s] = used


@njit(cache=True, parallel=True)
def solve_b(GKK, GKE, gEE, b, vdfix, da, db, dkind, dpar, x,
            reltol, vntol, abstol, maxiter, fS, fdg, fvalid, aids, nchunks,
            iterations, residual, status, aid):
    """Solve every sample of a batch in place in ``x`` (B, nF) (V); chunks of samples in parallel.

    ``b`` (B, nF) source currents (A, see :func:`~fastres.kernels.stamping.source_currents`);
    ``vdfix`` (B, nXd) or (1, nXd) the fixed voltages (V) that diodes touch: diode index
    ``nF + j`` is ``vdfix[:, j]``. Outputs ``iterations`` (B,) int64, ``residual`` (B,) float64 (A),
    ``status`` (B,) int64 (see the module docstring), ``aid`` (B,) int64. A factor cache kept
    between solves of the same circuit (e.g. EqProp's free and nudged phases): ``fS`` (B, nK, nK)
    Schur factors, ``fdg`` (B, nD) the diode conductances (S) they were formed with, ``fvalid``
    (B,) bool, all updated in place; ``fS`` of shape (0, nK, nK) keeps none (factors are still
    reused within a sample's solve). Small batches should call :func:`solve_range` directly.

    Continuation aids (``aids`` True): a sample that plain Newton does not solve (iteration
    limit, line search or singular; not one beyond ``imax``, nor a singular one that started
    from a valid cached factor: that cache is inconsistent) is solved again from its start by
    gmin stepping (:func:`_gmin_stepping`) and, if that fails, by source stepping
    (:func:`_source_stepping`). ``aid[s]`` says which one solved it (``AID_GMIN`` = 1,
    ``AID_SOURCE`` = 2; 0 = plain Newton, or no aid succeeded and the sample keeps plain
    Newton's status and point); ``iterations`` then counts every Newton step taken. A sample
    that plain Newton solves is never touched by them.
    """
    B = x.shape[0]
    for c in prange(nchunks):
        lo, hi = block_range(B, nchunks, c)
        if lo < hi:
            solve_range(GKK, GKE, gEE, b, vdfix, da, db, dkind, dpar, x, reltol, vntol, abstol,
                        maxiter, fS, fdg, fvalid, aids, lo, hi, iterations, residual, status, aid)
