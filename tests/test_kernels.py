"""Each kernel against its plain-numpy twin in ``tests/naive.py``.

The kernels are called only through their public names (``diode_ig``, ``diode_phi``,
``diode_dphi``, ``diode_move``, ``assemble``, ``schur_newton_direction``, ``source_currents``,
``adjoint_solve``, ``adjoint_range``). The twins themselves are checked against calculus here
(conductance = derivative of the current, co-content = integral of the current, continuity at
region boundaries), so that the equations are checked independently of both.
"""
import numpy as np
import pytest
from numba import njit
from scipy.integrate import quad

import naive
from fastres import PiecewiseLinear, Shockley
from fastres.generators import input_batch, layered_circuit, random_graph_circuit
from fastres.kernels import adjoint
from fastres.kernels import devices as kd
from fastres.kernels import stamping as ks

S, P = naive.SHOCKLEY, naive.PWL
CASES = {
    # vmax (imax = 10 mA) inside the grid: every Shockley region is visited
    "shockley": (S, Shockley(IS=1e-14, N=1.0, imax=1e-2).params(gmin=1e-12)),
    "shockley-N0.01": (S, Shockley(IS=1e-9, N=0.01).params(gmin=1e-12)),
    "shockley-60C-gmin0": (S, Shockley(IS=1e-14, N=1.3).params(temp=60.0, gmin=0.0)),
    "pwl-breakdown": (P, PiecewiseLinear(ron=10.0, roff=1e6, vfwd=0.6, vrev=5.0, rrev=100.0).params()),
    "pwl-no-breakdown": (P, PiecewiseLinear(ron=10.0, roff=1e6, vfwd=0.0).params()),  # vrev = inf
}


def boundaries(kind, p):
    """The region boundaries of a diode (V)."""
    if kind == S:
        return [-3.0 * p[1], p[3]]
    return [b for b in (p[2], -p[3]) if np.isfinite(b)]


def voltages(kind, p):
    """A grid over every region of the model, with each boundary and its two neighbours."""
    if kind == S:
        vte, vmax = p[1], p[3]
        grid = np.linspace(-40 * vte, vmax + 10 * vte, 401)
    else:
        grid = np.linspace(-8.0, 2.0, 401)
    edges = [f(b) for b in boundaries(kind, p)
             for f in (lambda b: b, lambda b: np.nextafter(b, -np.inf), lambda b: np.nextafter(b, np.inf))]
    return np.concatenate([grid, edges, [0.0]])


def ev_of(kind, p, v):
    """The exponential cache that ``diode_move`` documents: ``exp(v / vte)`` for a Shockley
    diode in [-3 vte, vmax], else unused (0)."""
    if kind != S:
        return np.zeros_like(v)
    inside = (v >= -3.0 * p[1]) & (v <= p[3])
    return np.where(inside, np.exp(np.where(inside, v, 0.0) / p[1]), 0.0)


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
def _dphi(kind, p, v, h):
    out = np.empty_like(v)
    for k in range(v.shape[0]):
        out[k] = kd.diode_dphi(kind, p, v[k], h[k])
    return out


@njit
def _move(kind, p, v, ev, w):
    out = np.empty((v.shape[0], 4))
    for k in range(v.shape[0]):
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = kd.diode_move(kind, p, v[k], ev[k], w[k])
    return out


def kernel_model(kind, p, v):
    i, g = _ig(kind, p, v)
    return i, g, _phi(kind, p, v)


IMPLS = {"kernel": kernel_model, "naive": naive.diode}


# ---------------------------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_device_functions_match_naive(case):
    """diode_ig and diode_phi against naive.diode, over every region and its boundaries."""
    kind, p = CASES[case]
    v = voltages(kind, p)
    i, g, phi = kernel_model(kind, p, v)
    ni, ng, nphi = naive.diode(kind, p, v)
    np.testing.assert_allclose(i, ni, rtol=1e-14, atol=1e-30)
    np.testing.assert_allclose(g, ng, rtol=1e-14, atol=0)
    np.testing.assert_allclose(phi, nphi, rtol=1e-14, atol=1e-40)
    # the regions the grid visits (so that a wrong branch cannot hide)
    b = boundaries(kind, p)
    assert (v < min(b)).sum() > 10 and (v > max(b)).sum() > 10
    if len(b) == 2:
        assert ((v > min(b)) & (v < max(b))).sum() > 10


