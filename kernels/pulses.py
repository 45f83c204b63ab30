"""Programming conductances by pulses: the update kernel of the pulsed device models.

EqProp gives every conductance a desired change ``d`` (S); a real device only moves by whole
pulses, each a state-dependent step. For each device (all arrays flat, float64, one entry per
device; conductances in S):

1. pulses: ``x = d / step_nominal`` (or, accumulate-then-pulse, ``acc += d`` and
   ``x = acc / step_nominal``); ``n`` = ``x`` rounded (``rounding`` 0: to nearest, 1:
   stochastically, up with probability ``x - floor(x)``), clipped to ``[-max_pulses, max_pulses]``;
   with accumulation ``acc -= n * step_nominal``.
2. the model moves the device by ``n`` pulses from its conductance ``g`` between its own bounds
   ``[lo, hi]`` (``r = hi - lo``), its own step scale ``s`` (device-to-device spread):

   - ``MODEL_LINEAR`` (0): ``g + n s step_up`` (``n > 0``) or ``g + n s step_down``;
   - ``MODEL_SOFT`` (1), soft bounds: each pulse moves ``s step (hi - g) / r`` up or
     ``s step (g - lo) / r`` down, so ``n`` pulses give ``hi - (hi - g)(1 - s step_up / r)^n``;
   - ``MODEL_EXP`` (2), the exponential LTP/LTD curve ``G(P) = lo + B (1 - exp(-P / A))``,
     ``B = r / (1 - exp(-P_max / A))``, ``A = a P_max`` (``a``: ``a_up`` for potentiation, the
     normalised nonlinearity of NeuroSim; depression follows the mirrored curve from ``hi``
     with ``a_down``): the device's pulse position ``P = G^-1(g)`` moves to ``P + s n``;
   - ``MODEL_TABLE`` (3): a measured curve, conductance against pulse number for potentiation
     (increasing) and depression (decreasing), normalised to [0, 1] of the range and linearly
     interpolated; the position moves by ``s n`` pulses.
3. write noise: ``+ sigma r sqrt(|n|) xi`` (cycle to cycle, NeuroSim's convention: a fraction
   of the range per pulse, adding in quadrature), then clipped to ``[lo, hi]``.
   Stuck devices (``stuck`` != 0) keep their conductance and accumulate nothing.

Random numbers come from a counter-based generator (splitmix64 of ``(key, device index)``), so
a device's stream depends only on the run's seed, the step and the device, not on how the
work is split between threads or MPI ranks, and a resumed run continues it exactly.
"""
import math

import numpy as np
from numba import njit, prange

from .blocks import block_range

MODEL_LINEAR = 0
MODEL_SOFT = 1
MODEL_EXP = 2
MODEL_TABLE = 3

_MASK = (1 << 64) - 1


