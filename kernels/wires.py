"""Multifrontal elimination of a crossbar tile's wire network (``fastres.crossbar``).

The wire-node conductance matrix ``K`` (N, N) of a tile, in siemens, is symmetric positive
definite and given in a nested-dissection order (CSC ``vals``, ``indptr``, ``indices``, every
entry of both triangles). Its positions are cut into ``nf`` fronts, contiguous position ranges
``fstart[f]:fstart[f + 1]`` in post-order (children before their parent); the last front, the
root, holds the lines' end nodes. Front ``f`` has the sorted update set
``uidx[uptr[f]:uptr[f + 1]]`` (positions after the front that its elimination couples,
computed symbolically once per tile shape) and the children ``cidx[cptr[f]:cptr[f + 1]]``.

Front ``f`` is a dense ``m x m`` matrix (``m = m_F + m_U``; its own positions, then its update
set; upper triangle) kept in two parts: its first ``m_F`` rows, row-major ``(m_F, m)`` in
``mstore`` at ``moff[f]``, and its trailing update block, row-major ``(m_U, m_U)`` in ``work``:
formed at ``uoff[f]``, then moved down to ``ustk[f]`` where the parent reads it (a stack in
post-order: the children's blocks are the top of the stack when their parent is assembled, so
the scratch stays small and hot in cache; ``uoff = ustk`` with static offsets is valid too). :func:`factor` assembles it (the original entries of the front's columns plus the
children's update blocks) and eliminates the front's own positions in place: the pivot block
becomes ``U = L^T`` (upper triangle, ``U^T U = A_FF``), the rows' remaining ``(m_F, m_U)`` part
becomes ``Y = U^-T A_FU`` and the update block ``A_UU - Y^T Y``. The rows stay in ``mstore``
for the back substitution, ``w_F = -U^-1 (Y w_U)``. Fronts with ``m >= blas_min`` use LAPACK
``dpotrf``, BLAS ``dtrsm`` and ``dsyrk`` (a row-major upper triangle is a column-major lower
one, so the calls work on the rows where they lie), smaller ones plain loops (a LAPACK call
costs more than their flops). The root is not eliminated: its assembled rows are the network
reduced to the end nodes, ``S_ee = K_ee - K_eo K_oo^-1 K_oe`` (S, upper triangle, at
``moff[nf - 1]``). :func:`back_substitute` recovers every wire voltage from the end-node
voltages (the right-hand sides are zero off the end nodes, so the forward sweep is empty),
with BLAS ``dgemm`` and ``dtrsm`` on fronts with ``m >= blas_min``. Flops: about
``sum_f m_F m_U^2 + m_F^2 m_U + m_F^3 / 3`` to factor, ``2 sum_f m_F m`` per right-hand side to
back-substitute.
"""
import math

import numpy as np
from numba import njit

from .linalg import blas_dgemm, blas_dsyrk, blas_dtrsm, lapack_dpotrf

#: fronts of at least this many rows and columns (m = m_F + m_U) are eliminated by LAPACK/BLAS
#: (measured on a 128 x 100 tile, see README "Crossbar wires"); smaller ones by plain loops
FACTOR_BLAS_MIN = 48
#: the same for the back substitution (its BLAS calls do 2 m_F m flops per right-hand side)
SOLVE_BLAS_MIN = 48

_L, _U, _N, _T, _R = ord("L"), ord("U"), ord("N"), ord("T"), ord("R")


@njit(cache=True)
def _front(f, fstart, uptr, moff, uoff):
    """Front ``f``'s first position, ``m_F``, ``m_U``, ``m`` and the offsets of its rows in
    ``mstore`` and of its update block in ``work`` (where it is formed)."""
    s0 = fstart[f]
    mF = fstart[f + 1] - s0
    mU = uptr[f + 1] - uptr[f]
    return s0, mF, mU, mF + mU, moff[f], uoff[f]


