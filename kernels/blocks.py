"""How the parallel kernels cut ``n`` items (samples, rows) into chunks: one formula for all.

Chunk ``c`` of ``nchunks`` holds items ``lo..hi-1`` with ``per = ceil(n / nchunks)``,
``lo = min(n, c per)`` and ``hi = min(n, lo + per)``: equal chunks of ``per`` items, the last
non-empty one shorter, and any chunk past the end empty (``lo == hi == n``).

The partition is part of some results, so it must not change: the fixed row blocks of
:func:`~fastres.kernels.updates.fixed_from_step` and
:func:`~fastres.kernels.updates.block_column_sums` decide the order in which column sums are
added, and the sample chunks of :func:`~fastres.kernels.stamping.source_currents` decide the
shapes of the BLAS products (whose kernels may round differently for different shapes). The
per-sample kernels (Newton, adjoint) give the same result for any partition.
"""
from numba import njit


@njit(cache=True, inline="always")
def block_range(n, nchunks, c):
    """Bounds ``(lo, hi)`` of chunk ``c`` (``0 <= c < nchunks``) of ``n`` items cut into
    ``nchunks`` chunks of ``ceil(n / nchunks)`` items; ``lo == hi`` for an empty chunk.

    Inlined (``inline="always"``): no separate specialisation per integer type of ``c``
    (a ``prange`` index is unsigned).
    """
    per = (n + nchunks - 1) // nchunks
    lo = min(n, c * per)
    return lo, min(n, lo + per)
