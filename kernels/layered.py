"""Newton on a layered network without forming a matrix: the Jacobian's layer structure.

Free nodes are in kernel order ``[K | E]`` (see :class:`fastres.system.KernelSystem`): the
layers of one parity class (``K``, nodes ``0..nK-1``), then the other (``E``). Layer ``l``
(1..L) occupies nodes ``off[l] : off[l] + nl[l]``. The Jacobian is block tridiagonal by layer:

    J = diag(d + diode conductances) - sum_l A_l (W_l between layers l-1 and l, both ways)

where ``d`` (nF,) S are the layer's conductance sums (shared by every sample), the diode
conductances (S) differ per sample, ``W_l`` (n_{l-1}, n_l) S are the conductance matrices
(``Ws[l - 2]``, l = 2..L; layer 0 is the fixed inputs) and ``A_l`` the amplifier gains. No two
nodes of one parity class are joined, so ``J = [[D_K, C], [C^T, D_E]]`` with diagonal ``D_K``,
``D_E`` and ``C`` made of the ``-A_l W_l`` blocks.

Each Newton direction solves ``J dx = -r`` by eliminating ``E`` exactly (it is diagonal) and
running conjugate gradients on the Schur complement ``S = D_K - C D_E^-1 C^T`` (SPD), Jacobi
preconditioned (by ``D_K``). That is CG with a red-black (layer-parity) Gauss-Seidel
preconditioner on the full system, and converges in half the iterations of Jacobi-PCG on it
for the same cost per iteration: one product with every ``W_l`` each way. Every product is a
minibatch matrix-matrix product (BLAS 3) against the shared ``W_l``; nothing per sample is
larger than a vector.

The Newton iteration around it is :mod:`fastres.kernels.newton`'s: the same energy line
search (Armijo and strong Wolfe on the co-content, ``t > 1`` allowed, cancellation-free energy
differences and their round-off floor), the same termination (the last step
``max|dx| <= tol_v = vntol + reltol max|x|`` V and, node by node, ``|r_i| <= max(abstol,
J_ii tol_v) + 16 eps J_ii max|x|`` A) and the same statuses. CG stops when the linear
residual, scaled node by node to volts (``|r_i + (J dx)_i| / J_ii``), is below
``max(eta_k * max_i |r_i| / J_ii, 0.01 tol_v)``. The forcing term ``eta_k`` (Eisenstat-Walker
choice 1, capped at ``eta_max``) is 0 by default (:class:`fastres.network.LayeredSystem`):
CG converges in a few iterations per direction, so exact directions, which keep the dense
path's Newton iteration counts, measured faster than inexact ones (README "Speed"). Any
truncated CG iterate is still a descent direction, and the termination test is on the true
residual, evaluated from scratch (the residual is otherwise updated by ``t G dx``, with
``G dx`` from the CG residual).

Arrays: per-sample arrays are sample-major (B, nF); the matrix products work on node-major
compact copies (nF, m) of the ``m`` samples still iterating, so each layer is a contiguous
block of rows.
"""
import math

import numpy as np
from numba import njit, prange

from .devices import (KIND_PWL, KIND_SHOCKLEY, beyond_imax, diode_carries, diode_exp, diode_ig,
                      diode_move, pwl_move)

CONVERGED = 0
MAXITER = 1
LINESEARCH = 2
SINGULAR = 3
BEYOND_IMAX = 4

EPS = 2.220446049250313e-16
ARMIJO = 1e-4
C2 = 0.1
MAX_LINESEARCH = 60
CG_FLOOR = 0.01   # CG is done once its scaled residual is below this fraction of tol_v (V)


@njit(cache=True, inline="always")
def dev(dkind, k):
    """Row of diode ``k`` in ``dkind`` (nD,) and ``dpar`` (nD, NPAR): ``k``, or 0 when the
    diodes share one kind and one parameter row (``dkind`` of length 1; see
    :meth:`fastres.network.LayeredSystem`), which keeps a wide layer's line search from
    streaming an (nD, NPAR) parameter table from memory for every sample and trial."""
    return k if dkind.shape[0] > 1 else 0


# -- products with the shared conductances --------------------------------------------------
@njit(cache=True)
def rows(v, o, n):
    """Rows ``o : o + n`` of a C-contiguous (nF, m) array, typed as C-contiguous for BLAS."""
    m = v.shape[1]
    return v.ravel()[o * m:(o + n) * m].reshape(n, m)


