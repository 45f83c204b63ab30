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
   Stuck devices (``stuck`` != 0) keep their conductance; they get (and count) their pulses
   like any other, as the programming circuit does not know they are stuck.

Random numbers come from a counter-based generator: device ``i``'s 64 random bits in the
stream ``key`` are ``splitmix64(key + i gamma)``, the ``i``-th output of splitmix64 started at
``key`` (Steele, Lea and Flood 2014; one 64-bit hash a device). A device's draws depend only on
the run's seed, the step, the array and the device, not on how the work is split between
threads or MPI ranks, and a resumed run continues them exactly. Stochastic rounding uses the
write key's bits, write noise those of a derived key (:func:`noise_key`), read noise the read
key's.

Speed: the pulse counts of all devices are found in branch-free loops over contiguous rows (the
desired change, the hash, the rounding, the clamps) that vectorise (no int64 <-> float64
conversion, which AVX2 lacks: :func:`top53`, :func:`floor_count`; a row's hashes from a state
advanced by gamma, :func:`stream_state`, not from each index times gamma), the firing
devices are listed (:func:`list_firing`), and only those (a few % a step) are moved by
the model. Loops that may call :func:`move` or draw a normal run far slower per device.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .blocks import block_range

MODEL_LINEAR = 0
MODEL_SOFT = 1
MODEL_EXP = 2
MODEL_TABLE = 3

_MASK = (1 << 64) - 1


_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
_NOISE_SALT = np.uint64(0x5851F42D4C957F2D)  # write noise: a key of its own (noise_key)


@njit(cache=True, inline="always")
def mix64(z):
    """splitmix64's output function on a uint64 state ``z`` (a well-mixed 64-bit hash)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def splitmix64(x):
    """One step of splitmix64 on a uint64: :func:`mix64` of ``x + gamma``."""
    return mix64(x + _GAMMA)


@njit(cache=True, inline="always")
def device_bits(key, i):
    """Device ``i``'s 64 random bits in stream ``key``: ``splitmix64(key + i gamma)``."""
    return splitmix64(key + np.uint64(i) * _GAMMA)


@njit(cache=True, inline="always")
def stream_state(key, i):
    """The splitmix64 state whose :func:`mix64` is device ``i``'s bits in stream ``key``
    (``key + (i + 1) gamma``); device ``i + 1``'s state is this plus ``gamma``. A loop over
    consecutive devices adds ``gamma`` instead of multiplying by the index: the same bits (all
    mod 2^64), one emulated 64-bit vector multiply (AVX2 has none) a device fewer."""
    return key + np.uint64(i + 1) * _GAMMA


@intrinsic
def _bits_as_f64(typingctx, x):
    """The float64 whose IEEE bits are the uint64 ``x`` (a bitcast, no conversion)."""
    sig = types.float64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return sig, codegen


_EXP52 = np.uint64(0x4330000000000000)  # the bits of 2^52


@njit(cache=True, inline="always")
def top53(h):
    """The top 53 bits of ``h`` as a float64, exactly: ``float(h >> 11)``, formed as ``a 2^26 +
    b`` from its top 27 and low 26 bits, each turned into a float64 by the 2^52 trick (its bits
    or-ed into the mantissa of 2^52, minus 2^52: exact below 2^52), because AVX2 has no vector
    int64 -> float64 conversion. Pure 64-bit lane operations, so a loop vectorises without
    shuffling lanes (an earlier form through int32 halves needed them); bit-identical to
    ``float(h >> 11)`` for every ``h`` (the sum is exact below 2^53; tested)."""
    a = _bits_as_f64((h >> np.uint64(37)) | _EXP52) - 4503599627370496.0
    b = _bits_as_f64(((h >> np.uint64(11)) & np.uint64(0x3FFFFFF)) | _EXP52) - 4503599627370496.0
    return a * 67108864.0 + b


@njit(cache=True, inline="always")
def unit(h):
    """Uniform in (0, 1) from the top 53 bits of ``h``."""
    return (top53(h) + 0.5) * (1.0 / 9007199254740992.0)


_I64_MIN = -9.223372036854775808e18  # -2^63 as float64


