"""The layered CG solver path (``linear = "cg"``, kernels/layered.py) against the dense-Schur
path, the plain-numpy reference (tests/naive.py) and ngspice, on random deep networks; its
adjoint gradient; the automatic choice and the config option."""
import zlib

import numpy as np
import pytest

from fastres import Newton, solve
from fastres.config import ConfigError, SolverConfig
from fastres.errors import ConvergenceError
from fastres.eqprop import exact_gradient, gradcheck, relative_error
from fastres.kernels.status import Status
from fastres.network import CG_FROM_NODES, CG_FROM_WIDTH, LayeredNetwork, LayeredSystem, NetworkSpec
from fastres.train import TrainConfig, Trainer

from naive import dense_conductance, diode, kcl, node_clamp, reference_solve

TOL = 1e-9  # V
CG = Newton(linear="cg")
SCHUR = Newton(linear="schur")

# (sizes, paired): 2, 3 and 4 hidden layers; paired layers need even sizes
NETS = [((24, 12, 10, 4), False), ((24, 12, 10, 4), True), ((30, 10, 14, 8, 3), False),
        ((30, 10, 14, 8, 3), True), ((20, 8, 12, 6, 10, 3), False), ((20, 8, 12, 6, 10, 3), True)]


def deep_net(sizes, diode, paired, gain=1.0, seed=0, B=6):
    """A random deep network of the training defaults (inputs at +-100 V, rails 0 / 100 V,
    mirrored rails for paired layers) with conductances U[g_min, g_max / 2] and pixels with
    dark zeros."""
    cfg = TrainConfig(arch="-".join(map(str, sizes)), diode=diode, paired=paired, gain=gain)
    net = LayeredNetwork.from_config(cfg.network)
    rng = np.random.default_rng(zlib.crc32(f"{sizes}{diode}{paired}{gain}{seed}".encode()))
    p = net.init_params(rng)
    X = rng.uniform(0, 1, (B, sizes[0]))
    X[rng.random(X.shape) < 0.5] = 0.0
    return net, p, X


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
@pytest.mark.parametrize("sizes,paired", NETS)
def test_cg_matches_dense_path(sizes, paired, diode):
    net, p, X = deep_net(sizes, diode, paired)
    a = solve(net.problem(p, X), SCHUR)
    prob = net.problem(p, X)
    b = solve(prob, CG)
    assert isinstance(prob.system(CG), LayeredSystem)
    assert np.all(b.status == Status.CONVERGED)
    assert np.abs(a.x - b.x).max() <= TOL
    assert np.all(prob.system(CG).last_cg_iterations > 0)
    # the termination test (kernels/newton.py) holds at the returned state, evaluated in numpy
    # (with a factor 2 for the round-off of a different evaluation order)
    k = net.system(p)
    r, J = kcl(k.GKK, k.GKE, k.gEE, prob.b, b.x, net.vdfix, k.da, k.db, k.dkind, k.dpar)
    jii = np.einsum("bii->bi", J)
    xmax = np.abs(b.x).max(axis=1, keepdims=True)
    tol_v = CG.vntol + CG.reltol * xmax
    bound = np.maximum(CG.abstol, jii * tol_v) + 16 * np.finfo(float).eps * jii * xmax
    assert np.all(np.abs(r) <= 2 * bound)


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
@pytest.mark.parametrize("sizes,paired", [NETS[1], NETS[2], NETS[5]])
def test_cg_matches_numpy_reference(sizes, paired, diode):
    """naive.reference_solve (plain numpy, dense Newton on the exported circuit) per sample."""
    net, p, X = deep_net(sizes, diode, paired, B=2)
    x = solve(net.problem(p, X), CG).x
    names = net.node_names()
    for s in range(X.shape[0]):
        nodes, V = reference_solve(net.to_circuit(p, X[s]))
        col = {n: j for j, n in enumerate(nodes)}
        ref = V[0, [col[n] for n in names]]
        assert np.abs(ref - x[s]).max() <= TOL


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_cg_with_amplifiers_and_warm_start(diode):
    """Gain 4 between layers; a nudged-phase-like warm start from the solution converges at
    once to the same point; a threads=1 solve (serial kernel, split products) agrees."""
    net, p, X = deep_net((24, 12, 10, 6, 4), diode, False, gain=4.0)
    a = solve(net.problem(p, X), SCHUR)
    b = solve(net.problem(p, X), CG)
    assert np.abs(a.x - b.x).max() <= TOL
    c = solve(net.problem(p, X, x0=b.x), CG)
    assert np.abs(c.x - b.x).max() <= TOL and c.iterations.max() <= 2
    d = solve(net.problem(p, X), Newton(linear="cg", threads=1))
    assert np.abs(d.x - b.x).max() <= TOL
    one = solve(net.problem(p, X[:1]), CG)  # one sample: no chunks
    assert np.abs(one.x - b.x[:1]).max() <= TOL
    # a nudged phase (sharing the system) reuses G x of the free state it starts from
    prob = net.problem(p, X)
    free = solve(prob, CG)
    ls = prob.system(CG)
    assert ls._last[2].all()
    inj = net.output_injection(1e-7 * np.ones((X.shape[0], net.spec.sizes[-1])))
    nud = solve(prob.nudged(inj, free.x), CG)
    ref = solve(net.problem(p, X, x0=free.x).nudged(inj, free.x), SCHUR)
    assert np.abs(nud.x - ref.x).max() <= TOL


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
@pytest.mark.parametrize("sizes,paired", [NETS[0], NETS[3], NETS[5]])
def test_adjoint_gradient_cg_matches_dense(sizes, paired, diode):
    net, p, X = deep_net(sizes, diode, paired)
    y = np.arange(X.shape[0]) % sizes[-1]
    ga, xa, Ca = exact_gradient(net, p, X, y, 0.5, SCHUR)
    gb, xb, Cb = exact_gradient(net, p, X, y, 0.5, CG)
    assert np.abs(xa - xb).max() <= TOL
    assert relative_error(gb, ga) < 1e-8


