"""Diode device models: current (A), conductance (S) and co-content (J/s = W... see below).

A diode is described by an integer ``kind`` and a row ``p`` of ``NPAR`` float64 parameters.

``KIND_SHOCKLEY`` (SPICE level-1 junction, identical to ngspice's ``dioload.c`` with
RS = 0, no breakdown, no sidewall/tunnel terms, GMIN in parallel)::

    p = [IS_T (A), vte = N*k*T/q (V), gmin (S), vmax (V), 0]
    v >= -3 vte : i = IS (exp(v/vte) - 1) + gmin v
    v <  -3 vte : i = -IS (1 + (3 vte / (e v))**3) + gmin v       (ngspice's reverse cubic)
    v >  vmax   : the exponential continues as its tangent at vmax (a numerical guard, where the
                  current is ``imax``, 1e6 A by default: far beyond any physical operating point,
                  but it keeps the energy finite from any starting point; the solver reports a
                  solution that ends up there instead of returning it as if it were exact)

``KIND_PWL`` (piecewise linear, identical to XSPICE ``sidiode`` with epsilon = revepsilon = 0)::

    p = [gon = 1/ron (S), goff = 1/roff (S), vfwd (V), vrev (V, > 0), grev = 1/rrev (S)]
    v >= vfwd     : i = goff vfwd + gon (v - vfwd)
    -vrev < v     : i = goff v
    v <= -vrev    : i = -goff vrev + grev (v + vrev)

The co-content ``phi(v) = integral_0^v i(u) du`` (units V*A = W) is convex for both models
(conductance >= 0), and the circuit's DC operating point minimises the sum of the co-contents.
``dphi(v, h) = phi(v + h) - phi(v)`` is evaluated without cancellation where possible, so that
an energy line search works down to round-off.
"""
import math

from numba import njit

KIND_SHOCKLEY = 0
KIND_PWL = 1
NPAR = 5

E = math.e
E_M3 = math.exp(-3.0)


@njit(cache=True, inline="always")
def diode_ig(kind, p, v):
    """Current (A) and conductance (S) of one diode at voltage ``v`` (V, anode - cathode)."""
    if kind == KIND_SHOCKLEY:
        IS = p[0]
        vte = p[1]
        gmin = p[2]
        if v >= -3.0 * vte:
            vmax = p[3]
            if v > vmax:
                ev = math.exp(vmax / vte)
                return IS * (ev * (1.0 + (v - vmax) / vte) - 1.0) + gmin * v, IS * ev / vte + gmin
            ev = math.exp(v / vte)
            return IS * (ev - 1.0) + gmin * v, IS * ev / vte + gmin
        arg = 3.0 * vte / (v * E)
        arg = arg * arg * arg
        return -IS * (1.0 + arg) + gmin * v, IS * 3.0 * arg / v + gmin
    gon = p[0]
    goff = p[1]
    vfwd = p[2]
    vrev = p[3]
    grev = p[4]
    if v >= vfwd:
        return goff * vfwd + gon * (v - vfwd), gon
    if v > -vrev:
        return goff * v, goff
    return -goff * vrev + grev * (v + vrev), grev


@njit(cache=True, inline="always")
def diode_phi(kind, p, v):
    """Co-content ``integral_0^v i(u) du`` (W) of one diode."""
    if kind == KIND_SHOCKLEY:
        IS = p[0]
        vte = p[1]
        gmin = p[2]
        q = 0.5 * gmin * v * v
        if v >= -3.0 * vte:
            vmax = p[3]
            if v > vmax:
                ev = math.exp(vmax / vte)
                d = v - vmax
                return (IS * vte * (ev - 1.0) - IS * vmax + IS * (ev - 1.0) * d
                        + IS * ev * d * d / (2.0 * vte) + q)
            return IS * vte * math.expm1(v / vte) - IS * v + q
        K = 3.0 * vte / E
        K = K * K * K
        return -IS * v + IS * K / (2.0 * v * v) - IS * vte * (0.5 * E_M3 + 1.0) + q
    gon = p[0]
    goff = p[1]
    vfwd = p[2]
    vrev = p[3]
    grev = p[4]
    if v >= vfwd:
        d = v - vfwd
        return 0.5 * goff * vfwd * vfwd + goff * vfwd * d + 0.5 * gon * d * d
    if v > -vrev:
        return 0.5 * goff * v * v
    d = v + vrev
    return 0.5 * goff * vrev * vrev - goff * vrev * d + 0.5 * grev * d * d


