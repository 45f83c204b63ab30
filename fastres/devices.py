"""Diode models (the device parameters; the equations live in ``fastres.kernels.devices``).

Both models are convex two-terminal devices, so a circuit of them, resistors and sources has a
unique DC operating point that minimises the total co-content.

Device kinds are registered in :data:`DEVICE_KINDS` (kernel kind number -> class) and by name
in :data:`DEVICE_NAMES`; :func:`make_diode` builds one by name. Adding a device model is one
class here (decorated with :func:`register_device`: a ``kind`` number, a ``name``, a
``params()`` method returning the kernel's parameter row of ``NPAR`` floats and a
``turn_on_volts()``) and the model's current and co-content in ``kernels/devices.py`` (see
"Adding a device model" there and in docs/architecture.md).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import CircuitError
from .kernels import devices as _kd

# ngspice's physical constants (src/include/ngspice/const.h), so that fastres and ngspice agree
# to the last digits on the thermal voltage.
BOLTZMANN = 1.38064852e-23  # J/K
CHARGE = 1.6021766208e-19  # C
KELVIN = 273.15  # 0 degC in K
K_OVER_Q = BOLTZMANN / CHARGE  # V/K


def thermal_voltage(temp_c: float) -> float:
    """k T / q in volts at ``temp_c`` degrees Celsius (ngspice's constants)."""
    return K_OVER_Q * (temp_c + KELVIN)


#: kernel kind number -> device class; name -> device class
DEVICE_KINDS: dict = {}
DEVICE_NAMES: dict = {}


def register_device(cls):
    """Class decorator: register a device model under its ``kind`` (kernel branch) and ``name``."""
    if cls.kind in DEVICE_KINDS or cls.name in DEVICE_NAMES:
        raise ValueError(f"device kind {cls.kind} / name {cls.name!r} registered twice")
    DEVICE_KINDS[cls.kind] = cls
    DEVICE_NAMES[cls.name] = cls
    return cls


def _as_number(owner, key, val, *, allow_inf=False):
    """``val`` as a Python float, or a :class:`CircuitError` naming ``owner`` and ``key``.

    Python ints and floats and numpy scalars (``np.float32``, ``np.int64``, ...) are numbers;
    bools, strings, None and arrays are not. NaN is refused, and so is an infinity unless
    ``allow_inf`` (then only +inf)."""
    if isinstance(val, (bool, np.bool_)) or not isinstance(val, numbers.Real):
        raise CircuitError(f"{owner}: parameter {key}={val!r} must be a real number,"
                           f" not {type(val).__name__}")
    try:
        out = float(val)
    except (OverflowError, TypeError, ValueError):  # e.g. an int beyond the float range
        out = math.nan
    if not (math.isfinite(out) or (allow_inf and out == math.inf)):
        raise CircuitError(f"{owner}: parameter {key}={val!r} is not a finite number")
    return out


def _set_numbers(obj, owner, names, allow_inf=()):
    """Store the (frozen dataclass) fields ``names`` of ``obj`` as checked Python floats."""
    for key in names:
        val = getattr(obj, key)
        object.__setattr__(obj, key, _as_number(owner, key, val, allow_inf=key in allow_inf))


def _absolute_zero(owner, key, celsius):
    """Refuse a temperature (degC) at or below absolute zero (it would divide by 0 K)."""
    if not celsius + KELVIN > 0:
        raise CircuitError(f"{owner}: {key}={celsius!r} degC is at or below absolute zero"
                           f" (-{KELVIN} degC)")


@register_device
@dataclass(frozen=True)
class Shockley:
    """SPICE level-1 junction diode ``I = IS (exp(V / (N vt)) - 1)``, identical to ngspice.

    Parameters
    ----------
    IS : saturation current at ``tnom`` (A), > 0.
    N : emission coefficient (dimensionless), > 0.
    EG : activation energy (eV) for the temperature dependence of IS.
    XTI : saturation-current temperature exponent.
    tnom : parameter measurement temperature (degC); None uses the circuit's ``tnom``.
    imax : current (A) above which the exponential is continued linearly, a numerical guard
        only (1e6 A by default); a solution that reaches it is reported as not converged.

    Reverse bias below ``-3 N vt`` uses ngspice's cubic, and the simulator adds the circuit's
    ``gmin`` (S) in parallel, exactly as ngspice does. Series resistance, breakdown and charge
    storage are not modelled (a DC solver of ideal-junction networks).
    """

    IS: float = 1e-14
    N: float = 1.0
    EG: float = 1.11
    XTI: float = 3.0
    tnom: float | None = None
    imax: float = 1e6

    def __post_init__(self):
        who = "Shockley diode model"
        _set_numbers(self, who, ("IS", "N", "EG", "XTI", "imax")
                     + (("tnom",) if self.tnom is not None else ()))
        if self.tnom is not None:
            _absolute_zero(who, "tnom", self.tnom)
        if not self.imax > self.IS:
            raise CircuitError(f"Shockley diode model: imax={self.imax!r} must exceed IS")
        if not self.IS > 0:
            raise CircuitError(f"Shockley diode model: IS={self.IS!r} must be > 0 A")
        if not self.N > 0:
            raise CircuitError(f"Shockley diode model: N={self.N!r} must be > 0")

    kind = _kd.KIND_SHOCKLEY
    name = "shockley"
    spice_letter = "d"

    def _describe(self):
        tnom = "" if self.tnom is None else f", TNOM={self.tnom!r}"
        return (f"Shockley diode model (IS={self.IS!r}, N={self.N!r}, EG={self.EG!r},"
                f" XTI={self.XTI!r}{tnom})")

    def params(self, temp: float = 27.0, tnom: float = 27.0, gmin: float = 1e-12) -> np.ndarray:
        """Kernel parameter row ``[IS_T (A), N vt (V), gmin (S), vmax (V), 0]`` at ``temp`` (degC).

        Raises :class:`CircuitError` (and nothing else, for any finite inputs) for a temperature
        at or below absolute zero, a negative ``gmin``, or a temperature dependence that leaves
        the float range: IS(T) overflowing or underflowing to 0, or ``vmax`` or the diode's
        largest conductance ``(imax + IS(T)) / (N vt)`` not finite.
        """
        who = "Shockley diode model"
        temp = _as_number(who, "temp", temp)
        gmin = _as_number(who, "gmin", gmin)
        if gmin < 0:
            raise CircuitError(f"{who}: gmin={gmin!r} S must be >= 0")
        if self.tnom is not None:
            tnom = self.tnom
        else:
            tnom = _as_number(who, "tnom", tnom)
        _absolute_zero(who, "temp", temp)
        _absolute_zero(who, "tnom", tnom)
        T = temp + KELVIN
        Tn = tnom + KELVIN
        vte = self.N * K_OVER_Q * T

        def refuse(what):
            return CircuitError(f"{self._describe()} at temp={temp!r} degC, tnom={tnom!r} degC:"
                                f" {what}; the parameters are outside the range fastres can"
                                " represent (float64)")

        if not (vte > 0 and math.isfinite(vte)):
            raise refuse(f"N vt = {vte!r} V is not a positive finite voltage")
        # ngspice diotemp.c: IS(T) = IS * exp((T/Tnom - 1) EG / vte + XTI/N ln(T/Tnom))
        # (Python float * and / give inf instead of raising; T, Tn, vte > 0 here)
        arg1 = (T / Tn - 1.0) * self.EG / vte
        arg2 = self.XTI / self.N * math.log(T / Tn)
        if not math.isfinite(arg1 + arg2):
            raise refuse(f"the exponent of IS(T), {arg1!r} + {arg2!r}, is not finite")
        try:
            is_t = self.IS * math.exp(arg1 + arg2)
        except OverflowError:
            raise refuse(f"IS(T) = IS exp({arg1 + arg2!r}) overflows") from None
        if not (is_t > 0 and math.isfinite(is_t)):
            raise refuse(f"IS(T) = IS exp({arg1 + arg2!r}) = {is_t!r} A"
                         f" ({'underflows to 0' if is_t == 0 else 'overflows'})")
        vmax = vte * math.log(self.imax / is_t + 1.0)
        if not math.isfinite(vmax):
            raise refuse(f"vmax = N vt ln(imax / IS(T) + 1) = {vte!r} ln({self.imax!r} /"
                         f" {is_t!r} + 1) V (where the current reaches imax) is not finite")
        if not math.isfinite((self.imax + is_t) / vte):
            raise refuse(f"the largest conductance (imax + IS(T)) / (N vt) ="
                         f" ({self.imax!r} + {is_t!r}) / {vte!r} S is not finite")
        return np.array([is_t, vte, gmin, vmax, 0.0])

    def turn_on_volts(self, gmin: float = 1e-12) -> float:
        """Where the diode carries 100 uA (V): ``N vt ln(100 uA / IS)`` at 27 degC."""
        p = self.params(gmin=gmin)
        return float(p[1] * np.log(1e-4 / p[0]))


@register_device
@dataclass(frozen=True)
class PiecewiseLinear:
    """Piecewise-linear diode, identical to ngspice's XSPICE ``sidiode`` with epsilon = 0.

    Parameters
    ----------
    ron : on resistance (ohm) above ``vfwd``.
    roff : off resistance (ohm) between ``-vrev`` and ``vfwd``.
    vfwd : forward (knee) voltage (V), >= 0.
    vrev : reverse breakdown voltage (V), > 0; ``inf`` (default) means no breakdown.
    rrev : resistance in breakdown (ohm), used only when ``vrev`` is finite; None means
        ``ron`` (ngspice's default).

    ``ron -> 0, roff -> inf`` gives the ideal diode. Convexity (a unique operating point)
    requires ``ron <= roff`` and ``rrev <= roff``.
    """

    ron: float = 1.0
    roff: float = 1e9
    vfwd: float = 0.0
    vrev: float = math.inf
    rrev: float | None = None

    kind = _kd.KIND_PWL
    name = "pwl"
    spice_letter = "a"

    def __post_init__(self):
        who = "piecewise-linear diode model"
        if self.rrev is None:
            object.__setattr__(self, "rrev", self.ron)
        _set_numbers(self, who, ("ron", "roff", "vfwd", "vrev", "rrev"), allow_inf=("vrev",))
        if not self.ron > 0 or not self.roff > 0 or not self.rrev > 0:
            raise CircuitError("piecewise-linear diode model: ron, roff and rrev must be > 0 ohm")
        for key in ("ron", "roff", "rrev"):
            if math.isinf(1.0 / getattr(self, key)):
                raise CircuitError(f"{who}: {key}={getattr(self, key)!r} ohm is too small:"
                                   f" its conductance 1/{key} overflows")
        if self.ron > self.roff:
            raise CircuitError(f"piecewise-linear diode model: ron={self.ron} > roff={self.roff}"
                               " makes the device non-convex (negative incremental resistance)")
        if not (self.vrev > 0):
            raise CircuitError(f"piecewise-linear diode model: vrev={self.vrev!r} must be > 0 V")
        if math.isfinite(self.vrev) and self.rrev > self.roff:
            raise CircuitError("piecewise-linear diode model: rrev > roff makes the device non-convex")
        if self.vfwd < 0:
            raise CircuitError(f"piecewise-linear diode model: vfwd={self.vfwd} must be >= 0 V")

    def params(self, temp: float = 27.0, tnom: float = 27.0, gmin: float = 0.0) -> np.ndarray:
        """Kernel parameter row ``[1/ron, 1/roff, vfwd, vrev, 1/rrev]`` (S, S, V, V, S)."""
        return np.array([1.0 / self.ron, 1.0 / self.roff, self.vfwd, self.vrev, 1.0 / self.rrev])

    def turn_on_volts(self, gmin: float = 0.0) -> float:
        """The knee ``vfwd`` (V)."""
        return float(self.vfwd)


DiodeModel = Shockley | PiecewiseLinear

#: the piecewise-linear clipping diode of a layered network by default (ohm, V): a 0.5 V knee
PWL_CLIP = {"ron": 1.0, "roff": 1e9, "vfwd": 0.5}


def make_diode(kind: str, **params):
    """A registered device model by name: ``"shockley"`` -> :class:`Shockley` (defaults
    IS = 1e-14 A, N = 1); ``"pwl"`` -> :class:`PiecewiseLinear` with the network default
    ``PWL_CLIP`` (a 0.5 V knee, 1 ohm on, 1 Gohm off) updated by ``params``."""
    cls = DEVICE_NAMES.get(kind)
    if cls is None:
        raise CircuitError(f"unknown diode model {kind!r}: use one of {', '.join(DEVICE_NAMES)}")
    if cls is PiecewiseLinear:
        params = {**PWL_CLIP, **params}
    try:
        return cls(**params)
    except TypeError as exc:
        raise CircuitError(f"diode model {kind!r}: {exc}") from None


def turn_on_volts(model, gmin=1e-12) -> float:
    """A diode's turn-on voltage (V): where it carries 100 uA (Shockley: ``N vt ln(100 uA / IS)``
    at the model's temperature) or its knee (piecewise-linear: ``vfwd``)."""
    return model.turn_on_volts(gmin)
