"""The fast netlist path (issue 10): array-based compilation, sources built row by row from a
dict, the held-voltage currents in one BLAS product, and the linear start of ``DCProblem``.

Each new path is checked against the plain numpy twin (``tests/naive.py``: element-by-element
nodal matrices and the batched reference Newton) and against the old path it replaces
(``guess="zero"``, the 0 V start; the contiguous ``prepare``).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

import naive
from fastres import Circuit, DCProblem, Newton, PiecewiseLinear, Shockley, solve
from fastres.elements import Diode
from fastres.errors import CircuitError, ConfigError
from fastres.generators import input_batch, layered_circuit, random_graph_circuit
from fastres.netlist import parse_netlist
from fastres.kernels import guess
from fastres.solver import clipped_start, held_currents, linear_start

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import netlist_speed  # noqa: E402  (the benchmark's deck and batch)


def _deck(sizes=(30, 12, 4), IS=1e-12, seed=0):
    rng = np.random.default_rng(seed)
    return parse_netlist(netlist_speed.deck_text(rng, sizes, IS=IS)), rng


def _model_deck(diode, seed):
    """A 40-16-5 deck whose diodes are all of ``diode``'s model, and the rng after it."""
    rng = np.random.default_rng(seed)
    pwl = (diode.ron, diode.roff, diode.vfwd) if isinstance(diode, PiecewiseLinear) else None
    return parse_netlist(netlist_speed.deck_text(rng, (40, 16, 5), IS=getattr(diode, "IS", 1e-12),
                                                 pwl=pwl)), rng


def _perm(cc, sysn):
    """Columns of naive's free order in the compiled circuit's kernel order."""
    col = {n: k for k, n in enumerate(sysn.free)}
    return np.array([col[n] for n in cc.free_nodes])


@pytest.mark.parametrize("make", [
    lambda rng: layered_circuit((6, 5, 3), rng),
    lambda rng: layered_circuit((5, 4, 4, 2), rng, diode=PiecewiseLinear(), output_diodes=True),
    lambda rng: random_graph_circuit(9, rng),
    lambda rng: random_graph_circuit(12, rng, diode=PiecewiseLinear(), p_edge=0.5),
    lambda rng: _deck(seed=int(rng.integers(100)))[0],
])
@pytest.mark.parametrize("structure", ["auto", "dense"])
def test_compiled_matrices_match_the_element_by_element_twin(make, structure):
    rng = np.random.default_rng(3)
    c = make(rng)
    cc = c.compile(structure)
    sysn = naive._System(c)
    p = _perm(cc, sysn)
    G = naive.dense_conductance(cc.GKK, cc.GKE, cc.gEE)
    np.testing.assert_allclose(G, sysn.Gff[np.ix_(p, p)], rtol=1e-13, atol=1e-300)
    # GFX columns: "0" then the held nodes; naive's Gfx has the held nodes only
    fixed = {n: k for k, n in enumerate(sysn.fixed)}
    cols = [fixed[n] for n in cc.fixed_nodes[1:]]
    np.testing.assert_allclose(cc.GFX[:, 1:], sysn.Gfx[np.ix_(p, cols)], rtol=1e-13, atol=1e-300)


def test_compile_reports_bad_circuits_as_before():
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    c.add_resistor("r1", "a", "b", g=1e-3)
    c.add_resistor("r2", "c", "d", g=1e-3)  # c, d float
    with pytest.raises(CircuitError, match="floating node.*c, d"):
        c.compile()
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    r = c.add_resistor("r1", "a", "b", g=1e-3)
    c.add_resistor("r2", "b", "0", g=1e-3)
    r.g = float("nan")
    with pytest.raises(CircuitError, match="resistor r1: conductance nan"):
        c.compile()


def test_amplifier_circuit_compiles_and_solves_like_its_elements():
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    c.add_resistor("r1", "a", "b", g=1e-3)
    c.add_amplifier("x1", "b", "c", 2.0)
    c.add_resistor("r2", "c", "d", g=2e-3)
    c.add_resistor("r3", "d", "0", g=1e-3)
    c.add_resistor("r4", "c", "b", g=1e-3)
    c.add_diode("d1", "d", "0")
    sol = solve(DCProblem(c))
    zero = solve(DCProblem(c, guess="zero"))
    np.testing.assert_allclose(sol.v, zero.v, rtol=0, atol=1e-12)
    v = sol.as_dict()
    assert v["c"] == pytest.approx(2.0 * v["b"], rel=1e-15)


