"""The linear start of a circuit's Newton solve: the resistor network alone, batched.

Free nodes are ordered ``[K | E]`` (see :mod:`~fastres.kernels.stamping`): the resistor
Jacobian is ``G_FF = [[GKK, GKE], [GKE^T, diag(gEE)]]`` (S) and ``E`` is eliminated exactly.
Per sample, ``G_FF x = b`` is solved as

    xE0 = b_E / gEE,   S xK = b_K - GKE xE0,   xE = xE0 - (GKE^T xK) / gEE

with ``S = GKK - GKE diag(1/gEE) GKE^T`` factored once for the whole batch (``L L^T``, see
:attr:`fastres.compiled.CompiledCircuit.linear_factor`): about ``2 nK nE + nK^2`` multiply-adds
and one pass over the sample's source currents, so it costs a fraction of one Newton step.

The clipped start (:func:`clipped_start`) then puts the diodes back, for circuits whose every
diode joins a node of ``E`` to a held node (a layered network's clipping diodes, with ``E`` a
hidden layer): Newton steps on the whole circuit from the linear start, without a line search,
each step's linear system ``J d = -r`` solved by block Gauss-Seidel: the ``E`` block of the
Jacobian is diagonal (``gEE`` plus the diode conductances; the ``E`` nodes do not touch each
other), the ``K`` block is ``GKK`` itself (no diode touches ``K``), whose one Cholesky factor
the batch shares, so each sweep is two passes over ``GKE`` and a small triangular solve; with
the weak ``K``-``E`` coupling of a layered network a few sweeps give the step to a relative
1e-4. A step costs one evaluation of every diode and about as many multiply-adds as one
Newton iteration's products with ``G_KE``, without the Schur complement, its factor, the
line search's trials or the termination test. On the 784-100-10 deck of
``benchmarks/netlist_speed.py`` three steps bring the start from about 5e-3 V (linear) to
within 1e-13 V, and Newton then takes one step, which its own unchanged termination test
accepts (two from the previous start, 4.5 from the linear one). Newton's test decides the
answer: the start is only a start.
"""
import math

import numpy as np
from numba import njit, prange

from .blocks import block_range
from .devices import diode_ig, param_row as _par
from .flags import FASTMATH
from .linalg import cholesky_solve_inplace

#: the clipped start stops (keeping the point before) at a step more than ``GROWTH`` times as
#: long as the one before: Newton without a line search diverging. Slower shrinking is allowed:
#: coming down an exponential from above, Newton's steps are each about ``N vt`` long.
GROWTH = 2.0



@njit(cache=True, inline="always")
def _solve_k(L, GKE, b, x, s, rK):
    """``rK`` (nK,) V: the ``K`` block of sample ``s`` with ``E`` held at ``x[s, nK:]``,
    ``(L L^T) rK = b[s, :nK] - GKE x[s, nK:]`` (``L`` a lower Cholesky factor, S^1/2)."""
    nK = GKE.shape[0]
    nE = GKE.shape[1]
    for k in range(nK):
        t = b[s, k]
        for e in range(nE):
            t -= GKE[k, e] * x[s, nK + e]
        rK[k] = t
    cholesky_solve_inplace(L, rK, nK)


