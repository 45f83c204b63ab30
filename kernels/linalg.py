"""Small dense symmetric positive-definite factor/solve, one sample at a time.

Plain loops over contiguous float64 arrays: for the n <= ~100 systems of a single Newton step a
hand-written Cholesky inside the per-sample kernel beats a LAPACK call (no call overhead, no
thread interaction) and keeps the kernel free of Python objects.
"""
import math

from numba import njit

from .flags import FASTMATH


@njit(cache=True, fastmath=FASTMATH)
def cholesky_inplace(A, n):
    """Overwrite the lower triangle of ``A[:n, :n]`` with L, A = L L^T. Returns False if not SPD."""
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        if not (s > 0.0) or not math.isfinite(s):
            return False
        d = math.sqrt(s)
        A[j, j] = d
        inv = 1.0 / d
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s -= A[i, k] * A[j, k]
            A[i, j] = s * inv
    return True


@njit(cache=True, fastmath=FASTMATH)
def cholesky_solve_inplace(L, b, n):
    """Solve ``L L^T y = b`` in place in ``b[:n]`` given the factor from :func:`cholesky_inplace`."""
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * b[k]
        b[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):
        s = b[i]
        for k in range(i + 1, n):
            s -= L[k, i] * b[k]
        b[i] = s / L[i, i]
