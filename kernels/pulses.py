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
def pulse_count(i, d, acc, stuck, key, step_nominal, rounding, max_pulses, accumulate):
    """Device ``i``'s signed whole number of pulses for the desired change ``d`` (S) (step 1 of
    the module docstring; updates ``acc[i]``); 0 for a stuck device."""
    if stuck[i] != 0.0:
        return 0.0
    x = d / step_nominal
    if accumulate:
        acc[i] += d
        x = acc[i] / step_nominal
        n = float(int(x))  # towards zero: fire only once a whole step has accumulated
    elif rounding == 1:
        fl = math.floor(x)
        n = fl + (1.0 if uniform(key, i, 0) < x - fl else 0.0)
    else:
        n = float(math.floor(x + 0.5))
    if n > max_pulses:
        n = max_pulses
    elif n < -max_pulses:
        n = -max_pulses
    if accumulate:
        acc[i] -= n * step_nominal
    return n


@njit(cache=True)
def program_listed(g, idx, m, pulses, lo, hi, s, key, model, step_up, step_down, a_up, a_down,
                   p_max, tab_up, tab_down, sigma):
    """Move devices ``idx[:m]`` (flat indices into ``g``) by their ``pulses`` (steps 2-3 of the
    module docstring), in place in ``g`` (S).

    The pulse counts are found first for every device and only the devices that fire come
    here: a loop that may call :func:`move` runs ~50x slower per device than one that does not
    (measured; most devices fire no pulse in a step)."""
    for k in range(m):
        i = idx[k]
        n = pulses[i]
        gn = move(model, g[i], n, lo[i], hi[i], s[i], step_up, step_down, a_up[i], a_down[i], p_max,
                  tab_up, tab_down)
        if sigma > 0.0:
            gn += sigma * (hi[i] - lo[i]) * math.sqrt(abs(n)) * normal(key, i)
        g[i] = min(max(gn, lo[i]), hi[i])


@njit(cache=True)
def pulse_rows(g, d, acc, lo, hi, s, stuck, pulses, key, model, step_nominal, step_up, step_down,
               a_up, a_down, p_max, tab_up, tab_down, rounding, max_pulses, sigma, accumulate,
               first, last):
    """Devices ``first..last-1`` of :func:`pulse_update` (serial); returns their pulse count."""
    idx = np.empty(last - first, dtype=np.int64)
    m = 0
    count = 0.0
    for i in range(first, last):
        n = pulse_count(i, d[i], acc, stuck, key, step_nominal, rounding, max_pulses, accumulate)
        pulses[i] = n
        if n != 0.0:
            idx[m] = i
            m += 1
            count += abs(n)
    program_listed(g, idx, m, pulses, lo, hi, s, key, model, step_up, step_down, a_up, a_down,
                   p_max, tab_up, tab_down, sigma)
    return count


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


def ziggurat_tables(layers=128, r=3.442619855899, v=9.91256303526217e-3):
    """Layer edges ``x`` (layers+1,) and ratios ``x[i+1] / x[i]`` (layers,) of the standard
    normal's ziggurat (Marsaglia and Tsang 2000, the layout of Doornik 2005: 128 layers of
    area ``v``, base strip with the tail beyond ``r``)."""
    x = np.zeros(layers + 1)
    f = math.exp(-0.5 * r * r)
    x[0] = v / f
    x[1] = r
    for i in range(2, layers):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] * x[i])
    return x, x[1:] / x[:-1]


ZIG_X, ZIG_R = ziggurat_tables()
ZIG_TAIL = 3.442619855899


@njit(cache=True, inline="always")
def _bits(base, k):
    return splitmix64(base + np.uint64(k))


