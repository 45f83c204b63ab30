"""Agreement with ngspice: max |V_fastres - V_ngspice| <= 1e-9 V on every free node.

ngspice runs with ``.options reltol=1e-12 vntol=1e-15 abstol=1e-18 gmin=1e-12``. These tests are
skipped (with a reason) where ngspice is absent, and mandatory in CI (``CI=true``).
"""
import zlib

import numpy as np
import pytest

from fastres import DCProblem, Newton, PiecewiseLinear, Shockley, solve
from fastres.circuit import VoltageSource
from fastres.generators import layered_circuit, random_graph_circuit
from fastres.netlist import write_netlist
from fastres.network import LayeredNetwork, NetworkSpec

pytestmark = pytest.mark.ngspice

OPTIONS = {"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18, "gmin": 1e-12}
TOL = 1e-9


def ngspice_op(circuit, sample=0):
    from fastres import ngspice
    return ngspice.run_op(write_netlist(circuit, sample=sample), extra_options=OPTIONS)


def free_nodes(circuit):
    held = {e.node for e in circuit.of_type(VoltageSource)}
    return [n for n in circuit.nodes if n not in held]


def assert_agree(circuit, sol, sample=0):
    ref = ngspice_op(circuit, sample)
    nodes = free_nodes(circuit)
    ours = np.array([sol.voltage(n)[sample] for n in nodes])
    theirs = np.array([ref[n] for n in nodes])
    err = np.abs(ours - theirs).max()
    assert err <= TOL, f"max |dV| = {err:.3e} V at node {nodes[int(np.argmax(np.abs(ours - theirs)))]}"
    return err


DIODES = {
    "shockley-n1": Shockley(IS=1e-14, N=1.0),
    "shockley-n0.01": Shockley(IS=1e-12, N=0.01),
    "sidiode": PiecewiseLinear(ron=20.0, roff=1e7, vfwd=0.3),
}


@pytest.mark.parametrize("diode", list(DIODES))
@pytest.mark.parametrize("rails", [(0.0, 0.0), (-0.25, 0.3), (0.0, 100.0)])
def test_layered_784_100_10(diode, rails):
    rng = np.random.default_rng(zlib.crc32(f"{diode}{rails}".encode()))
    c = layered_circuit((784, 100, 10), rng, diode=DIODES[diode], rails=rails, output_diodes=True)
    sol = solve(DCProblem(c))
    assert_agree(c, sol)


@pytest.mark.parametrize("diode", list(DIODES))
@pytest.mark.parametrize("seed", range(4))
def test_small_random_graphs(diode, seed):
    rng = np.random.default_rng(100 + seed)
    c = random_graph_circuit(10, rng, diode=DIODES[diode], n_isrc=2)
    sol = solve(DCProblem(c))
    assert_agree(c, sol)


def test_batched_sources_each_sample():
    rng = np.random.default_rng(7)
    c = random_graph_circuit(8, rng)
    B = 3
    for e in c.of_type(VoltageSource):
        c.set_source(e.name, rng.uniform(-2, 2, B))
    sol = solve(DCProblem(c))
    for s in range(B):
        assert_agree(c, sol, sample=s)


def test_temperature_differs_from_tnom():
    rng = np.random.default_rng(3)
    c = random_graph_circuit(8, rng, diode=Shockley(IS=1e-14, N=1.2, tnom=35.0))
    c.temp = 60.0
    c.tnom = 27.0
    assert_agree(c, solve(DCProblem(c)))


@pytest.mark.parametrize("diode", ["shockley", "pwl"])
def test_amplified_layered_network(diode):
    """A deep network with bidirectional amplifiers, written with SPICE E/F controlled sources."""
    params = {} if diode == "shockley" else {"ron": 50.0, "roff": 1e8, "vfwd": 0.2}
    spec = NetworkSpec(sizes=(30, 12, 10, 4), diode=diode, diode_params=params, gain=4.0,
                       input_volts=1.0, rail_lo=-0.2, rail_hi=0.2, paired=False)
    net = LayeredNetwork(spec)
    rng = np.random.default_rng(5)
    p = net.init_params(rng)
    X = rng.uniform(0, 1, (1, 30))
    x = solve(net.problem(p, X), Newton()).x
    c = net.to_circuit(p, X[0])
    ref = ngspice_op(c)
    theirs = np.array([ref[n] for n in net.node_names()])
    assert np.abs(theirs - x[0]).max() <= TOL


@pytest.mark.parametrize("diode", ["shockley", "pwl"])
@pytest.mark.parametrize("arch, paired", [("784-30-10", False), ("784-30-20-10", True)])
def test_training_default_network_after_steps(diode, arch, paired):
    """The network fastres train builds by default (inputs at +-100 V, rails at 0 and 100 V so
    the hidden nodes rectify), also with paired hidden layers (mirrored halves on negated
    rails), after a few EqProp steps have moved its conductances, exported as a deck: ngspice
    finds the same operating point."""
    from fastres.train import TrainConfig, Trainer
    cfg = TrainConfig(arch=arch, diode=diode, paired=paired)
    assert cfg.network.one_sided()
    tr = Trainer(cfg)
    rng = np.random.default_rng(11)
    tr.init_state(rng)
    X = rng.uniform(0, 1, (20, 784))
    X[rng.random(X.shape) < 0.8] = 0.0
    y = rng.integers(0, 10, 20)
    for _ in range(3):
        tr.step(X, y, rng)
    net, p = tr.net, tr.params
    x = solve(net.problem(p, X[:1]), Newton()).x
    ref = ngspice_op(net.to_circuit(p, X[0]))
    theirs = np.array([ref[n] for n in net.node_names()])
    assert np.abs(theirs - x[0]).max() <= TOL
