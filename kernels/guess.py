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
hidden layer): block Gauss-Seidel sweeps, each updating every ``E`` node with ``K`` held (one
scalar equation per node; the ``E`` nodes do not touch each other), then ``K`` exactly with
``E`` held (``GKK xK = b_K - GKE xE``, one Cholesky factor of ``GKK`` shared by the batch).
The first sweep solves each node's KCL with its diodes exactly (safeguarded scalar Newton,
about four diode evaluations per node), the next ones take one Newton step per node with the
first sweep's derivative (no diode evaluated: a linear model, whose fixed point is off by its
linearisation error), and a last one a Newton step per node at its own point. On the
784-100-10 deck of ``benchmarks/netlist_speed.py`` the start is then within about 1e-6 V of
the solution and Newton takes 2 steps instead of 4.5 from the linear start; that is the whole
aim: Newton's own termination test still decides the answer.
"""
import math

import numpy as np
from numba import njit, prange

from .blocks import block_range
from .devices import diode_ig
from .flags import FASTMATH
from .linalg import cholesky_solve_inplace

#: safeguarded Newton steps at most per node and sweep (scalar KCL of one ``E`` node)
MAX_NODE_STEPS = 60



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
def linear_start_range(L, GKE, inv_gEE, b, lo, hi, x):
    """Rows ``lo..hi-1`` of ``x`` (B, nF) V: per sample the solution of ``G_FF x = b`` (module
    docstring), ``b`` (B, nF) source currents (A), ``L`` (nK, nK) the lower Cholesky factor of
    the Schur complement (S^1/2), ``inv_gEE`` (nE,) ohm. A sample whose result is not finite
    gets 0 V; returns how many did.

    Serial: about 0.5 us per sample of the 784-100-10 deck (nK = 10, nE = 100) on the 2-core
    machine, less than launching the parallel threads cost there when it was busy."""
    nK = GKE.shape[0]
    nE = GKE.shape[1]
    rK = np.empty(nK)
    acc = np.empty(nE)
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
            i, g = diode_ig(dkind[k], dpar[k], v - vfix[j])
            f += i
        else:
            i, g = diode_ig(dkind[k], dpar[k], vfix[j] - v)
            f -= i
        fp += g
    return f, fp


@njit(cache=True, inline="always")
def _solve_node(v, ge, rhs, e, ptr, idx, side, vfix, dkind, dpar, tol):
    """The root (V) of :func:`_node_kcl` (strictly increasing in ``v``), by Newton from ``v``
    safeguarded by the bracket of the points seen (bisection where Newton leaves it), and the
    derivative (S) at the last point evaluated. Stops when a step is below ``tol`` (V); NaN
    if the residual is not finite."""
    lo = -math.inf
    hi = math.inf
    for _ in range(MAX_NODE_STEPS):
        f, fp = _node_kcl(v, ge, rhs, e, ptr, idx, side, vfix, dkind, dpar)
        if not (math.isfinite(f) and fp > 0.0 and math.isfinite(fp)):
            return math.nan, fp
        if f == 0.0:
            return v, fp
        if f > 0.0:
            hi = v
        else:
            lo = v
        vn = v - f / fp
        if vn == v:  # the step is below one ulp of v
            return v, fp
        if not (vn > lo and vn < hi):
            # f being increasing, a Newton step stays inside a half-open bracket: both ends
            # are finite here
            vn = 0.5 * (lo + hi)
        if abs(vn - v) <= tol:
            return vn, fp
        v = vn
    return v, fp


@njit(cache=True, fastmath=FASTMATH)
def clipped_start_range(L, LK, GKE, gEE, inv_gEE, b, vdfix, dkind, dpar, ptr, idx, side, col,
                        sweeps, tol, node_tol, polish, lo, hi, x):
    """Rows ``lo..hi-1`` of ``x`` (B, nF) V: the linear start (:func:`linear_start_range`),
    then block Gauss-Seidel sweeps with the diodes (module docstring): the first solves each
    ``E`` node's KCL (scalar Newton to a step below ``node_tol`` V), the next ones
    (``sweeps`` in all, fewer once no node moves by more than ``tol`` V) update each ``E``
    node by one Newton step with the derivative of the first; with ``polish``, a last sweep of
    one Newton step per ``E`` node at its own point. Each sweep ends with ``K`` solved exactly
    with ``E`` held. ``LK`` (nK, nK) is the lower Cholesky factor of ``GKK`` (S^1/2); the
    diodes of ``E`` node ``e`` are ``idx[j]``, ``j`` in ``ptr[e]..ptr[e+1]-1`` (``ptr``
    (nE + 1,), ``idx``, ``side``, ``col`` (nDE,) int64): ``side[j]`` 1 if the node is the
    anode, -1 the cathode, and the other end the held voltage ``vdfix[s, col[j]]`` (V; row 0
    when ``vdfix`` has one row). A sample whose sweeps give a non-finite voltage keeps its
    linear start. Returns how many did."""
    nK = GKE.shape[0]
    nE = GKE.shape[1]
    linear_start_range(L, GKE, inv_gEE, b, lo, hi, x)
    rhs = np.empty(nE)
    rhs0 = np.empty(nE)
    dfe = np.empty(nE)
    rK = np.empty(nK)
    vf = np.empty(idx.shape[0])
    keep = np.empty(nK + nE)
    bad = 0
    for s in range(lo, hi):
        row = s if vdfix.shape[0] > 1 else 0
        for j in range(idx.shape[0]):
            vf[j] = vdfix[row, col[j]]
        for i in range(nK + nE):
            keep[i] = x[s, i]
        ok = True
        last = False
        sweep = 0
        while True:
            # E nodes with K held: rhs_e = b_e - sum_k GKE[k, e] xK_k
            for e in range(nE):
                rhs[e] = b[s, nK + e]
            for k in range(nK):
                xk = x[s, k]
                for e in range(nE):
                    rhs[e] -= GKE[k, e] * xk
            moved = 0.0
            for e in range(nE):
                old = x[s, nK + e]
                if ptr[e + 1] == ptr[e]:
                    v = rhs[e] * inv_gEE[e]
                elif sweep == 0:
                    v, dfe[e] = _solve_node(old, gEE[e], rhs[e], e, ptr, idx, side, vf, dkind,
                                            dpar, node_tol)
                elif last:
                    f, fp = _node_kcl(old, gEE[e], rhs[e], e, ptr, idx, side, vf, dkind, dpar)
                    v = old - f / fp
                else:
                    v = old + (rhs[e] - rhs0[e]) / dfe[e]
                rhs0[e] = rhs[e]
                if not math.isfinite(v):
                    ok = False
                    break
                moved = max(moved, abs(v - old))
                x[s, nK + e] = v
            if not ok:
                break
            _solve_k(LK, GKE, b, x, s, rK)  # K nodes with E held
            for k in range(nK):
                if not math.isfinite(rK[k]):
                    ok = False
                moved = max(moved, abs(rK[k] - x[s, k]))
                x[s, k] = rK[k]
            if not ok or last:
                break
            sweep += 1
            if moved <= tol or sweep >= sweeps:
                if not polish:
                    break
                last = True
        if not ok:
            bad += 1
            for i in range(nK + nE):
                x[s, i] = keep[i]
    return bad


@njit(cache=True, parallel=True)
def clipped_start(L, LK, GKE, gEE, inv_gEE, b, vdfix, dkind, dpar, ptr, idx, side, col, sweeps,
                  tol, node_tol, polish, nchunks, x):
    """:func:`clipped_start_range` of every sample into ``x`` (B, nF) V, chunks of samples in
    parallel (:func:`~fastres.kernels.blocks.block_range`). Returns how many samples kept
    their linear start."""
    B = x.shape[0]
    bad = 0
    for c in prange(nchunks):
        lo, hi = block_range(B, nchunks, c)
        if lo < hi:
            bad += clipped_start_range(L, LK, GKE, gEE, inv_gEE, b, vdfix, dkind, dpar, ptr, idx,
                                       side, col, sweeps, tol, node_tol, polish, lo, hi,
                                       x)
    return bad