@njit(cache=True, inline="always")
def floor_count(x):
    """``float(math.floor(x))`` through int64, as x86 converts (``-2^63`` for NaN and for
    ``|x| >= 2^63``), without the int64: a float floor and a select, which vectorise."""
    return np.floor(x) if abs(x) < 9.223372036854775808e18 else _I64_MIN


@njit(cache=True, inline="always")
def trunc_count(x):
    """``float(int(x))`` through int64 (see :func:`floor_count`), vectorisable."""
    return np.trunc(x) if abs(x) < 9.223372036854775808e18 else _I64_MIN


@njit(cache=True, inline="always")
def uniform(key, i):
    """Uniform in (0, 1) for stream ``key``, device ``i`` (stochastic rounding's draw)."""
    return unit(device_bits(key, i))


@njit(cache=True, inline="always")
def noise_key(key):
    """The write noise's stream for the write stream ``key`` (independent of its bits)."""
    return splitmix64(key ^ _NOISE_SALT)


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
        # G(P + s n) from G(P) = g without P: the distance to the curve's asymptote lo + B
        # shrinks by exp(-s n / A) (one exp a device, no log)
        if n > 0:
            B = r / (-math.expm1(-1.0 / a_up))
            top = lo + B
            return top - (top - min(max(g, lo), top)) * math.exp(-s * n / (a_up * p_max))
        B = r / (-math.expm1(-1.0 / a_down))
        bot = hi - B
        return bot + (min(max(g, bot), hi) - bot) * math.exp(s * n / (a_down * p_max))
    # MODEL_TABLE: tab_up increasing from 0 to 1; tab_down decreasing from 1 to 0
    g01 = (g - lo) / r
    if n > 0:
        pos = _interp_pos(tab_up, g01)
        return lo + r * _interp_val(tab_up, pos + s * n)
    m = tab_down.shape[0] - 1
    pos = m - _interp_pos(tab_down[::-1], g01)  # position along the depression curve
    return lo + r * _interp_val(tab_down, pos - s * n)


@njit(cache=True, inline="always")
def _round_stochastic(x, h, max_pulses):
    """``x`` (steps) rounded up with probability ``x - floor(x)`` (the uniform :func:`unit`
    ``(h)``), clipped to ``[-max_pulses, max_pulses]``; branch-free."""
    fl = floor_count(x)
    q = fl + (1.0 if unit(h) < x - fl else 0.0)
    return min(max(q, -max_pulses), max_pulses)


@njit(cache=True, inline="always")
def count_span(dd, off, f0, n, acc, out, key, step_nominal, rounding, max_pulses, accumulate):
    """Signed whole pulse counts (step 1 of the module docstring) of devices ``f0..f0+n-1``
    for their desired changes ``dd[off..off+n-1]`` (S), into ``out[off..off+n-1]`` (may be
    ``dd`` itself); updates their accumulators ``acc[f0..]``. Branch-free loops, one a mode
    (``x = change / step_nominal``, a division: exact at whole steps). Stuck devices are not looked at here: they
    get their pulses like any other (the programming circuit does not know) and do not move
    (:func:`program_listed`)."""
    if accumulate:  # fire towards zero once a whole step has accumulated
        for j in range(n):
            f = f0 + j
            a = acc[f] + dd[off + j]
            x = min(max(a / step_nominal, -max_pulses - 1.0), max_pulses + 1.0)
            q = min(max(trunc_count(x), -max_pulses), max_pulses)
            acc[f] = a - q * step_nominal
            out[off + j] = q
    elif rounding == 1:  # stochastic: up with probability x - floor(x)
        z = stream_state(key, f0)  # device f0 + j's uniform: uniform(key, f0 + j)
        for j in range(n):
            out[off + j] = _round_stochastic(dd[off + j] / step_nominal, mix64(z), max_pulses)
            z += _GAMMA
    else:  # to nearest
        for j in range(n):
            q = floor_count(dd[off + j] / step_nominal + 0.5)
            out[off + j] = min(max(q, -max_pulses), max_pulses)


