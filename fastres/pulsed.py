"""Real devices: memristors programmed by pulses, with noise and variability, as an optimiser.

:class:`PulsedDevices` has the optimiser interface of :class:`~fastres.optimizers.BoundedSGD`
(``init``, ``state``, ``load``, ``column_sums``, ``step``) and wraps it: SGD (with momentum)
proposes each conductance's desired change, and the device turns it into what hardware does,
both in one fused kernel pass (see :mod:`fastres.kernels.pulses` for the models and the exact
update; the parameters are :class:`~fastres.config.DeviceConfig`'s). Conductances in S.
:class:`WeightDevices` puts the MLP baseline's signed weights on the same devices;
:func:`pulse_curve` gives a model's conductance against pulse count (the report's figure).

State, all stored in the run file's checkpoint (optimiser group) so a killed run resumes
bit-identically: per conductance array ``K``, the momentum ``K``, and ``K.lo``, ``K.hi``
(device bounds, S), ``K.s`` (step scale), ``K.aup``, ``K.adown`` (nonlinearity), ``K.stuck``
(0/1), drawn once at the start from the run's seed; ``K.acc`` the accumulator (S); and the
totals ``pulses`` (per step counter) kept as a metric by the trainer. Random numbers are
counter-based (seed, step, array, purpose, device), so they do not depend on threads or MPI
ranks, and every rank applies the same update. Stuck devices get (and count) their pulses but
do not move: the programming circuit does not know they are stuck.

Read noise (:meth:`apparent`): the conductances a training step's solves see are the
programmed ones times ``1 + read_noise * xi``, drawn once per minibatch and shared by its
free and nudged phases -- EqProp differences two phases of ONE circuit, so resampling between
them would add noise of the size of the signal; a read of a memristor array lasts
microseconds, a minibatch's phases happen within one read. One draw per device per minibatch
is also all the noise costs: ~1 ms of CPU for 158,000 conductances (ziggurat on a counter-based
hash, :func:`fastres.kernels.pulses.read_noise`), into buffers reused step after step.
"""
from __future__ import annotations

from pathlib import Path

import numba
import numpy as np

from .config import DeviceConfig
from .errors import ConfigError, FastresError
from .kernels import pulses as _kp
from .optimizers import BoundedSGD

MODEL_CODES = {"linear": _kp.MODEL_LINEAR, "soft-bounds": _kp.MODEL_SOFT,
               "exponential": _kp.MODEL_EXP, "table": _kp.MODEL_TABLE}
_PURPOSE_WRITE, _PURPOSE_READ, _PURPOSE_INIT = 1, 2, 3
PARALLEL_MIN_DEVICES = 1 << 16  # devices: below this an array's pass runs serially (the same
# result: the kernels' draws and sums do not depend on the split)


def stream_key(seed, step, array_index, purpose) -> np.uint64:
    """The counter-based generator's key for one (seed, step, array, purpose) (uint64):
    ``SeedSequence([seed, step, array, purpose]).generate_state(1, uint64)[0]``, by the
    compiled twin of numpy's algorithm when all four are below 2^32 (bit-identical, tested;
    4x cheaper a key)."""
    words = (int(seed), int(step), int(array_index), int(purpose))
    if all(0 <= w < 1 << 32 for w in words):
        return np.uint64(_kp.seed_sequence_key(*(np.uint64(w) for w in words)))
    h = np.random.SeedSequence(list(words))
    return np.uint64(int(h.generate_state(1, dtype=np.uint64)[0]))


def stream_keys(seed, step, n, purpose) -> np.ndarray:
    """``stream_key(seed, step, j, purpose)`` for arrays ``j = 0..n-1`` (n,) uint64, in one
    compiled call when the words fit (a step's keys: the Python per key cost ~5 us)."""
    if 0 <= int(seed) < 1 << 32 and 0 <= int(step) < 1 << 32 and 0 <= int(purpose) < 1 << 32:
        return _kp.seed_sequence_keys(np.uint64(seed), np.uint64(step), int(n), np.uint64(purpose))
    return np.array([stream_key(seed, step, j, purpose) for j in range(n)], dtype=np.uint64)


