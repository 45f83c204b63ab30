"""Equilibrium-Propagation conductance updates.

A conductance ``g`` between a node at voltage ``u_i`` (the from-layer, possibly an amplifier
output) and a node at ``v_j`` stores co-content ``g (u_i - v_j)^2 / 2``, so its EqProp gradient
is the difference of squared voltage drops between two phases. Summed over a batch it is two
BLAS matrix products and two vector terms, never a loop over conductances::

    D[i, j] = sum_s (ua_si - va_sj)^2 - (ub_si - vb_sj)^2
            = sum_s (ua_si^2 - ub_si^2) + sum_s (va_sj^2 - vb_sj^2) - 2 (ua^T va - ub^T vb)[i, j]

The optimiser step is a fused, row-parallel pass (memory bound): momentum, step, clipping to
the device range ``[g_lo, g_hi]`` (S), and the column sums that the next Jacobian needs.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True)
def drop_square_terms(ua, va, ub, vb):
    """The three terms of ``sum_s (ua_si - va_sj)^2 - (ub_si - vb_sj)^2`` (V^2).

    Returns ``(row (n_from,), col (n_to,), prod (n_from, n_to))`` with the sum equal to
    ``row[i] + col[j] - 2 prod[i, j]``; ``prod = ua^T va - ub^T vb`` is one BLAS product of the
    stacked phases. ``ua, ub`` (B, n_from), ``va, vb`` (B, n_to) volts.
    """
    B = ua.shape[0]
    n_from = ua.shape[1]
    n_to = va.shape[1]
    left = np.empty((n_from, 2 * B))
    right = np.empty((2 * B, n_to))
    row = np.zeros(n_from)
    col = np.zeros(n_to)
    for s in range(B):
        for i in range(n_from):
            left[i, s] = ua[s, i]
            left[i, B + s] = ub[s, i]
            row[i] += ua[s, i] * ua[s, i] - ub[s, i] * ub[s, i]
        for j in range(n_to):
            right[s, j] = va[s, j]
            right[B + s, j] = -vb[s, j]
            col[j] += va[s, j] * va[s, j] - vb[s, j] * vb[s, j]
    return row, col, np.dot(left, right)


@njit(cache=True)
def drop_square_difference(ua, va, ub, vb, out):
    """``out[i, j] = sum_s (ua[s,i] - va[s,j])^2 - (ub[s,i] - vb[s,j])^2`` (V^2).

    ``ua, ub`` (B, n_from), ``va, vb`` (B, n_to) volts; ``out`` (n_from, n_to).
    """
    row, col, prod = drop_square_terms(ua, va, ub, vb)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = row[i] + col[j] - 2.0 * prod[i, j]


@njit(cache=True)
def drop_square_step_rows(W, row, col, prod, scale, vel, lr, momentum, g_lo, g_hi, lo, hi):
    """Rows ``lo..hi-1`` of :func:`drop_square_step` (serial)."""
    m = W.shape[1]
    for i in range(lo, hi):
        ri = row[i]
        for j in range(m):
            g = scale * (ri + col[j] - 2.0 * prod[i, j])
            if momentum > 0.0:
                g = momentum * vel[i, j] + g
                vel[i, j] = g
            w = W[i, j] - lr * g
            if w < g_lo:
                w = g_lo
            elif w > g_hi:
                w = g_hi
            W[i, j] = w


@njit(cache=True, parallel=True)
def drop_square_step(W, row, col, prod, scale, vel, lr, momentum, g_lo, g_hi, nchunks):
    """Fused EqProp SGD step, in place: ``grad = scale * (row[i] + col[j] - 2 prod[i, j])``
    (V^2/S), ``vel = momentum*vel + grad``, ``W -= lr*vel``, clip ``W`` to [g_lo, g_hi] (S).

    One memory pass over ``W`` (and ``vel`` when ``momentum > 0``); ``lr`` in S^2/V^2. Rows are
    split into ``nchunks`` parallel chunks (call :func:`drop_square_step_rows` for small W).
    """
    n = W.shape[0]
    per = (n + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(n, lo + per)
        if lo < hi:
            drop_square_step_rows(W, row, col, prod, scale, vel, lr, momentum, g_lo, g_hi, lo, hi)