@njit(cache=True, fastmath=FASTMATH)
def linear_start_range(L, GKE, inv_gEE, b, lo, hi, x, rK, acc):
    """Rows ``lo..hi-1`` of ``x`` (B, nF) V: per sample the solution of ``G_FF x = b`` (module
    docstring), ``b`` (B, nF) source currents (A), ``L`` (nK, nK) the lower Cholesky factor of
    the Schur complement (S^1/2), ``inv_gEE`` (nE,) ohm. A sample whose result is not finite
    gets 0 V; returns how many did. Scratch: ``rK`` (nK,), ``acc`` (nE,).

    Serial: about 0.5 us per sample of the 784-100-10 deck (nK = 10, nE = 100) on the 2-core
    machine, less than launching the parallel threads cost there when it was busy."""
    nK = GKE.shape[0]
    nE = GKE.shape[1]
    bad = 0
    for s in range(lo, hi):
        for e in range(nE):
            x[s, nK + e] = b[s, nK + e] * inv_gEE[e]
        _solve_k(L, GKE, b, x, s, rK)
        for e in range(nE):
            acc[e] = 0.0
        for k in range(nK):
            xk = rK[k]
            x[s, k] = xk
            for e in range(nE):
                acc[e] += GKE[k, e] * xk
        ok = True
        for e in range(nE):
            v = x[s, nK + e] - acc[e] * inv_gEE[e]
            x[s, nK + e] = v
            if not math.isfinite(v):
                ok = False
        for k in range(nK):
            if not math.isfinite(x[s, k]):
                ok = False
        if not ok:
            bad += 1
            for i in range(nK + nE):
                x[s, i] = 0.0
    return bad


@njit(cache=True, inline="always")
def _node_kcl(v, ge, rhs, e, ptr, idx, side, vfix, dkind, dpar):
    """KCL residual (A) of ``E`` node ``e`` at voltage ``v`` (V) with its neighbours held, and
    its derivative (S): ``ge v - rhs + sum of diode currents leaving the node``. Diode ``k =
    idx[j]`` for ``j`` in ``ptr[e]..ptr[e+1]-1`` has the node as anode (``side[j] = 1``, the
    other end at ``vfix[j]`` V) or cathode (``side[j] = -1``)."""
    f = ge * v - rhs
    fp = ge
    for j in range(ptr[e], ptr[e + 1]):
        k = idx[j]
        if side[j] > 0:
            i, g = diode_ig(dkind[k], _par(dpar, k), v - vfix[j])
            f += i
        else:
            i, g = diode_ig(dkind[k], _par(dpar, k), vfix[j] - v)
            f -= i
        fp += g
    return f, fp


