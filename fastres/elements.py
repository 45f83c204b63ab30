"""Circuit elements: plain data (names, nodes, values in V, A, S). See :mod:`fastres.circuit`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Resistor:
    name: str
    a: str
    b: str
    g: float  # conductance, S


@dataclass
class Diode:
    name: str
    anode: str
    cathode: str
    model: object  # Shockley | PiecewiseLinear
    model_name: str


@dataclass
class VoltageSource:
    """Independent DC voltage source from ground to ``node``: V(node) = value (V)."""
    name: str
    node: str
    value: object  # float or (B,) array


@dataclass
class CurrentSource:
    """Independent DC current source: ``value`` amperes injected into ``node`` from ground."""
    name: str
    node: str
    value: object  # float or (B,) array


@dataclass
class Amplifier:
    """Ideal bidirectional amplifier: V(out) = gain * V(inp), and the current drawn from ``out``
    is drawn from ``inp`` multiplied by ``gain`` (power in = power out, so the circuit keeps its
    energy function). In SPICE it is a VCVS (E) with a 0 V sense source and a CCCS (F)."""
    name: str
    inp: str
    out: str
    gain: float
