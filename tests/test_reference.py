"""The plain-numpy reference solver ``naive.reference_solve``: checked against scipy (linear),
against KCL evaluated element by element (``naive.element_kcl``), against ``fastres.solve`` (to
1e-12 V) and against ngspice."""
import numpy as np
import pytest
import scipy.linalg

from fastres import Circuit, DCProblem, Newton, PiecewiseLinear, Shockley, solve
from fastres.circuit import Resistor, VoltageSource
from fastres.errors import CircuitError
from fastres.generators import input_batch, layered_circuit, random_graph_circuit
from naive import element_kcl, reference_solve

TOL_V = 1e-12

DIODES = {
    "shockley": Shockley(),
    "shockley_n0.5": Shockley(N=0.5, IS=1e-12),
    "pwl": PiecewiseLinear(ron=10.0, roff=1e6, vfwd=0.3),
    "pwl_breakdown": PiecewiseLinear(ron=1.0, roff=1e5, vfwd=0.1, vrev=0.5, rrev=50.0),
}


def _graph_batch(seed, diode, B=6):
    rng = np.random.default_rng(seed)
    c = random_graph_circuit(int(rng.integers(3, 12)), rng, diode=diode)
    src = {"vs0": rng.uniform(-2, 2, B), "vs1": rng.uniform(-2, 2, B),
           "is0": rng.uniform(-1e-3, 1e-3, B)}
    return c, src


def test_linear_circuit_matches_scipy():
    rng = np.random.default_rng(7)
    n = 12
    c = Circuit()
    names = [f"n{i}" for i in range(n)]
    for i in range(1, n):
        c.add_resistor(f"t{i}", names[i], names[int(rng.integers(0, i))], g=rng.uniform(1e-4, 1e-2))
    for k in range(20):
        a, b = rng.choice(n, 2, replace=False)
        c.add_resistor(f"e{k}", names[a], names[b], r=rng.uniform(10.0, 1e4))
    c.add_resistor("rg", names[3], "0", r=1e3)
    c.add_voltage_source("v1", names[0], 1.5)
    c.add_voltage_source("v2", names[5], -0.7)
    c.add_current_source("i1", names[8], 2e-3)
    c.add_current_source("i2", names[0], 1.0)  # on a held node: no effect
    B = 4
    src = {"v1": rng.uniform(-3, 3, B), "i1": rng.uniform(-1e-2, 1e-2, B)}
    nodes, V = reference_solve(c, src)
    assert V.shape == (B, n) and nodes == c.nodes

    # the nodal system written out by hand, solved by scipy for each sample
    free = [m for m in nodes if m not in (names[0], names[5])]
    idx = {m: k for k, m in enumerate(free)}
    for s in range(B):
        fixed = {names[0]: src["v1"][s], names[5]: -0.7, "0": 0.0}
        G = np.zeros((len(free), len(free)))
        rhs = np.zeros(len(free))
        rhs[idx[names[8]]] += src["i1"][s]
        for e in c.of_type(Resistor):
            for p, q in ((e.a, e.b), (e.b, e.a)):
                if p in idx:
                    G[idx[p], idx[p]] += e.g
                    if q in idx:
                        G[idx[p], idx[q]] -= e.g
                    else:
                        rhs[idx[p]] += e.g * fixed[q]
        x = scipy.linalg.solve(G, rhs, assume_a="pos")
        got = np.array([V[s, nodes.index(m)] for m in free])
        np.testing.assert_allclose(got, x, rtol=0, atol=1e-12)
        assert V[s, nodes.index(names[0])] == src["v1"][s]


@pytest.mark.parametrize("kind", list(DIODES))
@pytest.mark.parametrize("seed", range(4))
def test_reference_satisfies_kcl(seed, kind):
    c, src = _graph_batch(seed, DIODES[kind])
    nodes, V = reference_solve(c, src)
    for s in range(V.shape[0]):
        cs = c.copy()
        for name, val in src.items():
            cs.set_source(name, val[s])
        net, biggest = element_kcl(cs, dict(zip(nodes, V[s])))
        worst = max(abs(i) for i in net.values())
        assert worst <= 1e-13 * max(biggest, 1e-3), (s, worst, biggest)