def _moves(kind, p, seed=1):
    """Start voltages over every region, and moves from them: up to tens of ``N vt`` (Shockley)
    or volts (PWL), many across region boundaries, some tiny, some zero."""
    rng = np.random.default_rng(seed)
    v = voltages(kind, p)
    scale_h = p[1] if kind == S else 1.0
    h = rng.normal(0, 10 * scale_h, v.size) * rng.choice([1.0, 1e-3, 1e-6, 0.0], v.size)
    return v, v + h


@pytest.mark.parametrize("case", list(CASES))
def test_energy_change_matches_naive(case):
    """diode_dphi and diode_move's energy change against the difference of naive co-contents."""
    kind, p = CASES[case]
    v, w = _moves(kind, p)
    h = w - v
    _, _, phi_v = naive.diode(kind, p, v)
    _, _, phi_w = naive.diode(kind, p, w)
    direct = phi_w - phi_v
    # the plain difference of two co-contents loses digits to cancellation when |h| is small
    # (the kernels' forms do not): compare to its own round-off, a few eps of the co-contents
    tol = 1e-14 * (np.abs(phi_v) + np.abs(phi_w)) + 1e-40
    dphi = _dphi(kind, p, v, h)
    assert np.all(np.abs(dphi - direct) <= tol), np.max(np.abs(dphi - direct) / tol)
    out = _move(kind, p, v, ev_of(kind, p, v), w)
    assert np.all(np.abs(out[:, 0] - direct) <= tol), np.max(np.abs(out[:, 0] - direct) / tol)


