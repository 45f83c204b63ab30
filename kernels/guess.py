"""The linear start of a circuit's Newton solve: the resistor network alone, batched.

Free nodes are ordered ``[K | E]`` (see :mod:`~fastres.kernels.stamping`): the resistor
Jacobian is ``G_FF = [[GKK, GKE], [GKE^T, diag(gEE)]]`` (S) and ``E`` is eliminated exactly.
Per sample, ``G_FF x = b`` is solved as

    xE0 = b_E / gEE,   S xK = b_K - GKE xE0,   xE = xE0 - (GKE^T xK) / gEE

with ``S = GKK - GKE diag(1/gEE) GKE^T`` factored once for the whole batch (``L L^T``, see
:attr:`fastres.compiled.CompiledCircuit.linear_factor`): about ``2 nK nE + nK^2`` multiply-adds
and one pass over the sample's source currents, so it costs a fraction of one Newton step.
"""
import math

import numpy as np
from numba import njit

from .flags import FASTMATH
from .linalg import cholesky_solve_inplace


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
        for k in range(nK):
            t = b[s, k]
            for e in range(nE):
                t -= GKE[k, e] * x[s, nK + e]
            rK[k] = t
        cholesky_solve_inplace(L, rK, nK)
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