@njit(cache=True, parallel=True)
def _dot_rows(W, v, out, nchunks):
    """``out = W v`` (n0, m) for ``W`` (n0, n1), ``v`` (n1, m): row blocks of ``W`` in parallel."""
    n0 = W.shape[0]
    per = (n0 + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(n0, lo + per)
        if lo < hi:
            np.dot(rows(W, lo, hi - lo), v, rows(out, lo, hi - lo))


@njit(cache=True, parallel=True)
def _dot_trans(W, v, out, nchunks):
    """``out = W^T v`` (n1, m) for ``W`` (n0, n1), ``v`` (n0, m): row blocks of ``W`` (the
    contraction) in parallel, partial products summed."""
    n0 = W.shape[0]
    n1 = W.shape[1]
    m = v.shape[1]
    per = (n0 + nchunks - 1) // nchunks
    part = np.zeros((nchunks, n1, m))
    for c in prange(nchunks):
        lo = c * per
        hi = min(n0, lo + per)
        if lo < hi:
            np.dot(rows(W, lo, hi - lo).T, rows(v, lo, hi - lo), part[c])
    for i in range(n1):
        for j in range(m):
            s = 0.0
            for c in range(nchunks):
                s += part[c, i, j]
            out[i, j] = s


#: products of at least this many multiply-adds are split over the threads
PARALLEL_FROM = 200_000


@njit(cache=True)
def product(W, v, trans, t):
    """``W v`` or (``trans``) ``W^T v`` in BLAS, split over ``t`` threads when large."""
    n0, n1 = W.shape
    m = v.shape[1]
    out = np.empty((n0 if not trans else n1, m))
    if t > 1 and n0 * n1 * m >= PARALLEL_FROM and n0 >= 2 * t:
        if trans:
            _dot_trans(W, v, out, t)
        else:
            _dot_rows(W, v, out, t)
    elif trans:
        np.dot(W.T, v, out)
    else:
        np.dot(W, v, out)
    return out


@njit(cache=True)
def offdiag(v, Ws, gains, off, nl, nt, src, out):
    """``out = (J - diag J) v`` (A) restricted to the layers that layers with ``src[l]`` feed:
    rows of layers next to a source layer are overwritten, other rows are left alone.

    ``v``, ``out`` (nF, m) node-major, V and A. ``src`` (L + 1,) bool. Layers adjacent to two
    source layers get both contributions.
    """
    L = nl.shape[0] - 1
    for l in range(1, L + 1):  # clear the rows that will be written
        if (l >= 2 and src[l - 1]) or (l < L and src[l + 1]):
            o = off[l]
            out[o:o + nl[l], :] = 0.0
    for l in range(2, L + 1):
        W = Ws[l - 2]
        A = gains[l]
        o0 = off[l - 1]
        n0 = nl[l - 1]
        o1 = off[l]
        n1 = nl[l]
        if src[l - 1]:
            p = product(W, rows(v, o0, n0), True, nt)
            q = out[o1:o1 + n1, :]
            for i in range(n1):
                for j in range(p.shape[1]):
                    q[i, j] -= A * p[i, j]
        if src[l]:
            p = product(W, rows(v, o1, n1), False, nt)
            q = out[o0:o0 + n0, :]
            for i in range(n0):
                for j in range(p.shape[1]):
                    q[i, j] -= A * p[i, j]


#: nodes per block of a sample-major <-> node-major transpose: a block of the (n, m) node-major
#: side (BLOCK x m floats) stays in cache while every sample's row segment is visited, instead
#: of one strided pass over all n rows per sample (which, for a 32,768-node layer, streams the
#: whole array from memory once per sample)
BLOCK = 128


@njit(cache=True)
def gather_t(a, cols, out):
    """``out[:, j] = a[cols[j], :]``: (B, n) sample-major rows to (n, m) node-major columns."""
    n = a.shape[1]
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        for j in range(cols.shape[0]):
            s = cols[j]
            for i in range(i0, i1):
                out[i, j] = a[s, i]


@njit(cache=True)
def gff_wide(x, cols, W, A, nK, d, out):
    """:func:`gff_cols` for one hidden layer whose output layer is the K class (nodes
    ``0..nK-1``), ``W`` (nE, nK) S = ``W_2``, gain ``A``: two sample-major BLAS products
    (``x_E W`` and ``x_K W^T``, (m, nK) and (m, nE)) and no node-major copy of the hidden
    layer."""
    m = cols.shape[0]
    xK = np.empty((m, nK))
    xE = np.empty((m, x.shape[1] - nK))
    for j in range(m):
        xK[j] = x[cols[j], :nK]
        xE[j] = x[cols[j], nK:]
    pK = np.dot(xE, W)
    pE = np.dot(xK, W.T)
    for j in range(m):
        s = cols[j]
        for i in range(nK):
            out[s, i] = d[i] * x[s, i] - A * pK[j, i]
        for i in range(pE.shape[1]):
            out[s, nK + i] = d[nK + i] * x[s, nK + i] - A * pE[j, i]


@njit(cache=True)
def gff_cols(x, cols, Ws, gains, off, nl, nt, d, out):
    """``out[s] = G_FF x[s]`` (A) for the samples ``cols``; ``x``, ``out`` (B, nF), V and A."""
    if nl.shape[0] == 3 and off[2] == 0 and nt == 1:
        gff_wide(x, cols, Ws[0], gains[2], off[1], d, out)
        return
    nF = x.shape[1]
    m = cols.shape[0]
    L = nl.shape[0] - 1
    xt = np.empty((nF, m))
    gather_t(x, cols, xt)
    y = np.zeros((nF, m))
    src = np.ones(L + 1, dtype=np.bool_)
    offdiag(xt, Ws, gains, off, nl, nt, src, y)
    for i0 in range(0, nF, BLOCK):
        i1 = min(nF, i0 + BLOCK)
        for j in range(m):
            s = cols[j]
            for i in range(i0, i1):
                out[s, i] = d[i] * x[s, i] + y[i, j]


@njit(cache=True)
def stamp_row(s, move, t, Gdx, rlin, d, da, db, di, dg, r, Jd):
    """Residual ``r = rlin + i_diodes`` (A) and Jacobian diagonal ``Jd = d + g_diodes`` (S) of
    sample ``s``, from its diode currents ``di`` (A) and conductances ``dg`` (S) (B, nD), after
    moving its linear residual by ``t Gdx`` (A) if ``move`` (in the same pass). Diodes join a
    free node to a fixed one."""
    nF = rlin.shape[1]
    if move:
        for i in range(nF):
            rlin[s, i] += t * Gdx[s, i]
            r[s, i] = rlin[s, i]
            Jd[s, i] = d[i]
    else:
        for i in range(nF):
            r[s, i] = rlin[s, i]
            Jd[s, i] = d[i]
    for k in range(da.shape[0]):
        a = da[k]
        c = db[k]
        if a < nF:
            r[s, a] += di[s, k]
            Jd[s, a] += dg[s, k]
        if c < nF:
            r[s, c] -= di[s, k]
            Jd[s, c] += dg[s, k]


@njit(cache=True)
def stamp_cols(cols, rlin, d, da, db, di, dg, r, Jd):
    """:func:`stamp_row` (no move) for the samples ``cols``."""
    for j in range(cols.shape[0]):
        stamp_row(cols[j], False, 0.0, rlin, rlin, d, da, db, di, dg, r, Jd)


@njit(cache=True)
def assemble_cols(x, cols, b, Ws, gains, off, nl, nt, d, da, db, di, dg, rlin, r, Jd):
    """Residual ``r`` (A), its linear part ``rlin = G_FF x - b`` (A) and the Jacobian diagonal
    ``Jd`` (S) of the samples ``cols`` at ``x``, evaluated from scratch (see :func:`stamp_cols`)."""
    nF = x.shape[1]
    gff_cols(x, cols, Ws, gains, off, nl, nt, d, rlin)
    for j in range(cols.shape[0]):
        s = cols[j]
        for i in range(nF):
            rlin[s, i] -= b[s, i]
    stamp_cols(cols, rlin, d, da, db, di, dg, r, Jd)


@njit(cache=True)
def _all(flags):
    """True if every entry of the bool array ``flags`` is."""
    for j in range(flags.shape[0]):
        if not flags[j]:
            return False
    return True


# -- the linear solve ------------------------------------------------------------------------
@njit(cache=True)
def schur_cg(r, Jd, cols, Ws, gains, off, nl, nt, nK, srcK, srcE, target, maxcg, d, dx, Gdx,
             ok, cgit, lres):
    """Solve ``J dx = -r`` for the samples ``cols`` (see the module docstring).

    ``r``, ``Jd`` (B, nF) residual (A) and Jacobian diagonal (S); ``target`` (m,) V: stop a
    sample when ``max_i |r_i + (J dx)_i| / J_ii`` is at most this; ``maxcg`` iterations at most.
    Writes ``dx`` (B, nF) V, ``Gdx = G_FF dx`` (B, nF) A (from ``J dx = -r - e``, ``e`` the
    CG residual, minus the diode part ``(Jd - d) dx``: no product needed), ``ok`` (m,) False
    where the Jacobian is not positive definite or not finite, ``cgit`` (m,) iterations and
    ``lres`` (m,) the final scaled linear residual (V). One product with every ``W_l`` each way
    per iteration, and one more for the right-hand side (``C^T z`` is accumulated).
    """
    nF = r.shape[1]
    nE = nF - nK
    m = cols.shape[0]
    rt = np.empty((nF, m))
    gather_t(r, cols, rt)
    D = np.empty((nF, m))
    gather_t(Jd, cols, D)
    for j in range(m):
        ok[j] = True
        cgit[j] = 0
    for i in range(nF):
        for j in range(m):
            if not (D[i, j] > 0.0 and math.isfinite(D[i, j])):
                ok[j] = False
    w = np.zeros((nF, m))  # E part: D_E^-1 r_E
    for i in range(nK, nF):
        for j in range(m):
            w[i, j] = rt[i, j] / D[i, j]
    u = np.zeros((nF, m))
    offdiag(w, Ws, gains, off, nl, nt, srcE, u)  # u[:nK] = C D_E^-1 r_E
    res = np.empty((nK, m))
    for i in range(nK):
        for j in range(m):
            res[i, j] = -rt[i, j] + u[i, j]
    z = np.zeros((nK, m))
    p = np.zeros((nF, m))  # K part used; E part stays zero
    rz = np.zeros(m)
    done = np.zeros(m, dtype=np.bool_)
    # per-sample sums run over the nodes in ascending order, node-major (rows of the (n, m)
    # arrays in turn), so that every pass reads memory contiguously
    ssum = np.zeros(m)
    emax = np.zeros(m)
    for i in range(nK):
        for j in range(m):
            q = res[i, j] / D[i, j]
            p[i, j] = q
            ssum[j] += res[i, j] * q
            emax[j] = max(emax[j], abs(q))
    for j in range(m):
        rz[j] = ssum[j]
        lres[j] = emax[j]
        if emax[j] <= target[j] or not ok[j] or not (emax[j] == emax[j]):
            done[j] = True
    Sp = np.empty((nK, m))
    ctz = np.zeros((nE, m))  # C^T z, accumulated
    act = np.zeros(m, dtype=np.bool_)  # samples stepping in this iteration
    alpha = np.zeros(m)
    beta = np.zeros(m)
    pSp = np.zeros(m)
    it = 0
    while it < maxcg and not _all(done):
        it += 1
        # Sp = D_K p - C D_E^-1 C^T p
        offdiag(p, Ws, gains, off, nl, nt, srcK, u)  # u[nK:] = C^T p
        for i in range(nK, nF):
            for j in range(m):
                w[i, j] = u[i, j] / D[i, j]
        offdiag(w, Ws, gains, off, nl, nt, srcE, u)  # u[:nK] = C D_E^-1 C^T p
        for j in range(m):
            pSp[j] = 0.0
        for i in range(nK):
            for j in range(m):
                if not done[j]:
                    v = D[i, j] * p[i, j] - u[i, j]
                    Sp[i, j] = v
                    pSp[j] += p[i, j] * v
        for j in range(m):
            act[j] = False
            if done[j]:
                continue
            if not (pSp[j] > 0.0) or not math.isfinite(pSp[j]):
                if not (pSp[j] == 0.0 and rz[j] == 0.0):
                    ok[j] = False
                done[j] = True
                continue
            act[j] = True
            alpha[j] = rz[j] / pSp[j]
        for i in range(nE):
            for j in range(m):
                if act[j]:
                    ctz[i, j] += alpha[j] * u[nK + i, j]
        for j in range(m):
            ssum[j] = 0.0
            emax[j] = 0.0
        for i in range(nK):
            for j in range(m):
                if act[j]:
                    z[i, j] += alpha[j] * p[i, j]
                    res[i, j] -= alpha[j] * Sp[i, j]
                    q = res[i, j] / D[i, j]
                    ssum[j] += res[i, j] * q
                    emax[j] = max(emax[j], abs(q))
        for j in range(m):
            if act[j]:
                beta[j] = ssum[j] / rz[j]
                rz[j] = ssum[j]
                lres[j] = emax[j]
                cgit[j] = it
        for i in range(nK):
            for j in range(m):
                if act[j]:
                    p[i, j] = res[i, j] / D[i, j] + beta[j] * p[i, j]
        for j in range(m):
            if act[j] and emax[j] <= target[j]:
                done[j] = True
    # back-substitute E: dx_E = D_E^-1 (-r_E - C^T z); G dx = J dx - (Jd - d) dx
    for i0 in range(0, nF, BLOCK):
        i1 = min(nF, i0 + BLOCK)
        for j in range(m):
            s = cols[j]
            for i in range(i0, i1):
                if i < nK:
                    v = z[i, j]
                    dx[s, i] = v
                    Gdx[s, i] = -rt[i, j] - res[i, j] - (D[i, j] - d[i]) * v
                else:
                    v = (-rt[i, j] - ctz[i - nK, j]) / D[i, j]
                    dx[s, i] = v
                    Gdx[s, i] = -rt[i, j] - (D[i, j] - d[i]) * v


# -- one hidden layer: the hidden layer is never stored node-major -------------------------------
#: hidden rows per block of the one-hidden-layer products (a (WIDE_BLOCK, m) block and its
#: slice of W stay in cache between its two products)
WIDE_BLOCK = 256


@njit(cache=True)
def _wide_schur_product(W, A, Jd, cols, nK, v, tb, acc, out):
    """``out = A^2 W^T D_E^-1 W v`` (nK, m) A = ``C D_E^-1 C^T v`` of one hidden layer, for
    ``v`` (nK, m) V on the output (K) nodes: ``W`` (nE, nK) S the hidden-to-output
    conductances, ``D_E`` the hidden nodes' Jacobian diagonal read from ``Jd`` (B, nF) S of the
    samples ``cols``. Blocks of hidden rows: ``t = W[blk] v``, ``t / D_E``, ``W[blk]^T t``
    (``tb`` (WIDE_BLOCK, m), ``acc`` (nK, m) work arrays): one pass over ``W`` and ``D_E``."""
    nE = W.shape[0]
    m = cols.shape[0]
    out[:, :] = 0.0
    for lo in range(0, nE, WIDE_BLOCK):
        n = min(WIDE_BLOCK, nE - lo)
        Wb = rows(W, lo, n)
        t = rows(tb, 0, n)
        np.dot(Wb, v, t)
        for j in range(m):
            s = cols[j]
            for i in range(n):
                t[i, j] /= Jd[s, nK + lo + i]
        np.dot(Wb.T, t, acc)
        for i in range(nK):
            for j in range(m):
                out[i, j] += acc[i, j]
    for i in range(nK):
        for j in range(m):
            out[i, j] *= A * A


@njit(cache=True)
def schur_cg_wide(r, Jd, cols, W, A, nK, target, maxcg, d, dx, Gdx, ok, cgit, lres):
    """:func:`schur_cg` for a network with one hidden layer (L = 2): K is the output layer
    (nodes ``0..nK-1``), E the hidden layer, ``C = -A W^T`` with ``W`` (nE, nK) S = ``W_2``.

    Same arguments, iteration and stopping rule as :func:`schur_cg`; only the products differ:
    the hidden layer's (nE, m) blocks are never gathered node-major nor stored. Each product
    with the Schur complement is one pass over ``W`` and the hidden diagonal in blocks
    (:func:`_wide_schur_product`), and ``dx_E = D_E^-1 (-r_E + A W z)`` is formed by one more
    pass at the end. Work per CG iteration: ``4 nE nK m`` flops, reading ``W`` once and the
    hidden diagonal of the ``m`` samples once."""
    nF = r.shape[1]
    nE = nF - nK
    m = cols.shape[0]
    rK = np.empty((nK, m))
    D = np.empty((nK, m))
    for j in range(m):
        s = cols[j]
        ok[j] = True
        cgit[j] = 0
        for i in range(nK):
            rK[i, j] = r[s, i]
            D[i, j] = Jd[s, i]
        for i in range(nF):
            if not (Jd[s, i] > 0.0 and math.isfinite(Jd[s, i])):
                ok[j] = False
    tb = np.empty((WIDE_BLOCK, m))
    acc = np.empty((nK, m))
    u = np.empty((nK, m))
    # right-hand side: -r_K + C D_E^-1 r_E = -r_K - A W^T (r_E / D_E)
    u[:, :] = 0.0
    for lo in range(0, nE, WIDE_BLOCK):
        n = min(WIDE_BLOCK, nE - lo)
        t = rows(tb, 0, n)
        for j in range(m):
            s = cols[j]
            for i in range(n):
                t[i, j] = r[s, nK + lo + i] / Jd[s, nK + lo + i]
        np.dot(rows(W, lo, n).T, t, acc)
        for i in range(nK):
            for j in range(m):
                u[i, j] += acc[i, j]
    res = np.empty((nK, m))
    for i in range(nK):
        for j in range(m):
            res[i, j] = -rK[i, j] - A * u[i, j]
    z = np.zeros((nK, m))
    p = np.zeros((nK, m))
    rz = np.zeros(m)
    done = np.zeros(m, dtype=np.bool_)
    Sp = np.empty((nK, m))
    for j in range(m):
        s = 0.0
        e = 0.0
        for i in range(nK):
            q = res[i, j] / D[i, j]
            p[i, j] = q
            s += res[i, j] * q
            e = max(e, abs(q))
        rz[j] = s
        lres[j] = e
        if e <= target[j] or not ok[j] or not (e == e):
            done[j] = True
    it = 0
    while it < maxcg and not _all(done):
        it += 1
        _wide_schur_product(W, A, Jd, cols, nK, p, tb, acc, u)  # C D_E^-1 C^T p
        for j in range(m):
            if done[j]:
                continue
            pSp = 0.0
            for i in range(nK):
                v = D[i, j] * p[i, j] - u[i, j]
                Sp[i, j] = v
                pSp += p[i, j] * v
            if not (pSp > 0.0) or not math.isfinite(pSp):
                if not (pSp == 0.0 and rz[j] == 0.0):
                    ok[j] = False
                done[j] = True
                continue
            alpha = rz[j] / pSp
            s = 0.0
            e = 0.0
            for i in range(nK):
                z[i, j] += alpha * p[i, j]
                res[i, j] -= alpha * Sp[i, j]
                q = res[i, j] / D[i, j]
                s += res[i, j] * q
                e = max(e, abs(q))
            beta = s / rz[j]
            rz[j] = s
            lres[j] = e
            cgit[j] = it
            for i in range(nK):
                p[i, j] = res[i, j] / D[i, j] + beta * p[i, j]
            if e <= target[j]:
                done[j] = True
    # back-substitute: dx_K = z, dx_E = D_E^-1 (-r_E - C^T z) = D_E^-1 (-r_E + A W z);
    # G dx = J dx - (Jd - d) dx (exact on E, -r - e on K with e the CG residual)
    for j in range(m):
        s = cols[j]
        for i in range(nK):
            v = z[i, j]
            dx[s, i] = v
            Gdx[s, i] = -rK[i, j] - res[i, j] - (D[i, j] - d[i]) * v
    # (a direction whose CG took no iteration, e.g. the last, confirming step of a phase, has
    # z = 0: the product W z is exactly 0 then and is not formed)
    zero = True
    for i in range(nK):
        for j in range(m):
            if z[i, j] != 0.0:
                zero = False
    for lo in range(0, nE, WIDE_BLOCK):
        n = min(WIDE_BLOCK, nE - lo)
        t = rows(tb, 0, n)
        if zero:
            t[:, :] = 0.0
        else:
            np.dot(rows(W, lo, n), z, t)
        for j in range(m):
            s = cols[j]
            for i in range(n):
                k = nK + lo + i
                v = (-r[s, k] + A * t[i, j]) / Jd[s, k]
                dx[s, k] = v
                Gdx[s, k] = -r[s, k] - (Jd[s, k] - d[k]) * v


@njit(cache=True)
def direction(r, Jd, cols, Ws, gains, off, nl, nt, nK, srcK, srcE, target, maxcg, d, dx, Gdx,
              ok, cgit, lres):
    """The Newton direction by :func:`schur_cg_wide` for one hidden layer whose CG class is
    the output layer, else by :func:`schur_cg` (same arguments and results)."""
    if nl.shape[0] == 3 and off[2] == 0:
        schur_cg_wide(r, Jd, cols, Ws[0], gains[2], nK, target, maxcg, d, dx, Gdx, ok, cgit, lres)
    else:
        schur_cg(r, Jd, cols, Ws, gains, off, nl, nt, nK, srcK, srcE, target, maxcg, d, dx, Gdx,
                 ok, cgit, lres)


# -- the per-sample line search (as in kernels/newton.py) -------------------------------------
@njit(cache=True)
def shockley_vcrit(dkind, dpar):
    """(len(dkind),) V: each Shockley diode's critical voltage ``vte ln(vte / (sqrt(2) IS))``
    (0 for other kinds), computed once per solve rather than per sample and line search."""
    vcrit = np.zeros(dkind.shape[0])
    for k in range(dkind.shape[0]):
        if dkind[k] == KIND_SHOCKLEY:
            IS = dpar[k, 0]
            vte = dpar[k, 1]
            vcrit[k] = vte * math.log(vte / (1.4142135623730951 * IS))
    return vcrit


@njit(cache=True)
def carries(dkind):
    """True if some diode of ``dkind`` carries an exponential between moves
    (:func:`~fastres.kernels.devices.diode_carries`)."""
    for q in range(dkind.shape[0]):
        if diode_carries(dkind[q]):
            return True
    return False


@njit(cache=True)
def _first_trial(vext, dxe, da, db, dkind, dpar, vcrit):
    """First step length: 1, or less where a Shockley diode would be driven far up its
    exponential (beyond ``vcrit + 10 N vt``, ``vcrit`` (nD,) V from :func:`shockley_vcrit`);
    see :mod:`fastres.kernels.newton`."""
    t = 1.0
    for k in range(da.shape[0]):
        q = dev(dkind, k)
        if dkind[q] != KIND_SHOCKLEY:
            continue
        a = da[k]
        c = db[k]
        h = dxe[a] - dxe[c]
        if h <= 0.0:
            continue
        v = vext[a] - vext[c]
        vte = dpar[q, 1]
        vlim = max(v, vcrit[q]) + 10.0 * vte
        if v + h > vlim:
            t = min(t, (vlim - v) / h)
    return t


@njit(cache=True)
def _trial(t, g1, g2, vext, dxe, da, db, dkind, dpar, carry, ev, di_t, dg_t, ev_t):
    """Energy change (W), phi'(t), phi''(t) and the energy's round-off scale (W) at
    ``x + t dx``; fills the trial caches (see :mod:`fastres.kernels.newton`). ``carry``: some
    diode carries an exponential in ``ev`` (:func:`carries`); else ``ev``, ``ev_t`` are not
    touched (every such model's move ignores and returns 0 for it)."""
    dEn = t * g1 + 0.5 * t * t * g2
    d1 = g1 + t * g2
    d2 = g2
    scale = 0.0
    for k in range(da.shape[0]):
        a = da[k]
        c = db[k]
        h = dxe[a] - dxe[c]
        wa = vext[a] + t * dxe[a]
        wc = vext[c] + t * dxe[c]
        w = wa - wc
        q = dev(dkind, k)
        dphi, i, g, evn = diode_move(dkind[q], dpar[q], vext[a] - vext[c],
                                     ev[k] if carry else 0.0, w)
        scale += abs(i) * (abs(wa) + abs(wc))
        di_t[k] = i
        dg_t[k] = g
        if carry:
            ev_t[k] = evn
        dEn += dphi
        d1 += i * h
        d2 += g * h * h
    return dEn, d1, d2, scale


@njit(cache=True)
def fixed_ends(da, db, nF, vdfix, dkind):
    """The line search's fast form of the diodes, when every diode joins one free node to one
    fixed node and all share one parameter row of the piecewise-linear kind (every layered
    network with pwl diodes; Shockley diodes, whose exponentials dominate, keep the general
    trial): ``(dfn,
    dan, vf)`` with ``dfn`` (nD,) int64 each diode's free node, ``dan`` (nD,) bool True where
    that node is the anode, ``vf`` (B or 1, nD) V the fixed end's voltage per row of
    ``vdfix``. Otherwise empty arrays (``dfn`` of length 0): the general trial is used."""
    nD = da.shape[0]
    ok = dkind.shape[0] == 1 and dkind[0] == KIND_PWL
    for k in range(nD):
        if (da[k] < nF) == (db[k] < nF):
            ok = False
    if not ok:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.bool_), np.zeros((0, 0))
    dfn = np.empty(nD, dtype=np.int64)
    dan = np.empty(nD, dtype=np.bool_)
    vf = np.empty((vdfix.shape[0], nD))
    for k in range(nD):
        dan[k] = da[k] < nF
        dfn[k] = da[k] if dan[k] else db[k]
        c = db[k] if dan[k] else da[k]
        for q in range(vdfix.shape[0]):
            vf[q, k] = vdfix[q, c - nF]
    return dfn, dan, vf