@njit(cache=True)
def _normal_slow(base, layer, u, k):
    """The ziggurat's rare branch (about 1 % of draws) from draw ``k`` of stream ``base``."""
    while True:
        if layer == 0:  # the tail beyond ZIG_TAIL (Marsaglia 1964)
            while True:
                x = math.log((np.float64(_bits(base, k) >> np.uint64(11)) + 0.5) * 2.0 ** -53) / ZIG_TAIL
                y = math.log((np.float64(_bits(base, k + 1) >> np.uint64(11)) + 0.5) * 2.0 ** -53)
                k += 2
                if -2.0 * y >= x * x:
                    return x - ZIG_TAIL if u < 0.0 else ZIG_TAIL - x
        x = u * ZIG_X[layer]
        f0 = math.exp(-0.5 * (ZIG_X[layer] * ZIG_X[layer] - x * x))
        f1 = math.exp(-0.5 * (ZIG_X[layer + 1] * ZIG_X[layer + 1] - x * x))
        w = (np.float64(_bits(base, k) >> np.uint64(11)) + 0.5) * 2.0 ** -53
        k += 1
        if f1 + w * (f0 - f1) < 1.0:
            return x
        h = _bits(base, k)  # rejected: a new draw
        k += 1
        layer = np.int64(h & np.uint64(127))
        u = (np.float64(h >> np.uint64(11)) + 0.5) * 2.0 ** -52 - 1.0
        if abs(u) < ZIG_R[layer]:
            return u * ZIG_X[layer]


@njit(cache=True, inline="always")
def normal_zig(key, i):
    """Standard normal for stream ``key``, device ``i`` by the ziggurat: one 64-bit hash and no
    transcendental function in 99 % of draws (Box-Muller's log, sqrt and cos cost ~100 ns a
    draw here). Bits 0-6 of the hash pick the layer, bits 11-63 the uniform in (-1, 1)."""
    base = splitmix64(key ^ np.uint64(i))
    h = _bits(base, 16)
    layer = np.int64(h & np.uint64(127))
    u = (np.float64(h >> np.uint64(11)) + 0.5) * 2.0 ** -52 - 1.0
    if abs(u) < ZIG_R[layer]:
        return u * ZIG_X[layer]
    return _normal_slow(base, layer, u, 17)


@njit(cache=True, parallel=True)
def read_noise(g, out, key, sigma):
    """``out = g (1 + sigma xi)`` per device (S; ``xi`` standard normal from stream ``key``,
    :func:`normal_zig`)."""
    N = g.shape[0]
    for i in prange(N):
        out[i] = g[i] * (1.0 + sigma * normal_zig(key, i))

# -- the fused pulsed step: desired changes (SGD with momentum on EqProp's terms) and pulses in
# one pass over the conductances, no copy of them, no materialised change. ``dev`` is the tuple
# ``(acc, lo, hi, s, stuck, a_up, a_down, tab_up, tab_down, pulses)`` of :func:`pulse_update`'s
# per-device arrays (flat, one entry per conductance in row-major order; ``pulses`` receives
# the signed counts), ``par`` the float64 array ``(model, step_nominal, step_up, step_down,
# p_max, rounding, max_pulses, sigma, accumulate)``. The desired change of a conductance ``w``
# is the unclipped SGD step's ``(w - lr vel) - w``, written so, as
# :func:`fastres.kernels.updates.drop_square_step` followed by a subtraction would give it: the
# pulses are bit-identical to an SGD step on a copy followed by :func:`pulse_update`.

@njit(cache=True, inline="always")
def _pulse_row(W, vel, i, dd, lr, momentum, acc, stuck, pulses, key, step_nominal, rounding,
               max_pulses, accumulate, idx, m, count):
    """Row ``i`` of a fused step: ``dd`` (n_to,) holds the row's gradient (V^2/S); momentum
    (``vel``), the desired changes ``(w - lr vel) - w`` (S, into ``dd``), then each device's
    pulse count (:func:`pulse_count`); the firing devices are listed in ``idx`` from ``m`` on.
    Returns the new ``m`` and ``count`` (the pulses are applied by :func:`_program_rows`)."""
    m_to = W.shape[1]
    for j in range(m_to):
        q = dd[j]
        if momentum > 0.0:
            q = momentum * vel[i, j] + q
            vel[i, j] = q
        w = W[i, j]
        dd[j] = (w - lr * q) - w
    for j in range(m_to):
        f = i * m_to + j
        n = pulse_count(f, dd[j], acc, stuck, key, step_nominal, rounding, max_pulses, accumulate)
        pulses[f] = n
        if n != 0.0:
            idx[m] = f
            m += 1
            count += abs(n)
    return m, count


