"""Multifrontal elimination of a crossbar tile's wire network (``fastres.crossbar``).

The wire-node conductance matrix ``K`` (N, N) of a tile, in siemens, is symmetric positive
definite and given in a nested-dissection order (CSC ``vals``, ``indptr``, ``indices``, every
entry of both triangles). Its positions are cut into ``nf`` fronts, contiguous position ranges
``fstart[f]:fstart[f + 1]`` in post-order (children before their parent); the last front, the
root, holds the lines' end nodes. Front ``f`` has the sorted update set
``uidx[uptr[f]:uptr[f + 1]]`` (positions after the front that its elimination couples,
computed symbolically once per tile shape) and the children ``cidx[cptr[f]:cptr[f + 1]]``.

:func:`factor` eliminates every front but the root: it assembles the front's dense matrix
over its own positions then its update set (upper triangle: the original entries of the
front's columns, plus the children's update matrices), eliminates the front's own positions by dense BLAS/LAPACK
products and plain loops (Cholesky of the pivot block ``A_FF = L L^T`` by
:func:`fastres.kernels.linalg.cholesky_inplace`, ``Y = L^-1 A_FU`` by forward substitution,
the update matrix ``A_UU - Y^T Y`` by BLAS, its upper triangle) and keeps ``L`` and ``Y``
(``mstore``, front ``f`` at ``moff[f]``, ``m_F x m`` numbers), from which
``w_F = -A_FF^-1 A_FU w_U = -L^-T (Y w_U)``. The root's assembled matrix is the network reduced to the end nodes,
``S_ee = K_ee - K_eo K_oo^-1 K_oe`` (S). :func:`back_substitute` recovers every wire voltage
from the end-node voltages (the right-hand sides are zero off the end nodes, so the forward
sweep is empty). Flops: about ``sum_f m_F m_U^2 + m_F^2 m_U + m_F^3 / 3`` to factor,
``2 sum_f m_F m`` per right-hand side to back-substitute (``m = m_F + m_U``).
"""
import numpy as np
from numba import njit

from .linalg import cholesky_inplace

#: columns per block of the update products (only the upper triangle of ``Y^T Y`` is formed)
UPDATE_BLOCK = 64


@njit(cache=True)
def factor(vals, indptr, indices, fstart, uptr, uidx, cptr, cidx, woff, work, moff, mstore, loc):
    """Eliminate fronts ``0 .. nf-2`` of ``K`` (see the module docstring) and assemble the root.

    ``work`` (sum_f m_f^2,) scratch, front ``f``'s m x m matrix at ``woff[f]`` (after its
    elimination: its update matrix in the upper triangle of the trailing m_U x m_U block);
    ``mstore`` (sum_f m_F m,) receives each front's ``L`` (m_F, m_F; lower triangle) and ``Y``
    (m_F, m_U)
    at ``moff[f]``; ``loc`` (N,) int64 scratch. Returns False if a front's pivot block is not
    positive definite (then ``K`` is not). The root's assembled matrix is left in ``work`` at
    ``woff[nf - 1]`` (its upper triangle)."""
    nf = fstart.shape[0] - 1
    for f in range(nf):
        s0 = fstart[f]
        mF = fstart[f + 1] - s0
        u0 = uptr[f]
        mU = uptr[f + 1] - u0
        m = mF + mU
        A = work[woff[f]:woff[f] + m * m].reshape(m, m)  # only its upper triangle is used
        for a in range(m):
            A[a, a:] = 0.0
        for a in range(mF):
            loc[s0 + a] = a
        for a in range(mU):
            loc[uidx[u0 + a]] = mF + a
        # the original entries of the front's columns, lower triangle of K (row >= column)
        for a in range(mF):
            j = s0 + a
            for p in range(indptr[j], indptr[j + 1]):
                if indices[p] >= j:
                    A[a, loc[indices[p]]] += vals[p]
        # the children's update matrices (upper triangles: positions keep their order)
        for q in range(cptr[f], cptr[f + 1]):
            c = cidx[q]
            cF = fstart[c + 1] - fstart[c]
            cu0 = uptr[c]
            cU = uptr[c + 1] - cu0
            cm = cF + cU
            C = work[woff[c]:woff[c] + cm * cm].reshape(cm, cm)
            for a in range(cU):
                Aa = A[loc[uidx[cu0 + a]]]
                Ca = C[cF + a]
                for b in range(a, cU):
                    Aa[loc[uidx[cu0 + b]]] += Ca[cF + b]
        if f == nf - 1:
            break
        L = np.empty((mF, mF))
        L[:, :] = A[:mF, :mF].T  # its lower triangle is the pivot block
        if not cholesky_inplace(L, mF):
            return False
        Y = np.empty((mF, mU))  # L^-1 A_FU, forward substitution row by row
        for k in range(mF):
            yk = Y[k]
            for b in range(mU):
                yk[b] = A[k, mF + b]
            for j in range(k):
                lkj = L[k, j]
                if lkj != 0.0:
                    yj = Y[j]
                    for b in range(mU):
                        yk[b] -= lkj * yj[b]
            inv = 1.0 / L[k, k]
            for b in range(mU):
                yk[b] *= inv
        # the update matrix A_UU - Y^T Y, upper triangle only, in blocks of UPDATE_BLOCK columns
        for b0 in range(0, mU, UPDATE_BLOCK):
            b1 = min(b0 + UPDATE_BLOCK, mU)
            Yb = np.ascontiguousarray(Y[:, b0:b1]).T.copy()
            A[mF + b0:mF + b1, mF + b0:] -= Yb @ np.ascontiguousarray(Y[:, b0:])
        o = moff[f]
        mstore[o:o + mF * mF] = L.ravel()
        mstore[o + mF * mF:o + mF * m] = Y.ravel()
    return True


@njit(cache=True)
def back_substitute(fstart, uptr, uidx, moff, mstore, w):
    """Wire voltages (V) in ``w`` (N, B), in place: on entry the root's rows hold the end-node
    voltages (the others are overwritten); every other front from its ``L`` and ``Y``
    (from :func:`factor`), parents before children: ``w_F = -L^-T (Y w_U)``."""
    nf = fstart.shape[0] - 1
    B = w.shape[1]
    for f in range(nf - 2, -1, -1):
        s0 = fstart[f]
        mF = fstart[f + 1] - s0
        u0 = uptr[f]
        mU = uptr[f + 1] - u0
        m = mF + mU
        if mU == 0:
            w[s0:s0 + mF, :] = 0.0
            continue
        wu = np.empty((mU, B))
        for a in range(mU):
            wu[a, :] = w[uidx[u0 + a], :]
        o = moff[f]
        L = mstore[o:o + mF * mF].reshape(mF, mF)
        Y = mstore[o + mF * mF:o + mF * m].reshape(mF, mU)
        t = Y @ wu
        for k in range(mF - 1, -1, -1):  # L^T w_F = -t
            wk = w[s0 + k]
            for b in range(B):
                wk[b] = -t[k, b]
            for j in range(k + 1, mF):
                ljk = L[j, k]
                if ljk != 0.0:
                    wj = w[s0 + j]
                    for b in range(B):
                        wk[b] -= ljk * wj[b]
            inv = 1.0 / L[k, k]
            for b in range(B):
                wk[b] *= inv