@njit(cache=True, inline="always")
def _fixed_move(t, xs, dxs, f, vfk, anode):
    """A diode from free node ``f`` to a fixed node at ``vfk`` (V) along ``xs + t dxs``:
    ``(h, v, w, scale)`` its voltage's rate (V per unit t), voltage at 0 and at ``t`` (V), and
    ``|V_a(t)| + |V_c(t)|`` (V), with the same operations as :func:`_trial`'s."""
    xf = xs[f]
    df = dxs[f]
    wf = xf + t * df
    if anode:
        return df - 0.0, xf - vfk, wf - vfk, abs(wf) + abs(vfk)
    return 0.0 - df, vfk - xf, vfk - wf, abs(wf) + abs(vfk)


@njit(cache=True)
def _trial_fixed(t, g1, g2, xs, dxs, dfn, dan, vf, p, di_t, dg_t):
    """:func:`_trial` for piecewise-linear diodes in :func:`fixed_ends` form sharing the
    parameter row ``p`` (``xs``, ``dxs`` (nF,) one sample's voltages and step in V, ``vf``
    (nD,) V): the same values bit for bit, without gathering the sample into extended arrays
    and with no other model's branches in the loop (no exponentials to carry)."""
    dEn = t * g1 + 0.5 * t * t * g2
    d1 = g1 + t * g2
    d2 = g2
    scale = 0.0
    for k in range(dfn.shape[0]):
        h, v, w, sc = _fixed_move(t, xs, dxs, dfn[k], vf[k], dan[k])
        dphi, i, g, _ = pwl_move(p, v, 0.0, w)
        scale += abs(i) * sc
        di_t[k] = i
        dg_t[k] = g
        dEn += dphi
        d1 += i * h
        d2 += g * h * h
    return dEn, d1, d2, scale