def test_source_rows_prepare_and_held_currents_match_the_twin():
    c, rng = _deck()
    B = 37
    src = netlist_speed.source_batch(rng, B, 30)
    src["vx3"] = 0.25  # a scalar override among the arrays
    c.add_current_source("i1", "h2", 1e-4)
    c.add_current_source("i2", "o1", np.linspace(-1e-4, 1e-4, B))
    c.add_current_source("i3", "x0", 1.0)  # on a held node: no effect
    cc = c.compile()
    rows, inj = cc.source_rows(src)
    vfix, inj2 = cc.prepare(src)
    assert vfix.flags.c_contiguous and inj2.flags.c_contiguous
    np.testing.assert_array_equal(vfix, rows.T)
    np.testing.assert_array_equal(inj2, inj)
    b = held_currents(rows, cc, inj)
    # the twin: b = inj - vfix @ Gfx^T, node by node (naive's order)
    sysn = naive._System(c)
    vals, _ = naive._source_values(c, src)
    vf = np.stack([vals[name] for name in sysn.vsrc_of_fixed], axis=1)
    injn = np.zeros((B, len(sysn.free)))
    for name, k in sysn.isrc:
        injn[:, k] += vals[name]
    bn = injn - vf @ sysn.Gfx.T
    np.testing.assert_allclose(b, bn[:, _perm(cc, sysn)], rtol=1e-12, atol=1e-18)
    # the old product (the numba kernel on the contiguous matrix) gives the same currents
    old = naive.source_currents(vfix, cc.P, 0, np.zeros(cc.nF), inj2)
    np.testing.assert_allclose(b, old, rtol=1e-12, atol=1e-18)


def test_source_errors_name_the_source():
    c, rng = _deck()
    src = netlist_speed.source_batch(rng, 5, 30)
    src["vx7"] = src["vx7"].copy()
    src["vx7"][3] = np.nan
    with pytest.raises(CircuitError, match=r"source vx7: NaN or Inf value \(samples \[3\]\)"):
        solve(DCProblem(c, src))
    src["vx7"][3] = 0.0
    src["vx8"] = np.zeros(4)
    with pytest.raises(CircuitError, match="source vx8: batch of 4 values, others have 5"):
        solve(DCProblem(c, src))
    src["vx8"] = np.full(5, 1e308)  # a sum that overflows is not a bad value
    assert DCProblem(c, src).prepared()[1].shape == (5, 31)
    with pytest.raises(CircuitError, match="no voltage or current source named 'vq'"):
        solve(DCProblem(c, {"VQ": 1.0}))
    c.add_current_source("iheld", "x0", 0.0)  # on a held node: not in any matrix
    with pytest.raises(CircuitError, match="source iheld: NaN or Inf"):
        solve(DCProblem(c, {"IHELD": np.array([0.0, np.inf])}))
    with pytest.raises(ConfigError, match="DCProblem.guess='ff'"):
        DCProblem(c, guess="ff")


