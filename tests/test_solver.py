"""Physics of the DC solver: KCL, co-content minimum, linear circuits, structure paths, bad input."""
import numpy as np
import pytest
import scipy.linalg

import fastres
import naive
from fastres import (Circuit, CircuitError, ConvergenceError, DCProblem, Newton, PiecewiseLinear,
                     Shockley, Status, solve)
from fastres.circuit import CurrentSource, Resistor, VoltageSource
from fastres.generators import input_batch, layered_circuit, random_graph_circuit


GRAPHS = [
    ("shockley", lambda rng: random_graph_circuit(12, rng)),
    ("shockley-n0.01", lambda rng: random_graph_circuit(12, rng, diode=Shockley(IS=1e-12, N=0.01))),
    ("pwl", lambda rng: random_graph_circuit(12, rng, diode=PiecewiseLinear(ron=10.0, roff=1e7, vfwd=0.4))),
    ("layered", lambda rng: layered_circuit((16, 8, 4), rng, rails=(-0.3, 0.3))),
]


@pytest.mark.parametrize("name,make", GRAPHS)
def test_kcl_residual_at_solution(name, make):
    rng = np.random.default_rng(11)
    c = make(rng)
    sol = solve(DCProblem(c))
    assert sol.converged.all()
    net, _ = naive.element_kcl(c, sol.as_dict())
    scale = max(1e-3, max(abs(float(np.max(np.abs(e.value)))) for e in c.of_type(CurrentSource)) if c.of_type(CurrentSource) else 1e-3)
    assert max(abs(i) for i in net.values()) < 1e-13 * scale * 1e3


@pytest.mark.parametrize("name,make", GRAPHS)
def test_solution_minimises_cocontent(name, make):
    rng = np.random.default_rng(5)
    c = make(rng)
    sol = solve(DCProblem(c))
    v = sol.as_dict()
    E0 = naive.element_cocontent(c, v)
    held = {e.node for e in c.of_type(VoltageSource)}
    free = [n for n in c.nodes if n not in held]
    for _ in range(40):
        w = dict(v)
        for n in free:
            w[n] += rng.normal(0, 1e-3)
        assert naive.element_cocontent(c, w) > E0
    # and along single-node directions (both signs)
    for n in free[:5]:
        for s in (1e-4, -1e-4):
            w = dict(v)
            w[n] += s
            assert naive.element_cocontent(c, w) > E0


