"""Circuits: named nodes, resistors, diodes and grounded sources, compiled to flat arrays.

A :class:`Circuit` is plain data. :meth:`Circuit.compile` checks it and turns it into a
:class:`CompiledCircuit`: the free (unknown) node voltages are split into a dense block ``K`` and
an independent set ``E`` (no resistor or diode between two ``E`` nodes), so that the Jacobian's
``E`` block is diagonal and is eliminated exactly (a Schur complement) instead of being factored.
For a layered network (no resistor inside a layer) ``E`` is a whole layer.

Units: volts (V), amperes (A), siemens (S), ohms, degrees Celsius.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field

import numpy as np

from .compiled import CompiledCircuit, compile_circuit
from .devices import DEVICE_KINDS, Shockley
from .elements import Amplifier, CurrentSource, Diode, Resistor, VoltageSource
from .errors import CircuitError

__all__ = ["Circuit", "Resistor", "Diode", "VoltageSource", "CurrentSource", "Amplifier", "canonical_node"]

GROUND_NAMES = ("0", "gnd")
_BAD_NODE_CHAR = re.compile(r"[\s()=,]")  # white space as str.isspace, and ( ) = ,
_SPACE = re.compile(r"\s")


def canonical_node(name) -> str:
    """Node names are case-insensitive strings, stored lower-case; ``0`` and ``gnd`` are ground."""
    s = str(name).strip().lower()
    if not s or _BAD_NODE_CHAR.search(s):
        raise CircuitError(f"invalid node name {name!r}: must be non-empty, without spaces, '(', ')', '=' or ','")
    return "0" if s in GROUND_NAMES else s


def _as_value(kind, name, value):
    """A source value: a finite float, or a finite float64 array of shape (B,)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise CircuitError(f"{kind} {name}: value must be a scalar or a 1-D batch of shape (B,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CircuitError(f"{kind} {name}: value contains NaN or Inf")
    if arr.ndim == 1:
        if arr.size == 0:
            raise CircuitError(f"{kind} {name}: empty batch of values")
        return arr.copy()
    return float(arr)


@dataclass
class Circuit:
    """A DC circuit of resistors, diodes and grounded independent sources.

    ``gmin`` (S) is put in parallel with every Shockley diode (as ngspice does); ``temp`` and
    ``tnom`` (degC) are the simulation and nominal temperatures. Element names are
    case-insensitive and start with their SPICE letter (``r``, ``d``/``a``, ``v``, ``i``); a name
    that does not is prefixed with it.
    """

    title: str = "fastres circuit"
    gmin: float = 1e-12
    temp: float = 27.0
    tnom: float = 27.0
    elements: dict = field(default_factory=dict)
    _nodes: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("gmin", "temp", "tnom"):
            val = getattr(self, key)
            if isinstance(val, bool) or not isinstance(val, numbers.Real) or not math.isfinite(val):
                raise CircuitError(f"circuit option {key}={val!r} must be a finite number")
            setattr(self, key, float(val))  # numpy scalars welcome, stored as floats
        if self.gmin < 0:
            raise CircuitError(f"circuit option gmin={self.gmin} must be >= 0 S")

    # -- building ---------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        """Non-ground node names in order of first use."""
        return list(self._nodes)

    def _node(self, name) -> str:
        n = canonical_node(name)
        if n != "0":
            self._nodes.setdefault(n, None)
        return n

    def _add(self, elem, letter):
        name = str(elem.name).strip().lower()
        if not name or _SPACE.search(name):
            raise CircuitError(f"invalid element name {elem.name!r}")
        if not name.startswith(letter):
            name = letter + name
        if name in self.elements:
            raise CircuitError(f"duplicate element name {name!r}")
        elem.name = name
        self.elements[name] = elem
        return elem

    def add_resistor(self, name, a, b, *, g=None, r=None) -> Resistor:
        """Resistor between nodes ``a`` and ``b``: conductance ``g`` (S) or resistance ``r`` (ohm)."""
        if (g is None) == (r is None):
            raise CircuitError(f"resistor {name}: give exactly one of g (S) or r (ohm)")
        val = float(g) if g is not None else None
        if r is not None:
            r = float(r)
            if not math.isfinite(r) or r <= 0:
                raise CircuitError(f"resistor {name}: resistance {r!r} ohm must be finite and > 0")
            val = 1.0 / r
        if not math.isfinite(val) or val <= 0:
            raise CircuitError(f"resistor {name}: conductance {val!r} S must be finite and > 0")
        return self._add(Resistor(name, self._node(a), self._node(b), val), "r")

    def add_diode(self, name, anode, cathode, model=None, model_name=None) -> Diode:
        """Diode from ``anode`` to ``cathode`` (current flows anode -> cathode when forward).

        ``model`` is a :class:`~fastres.devices.Shockley` (default) or
        :class:`~fastres.devices.PiecewiseLinear`; the latter is an XSPICE ``a`` device in SPICE.
        """
        model = Shockley() if model is None else model
        if DEVICE_KINDS.get(getattr(model, "kind", None)) is not type(model):
            raise CircuitError(f"diode {name}: unsupported model {model!r}")
        letter = model.spice_letter
        mname = (model_name or ("dmod" if letter == "d" else "pwlmod")).lower()
        return self._add(Diode(name, self._node(anode), self._node(cathode), model, mname), letter)

    def add_voltage_source(self, name, node, volts) -> VoltageSource:
        """DC voltage source holding ``node`` at ``volts`` (V) against ground; (B,) for a batch."""
        n = self._node(node)
        if n == "0":
            raise CircuitError(f"voltage source {name}: both terminals are ground")
        return self._add(VoltageSource(name, n, _as_value("voltage source", name, volts)), "v")

    def add_current_source(self, name, node, amps) -> CurrentSource:
        """DC current source injecting ``amps`` (A) into ``node`` from ground; (B,) for a batch."""
        n = self._node(node)
        if n == "0":
            raise CircuitError(f"current source {name}: both terminals are ground")
        return self._add(CurrentSource(name, n, _as_value("current source", name, amps)), "i")

    def add_amplifier(self, name, inp, out, gain) -> Amplifier:
        """Bidirectional amplifier from node ``inp`` to node ``out`` with voltage gain ``gain``.

        ``out`` must be a node of its own that only resistors attach to; its voltage is
        ``gain * V(inp)``. Used between the layers of deep networks so signals do not decay.
        """
        gain = float(gain)
        if not np.isfinite(gain) or gain == 0:
            raise CircuitError(f"amplifier {name}: gain {gain!r} must be finite and non-zero")
        a, b = self._node(inp), self._node(out)
        if b == "0" or a == b:
            raise CircuitError(f"amplifier {name}: output must be its own non-ground node")
        return self._add(Amplifier(name, a, b, gain), "x")

    def set_source(self, name, value):
        """Set the value (V or A; scalar or (B,)) of an existing source."""
        elem = self.elements.get(str(name).lower())
        if not isinstance(elem, (VoltageSource, CurrentSource)):
            raise CircuitError(f"no voltage or current source named {name!r}")
        elem.value = _as_value("source", name, value)

    def of_type(self, cls):
        return [e for e in self.elements.values() if isinstance(e, cls)]

    def compile(self, structure: str = "auto") -> CompiledCircuit:
        """Check the circuit and build the kernel arrays. ``structure``: 'auto' | 'dense'."""
        return compile_circuit(self, structure)

    def copy(self) -> "Circuit":
        import copy
        return copy.deepcopy(self)