def test_eqprop_gradcheck_on_cg_path():
    """EqProp converges to the exact gradient as beta -> 0 and the exact gradient matches
    finite differences of the loss, all solved on the CG path."""
    spec = NetworkSpec(sizes=(12, 6, 4, 3), diode="shockley", gain=2.0, input_volts=20.0,
                       rail_lo=0.0, rail_hi=0.0, paired=True)
    net = LayeredNetwork(spec)
    rng = np.random.default_rng(1)
    p = net.init_params(rng, 1e-6, 5e-5)
    X = rng.uniform(0, 1, (5, 12))
    y = rng.integers(0, 3, 5)
    res = gradcheck(net, p, X, y, 0.5, betas=(1e-2, 1e-3, 1e-4), n_fd=4, alg=CG)
    one = [r["one-sided"] for r in res["eqprop"]]
    cen = [r["centered"] for r in res["eqprop"]]
    assert 7 < one[0] / one[1] < 13 and 7 < one[1] / one[2] < 13
    assert all(c < 0.1 * o for c, o in zip(cen, one))
    for r in res["finite_difference"]:
        assert r["rel_error"] < 1e-5, r


def test_training_steps_agree_between_paths():
    """Three EqProp steps of a paired 3-hidden-layer network on either path: the conductances
    agree to round-off of the gradient (the phases agree to 1e-9 V)."""
    out = {}
    for lin in ("schur", "cg"):
        tr = Trainer(TrainConfig(arch="40-16-12-8-5", diode="pwl", linear=lin))
        rng = np.random.default_rng(4)
        tr.init_state(rng)
        X = rng.uniform(0, 1, (10, 40))
        y = rng.integers(0, 5, 10)
        for _ in range(3):
            tr.step(X, y, rng)
        out[lin] = tr.params
    for k in out["cg"]:
        np.testing.assert_allclose(out["cg"][k], out["schur"][k], rtol=1e-7, err_msg=k)


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_wide_single_layer_cg_matches_dense(diode):
    """One wide hidden layer (the CG class is the output layer, the hidden layer is eliminated):
    CG agrees with the dense path, with threads splitting the samples (the automatic parallel
    mode for one hidden layer) and with one thread, and a nudged phase reusing the free state."""
    net, p, X = deep_net((30, 600, 4), diode, False, B=7)
    assert net.nK == 8 and net.nE == 600
    a = solve(net.problem(p, X), SCHUR)
    prob = net.problem(p, X)
    b = solve(prob, CG)
    assert np.all(b.status == Status.CONVERGED)
    assert np.abs(a.x - b.x).max() <= TOL
    c = solve(net.problem(p, X), Newton(linear="cg", threads=1))
    assert np.abs(c.x - b.x).max() <= TOL
    for mode in ("samples", "products"):
        ls = net.problem(p, X).system(CG)
        ls.PARALLEL = mode
        x = net.initial_guess(prob.b, p, prob.system_)
        it, res, st = ls.solve_batch(prob.b, net.vdfix, x, CG)
        assert np.all(st == Status.CONVERGED) and np.abs(x - a.x).max() <= TOL, mode
    inj = net.output_injection(1e-7 * np.ones((X.shape[0], 4)))
    nud = solve(prob.nudged(inj, b.x), CG)
    ref = solve(net.problem(p, X, x0=b.x).nudged(inj, b.x), SCHUR)
    assert np.abs(nud.x - ref.x).max() <= TOL


