"""Assembly of the KCL residual and Jacobian on the free nodes, and the Schur-complement solve.

Free nodes are ordered ``[K | E]``: ``K`` (nK nodes) is a dense block, ``E`` (nE nodes) an
independent set whose Jacobian block is diagonal. The constant (resistor) part of the Jacobian is

    G_FF = [[GKK, GKE], [GKE^T, diag(gEE)]]     (S)

and the residual (net current leaving each free node, A) is ``r = G_FF x - b + i_diodes(x)``,
where ``b`` (A) holds the currents from fixed-voltage nodes and current sources. Diode endpoints
index an extended voltage vector ``vext = [x (nF free nodes) | fixed voltages used by diodes]``:
``idx < nF`` is a free node, ``idx >= nF`` a fixed node (whose step is always zero).
"""
import math

import numpy as np
from numba import njit, prange

from .blocks import block_range
from .flags import FASTMATH
from .linalg import cholesky_inplace, cholesky_solve_inplace


@njit(cache=True)
def load_sample(x, vdfix, s, vext):
    """Fill ``vext = [x[s] (free nodes) | fixed voltages diodes touch]`` (V) for sample ``s``;
    ``vdfix`` has one row per sample, or a single row shared by all."""
    nF = x.shape[1]
    for i in range(nF):
        vext[i] = x[s, i]
    row = s if vdfix.shape[0] > 1 else 0
    for j in range(vdfix.shape[1]):
        vext[nF + j] = vdfix[row, j]


@njit(cache=True, fastmath=FASTMATH)
def gff_matvec(GKK, GKE, gEE, x, out):
    """``out = G_FF x`` (A) for free-node voltages ``x`` (V), shape (nK + nE,)."""
    nK = GKK.shape[0]
    nE = gEE.shape[0]
    for i in range(nK):
        s = 0.0
        for j in range(nK):
            s += GKK[i, j] * x[j]
        for e in range(nE):
            s += GKE[i, e] * x[nK + e]
        out[i] = s
    for e in range(nE):
        out[nK + e] = gEE[e] * x[nK + e]
    for i in range(nK):
        xi = x[i]
        for e in range(nE):
            out[nK + e] += GKE[i, e] * xi


@njit(cache=True, fastmath=FASTMATH)
def stamp_diodes(da, db, di, dg, r, JKK, dE):
    """Add diode currents ``di`` to ``r`` (A) and conductances ``dg`` to ``JKK`` / ``dE`` (S)."""
    nK = JKK.shape[0]
    nF = r.shape[0]
    for k in range(da.shape[0]):
        a = da[k]
        c = db[k]
        i = di[k]
        g = dg[k]
        if a < nF:
            r[a] += i
            if a < nK:
                JKK[a, a] += g
            else:
                dE[a - nK] += g
        if c < nF:
            r[c] -= i
            if c < nK:
                JKK[c, c] += g
            else:
                dE[c - nK] += g
        if a < nF and c < nF:
            # both free: compile() guarantees that such nodes are both in K
            JKK[a, c] -= g
            JKK[c, a] -= g


@njit(cache=True, fastmath=FASTMATH)
def assemble(GKK, GKE, gEE, b, x, da, db, di, dg, rlin, r, JKK, dE):
    """Residual ``r`` (A), its linear part ``rlin``, and Jacobian blocks ``JKK``, ``dE`` (S) at x."""
    nK = GKK.shape[0]
    nE = gEE.shape[0]
    gff_matvec(GKK, GKE, gEE, x, rlin)
    for i in range(nK + nE):
        rlin[i] -= b[i]
        r[i] = rlin[i]
    for i in range(nK):
        for j in range(nK):
            JKK[i, j] = GKK[i, j]
    for e in range(nE):
        dE[e] = gEE[e]
    stamp_diodes(da, db, di, dg, r, JKK, dE)


@njit(cache=True, fastmath=FASTMATH)
def schur_newton_direction(JKK, GKE, dE, r, dx, U, S, y, q, refactor):
    """Solve ``J dx = -r`` by eliminating the diagonal ``E`` block. Returns False if singular.

    ``S = JKK - GKE diag(1/dE) GKE^T`` is formed with ``U = GKE diag(dE^-1/2)`` so that each entry
    is a contiguous dot product, and overwritten by its Cholesky factor. With ``refactor=False``
    ``S`` must already hold the factor of this same Jacobian (``JKK``, ``dE`` unchanged), which is
    then reused: the result is bit-identical to refactoring. Scratch: ``U`` (nK, nE), ``S``
    (nK, nK), ``y`` (nK,), ``q`` (nE,).
    """
    nK = JKK.shape[0]
    nE = dE.shape[0]
    for e in range(nE):
        if not (dE[e] > 0.0):
            return False
        q[e] = 1.0 / math.sqrt(dE[e])
    for e in range(nE):
        dx[nK + e] = r[nK + e] * q[e]  # scratch: rE dE^-1/2, overwritten at the end
    for i in range(nK):
        s = -r[i]
        for e in range(nE):
            u = GKE[i, e] * q[e]
            U[i, e] = u
            s += u * dx[nK + e]
        y[i] = s  # rhs: -rK + GKE dE^-1 rE
    if refactor:
        for i in range(nK):
            for j in range(i + 1):
                s = 0.0
                for e in range(nE):
                    s += U[i, e] * U[j, e]
                S[i, j] = JKK[i, j] - s
        if not cholesky_inplace(S, nK):
            return False
    cholesky_solve_inplace(S, y, nK)
    for e in range(nE):
        dx[nK + e] = -r[nK + e]
    for i in range(nK):
        yi = y[i]
        dx[i] = yi
        for e in range(nE):
            dx[nK + e] -= GKE[i, e] * yi
    for e in range(nE):
        dx[nK + e] = dx[nK + e] / dE[e]
    return True


@njit(cache=True)
def source_currents_range(U, P, col0, b0, inj, lo, hi, b):
    """Rows ``lo..hi-1`` of :func:`source_currents` (serial)."""
    nF = b.shape[1]
    nP = P.shape[1]
    prod = np.dot(U[lo:hi], P)
    for s in range(lo, hi):
        row = s if inj.shape[0] > 1 else 0
        for i in range(nF):
            b[s, i] = inj[row, i] + b0[i]
        for i in range(nP):
            b[s, col0 + i] += prod[s - lo, i]


@njit(cache=True, parallel=True)
def source_currents(U, P, col0, b0, inj, nchunks, b):
    """``b = inj + b0``, plus ``U @ P`` added to columns ``col0 : col0 + P.shape[1]`` (A).

    ``U`` (B, nU) are source voltages (V) and ``P`` (nU, nP) the conductances (S) from those
    sources into a contiguous block of free nodes, so the large product runs in BLAS, one
    chunk of samples per thread. ``b0`` (nF,) constant currents, ``inj`` (B, nF) or (1, nF).
    """
    B = b.shape[0]
    for c in prange(nchunks):
        lo, hi = block_range(B, nchunks, c)
        if lo < hi:
            source_currents_range(U, P, col0, b0, inj, lo, hi, b)
