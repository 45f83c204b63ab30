"""Random test circuits: layered networks (the shape of the paper's networks) and random graphs.

Used by the tests, the benchmarks and the example decks; every generator takes an explicit
``numpy.random.Generator`` so a circuit is reproducible from its seed.
"""
from __future__ import annotations

import numpy as np

from .circuit import Circuit
from .devices import Shockley


def layered_circuit(sizes, rng, *, diode=None, g_range=(1e-6, 1e-4), rails=(0.0, 0.0),
                    bias_volts=1.0, output_diodes=False, inputs=None, gmin=1e-12):
    """A layered resistive network ``sizes = (n_in, h1, ..., n_out)``.

    Each input ``i`` drives two voltage sources ``vxip = +x_i`` and ``vxin = -x_i`` (V), mirrored.
    Every hidden/output node is connected to each node of the previous layer (and to a bias
    source ``vbias`` at ``bias_volts``) by a conductance drawn from U[g_range] (S). Each hidden
    node has two clipping diodes: node -> ``rail_hi`` and ``rail_lo`` -> node, with the rails at
    ``rails = (lo, hi)`` volts. ``inputs`` (n_in,) sets x (V); default U[0, 1].
    """
    n_in = sizes[0]
    diode = Shockley() if diode is None else diode
    c = Circuit(title=f"layered {'-'.join(map(str, sizes))}", gmin=gmin)
    x = rng.uniform(0.0, 1.0, n_in) if inputs is None else np.asarray(inputs, float)
    prev = []
    for i in range(n_in):
        c.add_voltage_source(f"vx{i}p", f"x{i}p", x[i])
        c.add_voltage_source(f"vx{i}n", f"x{i}n", -x[i])
        prev += [f"x{i}p", f"x{i}n"]
    c.add_voltage_source("vbias", "bias", bias_volts)
    c.add_voltage_source("vrlo", "rail_lo", rails[0])
    c.add_voltage_source("vrhi", "rail_hi", rails[1])
    lo, hi = g_range
    for layer, n in enumerate(sizes[1:], start=1):
        last = layer == len(sizes) - 1
        names = [f"o{j}" if last else f"h{layer}_{j}" for j in range(n)]
        for j, node in enumerate(names):
            g = rng.uniform(lo, hi, len(prev) + 1)
            for k, p in enumerate(prev):
                c.add_resistor(f"r{node}_{k}", p, node, g=g[k])
            c.add_resistor(f"r{node}_b", "bias", node, g=g[-1])
            if not last or output_diodes:
                c.add_diode(f"{node}_hi", node, "rail_hi", diode)
                c.add_diode(f"{node}_lo", "rail_lo", node, diode)
        prev = names
    return c


def input_batch(sizes_in, B, rng):
    """Source overrides for a batch of B random inputs in [0, 1] V: {source name: (B,) volts}."""
    X = rng.uniform(0.0, 1.0, (B, sizes_in))
    out = {}
    for i in range(sizes_in):
        out[f"vx{i}p"] = X[:, i]
        out[f"vx{i}n"] = -X[:, i]
    return out


def random_graph_circuit(n, rng, *, p_edge=0.3, n_diodes=None, diode=None, n_vsrc=2, n_isrc=1,
                         g_range=(1e-5, 1e-2), v_range=(-2.0, 2.0), i_range=(-1e-3, 1e-3), gmin=1e-12):
    """A random connected graph of ``n`` nodes with resistors, diodes and grounded sources.

    Each diode sits in series with a resistor (diode ``a -> m_k``, resistor ``m_k -> b``) so that
    no path of diodes alone joins two sources: even for N = 0.01 every current stays bounded.
    """
    diode = Shockley() if diode is None else diode
    c = Circuit(title=f"random graph n={n}", gmin=gmin)
    names = [f"n{i}" for i in range(n)]
    for i in range(1, n):  # a spanning tree keeps every node connected
        j = int(rng.integers(0, i))
        c.add_resistor(f"t{i}", names[i], names[j], g=rng.uniform(*g_range))
    k = 0
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < p_edge:
                c.add_resistor(f"e{k}", names[i], names[j], g=rng.uniform(*g_range))
                k += 1
    n_diodes = n if n_diodes is None else n_diodes
    for d in range(n_diodes):
        a, b = rng.choice(n + 1, 2, replace=False)
        na = "0" if a == n else names[a]
        nb = "0" if b == n else names[b]
        c.add_diode(f"{d}", na, f"m{d}", diode)
        c.add_resistor(f"s{d}", f"m{d}", nb, g=rng.uniform(*g_range))
    src = rng.choice(n, n_vsrc + n_isrc, replace=False)
    for s in range(n_vsrc):
        c.add_voltage_source(f"s{s}", names[src[s]], rng.uniform(*v_range))
    for s in range(n_isrc):
        c.add_current_source(f"s{s}", names[src[n_vsrc + s]], rng.uniform(*i_range))
    return c