@njit(cache=True)
def assemble(f, vals, indptr, fstart, uptr, cptr, cidx, uoff, ustk, work, moff, mstore, vrel, urel):
    """Assemble front ``f`` (see the module docstring): zero its rows in ``mstore`` and its
    update block in ``work`` at ``uoff[f]`` (upper triangles), add the original entries of its
    columns (the lower triangle of ``K``: entry ``p`` of column ``j`` goes to column
    ``vrel[p]`` of the front's row ``j``, ``vrel[p] < 0`` for the upper triangle) and its
    children's update blocks (at ``ustk[c]``; row and column ``a`` of child ``c``'s block are
    the parent's ``urel[uptr[c] + a]``; upper triangles: positions keep their order)."""
    s0, mF, mU, m, o, wo = _front(f, fstart, uptr, moff, uoff)
    for a in range(mF):
        for b in range(o + a * m + a, o + (a + 1) * m):
            mstore[b] = 0.0
    for a in range(mU):
        for b in range(wo + a * mU + a, wo + (a + 1) * mU):
            work[b] = 0.0
    for a in range(mF):
        j = s0 + a
        r = o + a * m
        for p in range(indptr[j], indptr[j + 1]):
            if vrel[p] >= 0:
                mstore[r + vrel[p]] += vals[p]
    for q in range(cptr[f], cptr[f + 1]):
        c = cidx[q]
        cu0 = uptr[c]
        cU = uptr[c + 1] - cu0
        cw = ustk[c]
        for a in range(cU):
            ra = urel[cu0 + a]
            src = cw + a * cU
            if ra < mF:
                r = o + ra * m
                for b in range(a, cU):
                    mstore[r + urel[cu0 + b]] += work[src + b]
            else:
                r = wo + (ra - mF) * mU - mF
                for b in range(a, cU):
                    work[r + urel[cu0 + b]] += work[src + b]


@njit(cache=True)
def eliminate(f, fstart, uptr, uoff, work, moff, mstore, blas_min):
    """Eliminate the assembled front ``f``'s own positions in place (the module docstring):
    ``U`` and ``Y`` in its rows, ``A_UU - Y^T Y`` in its update block; LAPACK/BLAS when
    ``m >= blas_min``, else plain loops. Returns False if the pivot block is not positive
    definite (or not finite)."""
    s0, mF, mU, m, o, wo = _front(f, fstart, uptr, moff, uoff)
    if m >= blas_min:
        if lapack_dpotrf(_L, mF, mstore, o, m) != 0:
            return False
        for k in range(mF):
            if not math.isfinite(mstore[o + k * m + k]):
                return False
        if mU > 0:
            # column-major, the rows' (m_F, m_U) part is A_UF (m_U x m_F): A_UF L^-T = Y^T
            blas_dtrsm(_R, _L, _T, _N, mU, mF, 1.0, mstore, o, m, mstore, o + mF, m)
            # column-major lower of the update block -= Y^T Y
            blas_dsyrk(_L, _N, mU, mF, -1.0, mstore, o + mF, m, 1.0, work, wo, mU)
        return True
    for k in range(mF):
        rk = o + k * m
        d = mstore[rk + k]
        if not (d > 0.0) or not math.isfinite(d):
            return False
        d = math.sqrt(d)
        mstore[rk + k] = d
        inv = 1.0 / d
        for j in range(k + 1, m):
            mstore[rk + j] *= inv
        for i in range(k + 1, mF):
            r = mstore[rk + i]
            if r != 0.0:
                ri = o + i * m
                for j in range(i, m):
                    mstore[ri + j] -= r * mstore[rk + j]
        yk = rk + mF
        for a in range(mU):
            y = mstore[yk + a]
            if y != 0.0:
                wa = wo + a * mU
                for b in range(a, mU):
                    work[wa + b] -= y * mstore[yk + b]
    return True