def test_linear_start_solves_the_resistor_network():
    c, rng = _deck()
    cc = c.compile()
    assert cc.clipping_only
    prob = DCProblem(cc, netlist_speed.source_batch(rng, 16, 30))
    b, _ = prob.batch(Newton())
    x = linear_start(cc, b)
    np.testing.assert_allclose(x, naive.linear_solve(cc.GKK, cc.GKE, cc.gEE, b), rtol=1e-10,
                               atol=1e-13)
    # the serial kernel on a slice, and a non-finite sample that starts at 0 V
    L, inv = cc.linear_factor
    xs = np.empty((3, cc.nF))
    bs = b[:3].copy()
    bs[1, 0] = np.inf
    assert guess.linear_start_range(L, cc.GKE, inv, bs, 0, 3, xs, np.empty(cc.nK),
                                    np.empty(cc.nE)) == 1
    np.testing.assert_array_equal(xs[1], 0.0)
    np.testing.assert_allclose(xs[[0, 2]], x[[0, 2]], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("diode", [Shockley(IS=1e-12), PiecewiseLinear(ron=1.0, roff=1e9, vfwd=0.4)])
def test_linear_start_gives_the_same_answer_in_fewer_iterations(diode):
    c, rng = _model_deck(diode, 5)
    assert {type(d.model) for d in c.of_type(Diode)} == {type(diode)}
    src = netlist_speed.source_batch(rng, 200, 40)
    new = solve(DCProblem(c, src))
    old = solve(DCProblem(c, src, guess="zero"))
    lin = solve(DCProblem(c, src, guess="linear"))
    clip = solve(DCProblem(c, src, guess="clipped"))
    assert new.converged.all() and old.converged.all() and lin.converged.all()
    np.testing.assert_allclose(new.v, old.v, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lin.v, old.v, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(new.v, clip.v)  # "auto" is the clipped start here
    assert new.iterations.mean() < lin.iterations.mean() < old.iterations.mean()
    nodes, V = naive.reference_solve(c, {k: v[:40] for k, v in src.items()})
    assert nodes == new.nodes
    np.testing.assert_allclose(new.v[:40], V, rtol=0, atol=1e-9)


def test_layered_generator_circuit_and_warm_start():
    rng = np.random.default_rng(8)
    c = layered_circuit((20, 10, 4), rng)  # mirrored inputs, bias source, rails
    src = input_batch(20, 50, rng)
    new = solve(DCProblem(c, src))
    old = solve(DCProblem(c, src, guess="zero"))
    np.testing.assert_allclose(new.v, old.v, rtol=0, atol=1e-9)
    assert new.iterations.mean() <= old.iterations.mean()
    warm = solve(DCProblem(c, src, v0=new))  # v0 wins over the guess
    assert warm.iterations.max() <= 2


def test_auto_keeps_the_zero_start_where_diodes_join_free_nodes():
    rng = np.random.default_rng(11)
    c = random_graph_circuit(8, rng)  # each diode in series with a resistor: free-free diodes
    cc = c.compile()
    assert not cc.clipping_only
    a = solve(DCProblem(cc), check=False)
    z = solve(DCProblem(cc, guess="zero"), check=False)
    np.testing.assert_array_equal(a.v, z.v)
    np.testing.assert_array_equal(a.iterations, z.iterations)


def test_singular_resistor_network_falls_back_to_zero():
    c = Circuit()
    c.add_voltage_source("v1", "a", 2.0)
    c.add_diode("d1", "a", "m")  # m is reached only through diodes: G_FF is singular
    c.add_diode("d2", "m", "0")
    cc = c.compile()
    assert cc.linear_factor is None
    a = solve(DCProblem(cc, guess="linear"))
    z = solve(DCProblem(cc, guess="zero"))
    np.testing.assert_array_equal(a.v, z.v)
    assert a.voltage("m")[0] == pytest.approx(1.0, abs=1e-12)


def test_linear_start_lets_plain_newton_solve_fuzz_62():
    """benchmarks/solver_fuzz.py circuit #62 (clipping diodes only) needs source stepping from
    0 V; from the linear start plain Newton solves it, to the same KCL accuracy."""
    import solver_fuzz
    c = solver_fuzz.random_circuit(np.random.default_rng([0, 62]))
    assert c.compile().clipping_only
    sol = solve(DCProblem(c), Newton(aids=False))
    net, _ = naive.element_kcl(c, sol.as_dict())
    assert max(abs(i) for i in net.values()) < 1e-12
    aided = solve(DCProblem(c, guess="zero"))
    assert aided.aid[0] == 2
    np.testing.assert_allclose(sol.v, aided.v, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("diode", [Shockley(IS=1e-12), PiecewiseLinear(ron=1.0, roff=1e9, vfwd=0.4)])
def test_clipped_start_steps_match_the_twin(diode):
    c, rng = _model_deck(diode, 21)
    cc = c.compile()
    assert cc.clipped_factor is not None
    prob = DCProblem(cc, netlist_speed.source_batch(rng, 12, 40))
    b, vdfix = prob.batch(Newton())
    x_lin = linear_start(cc, b)
    for steps in (1, 2):
        twin = naive.newton_steps(cc.GKK, cc.GKE, cc.gEE, b, x_lin, vdfix, cc.da, cc.db,
                                  cc.dkind, cc.dpar, steps)
        mine = clipped_start(cc, b, vdfix, steps=steps, tol=0.0, inner_tol=1e-15, inner_max=500)
        np.testing.assert_allclose(mine, twin, rtol=0, atol=1e-11)
    assert np.abs(mine - x_lin).max() > 1e-3  # the diodes moved the start
    # the default start: close to the circuit's own solution, which Newton then reaches in
    # fewer steps, as the numpy reference Newton does
    start = clipped_start(cc, b, vdfix)
    _, V = naive.reference_solve(c, {k: v for k, v in prob.sources.items()})
    sol = solve(DCProblem(cc, prob.sources))
    lin = solve(DCProblem(cc, prob.sources, guess="linear"))
    assert np.abs(sol.x - start).max() < 1e-9 < np.abs(sol.x - x_lin).max()
    assert sol.iterations.max() < lin.iterations.min()
    np.testing.assert_allclose(sol.v, V, rtol=0, atol=1e-9)


@pytest.mark.parametrize("bad", [dict(inner_max=0), dict(steps=-1), dict(tol=float("nan")),
                                 dict(inner_tol=0.0)])
def test_clipped_start_rejects_settings_that_would_skip_its_inner_solve(bad):
    """inner_max = 0 used to add an uninitialised step to the start (review of the third pass)."""
    c, rng = _model_deck(Shockley(IS=1e-12), 21)
    cc = c.compile()
    prob = DCProblem(cc, netlist_speed.source_batch(rng, 3, 40))
    b, vdfix = prob.batch(Newton())
    with pytest.raises(ConfigError, match="clipped start"):
        clipped_start(cc, b, vdfix, **bad)


def test_clipped_start_brings_the_benchmark_deck_to_one_newton_iteration():
    """On (a small copy of) the benchmark's deck the start is within Newton's tolerance: Newton
    takes one step, which its own termination test accepts, to the same answer as from the
    linear and the 0 V starts and as the numpy twin."""
    c, rng = _deck(sizes=(60, 20, 5), seed=2)
    src = netlist_speed.source_batch(rng, 50, 60)
    sol = solve(DCProblem(c, src))
    assert np.all(sol.iterations == 1)
    for g in ("linear", "zero"):
        other = solve(DCProblem(c, src, guess=g))
        np.testing.assert_allclose(sol.v, other.v, rtol=0, atol=1e-9)
        assert other.iterations.min() > 1
    _, V = naive.reference_solve(c, src)
    np.testing.assert_allclose(sol.v, V, rtol=0, atol=1e-9)


def test_clipped_start_serial_and_parallel_kernels_agree_and_a_bad_sample_starts_at_zero():
    c, rng = _deck(seed=4)
    cc = c.compile()
    L, inv = cc.linear_factor
    LK, ptr, idx, side, col = cc.clipped_factor
    prob = DCProblem(cc, netlist_speed.source_batch(rng, 40, 30))
    b, vdfix = prob.batch(Newton())
    head = (L, LK, cc.GKE, cc.gEE, inv)
    tail = (cc.dkind, cc.dpar, ptr, idx, side, col, 6, 1e-7, 1e-4, 20)
    par = np.empty((40, cc.nF))
    assert guess.clipped_start(*head, b, vdfix, *tail, 3, par) == 0
    ser = np.empty((40, cc.nF))
    assert guess.clipped_start_range(*head, b, vdfix, *tail, 0, 40, ser) == 0
    np.testing.assert_array_equal(par, ser)
    bs = b[:2].copy()
    bs[1, cc.nK] = np.nan  # an E node's source current: its linear start is not finite, the
    xs = np.empty((2, cc.nF))  # sample starts at 0 V and takes no step
    assert guess.clipped_start_range(*head, bs, vdfix, *tail, 0, 2, xs) == 1
    np.testing.assert_array_equal(xs[1], 0.0)
    np.testing.assert_array_equal(xs[0], ser[0])
    # diodes that evaluate to NaN: no step is taken, every sample keeps its linear start
    nan_tail = (cc.dkind, np.full_like(cc.dpar, np.nan)) + tail[2:]
    xn = np.empty((40, cc.nF))
    assert guess.clipped_start_range(*head, b, vdfix, *nan_tail, 0, 40, xn) == 40
    np.testing.assert_array_equal(xn, linear_start(cc, b))


def test_clipped_start_needs_every_diode_on_the_eliminated_layer():
    c = Circuit()
    c.add_voltage_source("v1", "a", 1.0)
    c.add_resistor("r1", "a", "m", r=1e3)
    c.add_resistor("r2", "m", "0", r=1e3)
    c.add_diode("d1", "m", "0")
    cc = c.compile()
    assert cc.clipping_only
    if cc.nE and cc.da[0] >= cc.nK:  # the diode's node was eliminated: the start applies
        assert cc.clipped_factor is not None
    d = Circuit()
    d.add_voltage_source("v1", "a", 1.0)
    d.add_resistor("r1", "a", "m", r=1e3)
    d.add_diode("d1", "m", "n")  # a diode between two free nodes
    d.add_resistor("r2", "n", "0", r=1e3)
    dc = d.compile()
    assert dc.clipped_factor is None
    z = solve(DCProblem(dc, guess="zero"))
    a = solve(DCProblem(dc, guess="clipped"))  # falls back (to the linear start)
    np.testing.assert_allclose(a.v, z.v, rtol=0, atol=1e-9)
