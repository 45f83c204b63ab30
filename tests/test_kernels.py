"""Each kernel against a plain numpy/scipy version of the same computation."""
import math

import numpy as np
import pytest
import scipy.linalg
from numba import njit
from scipy.integrate import quad

from fastres import PiecewiseLinear, Shockley
from fastres.generators import layered_circuit, random_graph_circuit
from fastres.kernels import devices as kd
from fastres.kernels import linalg as kl
from fastres.kernels import stamping as ks

SHOCKLEY = Shockley(IS=1e-14, N=1.0, imax=1e-2).params(gmin=1e-12)
SHOCKLEY_SMALL_N = Shockley(IS=1e-9, N=0.01).params(gmin=1e-12)
PWL = PiecewiseLinear(ron=10.0, roff=1e6, vfwd=0.6, vrev=5.0, rrev=100.0).params()
CASES = [(kd.KIND_SHOCKLEY, SHOCKLEY), (kd.KIND_SHOCKLEY, SHOCKLEY_SMALL_N), (kd.KIND_PWL, PWL)]


def numpy_current(kind, p, v):
    """The device equations written again in numpy (ngspice dioload.c / XSPICE sidiode)."""
    v = np.asarray(v, float)
    if kind == kd.KIND_SHOCKLEY:
        IS, vte, gmin, vmax = p[:4]
        with np.errstate(over="ignore", divide="ignore"):
            # beyond vmax (current imax) the exponential continues along its tangent
            fwd = np.where(v <= vmax, IS * (np.exp(np.minimum(v, vmax) / vte) - 1.0),
                           IS * (np.exp(vmax / vte) * (1 + (v - vmax) / vte) - 1.0))
            rev = -IS * (1.0 + (3.0 * vte / (np.e * v)) ** 3)
        return np.where(v >= -3 * vte, fwd, rev) + gmin * v
    gon, goff, vfwd, vrev, grev = p
    with np.errstate(invalid="ignore"):  # vrev = inf: the breakdown branch is never selected
        return np.where(v >= vfwd, goff * vfwd + gon * (v - vfwd),
                        np.where(v > -vrev, goff * v, -goff * vrev + grev * (v + vrev)))


def voltages(p, kind):
    if kind == kd.KIND_SHOCKLEY:
        vte = p[1]
        return np.concatenate([np.linspace(-40 * vte, 30 * vte, 301), [-3 * vte, -3 * vte * (1 - 1e-12)]])
    return np.concatenate([np.linspace(-8, 2, 301), [p[2], -p[3]]])


@njit
def _ig(kind, p, v):
    i = np.empty_like(v)
    g = np.empty_like(v)
    for k in range(v.shape[0]):
        i[k], g[k] = kd.diode_ig(kind, p, v[k])
    return i, g


@njit
def _phi(kind, p, v):
    out = np.empty_like(v)
    for k in range(v.shape[0]):
        out[k] = kd.diode_phi(kind, p, v[k])
    return out


@njit
def _move(kind, p, v, h):
    out = np.empty((v.shape[0], 4))
    for k in range(v.shape[0]):
        ev = kd.diode_exp(kind, p, v[k])
        d, i, g, evn = kd.diode_move(kind, p, v[k], ev, v[k] + h[k])
        out[k, 0] = d
        out[k, 1] = i
        out[k, 2] = g
        out[k, 3] = kd.diode_dphi(kind, p, v[k], h[k])
    return out


@pytest.mark.parametrize("kind,p", CASES)
def test_current_matches_numpy(kind, p):
    v = voltages(p, kind)
    i, g = _ig(kind, p, v)
    np.testing.assert_allclose(i, numpy_current(kind, p, v), rtol=1e-14, atol=1e-30)