@njit(cache=True, inline="always")
def splitmix64(x):
    """One step of splitmix64 on a uint64 (a well-mixed 64-bit hash)."""
    x = (x + np.uint64(0x9E3779B97F4A7C15))
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def uniform(key, i, k):
    """Uniform in (0, 1) for stream ``key``, device ``i``, draw ``k`` (0 or 1)."""
    h = splitmix64(splitmix64(key ^ np.uint64(i)) + np.uint64(k))
    return (np.float64(h >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def normal(key, i):
    """Standard normal (Box-Muller from draws 0 and 1) for stream ``key``, device ``i``."""
    u1 = uniform(key, i, 2)
    u2 = uniform(key, i, 3)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True, inline="always")
def _interp_pos(table, g01):
    """Fractional pulse position where an increasing normalised ``table`` reaches ``g01``."""
    m = table.shape[0] - 1
    if g01 <= table[0]:
        return 0.0
    if g01 >= table[m]:
        return float(m)
    lo = 0
    hi = m
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if table[mid] <= g01:
            lo = mid
        else:
            hi = mid
    return lo + (g01 - table[lo]) / (table[hi] - table[lo])


@njit(cache=True, inline="always")
def _interp_val(table, pos):
    m = table.shape[0] - 1
    if pos <= 0.0:
        return table[0]
    if pos >= m:
        return table[m]
    k = int(pos)
    f = pos - k
    return table[k] + f * (table[k + 1] - table[k])


@njit(cache=True, inline="always")
def move(model, g, n, lo, hi, s, step_up, step_down, a_up, a_down, p_max, tab_up, tab_down):
    """Conductance (S) after ``n`` (signed, whole) pulses from ``g`` (no noise, no clipping)."""
    r = hi - lo
    if n == 0.0 or r <= 0.0:
        return g
    if model == MODEL_LINEAR:
        return g + n * s * (step_up if n > 0 else step_down)
    if model == MODEL_SOFT:
        if n > 0:
            return hi - (hi - g) * (1.0 - s * step_up / r) ** n
        return lo + (g - lo) * (1.0 - s * step_down / r) ** (-n)
    if model == MODEL_EXP:
        if n > 0:
            A = a_up * p_max
            B = r / (1.0 - math.exp(-p_max / A))
            q = min(max((g - lo) / B, 0.0), 1.0 - 1e-300)
            P = -A * math.log1p(-q)
            return lo + B * (-math.expm1(-(P + s * n) / A))
        A = a_down * p_max
        B = r / (1.0 - math.exp(-p_max / A))
        q = min(max((hi - g) / B, 0.0), 1.0 - 1e-300)
        P = -A * math.log1p(-q)
        return hi - B * (-math.expm1(-(P - s * n) / A))
    # MODEL_TABLE: tab_up increasing from 0 to 1; tab_down decreasing from 1 to 0
    g01 = (g - lo) / r
    if n > 0:
        pos = _interp_pos(tab_up, g01)
        return lo + r * _interp_val(tab_up, pos + s * n)
    m = tab_down.shape[0] - 1
    pos = m - _interp_pos(tab_down[::-1], g01)  # position along the depression curve
    return lo + r * _interp_val(tab_down, pos - s * n)


@njit(cache=True, inline="always")
def program(i, g, d, acc, lo, hi, s, stuck, key, model, step_nominal, step_up, step_down, a_up,
            a_down, p_max, tab_up, tab_down, rounding, max_pulses, sigma, accumulate):
    """Device ``i`` at conductance ``g`` (S) given the desired change ``d`` (S): returns its new
    conductance (S) and its signed pulse count; updates ``acc[i]`` (steps 1-3 of the module
    docstring)."""
    if stuck[i] != 0.0:
        return g, 0.0
    x = d / step_nominal
    if accumulate:
        acc[i] += d
        x = acc[i] / step_nominal
        n = float(int(x))  # towards zero: fire only once a whole step has accumulated
    elif rounding == 1:
        fl = math.floor(x)
        n = fl + (1.0 if uniform(key, i, 0) < x - fl else 0.0)
    else:
        n = math.floor(x + 0.5)
    if n > max_pulses:
        n = max_pulses
    elif n < -max_pulses:
        n = -max_pulses
    if accumulate:
        acc[i] -= n * step_nominal
    if n == 0.0:
        return g, 0.0
    gn = move(model, g, n, lo[i], hi[i], s[i], step_up, step_down, a_up[i], a_down[i], p_max,
              tab_up, tab_down)
    if sigma > 0.0:
        gn += sigma * (hi[i] - lo[i]) * math.sqrt(abs(n)) * normal(key, i)
    return min(max(gn, lo[i]), hi[i]), n


@njit(cache=True)
def pulse_rows(g, d, acc, lo, hi, s, stuck, pulses, key, model, step_nominal, step_up, step_down,
               a_up, a_down, p_max, tab_up, tab_down, rounding, max_pulses, sigma, accumulate,
               first, last):
    """Devices ``first..last-1`` of :func:`pulse_update` (serial)."""
    for i in range(first, last):
        g[i], pulses[i] = program(i, g[i], d[i], acc, lo, hi, s, stuck, key, model, step_nominal,
                                  step_up, step_down, a_up, a_down, p_max, tab_up, tab_down,
                                  rounding, max_pulses, sigma, accumulate)


@njit(cache=True, parallel=True)
def pulse_update(g, d, acc, lo, hi, s, stuck, pulses, key, model, step_nominal, step_up, step_down,
                 a_up, a_down, p_max, tab_up, tab_down, rounding, max_pulses, sigma, accumulate,
                 nchunks):
    """Program every device by pulses (see the module docstring), in place in ``g``, ``acc``;
    ``pulses`` receives each device's signed pulse count. Flat (N,) float64 arrays: ``g``
    conductances (S), ``d`` desired changes (S), ``acc`` accumulators (S), ``lo``/``hi``
    per-device bounds (S), ``s`` per-device step scale, ``stuck`` (0 or 1), ``a_up``/``a_down``
    per-device normalised nonlinearity; ``tab_up``/``tab_down`` (M+1,) normalised curves.
    ``key`` (uint64) names the step's random stream. Chunks of devices run in parallel; the
    result does not depend on ``nchunks``."""
    N = g.shape[0]
    for c in prange(nchunks):
        first, last = block_range(N, nchunks, c)
        pulse_rows(g, d, acc, lo, hi, s, stuck, pulses, key, model, step_nominal, step_up, step_down,
                   a_up, a_down, p_max, tab_up, tab_down, rounding, max_pulses, sigma, accumulate,
                   first, last)


@njit(cache=True, parallel=True)
def read_noise(g, out, key, sigma):
    """``out = g (1 + sigma xi)`` per device (xi standard normal from stream ``key``), S."""
    N = g.shape[0]
    for i in prange(N):
        out[i] = g[i] * (1.0 + sigma * normal(key, i))


# -- the fused pulsed step: desired changes (SGD with momentum on EqProp's terms) and pulses in
# one pass, no copy of the conductances, no materialised change. ``dev`` is the tuple
# ``(acc, lo, hi, s, stuck, a_up, a_down, tab_up, tab_down)`` of :func:`pulse_update`'s
# per-device arrays (flat, one entry per conductance in row-major order), ``par`` the float64
# array ``(model, step_nominal, step_up, step_down, p_max, rounding, max_pulses, sigma,
# accumulate)``. The desired change of a conductance ``w`` is the unclipped SGD step's
# ``(w - lr vel) - w``, written so, as in :func:`fastres.kernels.updates.drop_square_step`
# then a subtraction: the pulses are bit-identical to an SGD step on a copy followed by
# :func:`pulse_update`.

@njit(cache=True, inline="always")
def _program_at(i, w, q, lr, dev, par, key):
    acc, lo, hi, s, stuck, a_up, a_down, tab_up, tab_down = dev
    return program(i, w, (w - lr * q) - w, acc, lo, hi, s, stuck, key, int(par[0]), par[1], par[2],
                   par[3], a_up, a_down, par[4], tab_up, tab_down, int(par[5]), par[6], par[7],
                   par[8] != 0.0)


@njit(cache=True)
def pulse_terms_rows(W, row, col, prod, scale, vel, lr, momentum, dev, par, key, first, last):
    """Rows ``first..last-1`` of :func:`pulse_terms` (serial); returns their pulse count."""
    m = W.shape[1]
    count = 0.0
    for i in range(first, last):
        ri = row[i]
        for j in range(m):
            q = scale * (ri + col[j] - 2.0 * prod[i, j])
            if momentum > 0.0:
                q = momentum * vel[i, j] + q
                vel[i, j] = q
            W[i, j], n = _program_at(i * m + j, W[i, j], q, lr, dev, par, key)
            count += abs(n)
    return count


@njit(cache=True, parallel=True)
def pulse_terms(W, row, col, prod, scale, vel, lr, momentum, dev, par, key, counts):
    """Fused pulsed step of a conductance array ``W`` (n_from, n_to) (S) from EqProp's terms:
    ``grad = scale (row[i] + col[j] - 2 prod[i, j])`` (V^2/S, see
    :func:`fastres.kernels.updates.drop_square_step`), ``vel = momentum vel + grad``, desired
    change ``-lr vel`` (``lr`` S^2/V^2), then pulses (:func:`program`), in place in ``W``,
    ``vel`` and the accumulators. Rows in ``counts.shape[0]`` parallel chunks; ``counts[c]``
    receives chunk ``c``'s pulse count. The result does not depend on the number of chunks."""
    nchunks = counts.shape[0]
    for c in prange(nchunks):
        first, last = block_range(W.shape[0], nchunks, c)
        counts[c] = pulse_terms_rows(W, row, col, prod, scale, vel, lr, momentum, dev, par, key,
                                     first, last)


@njit(cache=True)
def pulse_fixed_rows(W, uT, d, col, scale, vel, lr, momentum, dev, par, key, first, last, psum):
    """Rows ``first..last-1`` of :func:`pulse_fixed` (serial); ``psum`` (n_to,) receives the
    column sums of the new rows (S); returns the rows' pulse count."""
    B = uT.shape[1]
    m = W.shape[1]
    p = np.empty(m)
    count = 0.0
    for j in range(m):
        psum[j] = 0.0
    for i in range(first, last):
        for j in range(m):
            p[j] = 0.0
        for s in range(B):
            a = uT[i, s]
            if a != 0.0:
                for j in range(m):
                    p[j] += a * d[s, j]
        for j in range(m):
            q = scale * (col[j] - 2.0 * p[j])
            if momentum > 0.0:
                q = momentum * vel[i, j] + q
                vel[i, j] = q
            W[i, j], n = _program_at(i * m + j, W[i, j], q, lr, dev, par, key)
            count += abs(n)
            psum[j] += W[i, j]
    return count


@njit(cache=True, parallel=True)
def pulse_fixed(W, uT, d, col, scale, vel, lr, momentum, dev, par, key, counts, partial, colsum):
    """Fused pulsed step of the input layer (conductances from sources, see
    :func:`fastres.kernels.updates.fixed_from_step`): ``grad[i, j] = scale (col[j] - 2 sum_s
    uT[i, s] d[s, j])`` never materialised, momentum, desired change ``-lr vel``, pulses, in
    place. ``uT`` (n_from, B) V, ``d`` (B, n_to) V, ``col`` (n_to,) V^2. Rows in the fixed
    blocks of ``partial`` (nblocks, n_to); ``colsum`` (n_to,) receives the new column sums (S,
    bit-identical to :func:`fastres.kernels.updates.block_column_sums`), ``counts`` (nblocks,)
    each block's pulse count."""
    nb = partial.shape[0]
    for c in prange(nb):
        first, last = block_range(W.shape[0], nb, c)
        counts[c] = pulse_fixed_rows(W, uT, d, col, scale, vel, lr, momentum, dev, par, key, first,
                                     last, partial[c])
    for j in range(colsum.shape[0]):
        colsum[j] = 0.0
    for c in range(nb):
        for j in range(colsum.shape[0]):
            colsum[j] += partial[c, j]