@pytest.mark.parametrize("kind", list(DIODES))
@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_fastres_random_graph(seed, kind):
    c, src = _graph_batch(seed, DIODES[kind])
    nodes, V = reference_solve(c, src)
    sol = solve(DCProblem(c, src), Newton())
    assert nodes == sol.nodes
    assert np.abs(V - sol.v).max() <= TOL_V


@pytest.mark.parametrize("sizes, kw", [
    ((20, 8, 4), {}),
    ((20, 8, 4), {"bias_volts": 20.0, "g_range": (1e-5, 1e-3)}),  # diodes well forward
    ((20, 8, 4), {"rails": (-0.3, 0.3), "bias_volts": 5.0, "output_diodes": True}),
    ((20, 8, 4), {"diode": PiecewiseLinear(ron=100.0, roff=1e7, vfwd=0.2), "bias_volts": 10.0}),
    ((784, 100, 10), {}),
    ((784, 100, 10), {"diode": PiecewiseLinear(ron=1e3, roff=1e8, vfwd=0.0)}),
])
def test_agrees_with_fastres_layered(sizes, kw):
    rng = np.random.default_rng(11)
    c = layered_circuit(sizes, rng, **kw)
    src = input_batch(sizes[0], 5, rng)
    nodes, V = reference_solve(c, src)
    sol = solve(DCProblem(c, src), Newton())
    assert V.shape == (5, len(c.nodes))
    assert np.abs(V - sol.v).max() <= TOL_V
    # the compiled circuit is accepted too (only its .circuit is used)
    _, V2 = reference_solve(c.compile(), src)
    np.testing.assert_array_equal(V, V2)


def test_chunking_and_scalar_sources():
    rng = np.random.default_rng(3)
    c = layered_circuit((6, 5, 3), rng, bias_volts=8.0)
    src = input_batch(6, 7, rng)
    _, V = reference_solve(c, src, chunk=3)
    _, V1 = reference_solve(c, src)
    np.testing.assert_allclose(V, V1, rtol=0, atol=1e-14)
    nodes, V0 = reference_solve(c)  # circuit values: a batch of one
    assert V0.shape == (1, len(nodes))


def test_bad_sources():
    c = layered_circuit((3, 2, 1), np.random.default_rng(0))
    with pytest.raises(CircuitError, match="no voltage or current source"):
        reference_solve(c, {"nope": [1.0]})
    with pytest.raises(CircuitError, match="batch sizes"):
        reference_solve(c, {"vx0p": [1.0, 2.0], "vx1p": [1.0, 2.0, 3.0]})


NGSPICE_OPTIONS = {"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18, "gmin": 1e-12}  # as test_ngspice


@pytest.mark.ngspice
@pytest.mark.parametrize("kind", list(DIODES))
def test_agrees_with_ngspice(kind):
    """The reference against ngspice directly, not only through fastres.solve: the naive diode
    equations are ngspice's (max |dV| <= 1e-9 V on the free nodes, the tolerance of
    test_ngspice)."""
    from fastres import ngspice
    from fastres.netlist import write_netlist
    c, src = _graph_batch(20, DIODES[kind], B=2)
    nodes, V = reference_solve(c, src)
    held = {e.node for e in c.of_type(VoltageSource)}
    for s in range(V.shape[0]):
        cs = c.copy()
        for name, val in src.items():
            cs.set_source(name, val[s])
        ref = ngspice.run_op(write_netlist(cs), extra_options=NGSPICE_OPTIONS)
        free = [n for n in nodes if n not in held]
        err = max(abs(V[s, nodes.index(n)] - ref[n]) for n in free)
        assert err <= 1e-9, (s, err)