@njit(cache=True, inline="always")
def list_firing(q, off, f0, n, idx, nl, m):
    """Append the devices among ``f0..f0+n-1`` whose count ``q[off + j]`` is nonzero to
    ``idx`` (device) and ``nl`` (count) from ``m`` on; returns the new ``m``. Usually few
    fire (a few % a step, fewer with accumulation): then a branch a device, predicted well,
    writing only the firing ones (the branch-free compaction, two stores a device chained on
    ``m``, took twice as long at 3-9 % firing, measured); when more than 1/8 of the span
    fires, the branch-free compaction (a branch near 50 % would be mispredicted)."""
    nz = 0
    for j in range(n):  # vectorised: how many fire
        nz += 1 if q[off + j] != 0.0 else 0
    if 8 * nz > n:  # many fire: a branch would be mispredicted, compact without one
        for j in range(n):
            v = q[off + j]
            idx[m] = f0 + j
            nl[m] = v
            m += 1 if v != 0.0 else 0
        return m
    for j in range(n):
        v = q[off + j]
        if v != 0.0:
            idx[m] = f0 + j
            nl[m] = v
            m += 1
    return m


PRM_LO, PRM_HI, PRM_S, PRM_AUP, PRM_ADOWN, PRM_STUCK, PRM_TOP, PRM_BOT = 0, 1, 2, 3, 4, 5, 6, 7


@njit(cache=True, error_model="numpy")
def _exp_asymptotes(prm):
    """Columns ``PRM_TOP``, ``PRM_BOT`` of :func:`pack_devices`: the exponential curve's
    asymptotes ``lo + B_up`` and ``hi - B_down`` (S), ``B = r / (-expm1(-1 / a))``, formed by
    the same operations as :func:`move` (so :func:`move_exp` is bit-identical to it)."""
    for i in range(prm.shape[0]):
        lo, hi = prm[i, PRM_LO], prm[i, PRM_HI]
        r = hi - lo
        prm[i, PRM_TOP] = lo + r / (-math.expm1(-1.0 / prm[i, PRM_AUP]))
        prm[i, PRM_BOT] = hi - r / (-math.expm1(-1.0 / prm[i, PRM_ADOWN]))


def pack_devices(lo, hi, s, a_up, a_down, stuck):
    """The per-device parameters as one (N, 8) C-contiguous float64 array, a device a 64-byte
    row (columns ``PRM_*``: bounds ``lo``, ``hi`` (S), step scale ``s``, nonlinearity ``a_up``,
    ``a_down``, ``stuck`` (0/1), and the exponential curve's asymptotes ``top``, ``bot`` (S,
    derived, :func:`_exp_asymptotes`)): a firing device is found at random, and one cache
    line per device instead of six (one an array) made :func:`program_listed` ~3x faster;
    the asymptotes save the exponential model two ``expm1`` a firing device."""
    prm = np.zeros((np.asarray(lo).size, 8))
    for c, a in enumerate((lo, hi, s, a_up, a_down, stuck)):
        prm[:, c] = np.asarray(a, dtype=np.float64).ravel()
    _exp_asymptotes(prm)
    return prm


@njit(cache=True, inline="always")
def move_exp(g, n, lo, hi, s, a_up, a_down, p_max, top, bot):
    """:func:`move` of ``MODEL_EXP`` with the device's asymptotes ``top``, ``bot`` (S) given
    (:func:`pack_devices`), bit-identical to it (tested)."""
    if n == 0.0 or hi - lo <= 0.0:
        return g
    if n > 0:
        return top - (top - min(max(g, lo), top)) * math.exp(-s * n / (a_up * p_max))
    return bot + (min(max(g, bot), hi) - bot) * math.exp(s * n / (a_down * p_max))