@njit(cache=True, fastmath=FASTMATH)
def clipped_start_range(L, LK, GKE, gEE, inv_gEE, b, vdfix, dkind, dpar, ptr, idx, side,
                        col, steps, tol, inner_tol, inner_max, lo, hi, x):
    """Rows ``lo..hi-1`` of ``x`` (B, nF) V: per sample the linear start
    (:func:`linear_start_range`), then Newton steps on the whole circuit, each solved by block
    Gauss-Seidel (module docstring), until a step moves no node by more than ``tol`` V or after
    ``steps`` of them. A step's linear system ``J d = -r`` (``J`` the Jacobian: ``GKK`` and
    ``GKE`` as they are, the ``E`` diagonal ``gEE`` plus the diode conductances; ``r_K = 0``,
    as the linear start and every step end with ``K`` solved exactly) is solved by
    alternating ``dE = -(rE + GKE^T dK) / J_EE`` (diagonal) and ``GKK dK = -GKE dE``
    (``LK`` (nK, nK) the lower Cholesky factor of ``GKK``, S^1/2) from ``dK = 0``, until an
    update of ``dK`` is below ``inner_tol`` times the largest entry of ``d`` (at most
    ``inner_max`` times). ``L`` (nK, nK), ``inv_gEE`` (nE,): the linear start's factor. The
    diodes of ``E`` node ``e`` are ``idx[j]``, ``j`` in ``ptr[e]..ptr[e+1]-1`` (``ptr``
    (nE + 1,), ``idx``, ``side``, ``col`` (nDE,) int64): ``side[j]`` 1 if the node is the
    anode, -1 the cathode, and the other end the held voltage ``vdfix[s, col[j]]`` (V; row 0
    when ``vdfix`` has one row). No line search: a step that is not finite or more than
    :data:`GROWTH` times as long as the one before stops the steps at the point before it. A
    sample whose linear start is not finite starts at 0 V. Returns how many samples did not
    take a step."""
    nK = GKE.shape[0]
    nE = GKE.shape[1]
    rK = np.empty(nK)
    acc = np.empty(nE)
    rE = np.empty(nE)
    jE = np.empty(nE)
    dK = np.empty(nK)
    dKn = np.empty(nK)
    dE = np.empty(nE)
    vf = np.empty(idx.shape[0])
    bad = 0
    for s in range(lo, hi):
        if linear_start_range(L, GKE, inv_gEE, b, s, s + 1, x, rK, acc) > 0:
            bad += 1
            continue
        row = s if vdfix.shape[0] > 1 else 0
        for j in range(idx.shape[0]):
            vf[j] = vdfix[row, col[j]]
        prev = math.inf
        took = False
        for step in range(steps):
            # residual: rE = gEE xE - bE + GKE^T xK + diodes (acc: GKE^T xK, the linear
            # start's own at first); rK = GKK xK + GKE xE - bK is 0: the linear start and
            # every step end with K solved exactly for the E held (K has no diode)
            if step > 0:
                for e in range(nE):
                    acc[e] = 0.0
                for k in range(nK):
                    xk = x[s, k]
                    for e in range(nE):
                        acc[e] += GKE[k, e] * xk
            for e in range(nE):
                f, fp = _node_kcl(x[s, nK + e], gEE[e], b[s, nK + e] - acc[e], e, ptr, idx,
                                  side, vf, dkind, dpar)
                rE[e] = f
                jE[e] = 1.0 / fp
            # J d = -r by block Gauss-Seidel from dK = 0
            for k in range(nK):
                dK[k] = 0.0
            for it in range(inner_max):
                for e in range(nE):
                    acc[e] = rE[e]
                if it > 0:
                    for k in range(nK):
                        dk = dK[k]
                        for e in range(nE):
                            acc[e] += GKE[k, e] * dk
                dmax = 0.0
                for e in range(nE):
                    d = -acc[e] * jE[e]
                    dE[e] = d
                    if not (abs(d) <= dmax):  # a NaN sticks (max() would drop it)
                        dmax = abs(d)
                for k in range(nK):
                    t = 0.0
                    for e in range(nE):
                        t -= GKE[k, e] * dE[e]
                    dKn[k] = t
                cholesky_solve_inplace(LK, dKn, nK)
                change = 0.0
                for k in range(nK):
                    change = max(change, abs(dKn[k] - dK[k]))
                    dK[k] = dKn[k]
                    if not (abs(dKn[k]) <= dmax):
                        dmax = abs(dKn[k])
                if not (change > inner_tol * dmax):  # NaN stops too (and fails below)
                    break
            if dmax != dmax:
                break
            if not (dmax < GROWTH * prev):  # not finite, or growing: keep the point before
                break
            for k in range(nK):
                x[s, k] += dK[k]
            for e in range(nE):
                x[s, nK + e] += dE[e]
            took = True
            prev = dmax
            if dmax <= tol:
                break
        if not took:
            bad += 1
    return bad


@njit(cache=True, parallel=True)
def clipped_start(L, LK, GKE, gEE, inv_gEE, b, vdfix, dkind, dpar, ptr, idx, side, col,
                  steps, tol, inner_tol, inner_max, nchunks, x):
    """:func:`clipped_start_range` of every sample into ``x`` (B, nF) V, chunks of samples in
    parallel (:func:`~fastres.kernels.blocks.block_range`). Returns how many samples took no
    step."""
    B = x.shape[0]
    bad = 0
    for c in prange(nchunks):
        lo, hi = block_range(B, nchunks, c)
        if lo < hi:
            bad += clipped_start_range(L, LK, GKE, gEE, inv_gEE, b, vdfix, dkind, dpar, ptr,
                                       idx, side, col, steps, tol, inner_tol, inner_max, lo, hi,
                                       x)
    return bad