@njit(cache=True, inline="always")
def diode_dphi(kind, p, v, h):
    """``phi(v + h) - phi(v)`` (W), accurate when ``h`` is small.

    Within one smooth region the difference is formed from the current at ``v`` and the step
    (``expm1`` for the exponential, exact quadratics for linear pieces), never as a difference
    of two large co-contents; across region boundaries it is the plain difference.
    """
    w = v + h
    if kind == KIND_SHOCKLEY:
        IS = p[0]
        vte = p[1]
        gmin = p[2]
        vmax = p[3]
        lo = -3.0 * vte
        q = gmin * h * (v + 0.5 * h)
        if v >= lo and w >= lo and v <= vmax and w <= vmax:
            return IS * vte * math.exp(v / vte) * math.expm1(h / vte) - IS * h + q
        if v < lo and w < lo:
            K = 3.0 * vte / E
            K = K * K * K
            return -IS * h - 0.5 * IS * K * h * (v + w) / (v * v * w * w) + q
        if v > vmax and w > vmax:
            i, g = diode_ig(kind, p, v)
            return i * h + 0.5 * g * h * h
        return diode_phi(kind, p, w) - diode_phi(kind, p, v)
    vfwd = p[2]
    vrev = p[3]
    rv = 0 if v >= vfwd else (1 if v > -vrev else 2)
    rw = 0 if w >= vfwd else (1 if w > -vrev else 2)
    if rv == rw:  # one linear piece: exact quadratic in h
        i, g = diode_ig(kind, p, v)
        return i * h + 0.5 * g * h * h
    return diode_phi(kind, p, w) - diode_phi(kind, p, v)


@njit(cache=True, inline="always")
def diode_move(kind, p, v, ev, w):
    """Move a diode from ``v`` to ``w`` (V): returns ``(dphi, i, g, ev_new)``.

    ``ev = exp(v / vte)`` for a forward-biased Shockley diode (else unused); ``dphi`` (W) is
    ``phi(w) - phi(v)``, ``i`` (A) and ``g`` (S) are taken at ``w``, and ``ev_new`` is
    ``exp(w / vte)`` where defined, carried multiplicatively from ``ev`` (relative drift of
    order eps per Newton step). One transcendental per call: the Newton line search evaluates
    each trial point once and reuses it as the next iterate.
    """
    h = w - v
    if kind == KIND_SHOCKLEY:
        IS = p[0]
        vte = p[1]
        gmin = p[2]
        vmax = p[3]
        lo = -3.0 * vte
        if w >= lo and w <= vmax:
            if v >= lo and v <= vmax:
                # one transcendental, and an energy change without cancellation:
                # exp(w/vte) = ev * (1 + expm1(h/vte))
                em1 = math.expm1(h / vte)
                evn = ev + ev * em1
                dphi = IS * vte * ev * em1 - IS * h + gmin * h * (v + 0.5 * h)
            else:
                evn = math.exp(w / vte)
                dphi = diode_phi(kind, p, w) - diode_phi(kind, p, v)
            return dphi, IS * (evn - 1.0) + gmin * w, IS * evn / vte + gmin, evn
        i, g = diode_ig(kind, p, w)
        return diode_dphi(kind, p, v, h), i, g, diode_exp(kind, p, w)
    i, g = diode_ig(kind, p, w)
    return diode_dphi(kind, p, v, h), i, g, 0.0


@njit(cache=True, inline="always")
def diode_exp(kind, p, v):
    """``exp(v / vte)`` for a Shockley diode in [-3 vte, vmax], else 0 (the cache of diode_move)."""
    if kind == KIND_SHOCKLEY and v >= -3.0 * p[1] and v <= p[3]:
        return math.exp(v / p[1])
    return 0.0


@njit(cache=True, inline="always")
def beyond_imax(kind, p, v):
    """True if a Shockley diode is past its exact range (current above ``imax``)."""
    return kind == KIND_SHOCKLEY and v > p[3]