@njit(cache=True)
def program_listed(g, idx, nl, m, prm, key, model, step_up, step_down, p_max, tab_up, tab_down,
                   sigma):
    """Move devices ``idx[:m]`` (flat indices into ``g``) by their pulses ``nl[:m]`` (steps
    2-3 of the module docstring), in place in ``g`` (S), except the stuck ones; returns the
    pulse count ``sum |nl[:m]|``.

    The pulse counts are found first for every device and only the devices that fire come
    here: a loop that may call :func:`move` runs ~50x slower per device than one that does not
    (measured; most devices fire no pulse in a step). The listed devices' parameters and
    conductances are gathered first, in a loop of independent loads that the CPU overlaps:
    scattered devices miss the cache (~200 ns each when fetched one after the other, measured).
    Write noise: :func:`normal_zig` on :func:`noise_key` ``(key)``."""
    buf = np.empty((m, 9))
    for k in range(m):
        i = idx[k]
        for c in range(8):
            buf[k, c] = prm[i, c]
        buf[k, 8] = g[i]
    nkey = noise_key(key)
    count = 0.0
    for k in range(m):
        i = idx[k]
        n = nl[k]
        count += abs(n)
        if buf[k, PRM_STUCK] != 0.0:
            continue
        lo, hi = buf[k, PRM_LO], buf[k, PRM_HI]
        if model == MODEL_EXP:
            gn = move_exp(buf[k, 8], n, lo, hi, buf[k, PRM_S], buf[k, PRM_AUP], buf[k, PRM_ADOWN], p_max,
                          buf[k, PRM_TOP], buf[k, PRM_BOT])
        else:
            gn = move(model, buf[k, 8], n, lo, hi, buf[k, PRM_S], step_up, step_down, buf[k, PRM_AUP],
                      buf[k, PRM_ADOWN], p_max, tab_up, tab_down)
        if sigma > 0.0:
            gn += sigma * (hi - lo) * math.sqrt(abs(n)) * normal_zig(nkey, i)
        g[i] = min(max(gn, lo), hi)
    return count


@njit(cache=True)
def pulse_rows(g, d, acc, prm, pulses, key, model, step_nominal, step_up, step_down, p_max, tab_up,
               tab_down, rounding, max_pulses, sigma, accumulate, first, last):
    """Devices ``first..last-1`` of :func:`pulse_update` (serial); returns their pulse count."""
    idx = np.empty(last - first, dtype=np.int64)
    nl = np.empty(last - first)
    count_span(d, first, first, last - first, acc, pulses, key, step_nominal, rounding,
               max_pulses, accumulate)
    m = list_firing(pulses, first, first, last - first, idx, nl, 0)
    return program_listed(g, idx, nl, m, prm, key, model, step_up, step_down, p_max, tab_up,
                          tab_down, sigma)


@njit(cache=True, parallel=True)
def pulse_update(g, d, acc, prm, pulses, key, model, step_nominal, step_up, step_down, p_max, tab_up,
                 tab_down, rounding, max_pulses, sigma, accumulate, nchunks):
    """Program every device by pulses (see the module docstring), in place in ``g``, ``acc``;
    ``pulses`` receives each device's signed pulse count. Flat (N,) float64 arrays: ``g``
    conductances (S), ``d`` desired changes (S), ``acc`` accumulators (S); ``prm`` (N, 8) the
    per-device parameters (:func:`pack_devices`: bounds, step scale, nonlinearity, stuck);
    ``tab_up``/``tab_down`` (M+1,) normalised curves; ``pulses`` receives the counts.
    ``key`` (uint64) names the step's random stream. Chunks of devices run in parallel; the
    result does not depend on ``nchunks``."""
    N = g.shape[0]
    for c in prange(nchunks):
        first, last = block_range(N, nchunks, c)
        pulse_rows(g, d, acc, prm, pulses, key, model, step_nominal, step_up, step_down, p_max, tab_up,
                   tab_down, rounding, max_pulses, sigma, accumulate, first, last)


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
def _bits(h0, k):
    """Draw ``k`` (>= 1) of a device whose first draw is ``h0``: ``splitmix64(h0 + k)``."""
    return splitmix64(h0 + np.uint64(k))


@njit(cache=True, inline="always")
def _zig_first(h):
    """The ziggurat's first try from 64 bits ``h``: layer (bits 0-6), uniform in (-1, 1) (bits
    11-63), the candidate ``u x[layer]`` and whether it is accepted (``|u| < x[l+1]/x[l]``)."""
    layer = np.int64(h & np.uint64(127))
    u = (np.float64(np.int64(h >> np.uint64(11))) + 0.5) * 2.0 ** -52 - 1.0
    return layer, u, u * ZIG_X[layer], abs(u) < ZIG_R[layer]


