"""Linear solves with the Jacobian at converged states: the adjoint of implicit differentiation.

At an operating point ``r(x, g) = 0``, the exact gradient of a loss ``C(x)`` with respect to any
circuit parameter is ``dC/dg = -lam^T dr/dg`` with ``J lam = dC/dx``, ``J`` the (symmetric)
Jacobian at ``x``. One solve per sample, with the same Schur elimination as Newton.
"""
import numpy as np
from numba import njit, prange

from .blocks import block_range
from .devices import diode_ig
from .newton import workspace
from .stamping import assemble, load_sample, schur_newton_direction


@njit(cache=True, parallel=True)
def adjoint_solve(GKK, GKE, gEE, vdfix, da, db, dkind, dpar, x, rhs, out, nchunks):
    """``out[s] = J(x[s])^-1 rhs[s]`` for every sample; ``x``, ``rhs``, ``out`` (B, nF).

    Rows where the Jacobian is singular are set to NaN.
    """
    B = x.shape[0]
    for c in prange(nchunks):
        lo, hi = block_range(B, nchunks, c)
        if lo < hi:
            adjoint_range(GKK, GKE, gEE, vdfix, da, db, dkind, dpar, x, rhs, out, lo, hi)


@njit(cache=True)
def adjoint_range(GKK, GKE, gEE, vdfix, da, db, dkind, dpar, x, rhs, out, lo, hi):
    """Samples ``lo..hi-1`` of :func:`adjoint_solve` (serial)."""
    nK = GKK.shape[0]
    nE = gEE.shape[0]
    nF = nK + nE
    nXd = vdfix.shape[1]
    nD = da.shape[0]
    w = workspace(nK, nE, nD, nXd)
    r = w.residual
    rlin = w.residual_lin
    dxe = w.step
    JKK = w.jac_kk
    dE = w.jac_e
    U = w.schur_u
    S = w.schur_factor
    y = w.schur_rhs
    q = w.jac_e_rsqrt
    di = w.diode_i
    dg = w.diode_g
    vext = np.empty(nF + nXd)
    zero = np.zeros(nF)
    # a plain bool, not the constant True (typed Literal[bool](True)): the call then shares
    # Newton's compiled schur_newton_direction instead of compiling a second specialisation
    refactor = np.bool_(True)
    for s in range(lo, hi):
        load_sample(x, vdfix, s, vext)
        for k in range(nD):
            di[k], dg[k] = diode_ig(dkind[k], dpar[k], vext[da[k]] - vext[db[k]])
        assemble(GKK, GKE, gEE, zero, vext[:nF], da, db, di, dg, rlin, r, JKK, dE)
        for i in range(nF):
            r[i] = -rhs[s, i]  # J dx = -r  =>  dx = J^-1 rhs
        if schur_newton_direction(JKK, GKE, dE, r, dxe, U, S, y, q, refactor):
            for i in range(nF):
                out[s, i] = dxe[i]
        else:
            for i in range(nF):
                out[s, i] = np.nan