@pytest.mark.parametrize("kind,p", CASES)
def test_conductance_is_derivative(kind, p):
    v = voltages(p, kind)[:-2]
    h = 1e-7 * (p[1] if kind == kd.KIND_SHOCKLEY else 1.0)
    ip, _ = _ig(kind, p, v + h)
    im, _ = _ig(kind, p, v - h)
    _, g = _ig(kind, p, v)
    fd = (ip - im) / (2 * h)
    # skip the PWL kinks where the derivative jumps
    ok = np.ones_like(v, bool) if kind == kd.KIND_SHOCKLEY else (np.abs(v - p[2]) > 2 * h) & (np.abs(v + p[3]) > 2 * h)
    np.testing.assert_allclose(g[ok], fd[ok], rtol=1e-5, atol=1e-13)


@pytest.mark.parametrize("kind,p", CASES)
def test_cocontent_is_integral_of_current(kind, p):
    v = voltages(p, kind)[::15]
    phi = _phi(kind, p, v)
    ref = np.array([quad(lambda u: float(numpy_current(kind, p, u)), 0.0, x, limit=200,
                         epsabs=0, epsrel=1e-12, points=[-3 * p[1], p[3]] if kind == 0 else [p[2], -p[3]])[0]
                    for x in v])
    np.testing.assert_allclose(phi, ref, rtol=1e-8, atol=1e-25)


@pytest.mark.parametrize("kind,p", CASES)
def test_energy_change_forms_agree(kind, p):
    rng = np.random.default_rng(1)
    v = voltages(p, kind)
    h = rng.normal(0, 0.05, v.size) * rng.choice([1.0, 1e-3, 1e-6], v.size)
    out = _move(kind, p, v, h)
    direct = _phi(kind, p, v + h) - _phi(kind, p, v)
    scale = np.abs(_phi(kind, p, v)) + np.abs(_phi(kind, p, v + h)) + 1e-300
    assert np.all(np.abs(out[:, 0] - direct) <= 1e-9 * scale + 1e-24)
    assert np.all(np.abs(out[:, 3] - direct) <= 1e-9 * scale + 1e-24)
    i, g = _ig(kind, p, v + h)
    np.testing.assert_allclose(out[:, 1], i, rtol=1e-13, atol=1e-30)
    np.testing.assert_allclose(out[:, 2], g, rtol=1e-13, atol=1e-30)


def test_shockley_continuous_at_cubic_junction():
    vte = SHOCKLEY[1]
    v = np.array([-3 * vte * (1 + 1e-13), -3 * vte])
    i, g = _ig(kd.KIND_SHOCKLEY, SHOCKLEY, v)
    phi = _phi(kd.KIND_SHOCKLEY, SHOCKLEY, v)
    assert abs(i[0] - i[1]) < 1e-12 * abs(i[1])
    assert abs(g[0] - g[1]) < 1e-9 * abs(g[1])
    assert abs(phi[0] - phi[1]) < 1e-9 * abs(phi[1])


def test_cholesky_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 30):
        A = rng.normal(size=(n, n))
        A = A @ A.T + n * np.eye(n)
        L = A.copy()
        assert kl.cholesky_inplace(L, n)
        np.testing.assert_allclose(np.tril(L), scipy.linalg.cholesky(A, lower=True), rtol=1e-12, atol=1e-12)
        b = rng.normal(size=n)
        y = b.copy()
        kl.cholesky_solve_inplace(L, y, n)
        np.testing.assert_allclose(y, scipy.linalg.solve(A, b, assume_a="pos"), rtol=1e-11)
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert not kl.cholesky_inplace(bad, 2)


def _dense_G(cc):
    G = np.zeros((cc.nF, cc.nF))
    G[:cc.nK, :cc.nK] = cc.GKK
    G[:cc.nK, cc.nK:] = cc.GKE
    G[cc.nK:, :cc.nK] = cc.GKE.T
    G[cc.nK:, cc.nK:] = np.diag(cc.gEE)
    return G


