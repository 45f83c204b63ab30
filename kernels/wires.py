"""Multifrontal elimination of a crossbar tile's wire network (``fastres.crossbar``).

The wire-node conductance matrix ``K`` (N, N) of a tile, in siemens, is symmetric positive
definite and given in a nested-dissection order (CSC ``vals``, ``indptr``, ``indices``, every
entry of both triangles). Its positions are cut into ``nf`` fronts, contiguous position ranges
``fstart[f]:fstart[f + 1]`` in post-order (children before their parent); the last front, the
root, holds the lines' end nodes. Front ``f`` has the sorted update set
``uidx[uptr[f]:uptr[f + 1]]`` (positions after the front that its elimination couples,
computed symbolically once per tile shape) and the children ``cidx[cptr[f]:cptr[f + 1]]``.

:func:`factor` eliminates every front but the root: it assembles the front's dense matrix
over its own positions then its update set (the original entries of the front's columns,
plus the children's update matrices), eliminates the front's own positions by dense BLAS/LAPACK
products (Cholesky of the pivot block ``A_FF = L L^T``, ``Y = L^-1 A_FU``, update matrix
``A_UU - Y^T Y``) and keeps ``M_f = -A_FF^-1 A_FU = -L^-T Y`` (``mstore``, front ``f`` at
``moff[f]``, ``m_F x m_U`` numbers). The root's assembled matrix is the network reduced to the end nodes,
``S_ee = K_ee - K_eo K_oo^-1 K_oe`` (S). :func:`back_substitute` recovers every wire voltage
from the end-node voltages (the right-hand sides are zero off the end nodes, so the forward
sweep is empty). Flops: about ``sum_f m_F m^2`` (``m = m_F + m_U``) to factor, ``2 sum_f
m_F m_U`` per right-hand side to back-substitute.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def factor(vals, indptr, indices, fstart, uptr, uidx, cptr, cidx, woff, work, moff, mstore, loc):
    """Eliminate fronts ``0 .. nf-2`` of ``K`` (see the module docstring) and assemble the root.

    ``work`` (sum_f m_f^2,) scratch, front ``f``'s m x m matrix at ``woff[f]`` (after its
    elimination: its update matrix in the trailing m_U x m_U block); ``mstore`` (sum_f m_F
    m_U,) receives each front's back-substitution matrix ``M_f = -A_FF^-1 A_FU`` at
    ``moff[f]``; ``loc`` (N,) int64 scratch. Returns False if a front's pivot block is not
    positive definite (then ``K`` is not). The root's assembled matrix is left in ``work`` at
    ``woff[nf - 1]``."""
    nf = fstart.shape[0] - 1
    for f in range(nf):
        s0 = fstart[f]
        mF = fstart[f + 1] - s0
        u0 = uptr[f]
        mU = uptr[f + 1] - u0
        m = mF + mU
        A = work[woff[f]:woff[f] + m * m].reshape(m, m)
        A[:, :] = 0.0
        for a in range(mF):
            loc[s0 + a] = a
        for a in range(mU):
            loc[uidx[u0 + a]] = mF + a
        # the original entries of the front's columns (rows after the front's start)
        for a in range(mF):
            j = s0 + a
            for p in range(indptr[j], indptr[j + 1]):
                i = indices[p]
                if i >= s0:
                    A[loc[i], a] += vals[p]
                    if i >= s0 + mF:
                        A[a, loc[i]] += vals[p]
        # the children's update matrices
        for q in range(cptr[f], cptr[f + 1]):
            c = cidx[q]
            cF = fstart[c + 1] - fstart[c]
            cu0 = uptr[c]
            cU = uptr[c + 1] - cu0
            cm = cF + cU
            C = work[woff[c]:woff[c] + cm * cm].reshape(cm, cm)
            for a in range(cU):
                la = loc[uidx[cu0 + a]]
                for b in range(cU):
                    A[la, loc[uidx[cu0 + b]]] += C[cF + a, cF + b]
        if f == nf - 1:
            break
        Aff = np.ascontiguousarray(A[:mF, :mF])
        for a in range(mF):
            if not (Aff[a, a] > 0.0):
                return False
        L = np.linalg.cholesky(Aff)
        Linv = np.linalg.inv(L)
        if mU == 0:
            continue
        Y = Linv @ np.ascontiguousarray(A[:mF, mF:])  # L^-1 A_FU
        A[mF:, mF:] -= Y.T @ Y  # the update matrix A_UU - A_UF A_FF^-1 A_FU
        M = mstore[moff[f]:moff[f] + mF * mU].reshape(mF, mU)
        M[:, :] = -(np.ascontiguousarray(Linv.T) @ Y)
    return True


@njit(cache=True)
def back_substitute(fstart, uptr, uidx, moff, mstore, w):
    """Wire voltages (V) in ``w`` (N, B), in place: on entry the root's rows hold the end-node
    voltages (the others are overwritten); every other front from its matrix ``M_f`` (from
    :func:`factor`), parents before children: ``w_F = M_f w_U``."""
    nf = fstart.shape[0] - 1
    B = w.shape[1]
    for f in range(nf - 2, -1, -1):
        s0 = fstart[f]
        mF = fstart[f + 1] - s0
        u0 = uptr[f]
        mU = uptr[f + 1] - u0
        if mU == 0:
            w[s0:s0 + mF, :] = 0.0
            continue
        wu = np.empty((mU, B))
        for a in range(mU):
            wu[a, :] = w[uidx[u0 + a], :]
        M = mstore[moff[f]:moff[f] + mF * mU].reshape(mF, mU)
        w[s0:s0 + mF, :] = M @ wu