@pytest.mark.parametrize("case", list(CASES))
def test_move_state_matches_naive(case):
    """diode_move's current, conductance and exponential cache at the new voltage against naive
    (moves down the exponential limited to 5 N vt: see test_move_far_down_the_exponential)."""
    kind, p = CASES[case]
    v, w = _moves(kind, p)
    keep = (w - v >= -5 * p[1]) if kind == S else np.ones(v.size, bool)
    assert keep.sum() > 200
    v, w = v[keep], w[keep]
    wi, wg, _ = naive.diode(kind, p, w)
    out = _move(kind, p, v, ev_of(kind, p, v), w)
    np.testing.assert_allclose(out[:, 1], wi, rtol=1e-13, atol=1e-30)
    np.testing.assert_allclose(out[:, 2], wg, rtol=1e-13, atol=0)
    np.testing.assert_allclose(out[:, 3], ev_of(kind, p, w), rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", ["shockley", "shockley-N0.01"])
def test_move_far_down_the_exponential(case):
    """A move within [-3 vte, vmax] from near the top to near the bottom: diode_move's current,
    conductance and cache at ``w`` must still be those of ``w`` (naive)."""
    kind, p = CASES[case]
    vte = p[1]
    v = np.array([p[3] - 0.5 * vte, 20 * vte, 0.9 * p[3]])
    w = np.array([-2.9 * vte, -2.0 * vte, 0.0])
    wi, wg, _ = naive.diode(kind, p, w)
    out = _move(kind, p, v, ev_of(kind, p, v), w)
    np.testing.assert_allclose(out[:, 3], ev_of(kind, p, w), rtol=1e-12, atol=0)
    np.testing.assert_allclose(out[:, 1], wi, rtol=1e-12, atol=1e-30)
    np.testing.assert_allclose(out[:, 2], wg, rtol=1e-12, atol=0)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def test_conductance_is_derivative(case, impl):
    kind, p = CASES[case]
    model = IMPLS[impl]
    v = voltages(kind, p)
    h = 1e-7 * (p[1] if kind == S else 1.0)
    ip, _, _ = model(kind, p, v + h)
    im, _, _ = model(kind, p, v - h)
    _, g, _ = model(kind, p, v)
    fd = (ip - im) / (2 * h)
    # skip the PWL kinks where the derivative jumps (the Shockley current is C1 everywhere)
    ok = np.ones_like(v, bool) if kind == S else np.all(
        [np.abs(v - b) > 2 * h for b in boundaries(kind, p)], axis=0)
    np.testing.assert_allclose(g[ok], fd[ok], rtol=1e-5, atol=1e-13)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def test_cocontent_is_integral_of_current(case, impl):
    kind, p = CASES[case]
    v = voltages(kind, p)[::15]
    _, _, phi = IMPLS[impl](kind, p, v)
    ref = np.array([quad(lambda u: float(naive.diode(kind, p, u)[0]), 0.0, x, limit=200,
                         epsabs=0, epsrel=1e-12, points=boundaries(kind, p))[0] for x in v])
    np.testing.assert_allclose(phi, ref, rtol=1e-8, atol=1e-25)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("case", list(CASES))
def test_continuous_at_region_boundaries(case, impl):
    """Current and co-content are continuous at every region boundary; a Shockley diode's
    conductance too (at -3 vte the cubic meets the exponential with the same slope, beyond
    vmax the exponential continues along its tangent)."""
    kind, p = CASES[case]
    for b in boundaries(kind, p):
        w = 1e-13 * max(abs(b), 1e-3)
        v = np.array([b - w, b + w])
        i, g, phi = IMPLS[impl](kind, p, v)
        dv = v[1] - v[0]
        # no jump: the changes are those of a slope over dv (plus round-off)
        assert abs(i[1] - i[0]) <= 2 * g.max() * dv + 1e-14 * np.abs(i).max(), (b, i)
        assert abs(phi[1] - phi[0]) <= 2 * np.abs(i).max() * dv + 1e-14 * np.abs(phi).max(), (b, phi)
        if kind == S:
            assert abs(g[0] - g[1]) < 1e-9 * abs(g[1]), (b, g)


# ---------------------------------------------------------------------------------------------
# stamping
# ---------------------------------------------------------------------------------------------
CIRCUITS = {
    "layered": lambda rng: layered_circuit((12, 6, 3), rng),
    "layered-rails-output-diodes": lambda rng: layered_circuit((12, 6, 3), rng, rails=(-0.2, 0.2),
                                                               output_diodes=True),
    "graph-shockley": lambda rng: random_graph_circuit(9, rng),
    "graph-pwl": lambda rng: random_graph_circuit(9, rng, diode=PiecewiseLinear(ron=5.0, roff=1e5, vfwd=0.3)),
    "graph-pwl-breakdown": lambda rng: random_graph_circuit(
        9, rng, diode=PiecewiseLinear(ron=5.0, roff=1e5, vfwd=0.3, vrev=0.2, rrev=50.0)),
}


def _state(make, seed, B=1, spread=0.2):
    """A compiled circuit, B random states x (B, nF) in V, source currents b (B, nF) in A and the
    fixed voltages the diodes touch, vdfix (B, nXd) or (1, nXd) in V."""
    rng = np.random.default_rng(seed)
    cc = make(rng).compile()
    vfix, inj = cc.prepare()
    b = inj - vfix @ cc.GFX.T
    vdfix = np.ascontiguousarray(vfix[:, cc.dfix])
    x = rng.normal(0, spread, (B, cc.nF))
    return cc, x, np.broadcast_to(b, (B, cc.nF)).copy(), vdfix


@pytest.mark.parametrize("spread", [0.2, 1.0])
@pytest.mark.parametrize("name", list(CIRCUITS))
def test_assemble_matches_naive(name, spread):
    """stamping.assemble: residual, its linear part, and the K/E Jacobian blocks against the
    dense residual and Jacobian of naive.kcl (diode currents from naive.diode)."""
    cc, X, Bs, vdfix = _state(CIRCUITS[name], 3, B=3, spread=spread)
    G = naive.dense_conductance(cc.GKK, cc.GKE, cc.gEE)
    r_ref, J_ref = naive.kcl(cc.GKK, cc.GKE, cc.gEE, Bs, X, vdfix, cc.da, cc.db, cc.dkind, cc.dpar)
    assert cc.nE > 0 and cc.da.size > 0
    for s in range(X.shape[0]):
        x, b = X[s], Bs[s]
        vext = np.concatenate([x, vdfix[0]])
        di, dg, _ = naive.diode(cc.dkind, cc.dpar, vext[cc.da] - vext[cc.db])
        rlin, r = np.empty(cc.nF), np.empty(cc.nF)
        JKK, dE = np.empty((cc.nK, cc.nK)), np.empty(cc.nE)
        ks.assemble(cc.GKK, cc.GKE, cc.gEE, b, x, cc.da, cc.db, di, dg, rlin, r, JKK, dE)
        np.testing.assert_allclose(rlin, G @ x - b, rtol=1e-12, atol=1e-18)
        np.testing.assert_allclose(r, r_ref[s], rtol=1e-12, atol=1e-18)
        J = J_ref[s]
        np.testing.assert_allclose(JKK, J[:cc.nK, :cc.nK], rtol=1e-13)
        np.testing.assert_allclose(dE, np.diag(J)[cc.nK:], rtol=1e-13)
        assert np.array_equal(J[:cc.nK, cc.nK:], cc.GKE)  # diodes never couple K to E
        assert np.allclose(J[cc.nK:, cc.nK:], np.diag(np.diag(J)[cc.nK:]))  # E block is diagonal


def _direction(JKK, GKE, dE, r, refactor=True, S=None):
    nK, nE = GKE.shape
    dx = np.full(nK + nE, np.nan)
    U, y, q = np.empty((nK, nE)), np.empty(nK), np.empty(nE)
    S = np.empty((nK, nK)) if S is None else S
    ok = ks.schur_newton_direction(np.ascontiguousarray(JKK), np.ascontiguousarray(GKE),
                                   np.ascontiguousarray(dE), r, dx, U, S, y, q, refactor)
    return ok, dx, S


@pytest.mark.parametrize("name", list(CIRCUITS))
def test_schur_newton_direction_matches_naive(name):
    """The Schur-complement direction against naive.newton_direction (a dense solve of the
    full Jacobian); a reused factor (refactor=False) gives the bit-identical direction."""
    cc, X, Bs, vdfix = _state(CIRCUITS[name], 5, B=2)
    r_ref, J_ref = naive.kcl(cc.GKK, cc.GKE, cc.gEE, Bs, X, vdfix, cc.da, cc.db, cc.dkind, cc.dpar)
    J, r = J_ref[0], r_ref[0]
    JKK, dE = J[:cc.nK, :cc.nK], np.diag(J)[cc.nK:].copy()
    ok, dx, S = _direction(JKK, cc.GKE, dE, r)
    assert ok
    np.testing.assert_allclose(dx, naive.newton_direction(J, r), rtol=1e-9, atol=1e-14)
    r2 = r_ref[1]  # another right-hand side with the same Jacobian: the factor in S is reused
    ok2, dx_reused, _ = _direction(JKK, cc.GKE, dE, r2, refactor=False, S=S.copy())
    ok3, dx_fresh, _ = _direction(JKK, cc.GKE, dE, r2)
    assert ok2 and ok3 and np.array_equal(dx_reused, dx_fresh)
    np.testing.assert_allclose(dx_fresh, naive.newton_direction(J, r2), rtol=1e-9, atol=1e-14)


def test_schur_newton_direction_dense_and_not_positive_definite():
    """With no E block the direction is the small dense Cholesky solve itself: against numpy
    on random SPD matrices of several sizes; a matrix that is not positive definite, or an
    E diagonal that is not positive, is reported (False)."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 30):
        A = rng.normal(size=(n, n))
        A = A @ A.T + n * np.eye(n)
        r = rng.normal(size=n)
        ok, dx, _ = _direction(A, np.zeros((n, 0)), np.zeros(0), r)
        assert ok
        np.testing.assert_allclose(dx, naive.newton_direction(A, r), rtol=1e-11)
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert not _direction(bad, np.zeros((2, 0)), np.zeros(0), np.ones(2))[0]
    GKE = np.array([[-0.5], [0.0]])
    assert _direction(np.eye(2), GKE, np.array([1.0]), np.ones(3))[0]
    assert not _direction(np.eye(2), GKE, np.array([0.0]), np.ones(3))[0]
    assert not _direction(np.eye(2), GKE, np.array([np.nan]), np.ones(3))[0]


@pytest.mark.parametrize("shared_inj", [False, True])
def test_source_currents_matches_naive(shared_inj):
    """stamping.source_currents: the whole fixed-voltage coupling of a compiled circuit, and a
    block of columns (col0 > 0), for several chunkings of the batch."""
    rng = np.random.default_rng(6)
    cc = layered_circuit((10, 6, 3), rng).compile()
    B = 7
    vfix, inj = cc.prepare(input_batch(10, B, rng))
    inj = inj + rng.normal(0, 1e-3, inj.shape)
    if shared_inj:
        inj = inj[:1].copy()
    b0 = rng.normal(0, 1e-3, cc.nF)
    Pblk = np.ascontiguousarray(cc.P[:, 2:7])
    for U, Pm, col0 in ((vfix, cc.P, 0), (vfix, Pblk, 2)):
        ref = naive.source_currents(U, Pm, col0, b0, inj)
        for nchunks in (1, 2, 3, 8):
            b = np.full((B, cc.nF), np.nan)
            ks.source_currents(U, Pm, col0, b0, inj, nchunks, b)
            np.testing.assert_allclose(b, ref, rtol=1e-12, atol=1e-18)


# ---------------------------------------------------------------------------------------------
# adjoint
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,per_sample,spread", [
    ("layered", False, 0.3), ("layered", True, 0.3), ("graph-pwl-breakdown", False, 0.3),
    ("graph-shockley", False, 0.1),  # 0.3 V would drive some diodes 30 N vt forward: cond(J) ~ 1e9
])
def test_adjoint_matches_naive(name, per_sample, spread):
    """adjoint.adjoint_range and adjoint_solve: J(x)^-1 rhs per sample, against
    naive.adjoint_solve with the Jacobian of naive.kcl; the fixed voltages the diodes touch
    shared by the batch or one row per sample."""
    rng = np.random.default_rng(4)
    B = 3
    if name == "layered":
        c = layered_circuit((10, 6, 3), rng, rails=(-0.2, 0.2), output_diodes=per_sample)
        cc = c.compile()
        if per_sample:  # the rails move with the sample
            vfix, _ = cc.prepare({"vrlo": rng.uniform(-0.3, 0.0, B), "vrhi": rng.uniform(0.0, 0.3, B)})
        else:
            vfix, _ = cc.prepare()
    else:
        cc = CIRCUITS[name](rng).compile()
        vfix, _ = cc.prepare()
    vdfix = np.ascontiguousarray(vfix[:, cc.dfix])
    assert vdfix.shape == ((B if per_sample else 1), cc.dfix.size) and cc.dfix.size
    x = rng.normal(0, spread, (B, cc.nF))
    rhs = rng.normal(0, 1e-3, (B, cc.nF))
    _, J = naive.kcl(cc.GKK, cc.GKE, cc.gEE, np.zeros(cc.nF), x, vdfix, cc.da, cc.db, cc.dkind, cc.dpar)
    assert np.linalg.cond(J).max() < 1e5  # so that 1e-9 is well above eps * cond(J)
    ref = naive.adjoint_solve(J, rhs)
    args = (cc.GKK, cc.GKE, cc.gEE, vdfix, cc.da, cc.db, cc.dkind, cc.dpar, x, rhs)
    out = np.full_like(x, np.nan)
    adjoint.adjoint_range(*args, out, 0, B)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-15)
    out2 = np.full_like(x, np.nan)
    adjoint.adjoint_solve(*args, out2, 2)
    assert np.array_equal(out, out2)