@njit(cache=True)
def _program_rows(W, idx, m, dev, par, key):
    program_listed(W.reshape(-1), idx, m, dev[9], dev[1], dev[2], dev[3], key, int(par[0]), par[2],
                   par[3], dev[5], dev[6], par[4], dev[7], dev[8], par[7])


@njit(cache=True)
def pulse_terms_rows(W, row, col, prod, scale, vel, lr, momentum, dev, par, key, first, last, idx):
    """Rows ``first..last-1`` of :func:`pulse_terms` (serial); returns their pulse count."""
    m_to = W.shape[1]
    acc, stuck, pulses = dev[0], dev[4], dev[9]
    step_nominal, rounding, max_pulses, accumulate = par[1], int(par[5]), par[6], par[8] != 0.0
    m = 0
    count = 0.0
    dd = np.empty(m_to)
    for i in range(first, last):
        ri = row[i]
        for j in range(m_to):
            dd[j] = scale * (ri + col[j] - 2.0 * prod[i, j])
        m, count = _pulse_row(W, vel, i, dd, lr, momentum, acc, stuck, pulses, key, step_nominal,
                              rounding, max_pulses, accumulate, idx, m, count)
    _program_rows(W, idx, m, dev, par, key)
    return count


@njit(cache=True, parallel=True)
def pulse_terms(W, row, col, prod, scale, vel, lr, momentum, dev, par, key, counts, idx):
    """Fused pulsed step of a conductance array ``W`` (n_from, n_to) (S, C-contiguous) from
    EqProp's terms: ``grad = scale (row[i] + col[j] - 2 prod[i, j])`` (V^2/S, see
    :func:`fastres.kernels.updates.drop_square_step`), ``vel = momentum vel + grad``, desired
    change ``-lr vel`` (``lr`` S^2/V^2), then pulses, in place in ``W``, ``vel`` and the
    accumulators. Rows in ``counts.shape[0]`` parallel chunks; ``counts[c]`` receives chunk
    ``c``'s pulse count; ``idx`` (n_from n_to,) int64 scratch. The result does not depend on
    the number of chunks."""
    nchunks = counts.shape[0]
    for c in prange(nchunks):
        first, last = block_range(W.shape[0], nchunks, c)
        counts[c] = pulse_terms_rows(W, row, col, prod, scale, vel, lr, momentum, dev, par, key,
                                     first, last, idx[first * W.shape[1]:last * W.shape[1]])


@njit(cache=True)
def pulse_fixed_rows(W, uT, d, col, scale, vel, lr, momentum, dev, par, key, first, last, psum, idx):
    """Rows ``first..last-1`` of :func:`pulse_fixed` (serial); ``psum`` (n_to,) receives the
    column sums of the new rows (S, added row after row); returns the rows' pulse count."""
    B = uT.shape[1]
    m_to = W.shape[1]
    acc, stuck, pulses = dev[0], dev[4], dev[9]
    step_nominal, rounding, max_pulses, accumulate = par[1], int(par[5]), par[6], par[8] != 0.0
    p = np.empty(m_to)
    dd = np.empty(m_to)
    m = 0
    count = 0.0
    for i in range(first, last):
        for j in range(m_to):
            p[j] = 0.0
        for s in range(B):
            a = uT[i, s]
            if a != 0.0:
                for j in range(m_to):
                    p[j] += a * d[s, j]
        for j in range(m_to):
            dd[j] = scale * (col[j] - 2.0 * p[j])
        m, count = _pulse_row(W, vel, i, dd, lr, momentum, acc, stuck, pulses, key, step_nominal,
                              rounding, max_pulses, accumulate, idx, m, count)
    _program_rows(W, idx, m, dev, par, key)
    for j in range(m_to):
        psum[j] = 0.0
    for i in range(first, last):
        for j in range(m_to):
            psum[j] += W[i, j]
    return count