@njit(cache=True)
def factor(vals, indptr, fstart, uptr, cptr, cidx, uoff, ustk, work, moff, mstore, vrel, urel,
           blas_min=FACTOR_BLAS_MIN):
    """Eliminate fronts ``0 .. nf-2`` of ``K`` (see the module docstring) and assemble the root.

    ``work`` scratch for the update blocks (front ``f``'s m_U x m_U formed at ``uoff[f]``,
    then kept at ``ustk[f]`` for its parent); ``mstore`` (moff[-1],) receives each front's rows, ``U`` and ``Y``
    (``m_F x m`` numbers at ``moff[f]``); ``vrel``, ``urel`` where the original entries and
    the update blocks go (:func:`assemble`, computed symbolically once per pattern). Returns False if a
    front's pivot block is not positive definite (then ``K`` is not). The root's assembled
    matrix (m_root x m_root, upper triangle) is left in ``mstore`` at ``moff[nf - 1]``."""
    nf = fstart.shape[0] - 1
    for f in range(nf):
        assemble(f, vals, indptr, fstart, uptr, cptr, cidx, uoff, ustk, work, moff, mstore, vrel, urel)
        if f == nf - 1:
            break
        if not eliminate(f, fstart, uptr, uoff, work, moff, mstore, blas_min):
            return False
        src = uoff[f]
        dst = ustk[f]
        if dst != src:  # down the stack, over the children's consumed blocks (ascending copy)
            mU = uptr[f + 1] - uptr[f]
            for a in range(mU * mU):
                work[dst + a] = work[src + a]
    return True


@njit(cache=True)
def back_substitute(fstart, uptr, uidx, moff, mstore, w, blas_min=SOLVE_BLAS_MIN):
    """Wire voltages (V) in ``w`` (N, B), C-contiguous, in place: on entry the root's rows hold
    the end-node voltages (the others are overwritten); every other front from its rows ``U``
    and ``Y`` (from :func:`factor`), parents before children: ``w_F = -U^-1 (Y w_U)``
    (``dgemm`` and ``dtrsm`` on the B right-hand sides at once when ``m >= blas_min``)."""
    nf = fstart.shape[0] - 1
    B = w.shape[1]
    wf = w.reshape(w.size)
    for f in range(nf - 2, -1, -1):
        s0 = fstart[f]
        mF = fstart[f + 1] - s0
        u0 = uptr[f]
        mU = uptr[f + 1] - u0
        m = mF + mU
        o = moff[f]
        if mU == 0:
            w[s0:s0 + mF, :] = 0.0
            continue
        if m >= blas_min:
            wu = np.empty(mU * B)
            for a in range(mU):
                wu[a * B:(a + 1) * B] = w[uidx[u0 + a]]
            # column-major: w_F^T (B x m_F) = -w_U^T Y^T, then w_F^T U^-T (U^T the lower triangle)
            blas_dgemm(_N, _N, B, mF, mU, -1.0, wu, 0, B, mstore, o + mF, m, 0.0, wf, s0 * B, B)
            blas_dtrsm(_R, _L, _N, _N, B, mF, 1.0, mstore, o, m, wf, s0 * B, B)
            continue
        for k in range(mF - 1, -1, -1):
            rk = o + k * m
            wk = w[s0 + k]
            wk[:] = 0.0
            for j in range(k + 1, mF):
                r = mstore[rk + j]
                if r != 0.0:
                    wj = w[s0 + j]
                    for b in range(B):
                        wk[b] -= r * wj[b]
            for a in range(mU):
                r = mstore[rk + mF + a]
                if r != 0.0:
                    wa = w[uidx[u0 + a]]
                    for b in range(B):
                        wk[b] -= r * wa[b]
            inv = 1.0 / mstore[rk + k]
            for b in range(B):
                wk[b] *= inv


@njit(cache=True)
def drop_square_sums(w, prow, pcol, nb, out):
    """``out[c] = sum_{s < nb} d_cs^2 - sum_{s >= nb} d_cs^2`` (V^2) for every cell ``c``, with
    ``d_cs = w[prow[c], s] - w[pcol[c], s]`` the drop across the cell's device (row node minus
    column node, V) in state ``s`` of the wire voltages ``w`` (N, B) (:func:`back_substitute`'s
    order); ``prow``, ``pcol`` (n,) the positions of each cell's row and column node."""
    B = w.shape[1]
    for c in range(prow.shape[0]):
        wr = w[prow[c]]
        wc = w[pcol[c]]
        sa = 0.0
        for s in range(nb):
            d = wr[s] - wc[s]
            sa += d * d
        sb = 0.0
        for s in range(nb, B):
            d = wr[s] - wc[s]
            sb += d * d
        out[c] = sa - sb
