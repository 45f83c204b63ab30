"""Static power per inference (fastres.evaluate.static_power) against an element-by-element sum
over the network written as a Circuit, and against the power the voltage sources deliver."""
import numpy as np
import pytest

import naive
from fastres.circuit import Diode, Resistor, VoltageSource
from fastres.evaluate import static_power
from fastres.network import LayeredNetwork, NetworkSpec
from fastres.solver import Newton, solve


@pytest.mark.parametrize("diode, paired, sizes", [("pwl", False, (12, 6, 3)), ("shockley", True, (12, 6, 4, 3))])
def test_static_power_matches_element_sums(diode, paired, sizes):
    net = LayeredNetwork(NetworkSpec(sizes=sizes, diode=diode, input_volts=5.0, rail_hi=5.0, paired=paired))
    rng = np.random.default_rng(3)
    p = net.init_params(rng)
    X = rng.uniform(0, 1, (4, sizes[0]))
    x = solve(net.problem(p, X), Newton()).x
    P = static_power(net, p, X, x)
    for s in range(X.shape[0]):
        c = net.to_circuit(p, X[s])
        volts = dict(zip(net.node_names(), x[s]))
        for e in c.of_type(VoltageSource):
            volts[e.node] = float(e.value)
        v = dict(volts, **{"0": 0.0})
        dissipated = 0.0
        for e in c.elements.values():
            if isinstance(e, Resistor):
                dissipated += e.g * (v[e.a] - v[e.b]) ** 2
            elif isinstance(e, Diode):
                vd = v[e.anode] - v[e.cathode]
                i, _, _ = naive.diode(np.array([e.model.kind]), e.model.params(gmin=c.gmin)[None, :], np.array([[vd]]))
                dissipated += float(i[0, 0]) * vd
        assert P[s] == pytest.approx(dissipated, rel=1e-9)
        # ... which the voltage sources deliver: sum over sources of V times the current they push out
        kcl, _ = naive.element_kcl(c, {n: val for n, val in volts.items() if n != "0"})
        net_out = {}
        for e in c.elements.values():  # current leaving each held node through the elements
            if isinstance(e, Resistor):
                for a, b in ((e.a, e.b), (e.b, e.a)):
                    net_out[a] = net_out.get(a, 0.0) + e.g * (v[a] - v[b])
            elif isinstance(e, Diode):
                vd = v[e.anode] - v[e.cathode]
                i, _, _ = naive.diode(np.array([e.model.kind]), e.model.params(gmin=c.gmin)[None, :], np.array([[vd]]))
                net_out[e.anode] = net_out.get(e.anode, 0.0) + float(i[0, 0])
                net_out[e.cathode] = net_out.get(e.cathode, 0.0) - float(i[0, 0])
        delivered = sum(float(e.value) * net_out.get(e.node, 0.0) for e in c.of_type(VoltageSource))
        assert P[s] == pytest.approx(delivered, rel=1e-6)