@njit(cache=True)
def _normal_slow(h0, layer, u):
    """The ziggurat's rare branch (about 1 % of draws), after the first draw ``h0`` was
    rejected with ``layer`` and ``u``; further draws :func:`_bits` ``(h0, 1)``, ``(h0, 2)``..."""
    k = 1
    while True:
        if layer == 0:  # the tail beyond ZIG_TAIL (Marsaglia 1964)
            while True:
                x = math.log(unit(_bits(h0, k))) / ZIG_TAIL
                y = math.log(unit(_bits(h0, k + 1)))
                k += 2
                if -2.0 * y >= x * x:
                    return x - ZIG_TAIL if u < 0.0 else ZIG_TAIL - x
        x = u * ZIG_X[layer]
        f0 = math.exp(-0.5 * (ZIG_X[layer] * ZIG_X[layer] - x * x))
        f1 = math.exp(-0.5 * (ZIG_X[layer + 1] * ZIG_X[layer + 1] - x * x))
        w = unit(_bits(h0, k))
        k += 1
        if f1 + w * (f0 - f1) < 1.0:
            return x
        layer, u, z, ok = _zig_first(_bits(h0, k))  # rejected: a new draw
        k += 1
        if ok:
            return z


@njit(cache=True, inline="always")
def normal_zig(key, i):
    """Standard normal for stream ``key``, device ``i`` by the ziggurat (Marsaglia and Tsang
    2000): one 64-bit hash (:func:`device_bits`) and no transcendental function in 99 % of
    draws (Box-Muller's log, sqrt and cos cost ~100 ns a draw here)."""
    h0 = device_bits(key, i)
    layer, u, z, ok = _zig_first(h0)
    if ok:
        return z
    return _normal_slow(h0, layer, u)


@njit(cache=True)
def _read_first(g, out, key, sigma, idx, first, last):
    """Every device's first ziggurat try (branch-free); lists the rejected ones in ``idx`` from
    ``first`` on and returns where the list ends."""
    m = first
    st = stream_state(key, first)  # device i's bits: device_bits(key, i)
    for i in range(first, last):
        layer, u, z, ok = _zig_first(mix64(st))
        st += _GAMMA
        out[i] = max(g[i] * (1.0 + sigma * z), 1e-300)
        idx[m] = i
        m += 0 if ok else 1
    return m


@njit(cache=True)
def _read_rejected(g, out, key, sigma, idx, first, m):
    """The devices ``idx[first:m]`` whose first try was rejected (about 3 %)."""
    for k in range(first, m):
        i = idx[k]
        h0 = device_bits(key, i)
        layer, u, z, ok = _zig_first(h0)
        out[i] = max(g[i] * (1.0 + sigma * _normal_slow(h0, layer, u)), 1e-300)


@njit(cache=True)
def read_noise_span(g, out, key, sigma, idx, first, last):
    """Devices ``first..last-1`` of :func:`read_noise`: every device's first ziggurat try in
    one branch-free loop, then the rejected ones."""
    _read_rejected(g, out, key, sigma, idx, first, _read_first(g, out, key, sigma, idx, first, last))


@njit(cache=True)
def read_noise_rows(g, out, key, sigma, idx, colsum):
    """:func:`read_noise` of a whole conductance array ``g`` (n_from, n_to) (S, C-contiguous;
    device ``i n_to + j`` at ``[i, j]``) into ``out`` (same shape), serially, row by row, and
    the column sums of ``out`` into ``colsum`` (n_to,) (S) in the same pass, while each row is
    in cache: row 0, then each further row added in turn, bit-identical to numpy's
    ``out.sum(axis=0)`` for ``n_to >= 2`` (tested; numpy sums a single column pairwise), which
    the network's system needs. ``idx`` (n_to,) int64
    scratch. The same draws as :func:`read_noise` (a device's noise depends on its flat index
    only)."""
    n_from, n_to = g.shape
    gf = g.reshape(-1)
    of = out.reshape(-1)
    bits = np.empty(n_to, dtype=np.uint64)
    for i in range(n_from):
        o = i * n_to
        z = stream_state(key, o)  # device o + j's bits: device_bits(key, o + j)
        for j in range(n_to):  # the row's hashes first: this loop vectorises, the next cannot
            bits[j] = mix64(z)  # (its table lookups); ~10 % of the read saved
            z += _GAMMA
        m = 0  # the row's first tries (branch-free), its rejected devices listed in idx[:m]
        for j in range(n_to):
            layer, u, z, ok = _zig_first(bits[j])
            of[o + j] = max(gf[o + j] * (1.0 + sigma * z), 1e-300)
            idx[m] = o + j
            m += 0 if ok else 1
        for k in range(m):  # the row's rejected ones (about 3 %)
            i2 = idx[k]
            h0 = bits[i2 - o]  # device_bits(key, i2), kept from the row's hashes
            layer, u, z, ok = _zig_first(h0)
            of[i2] = max(gf[i2] * (1.0 + sigma * _normal_slow(h0, layer, u)), 1e-300)
        if i == 0:
            for j in range(n_to):
                colsum[j] = of[j]
        else:
            for j in range(n_to):
                colsum[j] += of[o + j]