@njit(cache=True)
def line_search_sample(s, x, dx, rlin, r, Gdx, b, vdfix, da, db, dkind, dpar, vcrit, carry, fx,
                       di, dg, ev, reltol, vntol):
    """Line search along ``dx[s]`` and the update of sample ``s`` (x, di, dg, ev in place);
    ``fx`` the diodes in :func:`fixed_ends` form (trials by :func:`_trial_fixed`) or empty.

    Returns ``(status, t, step, xabs)``: ``status`` -1 for a step taken (length ``t``, ``step``
    = t max|dx| in V, ``xabs`` = max|x[s]| V after it, formed in the update's pass), else
    SINGULAR (non-finite direction) or LINESEARCH (then ``x[s]`` is unchanged and ``di[s]``,
    ``dg[s]`` hold the last trial's values: the sample is finished)."""
    nF = x.shape[1]
    nXd = vdfix.shape[1]
    nD = da.shape[0]
    dfn, dan, vf = fx
    fixed = dfn.shape[0] == nD and nD > 0
    row = s if vdfix.shape[0] > 1 else 0
    # the general trial and a Shockley first trial read the sample in extended arrays
    ext = not fixed or carry
    vext = np.empty(nF + nXd if ext else 0)
    dxe = np.zeros(nF + nXd if ext else 0)
    if ext:
        for i in range(nF):
            vext[i] = x[s, i]
            dxe[i] = dx[s, i]
        for j in range(nXd):
            vext[nF + j] = vdfix[row, j]
    xs = x[s]
    dxs = dx[s]
    g1 = 0.0
    g2 = 0.0
    slope = 0.0
    xmax = 0.0
    dxmax = 0.0
    lin_scale = 0.0
    for i in range(nF):
        xi = x[s, i]
        lin_scale += abs(rlin[s, i] + b[s, i]) * abs(xi) + abs(b[s, i]) * abs(xi)
        g1 += rlin[s, i] * dxs[i]
        g2 += dxs[i] * Gdx[s, i]
        slope += r[s, i] * dxs[i]
        xmax = max(xmax, abs(xi))
        a = abs(dxs[i])
        if a > dxmax or a != a:
            dxmax = a
    if not math.isfinite(dxmax):
        return SINGULAR, 0.0, 0.0, 0.0
    tol_step = vntol + reltol * xmax
    tiny = dxmax <= tol_step
    t = 1.0 if tiny or not carry else _first_trial(vext, dxe, da, db, dkind, dpar, vcrit)
    lo = 0.0
    hi = math.inf
    accepted = False
    # trials write the currents and conductances straight into the sample's rows (the trial
    # point's values are not needed after the next trial, and the accepted one's are kept);
    # only the exponential caches, which a later trial starts from, go to a copy
    di_t = di[s]
    dg_t = dg[s]
    ev_t = np.empty(nD if carry else 0)
    evs = ev[s]
    for _ in range(MAX_LINESEARCH):
        if fixed:
            dEn, d1, d2, dscale = _trial_fixed(t, g1, g2, xs, dxs, dfn, dan, vf[row if vf.shape[0] > 1 else 0],
                                               dpar[0], di_t, dg_t)
        else:
            dEn, d1, d2, dscale = _trial(t, g1, g2, vext, dxe, da, db, dkind, dpar, carry, evs,
                                         di_t, dg_t, ev_t)
        if tiny:
            accepted = True
            break
        decrease = dEn <= ARMIJO * t * slope + 8.0 * EPS * (lin_scale + dscale)
        if not (math.isfinite(dEn) and math.isfinite(d1)) or not decrease or d1 > 0.0:
            if math.isfinite(dEn) and math.isfinite(d1) and decrease \
                    and abs(d1) <= C2 * abs(slope):
                accepted = True
                break
            hi = t
        else:
            if abs(d1) <= C2 * abs(slope):
                accepted = True
                break
            lo = t
        tn = t - d1 / d2 if (math.isfinite(d1) and math.isfinite(d2) and d2 > 0.0) else -1.0
        if hi == math.inf:
            t = tn if tn > 2.0 * lo else 2.0 * lo
        elif tn > lo + 0.01 * (hi - lo) and tn < hi - 0.25 * (hi - lo):
            t = tn
        else:
            t = 0.5 * (lo + hi)
        if hi < math.inf and hi - lo <= 1e-14 * hi:
            break
    if not accepted:
        if lo > 0.0:
            t = lo
            if fixed:
                _trial_fixed(t, g1, g2, xs, dxs, dfn, dan, vf[row if vf.shape[0] > 1 else 0], dpar[0],
                             di_t, dg_t)
            else:
                _trial(t, g1, g2, vext, dxe, da, db, dkind, dpar, carry, evs, di_t, dg_t, ev_t)
        else:
            return LINESEARCH, 0.0, 0.0, 0.0
    xabs = 0.0
    for i in range(nF):
        x[s, i] += t * dxs[i]
        xabs = max(xabs, abs(x[s, i]))
    if carry:
        for k in range(nD):
            ev[s, k] = ev_t[k]
    return -1, t, t * dxmax, xabs