def test_statuses_and_errors():
    net, p, X = deep_net((24, 12, 10, 4), "shockley", False)
    r = solve(net.problem(p, X), Newton(linear="cg", maxiter=1), check=False)
    assert np.all(r.status == Status.MAXITER)
    with pytest.raises(ConvergenceError):
        solve(net.problem(p, X), Newton(linear="cg", maxiter=1))


def test_auto_choice_and_config():
    for arch in ("784-100-10", "784-100-100-10", "784-1024-10"):  # the defaults keep the dense path
        net = LayeredNetwork.from_config(TrainConfig(arch=arch).network)
        assert net.linear_path("auto") == "schur", arch
        assert net.linear_path("cg") == "cg"
    for arch in (f"784-{CG_FROM_WIDTH}-10", "784-32768-10"):  # one wide hidden layer
        wide = LayeredNetwork.from_config(TrainConfig(arch=arch).network)
        assert wide.nK == 20 and wide.linear_path("auto") == "cg", arch
        assert wide.linear_path("schur") == "schur"
    narrow = LayeredNetwork.from_config(TrainConfig(arch=f"784-{CG_FROM_WIDTH - 2}-10").network)
    assert narrow.linear_path("auto") == "schur"
    big = LayeredNetwork.from_config(TrainConfig(arch="784-1024-1024-10").network)
    assert big.nK >= CG_FROM_NODES and big.linear_path("auto") == "cg"
    assert big.linear_path("schur") == "schur"
    with pytest.raises(ConfigError):
        Newton(linear="lu")
    with pytest.raises(ConfigError):
        SolverConfig(linear="lu")
    cfg = TrainConfig(arch="784-30-30-10", linear="cg")
    assert Newton.from_config(cfg.solver).linear == "cg"
    assert cfg.resolved().to_dict()["solver"]["linear"] == "cg"  # what a run file stores
    assert TrainConfig.from_dict(cfg.resolved().to_dict()).solver.linear == "cg"


@pytest.mark.ngspice
@pytest.mark.parametrize("diode", ["shockley", "pwl"])
def test_deep_deck_against_ngspice(diode):
    """A paired 784-40-30-20-10 network (training defaults: inputs at +-100 V, rails 0 / 100 V
    and mirrored), exported as a deck: ngspice finds the CG path's operating point."""
    from fastres import ngspice
    from fastres.netlist import write_netlist
    net, p, X = deep_net((784, 40, 30, 20, 10), diode, True, B=2)
    x = solve(net.problem(p, X), CG).x
    for s in range(2):
        deck = write_netlist(net.to_circuit(p, X[s]))
        ref = ngspice.run_op(deck, extra_options={"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18,
                                                  "gmin": 1e-12})
        theirs = np.array([ref[n] for n in net.node_names()])
        assert np.abs(theirs - x[s]).max() <= TOL