@njit(cache=True, parallel=True)
def read_noise(g, out, key, sigma, idx, nchunks):
    """``out = max(g (1 + sigma xi), 1e-300)`` per device (S; (N,) float64; ``xi`` standard
    normal from stream ``key``, :func:`normal_zig`); ``idx`` (N,) int64 scratch. Chunks of
    devices run in parallel; the result does not depend on ``nchunks``."""
    N = g.shape[0]
    for c in prange(nchunks):
        first, last = block_range(N, nchunks, c)
        read_noise_span(g, out, key, sigma, idx, first, last)

# -- the fused pulsed step: desired changes (SGD with momentum on EqProp's terms) and pulses in
# one pass over the conductances, no copy of them, no materialised change, nothing written per
# device but the conductance, its momentum and (accumulate-then-pulse) its accumulator. ``dev``
# is the tuple ``(acc, prm, tab_up, tab_down)`` of :func:`pulse_update`'s arrays (one entry, or
# row of ``prm``, per conductance in row-major order), ``par`` the float64 array ``(model, step_nominal, step_up, step_down, p_max, rounding,
# max_pulses, sigma, accumulate)``. The desired change of a conductance ``w`` is the unclipped
# SGD step's ``(w - lr vel) - w``, written so, as :func:`fastres.kernels.updates.drop_square_step`
# followed by a subtraction would give it: the pulses are bit-identical to an SGD step on a copy
# followed by :func:`pulse_update`. Rows are counted one after the other, their firing devices
# listed (``idx``, ``nl``), and the listed ones programmed together (see :func:`program_listed`).

@njit(cache=True, inline="always")
def _pulse_row(W, vel, i, dd, lr, momentum, acc, key, step_nominal, rounding, max_pulses,
               accumulate, idx, nl, m):
    """Row ``i`` of a fused step: ``dd`` (n_to,) holds the row's gradient (V^2/S); momentum
    (``vel``), the desired changes ``(w - lr vel) - w`` (S, into ``dd``), then each device's
    pulse count (:func:`count_span`, into ``dd``); the firing devices are listed in ``idx``,
    ``nl`` from ``m`` on. Returns the new ``m``."""
    m_to = W.shape[1]
    if rounding == 1 and not accumulate:  # the usual case, desired changes and counts in one
        z = stream_state(key, i * m_to)  # loop: the same operations as the loops below
        if momentum > 0.0:
            for j in range(m_to):
                q = momentum * vel[i, j] + dd[j]
                vel[i, j] = q
                w = W[i, j]
                dd[j] = _round_stochastic(((w - lr * q) - w) / step_nominal, mix64(z), max_pulses)
                z += _GAMMA
        else:
            for j in range(m_to):
                w = W[i, j]
                dd[j] = _round_stochastic(((w - lr * dd[j]) - w) / step_nominal, mix64(z), max_pulses)
                z += _GAMMA
        return list_firing(dd, 0, i * m_to, m_to, idx, nl, m)
    if momentum > 0.0:
        for j in range(m_to):
            q = momentum * vel[i, j] + dd[j]
            vel[i, j] = q
            w = W[i, j]
            dd[j] = (w - lr * q) - w
    else:
        for j in range(m_to):
            w = W[i, j]
            dd[j] = (w - lr * dd[j]) - w
    count_span(dd, 0, i * m_to, m_to, acc, dd, key, step_nominal, rounding, max_pulses, accumulate)
    return list_firing(dd, 0, i * m_to, m_to, idx, nl, m)