@njit(cache=True, parallel=True)
def line_search_cols(cols, x, dx, rlin, r, Gdx, b, vdfix, da, db, dkind, dpar, vcrit, carry, fx,
                     di, dg, ev, reltol, vntol, flag, tstep, step, xabs, ok, d, Jd):
    """:func:`line_search_sample` for every sample of ``cols``, in parallel; ``flag``, ``tstep``,
    ``step`` (m,) its results; ``xabs`` (B,) V: max|x[s]| of each sample that took a step.
    A sample that took a step that is not small (``step > vntol + reltol xabs``) and whose
    direction was sound (``ok`` (m,)) gets its linear residual moved by ``t G dx`` and its
    residual ``r`` and Jacobian diagonal ``Jd`` stamped here (:func:`stamp_row`, ``d`` (nF,)
    S), in the same parallel region; the others are left to the caller."""
    for j in prange(cols.shape[0]):
        s = cols[j]
        f, t, st, xa = line_search_sample(s, x, dx, rlin, r, Gdx, b, vdfix, da, db, dkind,
                                          dpar, vcrit, carry, fx, di, dg, ev, reltol, vntol)
        flag[j] = f
        tstep[j] = t
        step[j] = st
        if f < 0:
            xabs[s] = xa
            if ok[j] and not (st <= vntol + reltol * xa):
                stamp_row(s, True, t, Gdx, rlin, d, da, db, di, dg, r, Jd)