@njit(cache=True, parallel=True)
def pulse_fixed(W, uT, d, col, scale, vel, lr, momentum, dev, par, key, counts, partial, colsum,
                idx):
    """Fused pulsed step of the input layer (conductances from sources, see
    :func:`fastres.kernels.updates.fixed_from_step`): ``grad[i, j] = scale (col[j] - 2 sum_s
    uT[i, s] d[s, j])`` never materialised, momentum, desired change ``-lr vel``, pulses, in
    place. ``uT`` (n_from, B) V, ``d`` (B, n_to) V, ``col`` (n_to,) V^2. Rows in the fixed
    blocks of ``partial`` (nblocks, n_to); ``colsum`` (n_to,) receives the new column sums (S,
    bit-identical to :func:`fastres.kernels.updates.block_column_sums`), ``counts`` (nblocks,)
    each block's pulse count; ``idx`` (n_from n_to,) int64 scratch."""
    nb = partial.shape[0]
    for c in prange(nb):
        first, last = block_range(W.shape[0], nb, c)
        counts[c] = pulse_fixed_rows(W, uT, d, col, scale, vel, lr, momentum, dev, par, key, first,
                                     last, partial[c], idx[first * W.shape[1]:last * W.shape[1]])
    for j in range(colsum.shape[0]):
        colsum[j] = 0.0
    for c in range(nb):
        for j in range(colsum.shape[0]):
            colsum[j] += partial[c, j]


# -- the per-step stream keys: numpy's SeedSequence, compiled. ``stream_key`` in
# fastres.pulsed needs ``SeedSequence([seed, step, array, purpose]).generate_state(1, uint64)``
# for every array twice a step; built in Python that costs ~80 us a key. This is the same
# algorithm (numpy/random/bit_generator.pyx: hashmix, mix, a pool of 4 uint32 words) for four
# entropy words below 2^32, bit for bit (tested against numpy).
_M32 = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _hashmix(value, hc):
    value = (value ^ hc) & _M32
    hc = (hc * np.uint64(0x931E8875)) & _M32
    value = (value * hc) & _M32
    value ^= value >> np.uint64(16)
    return value, hc


@njit(cache=True, inline="always")
def _mix(x, y):
    r = (np.uint64(0xCA01F9DD) * x - np.uint64(0x4973F715) * y) & _M32
    return r ^ (r >> np.uint64(16))


@njit(cache=True)
def seed_sequence_key(a, b, c, d):
    """``SeedSequence([a, b, c, d]).generate_state(1, dtype=uint64)[0]`` of numpy for four
    entropy words ``0 <= a, b, c, d < 2^32`` (uint64 arguments), as a uint64."""
    mixer = np.empty(4, dtype=np.uint64)
    ent = (a, b, c, d)
    hc = np.uint64(0x43B0D7E5)
    for i in range(4):
        mixer[i], hc = _hashmix(ent[i], hc)
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                h, hc = _hashmix(mixer[i_src], hc)
                mixer[i_dst] = _mix(mixer[i_dst], h)
    hc = np.uint64(0x8B51F9DD)
    out = np.uint64(0)
    for w in range(2):
        v = (mixer[w] ^ hc) & _M32
        hc = (hc * np.uint64(0x58F38DED)) & _M32
        v = (v * hc) & _M32
        v ^= v >> np.uint64(16)
        out |= v << np.uint64(32 * w)
    return out