def test_diagonal_only_system_is_rebuilt_for_the_schur_path():
    """Where auto picks CG, net.system() leaves the off-diagonal block unfilled; asking for the
    Schur path on such a system rebuilds it in full (same solution)."""
    net, p, X = deep_net((30, 260, 260, 4), "pwl", True, B=3)
    assert net.linear_path("auto") == "cg"
    k = net.system(p)
    assert net.is_diagonal_only(k) and not np.any(k.GKE)
    a = solve(net.problem(p, X, system=k), SCHUR)
    b = solve(net.problem(p, X, system=k), CG)
    assert np.abs(a.x - b.x).max() <= TOL
    assert not net.is_diagonal_only(net.system(p, dense=True))


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_wide_direction_matches_numpy_and_general_cg(diode):
    """kernels/layered.schur_cg_wide (one hidden layer, products in blocks of hidden rows)
    against the plain numpy twin (dense Jacobian from naive.kcl, np.linalg.solve) and the
    general layer-parity CG (schur_cg), at a point away from the solution: dx solves
    J dx = -r and G dx is G_FF dx."""
    from fastres.kernels import layered as K
    net, p, X = deep_net((30, 600, 4), diode, False, B=5)
    assert net.L == 2 and net.offset[2] == 0  # the output layer is the CG class
    prob = net.problem(p, X)
    ls = prob.system(CG)
    x = net.initial_guess(prob.b, p, prob.system_)
    k = net.system(p, dense=True)
    r, J = kcl(k.GKK, k.GKE, k.gEE, prob.b, x, net.vdfix, k.da, k.db, k.dkind, k.dpar)
    G = J - np.stack([np.diag(np.diagonal(Js) - ls.d) for Js in J])  # J minus the diodes' diagonal
    ref = -np.linalg.solve(J, r[..., None])[..., 0]
    Jd = np.ascontiguousarray(np.einsum("bii->bi", J))
    r = np.ascontiguousarray(r)
    B, nF = x.shape
    cols = np.arange(B)
    target = np.full(B, 1e-16)
    out = {}
    for name in ("wide", "general"):
        dx, Gdx = np.zeros((B, nF)), np.zeros((B, nF))
        ok, cgit, lres = np.zeros(B, bool), np.zeros(B, np.int64), np.zeros(B)
        if name == "wide":
            K.schur_cg_wide(r, Jd, cols, ls.Ws[0], ls.gains[2], ls.nK, target, 1000, ls.d, dx, Gdx,
                            ok, cgit, lres)
        else:
            srcK, srcE = K._source_sides(ls.off, ls.nK, net.L)
            K.schur_cg(r, Jd, cols, ls.Ws, ls.gains, ls.off, ls.nl, 1, ls.nK, srcK, srcE, target,
                       1000, ls.d, dx, Gdx, ok, cgit, lres)
        assert ok.all() and (cgit > 0).all(), name
        scale = np.abs(ref).max()
        assert np.abs(dx - ref).max() <= 1e-10 * scale, name
        Gref = np.einsum("bij,bj->bi", G, dx)
        assert np.abs(Gdx - Gref).max() <= 1e-9 * np.abs(Gref).max(), name
        out[name] = dx
    assert np.abs(out["wide"] - out["general"]).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_shared_diode_row_changes_nothing(diode):
    """LayeredSystem passes one shared (kind, parameter) row when every diode has the same
    (kernels/layered.dev): the solve is bit for bit the one with the per-diode table."""
    net, p, X = deep_net((30, 600, 4), diode, False, B=7)
    prob = net.problem(p, X)
    ls = prob.system(CG)
    assert ls.dkind.shape == (1,) and ls.dpar.shape[0] == 1
    x0 = net.initial_guess(prob.b, p, prob.system_)
    xa = x0.copy()
    a = ls.solve_batch(prob.b, net.vdfix, xa, Newton(linear="cg", threads=1))
    full = LayeredSystem(net, p, prob.system_)
    full.dkind, full.dpar = prob.system_.dkind, prob.system_.dpar
    xb = x0.copy()
    b = full.solve_batch(prob.b, net.vdfix, xb, Newton(linear="cg", threads=1))
    assert np.all(a[2] == Status.CONVERGED)
    assert np.array_equal(xa, xb) and np.array_equal(a[0], b[0])


@pytest.mark.parametrize("shape", [(20, 100), (3, 5000)])
def test_node_clamp_matches_numpy_twin(shape):
    """kernels/layered.node_clamp (the Shockley network's feed-forward start) gives the numpy
    twin's values bit for bit, from starts inside and outside the rails."""
    from fastres.kernels import layered as K
    rng = np.random.default_rng(7)
    B, n = shape
    IS, vte = 1e-12, 0.025852
    rlo = np.where(rng.random(n) < 0.5, 0.5, -100.0)
    rhi = rlo + 100.0
    diag = rng.uniform(1e-5, 1e-3, n)
    cur = rng.uniform(-0.05, 0.15, (B, n))
    v0 = np.clip(cur / diag, rlo - 0.7, rhi + 0.7)
    v = v0.copy()
    K.node_clamp(v, cur, diag, rlo, rhi, IS, vte, 6)
    assert np.array_equal(v, node_clamp(v0, cur, diag, rlo, rhi, IS, vte, 6))