@pytest.mark.parametrize("make", [
    lambda rng: layered_circuit((12, 6, 3), rng),
    lambda rng: random_graph_circuit(9, rng),
    lambda rng: random_graph_circuit(9, rng, diode=PiecewiseLinear(ron=5.0, roff=1e5, vfwd=0.3)),
])
def test_assembly_and_schur_direction_match_numpy(make):
    rng = np.random.default_rng(3)
    cc = make(rng).compile()
    vfix, inj = cc.prepare()
    b = inj[0] - vfix[0] @ cc.GFX.T
    x = rng.normal(0, 0.2, cc.nF)
    vext = np.concatenate([x, vfix[0, cc.dfix]])
    nD = cc.da.size
    di, dg = np.empty(nD), np.empty(nD)
    ks.eval_diodes(vext, cc.da, cc.db, cc.dkind, cc.dpar, di, dg)
    rlin, r = np.empty(cc.nF), np.empty(cc.nF)
    JKK, dE = np.empty((cc.nK, cc.nK)), np.empty(cc.nE)
    ks.assemble(cc.GKK, cc.GKE, cc.gEE, b, x, cc.da, cc.db, di, dg, rlin, r, JKK, dE)
    # numpy: full Jacobian and residual from the incidence of each diode
    G = _dense_G(cc)
    J = G.copy()
    r_ref = G @ x - b
    for k in range(nD):
        a, c = cc.da[k], cc.db[k]
        vd = vext[a] - vext[c]
        i = float(numpy_current(cc.dkind[k], cc.dpar[k], vd))
        assert np.isclose(i, di[k], rtol=1e-13, atol=1e-30)
        for n1, s1 in ((a, 1.0), (c, -1.0)):
            if n1 < cc.nF:
                r_ref[n1] += s1 * i
                for n2, s2 in ((a, 1.0), (c, -1.0)):
                    if n2 < cc.nF:
                        J[n1, n2] += s1 * s2 * dg[k]
    np.testing.assert_allclose(r, r_ref, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(JKK, J[:cc.nK, :cc.nK], rtol=1e-13)
    np.testing.assert_allclose(dE, np.diag(J)[cc.nK:], rtol=1e-13)
    assert np.allclose(J[cc.nK:, cc.nK:], np.diag(np.diag(J)[cc.nK:]))  # E block is diagonal
    dx = np.zeros(cc.nF)
    U, S, y, q = np.empty((cc.nK, cc.nE)), np.empty((cc.nK, cc.nK)), np.empty(cc.nK), np.empty(cc.nE)
    assert ks.schur_newton_direction(JKK, cc.GKE, dE, r, dx, U, S, y, q, True)
    np.testing.assert_allclose(dx, np.linalg.solve(J, -r), rtol=1e-9, atol=1e-14)
    out = np.empty(cc.nF)
    ks.gff_matvec(cc.GKK, cc.GKE, cc.gEE, x, out)
    np.testing.assert_allclose(out, G @ x, rtol=1e-12, atol=1e-18)


def test_adjoint_solve_matches_numpy():
    """kernels.adjoint: J(x)^-1 rhs per sample, against numpy with the Jacobian built by hand."""
    from fastres.kernels import adjoint
    rng = np.random.default_rng(4)
    cc = layered_circuit((10, 6, 3), rng, rails=(-0.2, 0.2)).compile()
    vfix, _ = cc.prepare()
    vdfix = np.ascontiguousarray(vfix[:, cc.dfix])
    B = 3
    x = rng.normal(0, 0.3, (B, cc.nF))
    rhs = rng.normal(0, 1e-3, (B, cc.nF))
    out = np.empty_like(x)
    adjoint.adjoint_range(cc.GKK, cc.GKE, cc.gEE, vdfix, cc.da, cc.db, cc.dkind, cc.dpar, x, rhs, out, 0, B)
    G = _dense_G(cc)
    for s in range(B):
        vext = np.concatenate([x[s], vdfix[0]])
        J = G.copy()
        for k in range(cc.da.size):
            a, c = cc.da[k], cc.db[k]
            _, g = _ig(cc.dkind[k], cc.dpar[k], np.array([vext[a] - vext[c]]))
            for n1, s1 in ((a, 1.0), (c, -1.0)):
                for n2, s2 in ((a, 1.0), (c, -1.0)):
                    if n1 < cc.nF and n2 < cc.nF:
                        J[n1, n2] += s1 * s2 * g[0]
        np.testing.assert_allclose(out[s], np.linalg.solve(J, rhs[s]), rtol=1e-9, atol=1e-15)
