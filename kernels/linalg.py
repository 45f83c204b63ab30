"""Small dense symmetric positive-definite factor/solve, one sample at a time; LAPACK/BLAS
level-3 calls for larger dense blocks inside kernels (:func:`lapack_dpotrf`, :func:`blas_dtrsm`,
:func:`blas_dsyrk`, :func:`blas_dgemm`).

Plain loops over contiguous float64 arrays: for the n <= ~100 systems of a single Newton step a
hand-written Cholesky inside the per-sample kernel beats a LAPACK call (no call overhead, no
thread interaction) and keeps the kernel free of Python objects.
"""
import math

import llvmlite.binding as _llvm
import numpy as _np
from numba import njit
from numba import types as _types
from numba.extending import get_cython_function_address as _cython_address

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


# -- LAPACK/BLAS level-3 calls from inside @njit (scipy's OpenBLAS, the one numpy's @ uses) ------
# scipy.linalg.cython_lapack / cython_blas export the Fortran routines (every argument a pointer,
# matrices column-major). Their addresses are registered as LLVM symbols at import, so the kernels
# that call them link by name and stay cacheable (a ctypes pointer baked into a kernel is not).
# Column-major ``(r, c)`` with leading dimension ``ld`` is, in memory, the row-major ``(c, r)``
# with row stride ``ld``: a row-major upper triangle is a column-major lower one.

for _mod, _name in (("cython_lapack", "dpotrf"), ("cython_blas", "dtrsm"), ("cython_blas", "dsyrk"),
                    ("cython_blas", "dgemm")):
    _llvm.add_symbol("fastres_" + _name, _cython_address("scipy.linalg." + _mod, _name))
_vp = _types.voidptr
_dpotrf = _types.ExternalFunction("fastres_dpotrf", _types.void(*([_vp] * 5)))
_dtrsm = _types.ExternalFunction("fastres_dtrsm", _types.void(*([_vp] * 11)))
_dsyrk = _types.ExternalFunction("fastres_dsyrk", _types.void(*([_vp] * 10)))
_dgemm = _types.ExternalFunction("fastres_dgemm", _types.void(*([_vp] * 13)))


@njit(cache=True)
def lapack_dpotrf(uplo, n, a, aoff, lda):
    """LAPACK ``dpotrf`` (Cholesky) of the column-major ``n x n`` matrix at ``a[aoff:]``
    (leading dimension ``lda``), triangle ``uplo`` (``ord('L')`` or ``ord('U')``), in place.
    Returns LAPACK's ``info`` (0: done; > 0: not positive definite)."""
    c = _np.empty(1, _np.uint8)
    c[0] = uplo
    iv = _np.empty(3, _np.int32)
    iv[0] = n
    iv[1] = lda
    iv[2] = 0
    _dpotrf(c.ctypes, iv.ctypes, a[aoff:].ctypes, iv[1:].ctypes, iv[2:].ctypes)
    return iv[2]


@njit(cache=True)
def blas_dtrsm(side, uplo, transa, diag, m, n, alpha, a, aoff, lda, b, boff, ldb):
    """BLAS ``dtrsm``: ``B <- alpha op(A)^-1 B`` (side ``ord('L')``) or ``alpha B op(A)^-1``
    (``ord('R')``) for the column-major triangular ``A`` at ``a[aoff:]`` and the ``m x n`` ``B``
    at ``b[boff:]``; the characters as their ``ord``."""
    c = _np.empty(4, _np.uint8)
    c[0] = side
    c[1] = uplo
    c[2] = transa
    c[3] = diag
    iv = _np.empty(4, _np.int32)
    iv[0] = m
    iv[1] = n
    iv[2] = lda
    iv[3] = ldb
    al = _np.empty(1)
    al[0] = alpha
    _dtrsm(c.ctypes, c[1:].ctypes, c[2:].ctypes, c[3:].ctypes, iv.ctypes, iv[1:].ctypes, al.ctypes,
           a[aoff:].ctypes, iv[2:].ctypes, b[boff:].ctypes, iv[3:].ctypes)


@njit(cache=True)
def blas_dsyrk(uplo, trans, n, k, alpha, a, aoff, lda, beta, c, coff, ldc):
    """BLAS ``dsyrk``: ``C <- alpha A A^T + beta C`` (trans ``ord('N')``, ``A`` n x k) or
    ``alpha A^T A + beta C`` (``ord('T')``), triangle ``uplo`` of the column-major ``n x n``
    ``C`` at ``c[coff:]``."""
    ch = _np.empty(2, _np.uint8)
    ch[0] = uplo
    ch[1] = trans
    iv = _np.empty(4, _np.int32)
    iv[0] = n
    iv[1] = k
    iv[2] = lda
    iv[3] = ldc
    sc = _np.empty(2)
    sc[0] = alpha
    sc[1] = beta
    _dsyrk(ch.ctypes, ch[1:].ctypes, iv.ctypes, iv[1:].ctypes, sc.ctypes, a[aoff:].ctypes, iv[2:].ctypes,
           sc[1:].ctypes, c[coff:].ctypes, iv[3:].ctypes)


@njit(cache=True)
def blas_dgemm(transa, transb, m, n, k, alpha, a, aoff, lda, b, boff, ldb, beta, c, coff, ldc):
    """BLAS ``dgemm``: ``C <- alpha op(A) op(B) + beta C``, column-major, ``C`` (m x n) at
    ``c[coff:]``, ``op(A)`` (m x k) at ``a[aoff:]``, ``op(B)`` (k x n) at ``b[boff:]``."""
    ch = _np.empty(2, _np.uint8)
    ch[0] = transa
    ch[1] = transb
    iv = _np.empty(6, _np.int32)
    iv[0] = m
    iv[1] = n
    iv[2] = k
    iv[3] = lda
    iv[4] = ldb
    iv[5] = ldc
    sc = _np.empty(2)
    sc[0] = alpha
    sc[1] = beta
    _dgemm(ch.ctypes, ch[1:].ctypes, iv.ctypes, iv[1:].ctypes, iv[2:].ctypes, sc.ctypes, a[aoff:].ctypes,
           iv[3:].ctypes, b[boff:].ctypes, iv[4:].ctypes, sc[1:].ctypes, c[coff:].ctypes, iv[5:].ctypes)