@njit(cache=True, parallel=True)
def diodes_init(x, vdfix, da, db, dkind, dpar, di, dg, ev, known):
    """Diode currents ``di`` (A), conductances ``dg`` (S) and exponential caches ``ev`` (B, nD)
    at ``x`` (B, nF) V, for the samples whose ``known`` (B,) is False (the others' rows are
    left as given)."""
    nF = x.shape[1]
    for j in prange(x.shape[0]):
        s = np.int64(j)
        if known[s]:
            continue
        row = s if vdfix.shape[0] > 1 else np.int64(0)
        for k in range(da.shape[0]):
            a = da[k]
            c = db[k]
            va = x[s, a] if a < nF else vdfix[row, a - nF]
            vc = x[s, c] if c < nF else vdfix[row, c - nF]
            q = dev(dkind, k)
            di[s, k], dg[s, k] = diode_ig(dkind[q], dpar[q], va - vc)
            ev[s, k] = diode_exp(dkind[q], dpar[q], va - vc)


# -- Newton ---------------------------------------------------------------------------------
@njit(cache=True)
def _scaled_max(r, Jd, s):
    e = 0.0
    for i in range(r.shape[1]):
        q = abs(r[s, i]) / Jd[s, i]
        if q > e or q != q:
            e = q
    return e