def load_table(path, g_min, g_max):
    """A measured curve: CSV rows ``pulse, g_potentiation, g_depression`` (S; potentiation
    increasing, depression decreasing, both spanning the same range). Returns the curves
    normalised to [0, 1] of the range (each (M+1,)), and the number of pulses M."""
    try:
        a = np.loadtxt(Path(path), delimiter=",", ndmin=2, comments="#")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"device table {path}: cannot read it as CSV rows 'pulse, g_up, g_down': {exc}") from None
    if a.shape[1] != 3 or a.shape[0] < 2 or not np.all(np.isfinite(a)):
        raise ConfigError(f"device table {path}: need >= 2 finite rows of 3 columns (pulse, g_up, g_down)")
    up, down = a[:, 1], a[:, 2]
    if not (np.all(np.diff(up) > 0) and np.all(np.diff(down) < 0)):
        raise ConfigError(f"device table {path}: potentiation must increase and depression decrease "
                          f"monotonically with the pulse number")
    lo, hi = up[0], up[-1]
    if not (np.isclose(down[0], hi, rtol=1e-6) and np.isclose(down[-1], lo, rtol=1e-6)):
        raise ConfigError(f"device table {path}: both curves must span the same range "
                          f"({lo:g}..{hi:g} S up, {down[-1]:g}..{down[0]:g} S down)")
    if not (g_min <= lo < hi <= g_max):
        raise ConfigError(f"device table {path}: its range {lo:g}..{hi:g} S lies outside "
                          f"[g_min, g_max] = [{g_min:g}, {g_max:g}] S")
    r = hi - lo
    return (up - lo) / r, (down - lo) / r, a.shape[0] - 1


class Apparent(dict):
    """The conductances a step's solves see (:meth:`PulsedDevices.apparent`), a dict like the
    params, with ``w1_colsum``: ``self["W1"].sum(axis=0)`` (S) if the read formed it, else None."""

    w1_colsum = None


