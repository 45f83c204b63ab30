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

Structure
---------
Each model is a set of small functions of its parameter row ``p`` (``shockley_*``,
``pwl_*``). The solver never looks at a model directly: it calls the dispatchers
:func:`diode_ig`, :func:`diode_phi`, :func:`diode_dphi`, :func:`diode_move`,
:func:`diode_exp`, :func:`diode_carries`, :func:`beyond_imax` and :func:`diode_step_limit`,
which are the only places
that test ``kind``. A model provides :func:`diode_ig` and :func:`diode_phi`; every other
operation has a generic default that it may replace with its own, better version:

==================  ==========================================================  ===============
dispatcher          default (a model without its own branch)                    own versions
==================  ==========================================================  ===============
diode_dphi          ``phi(v + h) - phi(v)`` (cancels for small ``h``)           shockley, pwl
diode_move          ``(dphi(v, w - v), i(w), g(w), 0.0)``                       shockley, pwl
diode_exp           0.0 (no cached exponential)                                 shockley
diode_carries       False (``diode_move`` evaluates the model at ``w``)         shockley
beyond_imax         False (no guard range)                                      shockley
diode_step_limit    +inf (no limit on a Newton step's first trial)              shockley
==================  ==========================================================  ===============

An unknown ``kind`` gives NaN current, conductance and co-content, which the solver reports as
a singular (non-finite) residual.

Every function here is ``inline="always"`` (except the two generic defaults
:func:`default_dphi` and :func:`default_move`, which no existing model reaches): Numba inlines
them at IR level, so a caller's ``fastmath`` flags apply to them as to its own code, and the
solver kernels stay free of function-call overhead.

Adding a device model
---------------------
In this file:

1. A kind constant: the next free integer, ``KIND_MYMODEL = 2``. Its parameters are one row of
   ``NPAR = 5`` float64 values (pad unused entries with 0; a model needing more would mean
   raising ``NPAR`` here and the ``(nD, 5)`` parameter arrays of the Python layer).
2. Two functions, each ``@njit(cache=True, inline="always")``:
   ``mymodel_ig(p, v) -> (i, g)``, the current (A) and its derivative, the conductance (S,
   >= 0), at voltage ``v`` (V, anode - cathode); and ``mymodel_phi(p, v) -> phi``, the
   co-content ``integral_0^v i(u) du`` (W), so ``phi(0) = 0``, consistent with ``mymodel_ig``
   (the line search compares energies from ``phi`` with slopes from ``i``).
3. One branch in each of :func:`diode_ig` and :func:`diode_phi`, next to the existing ones:
   ``if kind == KIND_MYMODEL: return mymodel_ig(p, v)`` and
   ``if kind == KIND_MYMODEL: return mymodel_phi(p, v)``.

That is all: the other dispatchers fall back to their defaults (table above). Optionally, give
the model its own version of any of them (``mymodel_dphi(p, v, h)``, accurate for small ``h``;
``mymodel_step_limit(p, v, h)``, the largest voltage a Newton step should first try, for a
steep exponential; ...) and add its branch to that dispatcher.

On the Python side, one class in ``fastres/devices.py`` with a class attribute
``kind = _kd.KIND_MYMODEL`` and a method ``params(temp, tnom, gmin)`` returning the
``(NPAR,)`` float64 row that the functions above read, like ``Shockley`` and
``PiecewiseLinear`` there.
"""
import math

from numba import njit

KIND_SHOCKLEY = 0
KIND_PWL = 1
NPAR = 5


@njit(cache=True, inline="always")
def param_row(dpar, k):
    """Diode ``k``'s parameter row ``dpar[k]`` of a (nD, NPAR) array as a tuple: the device
    functions below index it as they index the row, but no array view is made per diode
    (measured about 25 % of a Shockley diode's move in Newton's line search); the arithmetic
    is the same."""
    return (dpar[k, 0], dpar[k, 1], dpar[k, 2], dpar[k, 3], dpar[k, 4])


assert NPAR == 5, "param_row reads NPAR = 5 parameters"

E = math.e
E_M3 = math.exp(-3.0)


# ---------------------------------------------------------------------------------------------
# Shockley junction (KIND_SHOCKLEY): p = [IS_T (A), vte (V), gmin (S), vmax (V), 0]
# ---------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def shockley_ig(p, v):
    """Current (A) and conductance (S) of a Shockley diode at ``v`` (V)."""
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


@njit(cache=True, inline="always")
def shockley_phi(p, v):
    """Co-content (W) of a Shockley diode at ``v`` (V)."""
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


@njit(cache=True, inline="always")
def shockley_dphi(p, v, h):
    """``phi(v + h) - phi(v)`` (W) of a Shockley diode: within the exponential, the reverse
    cubic or the linear guard region, formed from the step without cancellation (``expm1``);
    across a region boundary the plain difference."""
    w = v + h
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
        i, g = shockley_ig(p, v)
        return i * h + 0.5 * g * h * h
    return shockley_phi(p, w) - shockley_phi(p, v)


@njit(cache=True, inline="always")
def shockley_exp(p, v):
    """``exp(v / vte)`` in the exponential region ``[-3 vte, vmax]``, else 0."""
    if v >= -3.0 * p[1] and v <= p[3]:
        return math.exp(v / p[1])
    return 0.0


@njit(cache=True, inline="always")
def shockley_move(p, v, ev, w):
    """:func:`diode_move` of a Shockley diode: within the exponential region one ``expm1``
    gives both the energy change and ``exp(w / vte) = ev (1 + expm1(h / vte))``; a move down
    by more than ``vte ln 2`` (where that sum would cancel) takes ``exp(w / vte)`` afresh."""
    h = w - v
    IS = p[0]
    vte = p[1]
    gmin = p[2]
    vmax = p[3]
    lo = -3.0 * vte
    if w >= lo and w <= vmax:
        if v >= lo and v <= vmax:
            # one transcendental, and an energy change without cancellation:
            # exp(w/vte) = ev * (1 + expm1(h/vte)), accurate to a few eps while
            # expm1 >= -1/2; further down the sum cancels (relative error eps exp(-h/vte)),
            # so there the exponential is taken afresh and nothing drifts
            em1 = math.expm1(h / vte)
            evn = ev + ev * em1 if em1 >= -0.5 else math.exp(w / vte)
            dphi = IS * vte * ev * em1 - IS * h + gmin * h * (v + 0.5 * h)
        else:
            evn = math.exp(w / vte)
            dphi = shockley_phi(p, w) - shockley_phi(p, v)
        return dphi, IS * (evn - 1.0) + gmin * w, IS * evn / vte + gmin, evn
    i, g = shockley_ig(p, w)
    return shockley_dphi(p, v, h), i, g, shockley_exp(p, w)


@njit(cache=True, inline="always")
def shockley_beyond_imax(p, v):
    """True past the exact range (``v > vmax``: current above ``imax``)."""
    return v > p[3]


@njit(cache=True, inline="always")
def shockley_step_limit(p, v, h):
    """Largest voltage (V) a Newton step from ``v`` should first try: ``vcrit + 10 vte``
    (ngspice's critical voltage ``vcrit = vte ln(vte / (sqrt(2) IS))``), or ``v + 10 vte``
    when already above it. A linearised step up the exponential from below always overshoots
    it; the step ``h`` does not enter."""
    IS = p[0]
    vte = p[1]
    return max(v, vte * math.log(vte / (1.4142135623730951 * IS))) + 10.0 * vte


# ---------------------------------------------------------------------------------------------
# Piecewise linear (KIND_PWL): p = [gon (S), goff (S), vfwd (V), vrev (V), grev (S)]
# ---------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def pwl_ig(p, v):
    """Current (A) and conductance (S) of a piecewise-linear diode at ``v`` (V)."""
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
def pwl_phi(p, v):
    """Co-content (W) of a piecewise-linear diode at ``v`` (V)."""
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
def pwl_dphi(p, v, h):
    """``phi(v + h) - phi(v)`` (W) of a piecewise-linear diode: the exact quadratic in ``h``
    within one linear piece, the plain difference across a kink."""
    w = v + h
    vfwd = p[2]
    vrev = p[3]
    rv = 0 if v >= vfwd else (1 if v > -vrev else 2)
    rw = 0 if w >= vfwd else (1 if w > -vrev else 2)
    if rv == rw:  # one linear piece: exact quadratic in h
        i, g = pwl_ig(p, v)
        return i * h + 0.5 * g * h * h
    return pwl_phi(p, w) - pwl_phi(p, v)


@njit(cache=True, inline="always")
def pwl_move(p, v, ev, w):
    """:func:`diode_move` of a piecewise-linear diode: the generic move (no exponential to
    carry) with the model's own functions."""
    i, g = pwl_ig(p, w)
    return pwl_dphi(p, v, w - v), i, g, 0.0


# ---------------------------------------------------------------------------------------------
# Generic defaults, for a model that provides only its ``ig`` and ``phi`` (none of the above
# reaches them). Plain functions, not inlined, so that they do not enlarge every caller.
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def default_dphi(kind, p, v, h):
    """``phi(v + h) - phi(v)`` (W) as the plain difference of two co-contents (loses relative
    accuracy for small ``h``; a model may give its own ``dphi``)."""
    return diode_phi(kind, p, v + h) - diode_phi(kind, p, v)


@njit(cache=True)
def default_move(kind, p, v, ev, w):
    """:func:`diode_move` from :func:`diode_ig` and :func:`diode_dphi`; no exponential cache
    (the last value is 0)."""
    i, g = diode_ig(kind, p, w)
    return diode_dphi(kind, p, v, w - v), i, g, 0.0


# ---------------------------------------------------------------------------------------------
# Dispatchers: the only functions that test ``kind``.
# ---------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def diode_ig(kind, p, v):
    """Current (A) and conductance (S) of one diode at voltage ``v`` (V, anode - cathode)."""
    if kind == KIND_SHOCKLEY:
        return shockley_ig(p, v)
    if kind == KIND_PWL:
        return pwl_ig(p, v)
    return math.nan, math.nan


@njit(cache=True, inline="always")
def diode_phi(kind, p, v):
    """Co-content ``integral_0^v i(u) du`` (W) of one diode."""
    if kind == KIND_SHOCKLEY:
        return shockley_phi(p, v)
    if kind == KIND_PWL:
        return pwl_phi(p, v)
    return math.nan


@njit(cache=True, inline="always")
def diode_dphi(kind, p, v, h):
    """``phi(v + h) - phi(v)`` (W), accurate when ``h`` is small.

    Within one smooth region the difference is formed from the current at ``v`` and the step
    (``expm1`` for the exponential, exact quadratics for linear pieces), never as a difference
    of two large co-contents; across region boundaries it is the plain difference.
    """
    if kind == KIND_SHOCKLEY:
        return shockley_dphi(p, v, h)
    if kind == KIND_PWL:
        return pwl_dphi(p, v, h)
    return default_dphi(kind, p, v, h)


@njit(cache=True, inline="always")
def diode_move(kind, p, v, ev, w):
    """Move a diode from ``v`` to ``w`` (V): returns ``(dphi, i, g, ev_new)``.

    ``ev = exp(v / vte)`` for a forward-biased Shockley diode (else unused); ``dphi`` (W) is
    ``phi(w) - phi(v)``, ``i`` (A) and ``g`` (S) are taken at ``w``, and ``ev_new`` is
    ``exp(w / vte)`` where defined, carried multiplicatively from ``ev`` (a relative error of a
    few eps per move; a move far down the exponential, where the product would cancel, takes it
    afresh). One transcendental per call (two for such a move): the Newton line search evaluates
    each trial point once and reuses it as the next iterate; the convergence test recomputes
    every device afresh (:func:`~fastres.kernels.newton.newton_sample`).
    """
    if kind == KIND_SHOCKLEY:
        return shockley_move(p, v, ev, w)
    if kind == KIND_PWL:
        return pwl_move(p, v, ev, w)
    return default_move(kind, p, v, ev, w)


@njit(cache=True, inline="always")
def diode_exp(kind, p, v):
    """The value :func:`diode_move` carries in ``ev`` for a diode at ``v`` (V): ``exp(v / vte)``
    for a Shockley diode in [-3 vte, vmax], else 0."""
    if kind == KIND_SHOCKLEY:
        return shockley_exp(p, v)
    return 0.0


@njit(cache=True, inline="always")
def diode_carries(kind):
    """True if :func:`diode_move` derives the current and conductance at ``w`` from a value
    carried from ``v`` (a Shockley diode's exponential), so that they are not exactly the
    model's at ``w``; False if it evaluates the model at ``w`` (then its values are those of a
    fresh evaluation, bit for bit). The solver's convergence test recomputes the former."""
    if kind == KIND_SHOCKLEY:
        return True
    return False


@njit(cache=True, inline="always")
def beyond_imax(kind, p, v):
    """True if the diode is past its model's exact range at ``v`` (V): a Shockley diode above
    its ``imax`` guard current. False for models without such a range."""
    if kind == KIND_SHOCKLEY:
        return shockley_beyond_imax(p, v)
    return False


@njit(cache=True, inline="always")
def diode_step_limit(kind, p, v, h):
    """Largest voltage (V) that the first trial of a Newton step ``h > 0`` (V) should drive a
    diode at ``v`` (V) to, or +inf for no limit (see :func:`shockley_step_limit`)."""
    if kind == KIND_SHOCKLEY:
        return shockley_step_limit(p, v, h)
    return math.inf