@njit(cache=True)
def _program_rows(W, idx, nl, m, dev, par, key):
    """:func:`program_listed` on the devices ``idx[:m]`` of ``W``; returns their pulse count."""
    return program_listed(W.reshape(-1), idx, nl, m, dev[1], key, int(par[0]), par[2], par[3], par[4],
                          dev[2], dev[3], par[7])


@njit(cache=True)
def pulse_terms_rows(W, row, col, prod, scale, vel, lr, momentum, dev, par, key, first, last):
    """Rows ``first..last-1`` of :func:`pulse_terms` (serial); returns their pulse count."""
    m_to = W.shape[1]
    acc = dev[0]
    step_nominal, rounding, max_pulses, accumulate = par[1], int(par[5]), par[6], par[8] != 0.0
    dd = np.empty(m_to)
    idx = np.empty((last - first) * m_to, dtype=np.int64)
    nl = np.empty((last - first) * m_to)
    m = 0
    for i in range(first, last):
        ri = row[i]
        for j in range(m_to):
            dd[j] = scale * (ri + col[j] - 2.0 * prod[i, j])
        m = _pulse_row(W, vel, i, dd, lr, momentum, acc, key, step_nominal, rounding, max_pulses,
                       accumulate, idx, nl, m)
    return _program_rows(W, idx, nl, m, dev, par, key)


@njit(cache=True, parallel=True)
def pulse_terms(W, row, col, prod, scale, vel, lr, momentum, dev, par, key, counts):
    """Fused pulsed step of a conductance array ``W`` (n_from, n_to) (S, C-contiguous) from
    EqProp's terms: ``grad = scale (row[i] + col[j] - 2 prod[i, j])`` (V^2/S, see
    :func:`fastres.kernels.updates.drop_square_step`), ``vel = momentum vel + grad``, desired
    change ``-lr vel`` (``lr`` S^2/V^2), then pulses, in place in ``W``, ``vel`` and the
    accumulators. Rows in ``counts.shape[0]`` parallel chunks; ``counts[c]`` receives chunk
    ``c``'s pulse count. The result does not depend on the number of chunks."""
    nchunks = counts.shape[0]
    for c in prange(nchunks):
        first, last = block_range(W.shape[0], nchunks, c)
        counts[c] = pulse_terms_rows(W, row, col, prod, scale, vel, lr, momentum, dev, par, key,
                                     first, last)


@njit(cache=True)
def pulse_fixed_rows(W, uT, d, col, scale, vel, lr, momentum, dev, par, key, first, last, psum):
    """Rows ``first..last-1`` of :func:`pulse_fixed` (serial); ``psum`` (n_to,) receives the
    column sums of the new rows (S, added row after row); returns the rows' pulse count."""
    B = uT.shape[1]
    m_to = W.shape[1]
    acc = dev[0]
    step_nominal, rounding, max_pulses, accumulate = par[1], int(par[5]), par[6], par[8] != 0.0
    p = np.empty(m_to)
    dd = np.empty(m_to)
    idx = np.empty((last - first) * m_to, dtype=np.int64)
    nl = np.empty((last - first) * m_to)
    m = 0
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
        m = _pulse_row(W, vel, i, dd, lr, momentum, acc, key, step_nominal, rounding, max_pulses,
                       accumulate, idx, nl, m)
    count = _program_rows(W, idx, nl, m, dev, par, key)
    for j in range(m_to):
        psum[j] = 0.0
    for i in range(first, last):
        for j in range(m_to):
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


@njit(cache=True)
def seed_sequence_keys(a, b, n, d):
    """:func:`seed_sequence_key` ``(a, b, c, d)`` for ``c = 0..n-1``, as a (n,) uint64 array
    (one compiled call for all of a step's arrays)."""
    out = np.empty(n, dtype=np.uint64)
    for c in range(n):
        out[c] = seed_sequence_key(a, b, np.uint64(c), d)
    return out