@pytest.mark.parametrize("diode_name", ["pwl", "shockley"])
def test_fixed_end_trial_matches_general_trial_and_numpy(diode_name):
    """kernels/layered._trial_fixed (pwl diodes joined to a fixed node, one parameter row)
    gives the general trial's energy change, slope, curvature, scale and trial currents bit
    for bit, and its slope is the numpy twin's ``g1 + t g2 + sum_k i_k(v_k + t h_k) h_k``
    (naive.diode). Shockley diodes keep the general trial (fixed_ends gives no fast form)."""
    from fastres.kernels import layered as K
    net, p, X = deep_net((30, 600, 4), diode_name, False, B=3)
    prob = net.problem(p, X)
    ls = prob.system(CG)
    x = net.initial_guess(prob.b, p, prob.system_)
    nF = x.shape[1]
    da, db = prob.system_.da, prob.system_.db
    dfn, dan, vf = K.fixed_ends(da, db, nF, net.vdfix, ls.dkind)
    if diode_name == "shockley":
        assert dfn.shape == (0,)
        return
    assert dfn.shape == da.shape  # every layered diode joins a free node to a rail
    assert not K.fixed_ends(da, db, nF, net.vdfix, prob.system_.dkind)[0].size  # per-diode table
    rng = np.random.default_rng(3)
    for s in range(x.shape[0]):
        dx = rng.normal(0.0, 0.3, nF)
        vext = np.concatenate([x[s], net.vdfix[0]])
        dxe = np.concatenate([dx, np.zeros(net.vdfix.shape[1])])
        for t in (0.3, 1.0, 1.7):
            di_a, dg_a, di_b, dg_b = (np.empty(da.shape[0]) for _ in range(4))
            a = K._trial_fixed(t, 0.1, 0.2, x[s].copy(), dx, dfn, dan, vf[0], ls.dpar[0], di_a, dg_a)
            b = K._trial(t, 0.1, 0.2, vext, dxe, da, db, ls.dkind, ls.dpar, False, np.zeros(0),
                         di_b, dg_b, np.zeros(0))
            assert a == b and np.array_equal(di_a, di_b) and np.array_equal(dg_a, dg_b)
            v = (vext[da] - vext[db]) + t * (dxe[da] - dxe[db])
            i, g, _ = diode(ls.dkind[0], ls.dpar[0], v)
            assert np.allclose(i, di_a, rtol=1e-9, atol=1e-12) and np.allclose(g, dg_a, rtol=1e-12)
            terms = i * (dxe[da] - dxe[db])
            d1 = 0.1 + t * 0.2 + np.sum(terms)
            assert abs(a[1] - d1) <= 1e-9 * (abs(d1) + np.sum(np.abs(terms)))


def test_wide_gff_matches_numpy():
    """kernels/layered.gff_wide (G_FF x of one hidden layer, sample-major products) against the
    dense conductance matrix of the numpy twin (naive.dense_conductance), on a subset of
    samples; the other samples' rows are not written."""
    from fastres.kernels import layered as K
    net, p, X = deep_net((30, 600, 4), "pwl", True, B=5)
    prob = net.problem(p, X)
    ls = prob.system(CG)
    k = net.system(p, dense=True)
    x = net.initial_guess(prob.b, p, prob.system_)
    cols = np.array([0, 2, 3])
    out = np.full(x.shape, 7.0)
    K.gff_wide(x, cols, ls.Ws[0], ls.gains[2], ls.nK, ls.d, out)
    ref = x[cols] @ dense_conductance(k.GKK, k.GKE, k.gEE).T
    assert np.abs(out[cols] - ref).max() <= 1e-12 * np.abs(ref).max()
    assert np.all(out[[1, 4]] == 7.0)
    general = np.zeros(x.shape)
    K.gff_cols(x, cols, ls.Ws, ls.gains, ls.off, ls.nl, 2, ls.d, general)  # 2 threads: not wide
    assert np.abs(general[cols] - out[cols]).max() <= 1e-13 * np.abs(ref).max()