class PulsedDevices:
    """SGD's desired changes, applied by pulses to devices (see the module docstring)."""

    def __init__(self, cfg: DeviceConfig, lr, momentum, g_min, g_max, seed):
        self.cfg = cfg
        p = cfg.resolved_params()
        self.p = p
        self.sgd = BoundedSGD(lr, momentum, g_min, g_max, clip=False)  # desired changes
        self.g_min, self.g_max = float(g_min), float(g_max)
        self.seed = int(seed)
        self.model = MODEL_CODES[p["model"]]
        r = self.g_max - self.g_min
        if p["model"] == "table":
            self.tab_up, self.tab_down, M = load_table(p["table"], self.g_min, self.g_max)
            self.p_max = float(M)
        else:
            self.tab_up = self.tab_down = np.zeros(2)
            self.p_max = float(p["levels"] - 1)
        self.step_nominal = r / self.p_max
        self.step_up = self.step_nominal * (1.0 + p["up_down"])
        self.step_down = self.step_nominal * (1.0 - p["up_down"])
        self.dev = None  # per array: dict of per-device state
        self._seen = {}  # per array: the read noise's output and scratch
        self._packed = {}  # per array: (its lo array, the packed per-device parameters)
        self._par_array = None  # the scalar settings, packed (_par)
        self.step_count = 0
        self.last_pulses = 0

    # -- state -------------------------------------------------------------------------------
    def init(self, params):
        """Draw the devices (from the run's seed, a stream of its own), program the initial
        conductances onto them (their levels, their bounds; stuck devices at a bound)."""
        self.sgd.init(params)
        p = self.p
        self.dev = {}
        for j, (k, W) in enumerate(sorted(params.items())):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7, j]))
            n = W.size
            r = self.g_max - self.g_min
            lo = np.full(n, self.g_min)
            hi = np.full(n, self.g_max)
            if p["d2d_bounds"] > 0:  # bounds spread, kept inside [g_min, g_max] and ordered
                lo = np.clip(self.g_min + r * p["d2d_bounds"] * np.abs(rng.standard_normal(n)), self.g_min,
                             self.g_min + 0.4 * r)
                hi = np.clip(self.g_max - r * p["d2d_bounds"] * np.abs(rng.standard_normal(n)),
                             self.g_max - 0.4 * r, self.g_max)
            s = np.clip(1.0 + p["d2d_step"] * rng.standard_normal(n), 0.05, None)
            aup = np.clip(p["a_up"] * (1.0 + p["d2d_nonlinearity"] * rng.standard_normal(n)), 1e-3, None)
            adown = np.clip(p["a_down"] * (1.0 + p["d2d_nonlinearity"] * rng.standard_normal(n)), 1e-3, None)
            stuck = (rng.random(n) < p["stuck"]).astype(np.float64)
            g = np.clip(W.ravel(), lo, hi)
            if self.model == _kp.MODEL_LINEAR:  # onto the levels of the device
                step = s * self.step_nominal
                g = np.minimum(lo + np.round((g - lo) / step) * step, hi)
            high = rng.random(n) < 0.5
            g = np.where(stuck > 0, np.where(high, hi, lo), g)
            W.ravel()[:] = g
            self.dev[k] = {"lo": lo, "hi": hi, "s": s, "aup": aup, "adown": adown, "stuck": stuck,
                           "acc": np.zeros(n)}

    def state(self) -> dict:
        out = dict(self.sgd.state())
        for k, d in self.dev.items():
            for name, a in d.items():
                out[f"{k}.{name}"] = a
        out["device.step"] = np.array([self.step_count], dtype=np.int64)
        return out

    def load(self, state, params):
        if not state or "device.step" not in state:  # checkpoint 0: the devices are drawn anew
            self.init(params)  # deterministic from the seed: the same devices as at the start
            return
        self.sgd.load({k: state[k] for k in params}, params)
        self.dev = {k: {name: np.array(state[f"{k}.{name}"], dtype=np.float64)
                        for name in ("lo", "hi", "s", "aup", "adown", "stuck", "acc")} for k in params}
        self.step_count = int(np.asarray(state["device.step"]).ravel()[0])

    def column_sums(self, params) -> np.ndarray:
        return self.sgd.column_sums(params)

    # -- reading and writing -----------------------------------------------------------------
    def apparent(self, params) -> dict:
        """The conductances a step's solves see (S): programmed, times read noise, at least
        1e-300 S. The arrays are buffers of this object, overwritten by the next call.

        The result is an :class:`Apparent` dict; when the read ran serially (one thread, or an
        array too small to split), its ``w1_colsum`` (n_1,) S holds ``out["W1"].sum(axis=0)``,
        formed in the read's own pass (bit-identical to numpy's, tested), which
        :meth:`fastres.network.LayeredNetwork.system` takes instead of summing W1 again."""
        sigma = self.p["read_noise"]
        if sigma <= 0:
            return params
        nchunks = max(1, numba.get_num_threads())
        out = Apparent()
        names = sorted(params)
        keys = stream_keys(self.seed, self.step_count, len(names), _PURPOSE_READ)
        for j, k in enumerate(names):
            W = params[k]
            buf = self._seen.get(k)
            if buf is None or buf[0].shape != (W.size,):  # reused step after step (the step's
                buf = (np.empty(W.size), np.empty(W.size, dtype=np.int64),  # solves only read it)
                       np.empty(W.shape[-1]))
                self._seen[k] = buf
            W = np.ascontiguousarray(W)
            key = keys[j]
            seen = buf[0].reshape(W.shape)
            if nchunks > 1 and W.size >= PARALLEL_MIN_DEVICES:
                _kp.read_noise(W.reshape(-1), buf[0], key, sigma, buf[1], nchunks)
            elif W.ndim == 2:  # serial, row by row, the column sums in the same pass
                _kp.read_noise_rows(W, seen, key, sigma, buf[1], buf[2])
                if k == "W1" and W.shape[1] > 1:  # numpy sums one column pairwise
                    out.w1_colsum = buf[2]
            else:  # no parallel launch: ~30 us saved
                _kp.read_noise_span(W.reshape(-1), buf[0], key, sigma, buf[1], 0, W.size)
            out[k] = seen
        return out

    def _par(self) -> np.ndarray:
        """The scalar device settings, packed as :mod:`fastres.kernels.pulses` takes them
        (constant: formed once)."""
        if self._par_array is None:
            p = self.p
            self._par_array = np.array([self.model, self.step_nominal, self.step_up, self.step_down,
                                        self.p_max, 1 if p["rounding"] == "stochastic" else 0,
                                        float(p["max_pulses"]), float(p["write_noise"]),
                                        1.0 if p["accumulate"] else 0.0])
        return self._par_array

    def _prm(self, k) -> np.ndarray:
        """Array ``k``'s per-device parameters packed for the kernels (constant after
        :meth:`init` / :meth:`load`; :func:`~fastres.kernels.pulses.pack_devices`)."""
        d = self.dev[k]
        if self._packed.get(k) is None or self._packed[k][0] is not d["lo"]:
            self._packed[k] = (d["lo"], _kp.pack_devices(d["lo"], d["hi"], d["s"], d["aup"],
                                                         d["adown"], d["stuck"]))
        return self._packed[k][1]

    def _dev(self, k) -> tuple:
        return (self.dev[k]["acc"], self._prm(k), self.tab_up, self.tab_down)

    def step(self, params, ph, lr_factor: float):
        """SGD's desired change of every conductance, turned into pulses in the same pass (in
        place in ``params``; no copy, the change never materialised). Returns the pulse count.

        Bit-identical to an unclipped :class:`BoundedSGD` step on a copy followed by
        :meth:`apply` of the differences (tested)."""
        sgd = self.sgd
        gscale = self.g_max * self.g_max * lr_factor
        par = self._par()
        names = sorted(params)
        keys = dict(zip(names, stream_keys(self.seed, self.step_count, len(names), _PURPOSE_WRITE)))
        key = keys.__getitem__
        blocks, colsum = sgd.sum_buffers(params["W1"])  # the fused step writes W1's column sums
        counts = np.zeros(blocks.shape[0])
        uT, d, col = ph.first
        _kp.pulse_fixed(params["W1"], uT, d, col, ph.scale, sgd.vel["W1"], sgd.lr[0] * gscale,
                        sgd.momentum, self._dev("W1"), par, key("W1"), counts, blocks, colsum)
        total = counts.sum()
        counts = np.zeros(max(1, numba.get_num_threads()))
        for l in range(1, len(sgd.lr) + 1):
            for k in (f"W{l}", f"B{l}") if l > 1 else ("B1",):
                row, col, prod = ph.terms[k]
                W = params[k].reshape(len(row), len(col))
                args = (W, row, col, prod, ph.scale, sgd.vel[k].reshape(W.shape), sgd.lr[l - 1] * gscale,
                        sgd.momentum, self._dev(k), par, key(k))
                if len(counts) == 1 or W.size < PARALLEL_MIN_DEVICES:  # no parallel launch
                    total += _kp.pulse_terms_rows(*args, 0, W.shape[0])
                else:
                    _kp.pulse_terms(*args, counts)
                    total += counts.sum()
        self.step_count += 1
        self.last_pulses = int(total)
        return self.last_pulses

    def apply(self, params, desired) -> int:
        """Program desired changes ``desired`` (dict like ``params``, S) by pulses, in place in
        ``params`` (one step of the devices' random streams). Returns the pulse count. The
        MLP baseline on devices updates through this; EqProp's :meth:`step` fuses it."""
        nchunks = max(1, numba.get_num_threads())
        par = self._par()
        total = 0
        names = sorted(params)
        keys = stream_keys(self.seed, self.step_count, len(names), _PURPOSE_WRITE)
        for j, k in enumerate(names):
            W = params[k]
            d = self.dev[k]
            if not W.flags.c_contiguous:
                raise FastresError(f"pulsed devices: conductance array {k} must be C-contiguous")
            flat = W.reshape(-1)
            pulses = np.empty(flat.size)
            key = keys[j]
            _kp.pulse_update(flat, np.ascontiguousarray(desired[k], dtype=np.float64).reshape(-1),
                             d["acc"], self._prm(k), pulses, key, int(par[0]), par[1], par[2], par[3],
                             par[4], self.tab_up, self.tab_down, int(par[5]), par[6], par[7],
                             bool(par[8]), nchunks)
            total += int(np.abs(pulses).sum())
        self.step_count += 1
        self.last_pulses = total
        return total