def test_linear_circuit_matches_scipy():
    rng = np.random.default_rng(2)
    n = 15
    c = random_graph_circuit(n, rng, n_diodes=0, n_vsrc=3, n_isrc=2)
    sol = solve(DCProblem(c))
    # nodal analysis written from scratch: G v = i with held nodes eliminated
    idx = {name: k for k, name in enumerate(c.nodes)}
    G = np.zeros((n, n))
    I = np.zeros(n)
    for e in c.of_type(Resistor):
        for a, b in ((e.a, e.b), (e.b, e.a)):
            if a != "0":
                G[idx[a], idx[a]] += e.g
                if b != "0":
                    G[idx[a], idx[b]] -= e.g
    for e in c.of_type(CurrentSource):
        I[idx[e.node]] += e.value
    held = {idx[e.node]: e.value for e in c.of_type(VoltageSource)}
    free = [k for k in range(n) if k not in held]
    hk = list(held)
    hv = np.array([held[k] for k in hk])
    vf = scipy.linalg.solve(G[np.ix_(free, free)], I[free] - G[np.ix_(free, hk)] @ hv)
    np.testing.assert_allclose(sol.v[0, free], vf, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name,make", GRAPHS)
def test_structured_and_dense_paths_agree(name, make):
    rng = np.random.default_rng(8)
    c = make(rng)
    auto = c.compile("auto")
    dense = c.compile("dense")
    assert dense.nE == 0
    if name == "layered":
        assert auto.nE == 8 and auto.nK == 4  # the hidden layer is eliminated
    sa = solve(DCProblem(auto))
    sd = solve(DCProblem(dense))
    np.testing.assert_allclose(sa.v, sd.v, rtol=0, atol=1e-12)


def test_batched_sources_and_warm_start():
    rng = np.random.default_rng(4)
    c = layered_circuit((20, 10, 4), rng)
    src = input_batch(20, 64, rng)
    prob = DCProblem(c.compile(), src)
    sol = solve(prob)
    assert sol.v.shape == (64, len(c.nodes)) and sol.converged.all()
    # every sample equals its own unbatched solve
    for s in (0, 17, 63):
        one = solve(DCProblem(c.compile(), {k: v[s] for k, v in src.items()}))
        np.testing.assert_allclose(one.v[0], sol.v[s], atol=1e-13)
    warm = solve(DCProblem(c.compile(), src, v0=sol))
    assert warm.converged.all()
    # the default start is already within Newton's tolerance here (one iteration, as warm)
    assert warm.iterations.mean() <= sol.iterations.mean()
    cold = solve(DCProblem(c.compile(), src, guess="zero"))
    assert warm.iterations.mean() < cold.iterations.mean()
    np.testing.assert_allclose(warm.v, sol.v, atol=1e-12)


def test_nonconvergence_is_reported():
    rng = np.random.default_rng(0)
    c = layered_circuit((10, 5, 2), rng, rails=(-0.1, 0.1), inputs=np.full(10, 5.0))
    with pytest.raises(ConvergenceError, match="did not converge") as err:
        solve(DCProblem(c), Newton(maxiter=1))
    assert err.value.samples.tolist() == [0]
    sol = solve(DCProblem(c), Newton(maxiter=1), check=False)
    assert not sol.converged[0] and sol.status[0] == 1


def test_bad_input_errors():
    c = Circuit()
    with pytest.raises(CircuitError, match="NaN or Inf"):
        c.add_voltage_source("v1", "a", np.nan)
    with pytest.raises(CircuitError, match="NaN or Inf"):
        c.add_current_source("i1", "a", [1.0, np.inf])
    with pytest.raises(CircuitError, match="must be finite and > 0"):
        c.add_resistor("r1", "a", "b", g=-1e-3)
    with pytest.raises(CircuitError, match="must be finite and > 0"):
        c.add_resistor("r1", "a", "b", r=0.0)
    with pytest.raises(CircuitError, match="must be finite"):
        c.add_resistor("r1", "a", "b", g=np.inf)
    with pytest.raises(CircuitError, match="non-convex"):
        PiecewiseLinear(ron=10, roff=1)
    with pytest.raises(CircuitError, match="IS"):
        Shockley(IS=-1)
    # floating nodes
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    c.add_resistor("r1", "a", "b", r=1e3)
    c.add_resistor("r2", "c", "d", r=1e3)
    c.add_current_source("i1", "c", 1e-3)
    with pytest.raises(CircuitError, match="floating node.*c, d"):
        c.compile()
    # a node held by two sources
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    c.add_voltage_source("v2", "a", 2.0)
    c.add_resistor("r1", "a", "b", r=1.0)
    with pytest.raises(CircuitError, match="two voltage sources"):
        c.compile()
    # overrides: unknown name, NaN, mismatched batch
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    c.add_voltage_source("v2", "c", 1.0)
    c.add_resistor("r1", "a", "b", r=1.0)
    c.add_resistor("r2", "b", "c", r=1.0)
    with pytest.raises(CircuitError, match="no voltage or current source named 'vx'"):
        solve(DCProblem(c, {"vx": 1.0}))
    with pytest.raises(CircuitError, match="NaN or Inf"):
        solve(DCProblem(c, {"v1": [1.0, np.nan]}))
    with pytest.raises(CircuitError, match="batch of 3 values"):
        solve(DCProblem(c, {"v1": [1.0, 2.0], "v2": [1.0, 2.0, 3.0]}))
    with pytest.raises(CircuitError, match="NaN or Inf"):
        solve(DCProblem(c, v0=np.array([np.nan, 0.0, 0.0])))
    with pytest.raises(ValueError, match="reltol"):
        Newton(reltol=np.nan)


def test_temperature_scales_saturation_current():
    d = Shockley(IS=1e-14, N=1.0)
    p27 = d.params(temp=27.0, tnom=27.0)
    p50 = d.params(temp=50.0, tnom=27.0)
    assert p27[0] == 1e-14
    assert p50[0] > 10 * p27[0]  # IS roughly doubles every ~5 K
    assert p50[1] == pytest.approx(fastres.thermal_voltage(50.0))


def test_ideal_diode_limit():
    """PWL with ron -> 0, roff -> inf clips exactly at vfwd (an ideal diode with offset)."""
    c = Circuit()
    c.add_voltage_source("v1", "in", 2.0)
    c.add_resistor("r1", "in", "out", r=1e3)
    c.add_diode("a1", "out", "0", PiecewiseLinear(ron=1e-6, roff=1e12, vfwd=0.5))
    sol = solve(DCProblem(c))
    assert abs(sol.voltage("out")[0] - 0.5) < 1e-8


@pytest.mark.parametrize("structure", ["auto", "dense"])
def test_every_node_held_is_solved_trivially(structure):
    """Issue 13: a circuit whose every node is held by a voltage source has nothing to iterate;
    its answer is those voltages (0 iterations, converged), also for a batch."""
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    c.add_voltage_source("v2", "b", [2.0, -3.0, 100.0])
    c.add_resistor("r1", "a", "b", r=1e3)
    c.add_resistor("r2", "a", "0", r=1.0)
    c.add_diode("d1", "a", "b", Shockley(IS=1e-6, N=0.01))
    sol = solve(DCProblem(c.compile(structure)))
    assert sol.converged.all() and sol.iterations.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(sol.v, [[1.0, 2.0], [1.0, -3.0], [1.0, 100.0]])
    assert sol.residual.tolist() == [0.0, 0.0, 0.0]
    one = solve(DCProblem(c, {"v2": 5.0}))
    assert one.as_dict() == {"a": 1.0, "b": 5.0} and one.iterations[0] == 0


# Two random circuits (benchmarks/solver_fuzz.py, seed 0, #1482 and #62) that plain Newton does
# not solve in 100 iterations: gmin stepping solves the first, source stepping the second.
DECK_GMIN = """fuzz n=4 (benchmarks/solver_fuzz.py circuit 1079)
.options gmin=1e-12
.model dmod D(IS=1.3297209579575327e-13 N=0.5361904463341772)
.model dmod_2 D(IS=4.445657397699147e-10 N=0.017115281421779052)
r1 n0 0 1697921.4077692018
r2 n1 n0 611410.522183911
d3 n1 n2 dmod
r4 n3 n0 820403089.4677545
d5 n2 n3 dmod_2
v0 n1 0 DC 56.2918709687616
.op
.end
"""


def _fuzz_circuit(index):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import solver_fuzz
    return solver_fuzz.random_circuit(np.random.default_rng([0, index]))


@pytest.mark.parametrize("index,aid", [(1079, 1), (31382, 2)])
def test_continuation_aids_solve_what_plain_newton_does_not(index, aid):
    c = _fuzz_circuit(index)
    # from 0 V, as recorded (the linear start of a clipping-diode circuit, DCProblem's default
    # for #62, lets plain Newton solve it: tests/test_netlist_speed_paths.py)
    plain = solve(DCProblem(c, guess="zero"), Newton(aids=False), check=False)
    assert not plain.converged[0] and plain.aid[0] == 0
    sol = solve(DCProblem(c, guess="zero"))
    assert sol.converged[0] and sol.aid[0] == aid
    import solver_fuzz  # on the path through _fuzz_circuit
    assert solver_fuzz.check_answer(c, sol.as_dict())[0]


def test_continuation_aids_leave_plain_newton_solves_alone():
    """A batch where plain Newton solves some samples: those are bit-identical with and without
    the aids, and their ``aid`` is 0; the others are solved by an aid."""
    from fastres.netlist import parse_netlist
    c = parse_netlist(DECK_GMIN)
    assert [e.name for e in c.of_type(VoltageSource)] == ["v0"]
    vals = 56.2918709687616 * np.array([1.0, 0.5, -1.0, 0.1, 2.0, 1.0])
    prob = lambda: DCProblem(c, {"v0": vals})  # noqa: E731
    plain = solve(prob(), Newton(aids=False), check=False)
    sol = solve(prob(), check=False)
    ok = plain.converged
    assert ok.any() and not ok.all()
    np.testing.assert_array_equal(sol.v[ok], plain.v[ok])
    np.testing.assert_array_equal(sol.iterations[ok], plain.iterations[ok])
    assert (sol.aid[ok] == 0).all() and (sol.aid[~ok] > 0).all() and sol.converged.all()


@pytest.mark.parametrize("index", [669, 214, 5])
def test_step_noise_matches_naive(index):
    """``newton._step_noise`` (the step that residual round-off alone produces, ``J^-1 dr``)
    against its numpy twin ``naive.step_noise`` on fuzz circuits (ill-conditioned 669 and 214,
    ordinary 5) at a random point, through the Schur factor the Newton direction left."""
    from fastres.kernels import newton as kn
    from fastres.kernels import stamping as ks
    c = _fuzz_circuit(index)
    prob = DCProblem(c)
    alg = Newton()
    GKK, GKE, gEE, _, da, db, dkind, dpar = prob.system(alg)
    b, vdfix = prob.batch(alg)
    nK, nE, nD = GKK.shape[0], gEE.shape[0], da.shape[0]
    nF = nK + nE
    rng = np.random.default_rng(index)
    x = rng.uniform(-2.0, 2.0, nF)
    vext = np.concatenate([x, vdfix[0]])
    w = kn.workspace(nK, nE, nD, vdfix.shape[1])
    di, dg, _ = naive.diode(dkind, dpar, vext[da] - vext[db])
    di, dg = np.ascontiguousarray(di), np.ascontiguousarray(dg)
    rlin, r = np.empty(nF), np.empty(nF)
    JKK, dE = np.empty((nK, nK)), np.empty(nE)
    ks.assemble(GKK, GKE, gEE, b[0], x, da, db, di, dg, rlin, r, JKK, dE)
    S = np.empty((nK, nK))
    assert ks.schur_newton_direction(JKK, GKE, dE, r, np.empty(nF), w.schur_u, S, w.schur_rhs,
                                     w.jac_e_rsqrt, True)
    assert kn._step_noise(GKE, b[0], vext, da, db, di, dg, JKK, dE, S, w)
    ref = naive.step_noise(GKK, GKE, gEE, b[0], x, vdfix[0], da, db, dkind, dpar, kn.NOISE)
    assert (w.noise_dx >= 0).all()
    np.testing.assert_allclose(w.noise_dx, ref, rtol=1e-6, atol=0.0)


def test_ill_conditioned_circuit_ends_at_round_off():
    """Fuzz circuit 669 (issue 13: refused at the iteration limit, ngspice solves it): a
    cluster n0-n1 held to ground only by a reverse-biased diode (gmin = 1 pS) and fed 22 pA.
    Its voltage is exactly ``(I0 + I1 - IS) / gmin`` (the reverse cubic term is below 1e-12
    relative), but a 34-ohm resistor inside the cluster makes the residual's round-off
    (eps * 0.6 A) worth 1e-4 V there: Newton's steps bounce at that level for ever and never
    pass the 1e-12 step test. At the iteration limit, the round-off floor of the step test
    names that: the status is ROUNDOFF (not converged: the answer is 1e-5-relative, not reltol, accurate; ngspice
    calls its own answer, 2.9e-5 V off, converged); the answer left in place passes the KCL
    check and is as close to the exact one as the arithmetic allows."""
    c = Circuit(title="issue 13 fuzz 669", gmin=1e-12)
    d = Shockley(IS=9.66415013594961e-15, N=0.036398107785629484)
    c.add_diode("d1", "0", "n0", d)
    c.add_resistor("r2", "n1", "n0", r=34.14980726468657)
    c.add_resistor("r3", "n2", "0", r=15022.120227817953)
    c.add_resistor("r4", "n3", "n2", r=6214.732623320143)
    c.add_voltage_source("v0", "n3", -98.34708468266533)
    i0, i1 = 5.514275910215659e-12, 1.6395065189354574e-11
    c.add_current_source("i0", "n0", i0)
    c.add_current_source("i1", "n1", i1)
    sol = solve(DCProblem(c), Newton(aids=False), check=False)
    assert sol.status[0] == Status.ROUNDOFF and not sol.converged[0] and sol.aid[0] == 0
    assert sol.iterations[0] == Newton().maxiter  # Newton's iterates are not changed by the floor
    with pytest.raises(ConvergenceError, match="round-off limit"):
        solve(DCProblem(c))  # reported, never silently accepted; aids are not tried for it
    p = d.params(temp=c.temp, tnom=c.tnom, gmin=c.gmin)
    v0 = (i0 + i1 - p[0]) / c.gmin
    v = sol.as_dict()
    assert abs(v["n0"] - v0) < 1e-5 * v0
    assert abs((v["n1"] - v["n0"]) - i1 * 34.14980726468657) < 1e-12
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import solver_fuzz
    assert solver_fuzz.check_answer(c, v)[0]