@njit(cache=True)
def solve_layered(Ws, gains, off, nl, nt, nK, d, b, vdfix, da, db, dkind, dpar, x,
                  reltol, vntol, abstol, maxiter, eta0, eta_max, maxcg, gx, gx_ok, di, dg, ev,
                  iterations, residual, status, cg_iterations):
    """Solve every sample of a batch in place in ``x`` (B, nF) V (see the module docstring).

    ``Ws`` tuple of ``W_l`` (n_{l-1}, n_l) S for l = 2..L (one (0, 0) dummy if L = 1);
    ``gains`` (L + 1,) ``A_l``; ``off``, ``nl`` (L + 1,) int64 layer offsets and sizes in kernel
    order; ``nK`` nodes of the CG class; ``d`` (nF,) S the conductance sums; ``b`` (B, nF) A,
    ``vdfix`` (B or 1, nXd) V, diodes as in :class:`~fastres.system.KernelSystem`. ``eta0`` the
    first forcing term, ``maxcg`` CG iterations per direction at most. ``gx`` (B, nF) A with
    ``gx_ok`` (B,) bool: ``G_FF x`` of the starting point where known (evaluated from scratch
    at exactly this ``x``, e.g. the free phase's solution for a nudged phase), else evaluated
    here; on return ``G_FF x`` of the solution, ``gx_ok`` where it was evaluated from scratch
    (the converged samples). ``di``, ``dg``, ``ev`` (B, nD): the diodes' currents (A),
    conductances (S) and exponential caches, given at the start for the samples of ``gx_ok``
    (the solution they come from), evaluated here for the others; on return those of ``x``. Outputs (B,): ``iterations``, ``residual`` (A), ``status``,
    ``cg_iterations`` (summed over directions).
    """
    B, nF = x.shape
    nD = da.shape[0]
    L = nl.shape[0] - 1
    srcK, srcE = _source_sides(off, nK, L)
    vcrit = shockley_vcrit(dkind, dpar)
    carry = carries(dkind)
    fx = fixed_ends(da, db, nF, vdfix, dkind)
    rlin = np.empty((B, nF))
    r = np.empty((B, nF))
    Jd = np.empty((B, nF))
    dx = np.zeros((B, nF))
    Gdx = np.empty((B, nF))
    step_small = np.zeros(B, dtype=np.bool_)
    rs_prev = np.zeros(B)          # scaled residual max_i |r_i| / J_ii (V) of the last iterate
    lres_prev = np.full(B, -1.0)   # scaled linear residual predicted by the last full step
    diodes_init(x, vdfix, da, db, dkind, dpar, di, dg, ev, gx_ok)
    nknown = 0
    for s in range(B):
        if gx_ok[s]:
            nknown += 1
    known = np.empty(nknown, dtype=np.int64)
    fresh = np.empty(B - nknown, dtype=np.int64)
    i = 0
    q = 0
    for s in range(B):
        if gx_ok[s]:
            known[i] = s
            i += 1
            for k in range(nF):
                rlin[s, k] = gx[s, k] - b[s, k]
        else:
            fresh[q] = s
            q += 1
    if nknown > 0:
        stamp_cols(known, rlin, d, da, db, di, dg, r, Jd)
    if nknown < B:
        assemble_cols(x, fresh, b, Ws, gains, off, nl, nt, d, da, db, di, dg, rlin, r, Jd)
    # max|x[s]| (V) of every sample's current iterate: formed here and by the line search's
    # update pass, not again by every test below (the same values)
    xa = np.empty(B)
    for s in range(B):
        iterations[s] = 0
        cg_iterations[s] = 0
        status[s] = -1
        e = 0.0
        for i in range(nF):
            e = max(e, abs(x[s, i]))
        xa[s] = e
    while True:
        # per-sample termination tests, on the true residual
        nact = 0
        for s in range(B):
            if status[s] >= 0:
                continue
            rmax = 0.0
            xabs = xa[s]
            for i in range(nF):
                a = abs(r[s, i])
                if a > rmax or a != a:
                    rmax = a
            residual[s] = rmax
            if not math.isfinite(rmax):
                status[s] = SINGULAR
                continue
            if step_small[s]:
                tol_v = vntol + reltol * xabs
                small = True
                for i in range(nF):
                    jii = Jd[s, i]
                    if not (abs(r[s, i]) <= max(abstol, jii * tol_v) + 16.0 * EPS * jii * xabs):
                        small = False
                        break
                if small:
                    status[s] = CONVERGED
                    row = s if vdfix.shape[0] > 1 else 0
                    for k in range(nD):
                        a = da[k]
                        c = db[k]
                        va = x[s, a] if a < nF else vdfix[row, a - nF]
                        vc = x[s, c] if c < nF else vdfix[row, c - nF]
                        q = dev(dkind, k)
                        if beyond_imax(dkind[q], dpar[q], va - vc):
                            status[s] = BEYOND_IMAX
                            break
                    continue
            if iterations[s] >= maxiter:
                status[s] = MAXITER
                continue
            nact += 1
        if nact == 0:
            break
        cols = np.empty(nact, dtype=np.int64)
        j = 0
        for s in range(B):
            if status[s] < 0:
                cols[j] = s
                j += 1
        # forcing terms and CG targets (V)
        target = np.empty(nact)
        for j in range(nact):
            s = cols[j]
            floor = CG_FLOOR * (vntol + reltol * xa[s])
            if eta_max <= 0.0 and eta0 <= 0.0:
                # no forcing term (the default): eta_k = 0 and the target is the floor (the
                # scaled residual, a pass with a division per node, is not needed; a sample
                # whose diagonal is not positive and finite is SINGULAR in the CG either way)
                target[j] = floor
                continue
            rs = _scaled_max(r, Jd, s)
            if lres_prev[s] >= 0.0 and rs_prev[s] > 0.0:
                # Eisenstat-Walker choice 1: | |r_k| - |r_{k-1} + J dx_{k-1}| | / |r_{k-1}|
                e = abs(rs - lres_prev[s]) / rs_prev[s]
                eta_k = min(eta_max, e)
            else:
                eta_k = min(eta_max, eta0)
            target[j] = max(eta_k * rs, floor)
            rs_prev[s] = rs
        ok = np.empty(nact, dtype=np.bool_)
        cgit = np.empty(nact, dtype=np.int64)
        lres = np.empty(nact)
        direction(r, Jd, cols, Ws, gains, off, nl, nt, nK, srcK, srcE, target, maxcg, d, dx, Gdx,
                  ok, cgit, lres)
        flag = np.empty(nact, dtype=np.int64)
        tstep = np.empty(nact)
        step = np.empty(nact)
        line_search_cols(cols, x, dx, rlin, r, Gdx, b, vdfix, da, db, dkind, dpar, vcrit, carry,
                         fx, di, dg, ev, reltol, vntol, flag, tstep, step, xa, ok, d, Jd)
        for j in range(nact):
            s = cols[j]
            cg_iterations[s] += cgit[j]
            if not ok[j]:
                status[s] = SINGULAR
            elif flag[j] >= 0:
                status[s] = flag[j]
        # the linear part of the residual moved by t G dx (and the residual was stamped) in the
        # line search's pass; samples whose step was small (about to be tested for
        # convergence) get it evaluated from scratch instead
        nexact = 0
        for j in range(nact):
            s = cols[j]
            if status[s] < 0:
                step_small[s] = step[j] <= vntol + reltol * xa[s]
                if step_small[s]:
                    nexact += 1
                iterations[s] += 1
                # the last linear model's predicted residual, for the next forcing term
                # (only meaningful for a full step along it)
                lres_prev[s] = lres[j] if tstep[j] == 1.0 else -1.0
        exact = np.empty(nexact, dtype=np.int64)
        q = 0
        for j in range(nact):
            s = cols[j]
            if status[s] < 0 and step_small[s]:
                exact[q] = s
                q += 1
        if nexact > 0:
            assemble_cols(x, exact, b, Ws, gains, off, nl, nt, d, da, db, di, dg, rlin, r, Jd)
    for s in range(B):
        if status[s] < 0:
            status[s] = MAXITER
        gx_ok[s] = status[s] == CONVERGED or status[s] == BEYOND_IMAX
        for k in range(nF):
            gx[s, k] = rlin[s, k] + b[s, k]