def pulse_curve(cfg: DeviceConfig, g_min, g_max):
    """Conductance (S) of one nominal device of ``cfg``'s model (its bounds ``g_min``,
    ``g_max``, no spread, no noise) under ``P_max`` potentiating pulses from ``g_min`` and then
    ``P_max`` depressing ones (``P_max = levels - 1``, or the table's pulse count): returns the
    pulse numbers ``(2 P_max + 1,)`` and the conductances ``(2 P_max + 1,)`` (S)."""
    dev = PulsedDevices(cfg, [1.0], 0.0, g_min, g_max, seed=0)
    P = int(round(dev.p_max))
    a_up, a_down = float(dev.p["a_up"]), float(dev.p["a_down"])
    g = np.empty(2 * P + 1)
    g[0] = dev.g_min
    for k in range(2 * P):
        n = 1.0 if k < P else -1.0
        x = _kp.move(dev.model, g[k], n, dev.g_min, dev.g_max, 1.0, dev.step_up, dev.step_down, a_up,
                     a_down, dev.p_max, dev.tab_up, dev.tab_down)
        g[k + 1] = min(max(x, dev.g_min), dev.g_max)
    return np.arange(2 * P + 1), g


class WeightDevices:
    """Signed weights (the MLP baseline's) stored in pulsed devices, one device a weight.

    Mapping: ``w = w_max (g - g_mid) / (g_max - g_mid)`` with ``g_mid = (g_min + g_max) / 2``
    (a reference conductance at mid-range, subtracted as a one-device-plus-reference crossbar
    column does), so ``g_min .. g_max`` (S) holds ``-w_max .. w_max`` of each array (``w_max``
    per array, dimensionless: the given range times the device setting ``weight_scale``). The devices are :class:`PulsedDevices` (the same kernels,
    presets, noise streams and state as EqProp's conductances): :meth:`init` programs the
    initial weights onto them, :meth:`read` gives the weights a forward pass sees (read noise,
    one draw per minibatch), :meth:`update` turns desired weight changes into pulses.
    ``params`` dicts hold weights; the conductances live in ``self.g`` (S)."""

    def __init__(self, cfg: DeviceConfig, w_max: dict, g_min, g_max, seed):
        if cfg.ideal:
            raise ConfigError("WeightDevices needs a pulsed device model, not ideal devices")
        self.devices = PulsedDevices(cfg, [1.0], 0.0, g_min, g_max, seed)  # apply() takes changes
        scale = float(cfg.resolved_params()["weight_scale"])
        self.w_max = {k: float(v) * scale for k, v in w_max.items()}
        self.g_mid = 0.5 * (float(g_min) + float(g_max))
        self.half = 0.5 * (float(g_max) - float(g_min))
        self.g = None

    def to_weight(self, k, g):
        """Weights of array ``k`` for conductances ``g`` (S)."""
        return (g - self.g_mid) * (self.w_max[k] / self.half)

    def init(self, params):
        """Program the weights ``params`` onto fresh devices (in place: the weights become the
        programmed ones, on the device's levels and bounds, stuck devices at theirs)."""
        missing = sorted(set(params) - set(self.w_max))
        if missing:
            raise ConfigError(f"no weight range for {', '.join(missing)}")
        self.g = {k: np.ascontiguousarray(self.g_mid + w * (self.half / self.w_max[k]))
                  for k, w in params.items()}
        self.devices.init(self.g)
        for k in params:
            params[k][...] = self.to_weight(k, self.g[k])

    def read(self, params) -> dict:
        """The weights a forward pass sees: the devices' apparent conductances, mapped."""
        seen = self.devices.apparent(self.g)
        if seen is self.g:
            return params
        return {k: self.to_weight(k, seen[k]) for k in seen}

    def update(self, params, changes) -> int:
        """Program the desired weight changes ``changes`` (dict like ``params``) by pulses; the
        weights in ``params`` become the programmed ones. Returns the pulse count."""
        desired = {k: changes[k] * (self.half / self.w_max[k]) for k in self.g}
        n = self.devices.apply(self.g, desired)
        for k in params:
            params[k][...] = self.to_weight(k, self.g[k])
        return n

    def state(self) -> dict:
        """Device state for the run file: conductances ``g.K`` (S) and the devices' arrays."""
        out = {f"g.{k}": v for k, v in self.g.items()}
        out.update({k: v for k, v in self.devices.state().items() if k not in self.g})
        return out


def make_optimizer(cfg, lr, seed):
    """The optimiser role of a run: ideal bounded SGD, or pulsed devices."""
    net = cfg.network
    if cfg.device.ideal:
        return BoundedSGD(lr, cfg.optimizer.momentum, net.g_min, net.g_max)
    return PulsedDevices(cfg.device, lr, cfg.optimizer.momentum, net.g_min, net.g_max, seed)