@njit(cache=True)
def _source_sides(off, nK, L):
    """(L + 1,) bool masks: layer ``l`` (1..L) lies among the K nodes (``srcK``) or the E nodes
    (``srcE``) of the layer-parity split, by its offset ``off[l]``."""
    srcK = np.zeros(L + 1, dtype=np.bool_)
    srcE = np.zeros(L + 1, dtype=np.bool_)
    for l in range(1, L + 1):
        if off[l] < nK:
            srcK[l] = True
        else:
            srcE[l] = True
    return srcK, srcE


@njit(cache=True)
def adjoint_layered(Ws, gains, off, nl, nt, nK, d, vdfix, da, db, dkind, dpar, x, rhs, out, rtol, maxcg):
    """``out[s] = J(x[s])^-1 rhs[s]`` (B, nF) by the same reduced CG, to a scaled residual of
    ``rtol`` times the right-hand side's (or until ``maxcg`` iterations); rows NaN where the
    Jacobian is not positive definite. Returns the CG iterations (B,)."""
    B, nF = x.shape
    nD = da.shape[0]
    L = nl.shape[0] - 1
    srcK, srcE = _source_sides(off, nK, L)
    di = np.empty((B, nD))
    dg = np.empty((B, nD))
    ev = np.empty((B, nD))
    diodes_init(x, vdfix, da, db, dkind, dpar, di, dg, ev, np.zeros(B, dtype=np.bool_))
    Jd = np.empty((B, nF))
    r = np.empty((B, nF))
    for s in range(B):
        for i in range(nF):
            Jd[s, i] = d[i]
            r[s, i] = -rhs[s, i]
        for k in range(nD):
            if da[k] < nF:
                Jd[s, da[k]] += dg[s, k]
            if db[k] < nF:
                Jd[s, db[k]] += dg[s, k]
    cols = np.arange(B)
    target = np.empty(B)
    for s in range(B):
        target[s] = rtol * _scaled_max(r, Jd, s)
    ok = np.empty(B, dtype=np.bool_)
    cgit = np.empty(B, dtype=np.int64)
    lres = np.empty(B)
    Gdx = np.empty((B, nF))
    direction(r, Jd, cols, Ws, gains, off, nl, nt, nK, srcK, srcE, target, maxcg, d, out, Gdx,
              ok, cgit, lres)
    for s in range(B):
        if not ok[s]:
            for i in range(nF):
                out[s, i] = np.nan
    return cgit


# -- the feed-forward start's node clamp -------------------------------------------------------
@njit(cache=True)
def node_clamp_rows(v, cur, diag, rlo, rhi, IS, vte, iterations, s):
    """Scalar Newton per node, in place on row ``s`` of ``v`` (B, n) V: ``diag v - cur +
    i_hi(v) - i_lo(v) = 0`` for a node alone with its two Shockley diodes (saturation current
    ``IS`` A, ``vte`` V, exponentials only) to rails ``rlo``, ``rhi`` (n,) V, ``diag`` (n,) S,
    ``cur`` (B, n) A; ``iterations`` steps, each limited to 0.1 V. The same operations in the
    same order as the numpy formulation (tests/naive.py: node_clamp), node by node: the same
    values."""
    for i in range(v.shape[1]):
        x = v[s, i]
        for _ in range(iterations):
            ehi = math.exp(min((x - rhi[i]) / vte, 700.0))
            elo = math.exp(min((rlo[i] - x) / vte, 700.0))
            f = diag[i] * x - cur[s, i] + IS * (ehi - elo)
            fp = diag[i] + IS * (ehi + elo) / vte
            q = f / fp
            if q < -0.1:
                q = -0.1
            elif q > 0.1:
                q = 0.1
            x = x - q
        v[s, i] = x


#: :func:`node_clamp` splits the samples over the threads from this many nodes in all (a short
#: parallel region waits for busy cores: README "Threads and busy machines")
CLAMP_PARALLEL_FROM = 1 << 16


@njit(cache=True, parallel=True)
def _node_clamp_parallel(v, cur, diag, rlo, rhi, IS, vte, iterations):
    for s in prange(v.shape[0]):
        node_clamp_rows(v, cur, diag, rlo, rhi, IS, vte, iterations, s)


@njit(cache=True)
def node_clamp(v, cur, diag, rlo, rhi, IS, vte, iterations):
    """:func:`node_clamp_rows` for every sample of ``v`` (B, n) V, in place; the samples split
    over the threads for a layer of at least :data:`CLAMP_PARALLEL_FROM` nodes in all."""
    if v.shape[0] * v.shape[1] >= CLAMP_PARALLEL_FROM:
        _node_clamp_parallel(v, cur, diag, rlo, rhi, IS, vte, iterations)
    else:
        for s in range(v.shape[0]):
            node_clamp_rows(v, cur, diag, rlo, rhi, IS, vte, iterations, s)

@njit(cache=True, parallel=True)
def solve_layered_b(Ws, gains, off, nl, nK, d, b, vdfix, da, db, dkind, dpar, x,
                    reltol, vntol, abstol, maxiter, eta0, eta_max, maxcg, gx, gx_ok, di, dg, ev,
                    nchunks, iterations, residual, status, cg_iterations):
    """:func:`solve_layered` on ``nchunks`` contiguous chunks of samples in parallel (one long
    parallel region; each chunk's products are minibatch products of its own samples)."""
    B = x.shape[0]
    per = (B + nchunks - 1) // nchunks
    for c in prange(nchunks):
        lo = c * per
        hi = min(B, lo + per)
        if lo < hi:
            n = hi - lo
            vd = rows(vdfix, lo, n) if vdfix.shape[0] > 1 else vdfix
            solve_layered(Ws, gains, off, nl, 1, nK, d, rows(b, lo, n), vd, da, db, dkind, dpar,
                          rows(x, lo, n), reltol, vntol, abstol, maxiter, eta0, eta_max, maxcg,
                          rows(gx, lo, n), gx_ok[lo:hi], rows(di, lo, n), rows(dg, lo, n),
                          rows(ev, lo, n), iterations[lo:hi], residual[lo:hi], status[lo:hi],
                          cg_iterations[lo:hi])
