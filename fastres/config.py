"""The configuration of a training run, in sections, and the migration of stored configs.

A run is described by six sections, each a small frozen dataclass::

    network    the circuit's physics: architecture, diodes, voltages (V), conductances (S)
    estimator  the gradient estimator: EqProp variant or the exact gradient, beta, loss target
    optimizer  SGD on the conductances: learning rates, momentum, decay, minibatch
    data       which dataset, where, how many samples
    solver     Newton tolerances (V, A) and the evaluation batch
    run        epochs, seed, what the run file keeps, the MLP baseline's activation
    wires      crossbar wires (ohms) and tile size; absent in older run files: ideal wires

This module is the ONE source of the defaults: :class:`~fastres.network.NetworkSpec` and the
command line take theirs from here. Every option has a unique name across the sections, so
the command line, a flat TOML/JSON file and a run file of layout version 1 can name options
without sections (:meth:`TrainConfig.from_flat`); a sectioned file uses ``[network]`` etc.

Stored configs are migrated by the run file's ``layout_version`` (:func:`config_from_stored`):
version 1 stored the options flat (and predates ``paired``: absent means unpaired) and version
2 stores the sections. Units: volts (V), siemens (S), amperes (A); learning rates are
dimensionless (a step changes a conductance by ``-lr * g_max^2 * dC/dg``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .devices import make_diode, turn_on_volts
from .errors import ConfigError, FastresError

ESTIMATORS = ("centered", "one-sided", "random-sign", "exact")
DATASETS = ("mnist", "fashion-mnist")
MLP_ACTIVATIONS = ("auto", "hardtanh", "relu")

#: The layout version whose config this fastres writes (sections); 1 was flat.
CONFIG_LAYOUT = 2


def parse_arch(arch) -> tuple:
    """``"784-100-10"`` or a sequence of ints -> a tuple of layer sizes (input first)."""
    if isinstance(arch, (list, tuple)):
        try:
            sizes = tuple(int(s) for s in arch)
        except (TypeError, ValueError):
            raise ConfigError(f"arch {arch!r}: expected sizes like 784-100-10") from None
    else:
        try:
            sizes = tuple(int(s) for s in str(arch).split("-"))
        except ValueError:
            raise ConfigError(f"arch {arch!r}: expected sizes like 784-100-10") from None
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
        raise ConfigError(f"arch {arch!r}: need at least an input and an output layer, all sizes > 0")
    return sizes


#: The network the default learning rates were tuned on (784-100-10, one hidden layer of 100):
#: the reference width of the default rule (:func:`default_rates`).
REFERENCE_WIDTH = 100
#: Default learning rates at the reference width: the input layer's and every other layer's.
REFERENCE_RATES = (100.0, 30.0)


def scaled_rate(rate: float, width: int) -> float:
    """``rate`` scaled for a hidden layer of ``width`` nodes by the default rule's factor
    ``f(u)``, ``u = width / 100``: ``u`` up to the reference width, ``sqrt(u)`` above it (see
    :func:`default_rates`). Up to the reference width it computes ``rate * width / 100``, in
    that order, so those rates are the former rule's to the last bit."""
    if width <= REFERENCE_WIDTH:
        return rate * width / REFERENCE_WIDTH
    return rate * math.sqrt(width / REFERENCE_WIDTH)


def default_rates(sizes) -> list:
    """The default learning rate of each conductance layer of a network of layer ``sizes``.

    The rule: ``lr_l = r_l * f(w_l / 100)`` with ``r_1 = 100`` (input layer), ``r_l = 30``
    (every other layer), ``f(u) = u`` for ``u <= 1`` and ``f(u) = sqrt(u)`` above
    (:func:`scaled_rate`), and ``w_l`` the width of the hidden layer the layer touches on the
    output side: the layer it feeds (``n_l``) for a layer into a hidden layer, the last hidden
    layer (``n_{L-1}``) for the output layer. At the reference 784-100-10 (and 784-100-100-10)
    every ``f`` is 1: the rates tuned there (100, 30) are unchanged. A network without hidden
    layers keeps ``r_l``. 784-16-10: 16, 4.8; 784-1024-10: 320, 96.

    Derivation (the mean-field scaling of a resistive network). In units of ``g_max``
    (``gamma = g / g_max``) a step is ``d gamma = -lr dC/dgamma``. A node's voltage is the
    conductance-weighted mean of its neighbours' voltages, ``V_k = sum_j gamma_jk V_j / Gamma_k``
    with ``Gamma_k`` the node's total (relative) conductance, ``~ fan_in * mean(gamma)``; so every
    node voltage is of the order of the sources' whatever the widths, and ``dV_k/dgamma_jk =
    (V_j - V_k) / Gamma_k``. For the output layer fed by a hidden layer of width ``n``:
    ``dC/dgamma_jk ~ 1/n``, each of the ``n`` conductances into an output moves by ``~lr/n``
    and moves the output by ``1/n`` of that, coherently: ``dV_out ~ n (lr/n)(1/n) = lr/n``.
    For the layer into that hidden layer: a hidden node carries ``1/n`` of every output mean, so
    ``dC/dV_j ~ 1/n``, its node moves by ``~lr / (n fan_in)`` and the ``n`` of them move the
    output by ``~lr / (n fan_in)`` again (the input layer's own ``1/fan_in`` is in its reference
    rate; every supported dataset has 784 inputs). So a fixed rate moves the outputs per step
    ``~1/n``: 6x further at 16 hidden nodes than at the tuned 100 (the divergence of issue 14);
    ``lr ~ n`` keeps the tuned step, the largest that is stable, and below the reference width
    that bound is what limits the rate. Above it the bound grows as ``n``, but a rate at the
    bound no longer gives the best result of a fixed budget (784-1024-10, 2 epochs of MNIST:
    3.10 % test error at the bound, 1024 and 307.2, against 2.96 % at the fixed 100 and 30):
    the rule takes the geometric mean of the two, ``sqrt(n / 100)`` (2.90 % at 320 and 96).
    That exponent is measured at one wide size, not derived. The conductance range enters only
    through ``g_max`` (the unit of the rates) and the initial range
    (:func:`default_init_range`, a fixed fraction of ``g_max``), so the rule holds for any range.
    """
    sizes = parse_arch(sizes)
    L = len(sizes) - 1
    if L == 1:
        return [REFERENCE_RATES[0]]
    out = []
    for l in range(1, L + 1):
        width = sizes[l] if l < L else sizes[L - 1]
        out.append(scaled_rate(REFERENCE_RATES[0] if l == 1 else REFERENCE_RATES[1], width))
    return out


#: Divergence detection (reported, never acted on; see :func:`fastres.train.divergence`): a
#: run is flagged when an epoch's mean training loss is this many times the lowest loss seen
#: before it (the first minibatch's at the initial conductances, or an earlier epoch's) ...
DIVERGENCE_LOSS_GROWTH = 10.0
#: ... or when this fraction of all conductances sits at ``g_min`` or ``g_max`` ...
DIVERGENCE_PINNED_FRACTION = 0.2
#: ... "at" a bound meaning within this fraction of ``g_max - g_min`` of it. Measured on
#: 784-16-10 pwl runs (10,000 MNIST samples): diverged ones had 24-29 % of their conductances
#: there, healthy ones 1-3 %.
PINNED_TOLERANCE = 1e-3


def default_init_range(g_min: float, g_max: float) -> tuple:
    """The default initial conductance range ``(g_min, g_max / 2)`` (S).

    A node voltage is a ratio of conductances (a weighted mean), so the initial state depends
    only on the spread of the draws relative to their mean, not on the widths: drawing from
    ``[g_min, g_max / 2]`` gives every conductance room to grow and to fall (a mean of about
    ``g_max / 4``), for any range and any network size."""
    return float(g_min), 0.5 * float(g_max)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _finite(section, **values):
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ConfigError(f"{section}.{key}={v!r} must be a finite number")


def _int_at_least(section, minimum, **values):
    for key, v in values.items():
        if not _is_int(v) or v < minimum:
            raise ConfigError(f"{section}.{key}={v!r} must be an integer >= {minimum}")


def _at_least_one(section, **values):
    _int_at_least(section, 1, **values)


def _rates(name, value, positive) -> tuple:
    """Learning rates ``value`` (a number or a sequence) as a tuple of floats; a ConfigError
    naming option ``name`` if they are not finite and >= 0 (> 0 if ``positive``)."""
    lr = (value,) if isinstance(value, (int, float)) else value
    try:
        lr = tuple(float(v) for v in lr)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r}: expected numbers") from None
    bound = "> 0" if positive else ">= 0"
    if not lr or any(not math.isfinite(v) or v < 0 or (positive and v == 0) for v in lr):
        raise ConfigError(f"{name} {list(lr)}: learning rates must be finite and {bound}")
    return lr


def _plain(obj):
    """numpy scalars as Python numbers (a config is stored as JSON)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, numbers.Integral) and not isinstance(v, (bool, int)):
            object.__setattr__(obj, f.name, int(v))
        elif isinstance(v, numbers.Real) and not isinstance(v, (bool, int, float)):
            object.__setattr__(obj, f.name, float(v))
        elif isinstance(v, np.bool_):
            object.__setattr__(obj, f.name, bool(v))


@dataclass(frozen=True)
class NetworkConfig:
    """The circuit (see :mod:`fastres.network`). Volts, siemens.

    ``input_volts``: a pixel of 1 drives +-``input_volts``; ``rail_lo`` None: the diode's
    turn-on voltage, so hidden nodes clamp at 0 V; ``rail_hi`` at the inputs' full scale, so
    the upper diodes never conduct (a rectifier); ``paired`` None: paired hidden layers when
    there are two or more hidden layers, all of even size. Initial conductances are drawn
    uniformly from ``[init_lo, init_hi]`` (None: the default rule, ``[g_min, g_max / 2]``, see
    :func:`default_init_range`); ``gmin`` (S) sits across every junction diode.
    """

    arch: str = "784-100-10"
    diode: str = "shockley"
    diode_params: dict = field(default_factory=dict)
    input_volts: float = 100.0
    bias_volts: float = 1.0
    rail_lo: float | None = None
    rail_hi: float = 100.0
    g_min: float = 1e-7
    g_max: float = 1e-4
    init_lo: float | None = None
    init_hi: float | None = None
    gain: float = 1.0
    output_diodes: bool = False
    paired: bool | None = None
    gmin: float = 1e-12

    def __post_init__(self):
        _plain(self)
        sizes = parse_arch(self.arch)
        object.__setattr__(self, "arch", "-".join(map(str, sizes)))
        if not isinstance(self.diode_params or {}, dict):
            raise ConfigError(f"network.diode_params={self.diode_params!r} must be a table of numbers")
        object.__setattr__(self, "diode_params", dict(self.diode_params or {}))
        _finite("network", input_volts=self.input_volts, bias_volts=self.bias_volts,
                rail_hi=self.rail_hi, g_min=self.g_min, g_max=self.g_max, gain=self.gain, gmin=self.gmin)
        for key in ("init_lo", "init_hi"):
            if getattr(self, key) is not None:
                _finite("network", **{key: getattr(self, key)})
        if self.rail_lo is not None:
            _finite("network", rail_lo=self.rail_lo)
        if not 0 < self.g_min < self.g_max:
            raise ConfigError(f"conductance bounds must satisfy 0 < g_min < g_max, got "
                              f"{self.g_min}, {self.g_max} S")
        init_lo, init_hi = self.init_range()
        if not (0 < init_lo <= init_hi <= self.g_max and self.g_min <= init_lo):
            raise ConfigError(f"initial conductances must satisfy g_min <= init_lo <= init_hi <= g_max, "
                              f"got [{init_lo}, {init_hi}] S in [{self.g_min}, {self.g_max}] S")
        if self.gain <= 0:
            raise ConfigError(f"network.gain={self.gain!r}: the amplifier gain must be > 0")
        if self.gmin < 0:
            raise ConfigError(f"network.gmin={self.gmin!r} must be >= 0 S")
        if not isinstance(self.output_diodes, bool):
            raise ConfigError(f"output_diodes={self.output_diodes!r} must be true or false")
        if not isinstance(self.diode, str) or not isinstance(self.diode_params, dict):
            raise ConfigError(f"network.diode={self.diode!r} must be a model name and diode_params a table")
        if self.paired is not None and not isinstance(self.paired, bool):
            raise ConfigError(f"paired={self.paired!r} must be true, false or unset (auto)")
        if self.paired and any(h % 2 for h in sizes[1:-1]):
            raise ConfigError(f"sizes {sizes!r}: paired hidden layers need an even number of nodes "
                              f"each (or unpaired layers: paired false, --paired no)")
        try:
            make_diode(self.diode, **self.diode_params)
        except (FastresError, TypeError) as exc:
            raise ConfigError(f"network.diode {self.diode!r} with parameters {self.diode_params}: {exc}") from None

    @property
    def sizes(self) -> tuple:
        return parse_arch(self.arch)

    def is_paired(self) -> bool:
        """``paired``, or by default when there are two or more hidden layers, all of even
        size: unpaired, a layer after the first sees only non-negative voltages through positive
        conductances and never reaches its diodes."""
        if self.paired is not None:
            return self.paired
        hidden = self.sizes[1:-1]
        return len(hidden) >= 2 and all(h % 2 == 0 for h in hidden)

    def lower_rail(self) -> float:
        """The lower rail (V): ``rail_lo``, or the diode's turn-on voltage, which puts the lower
        clamp of every hidden node at 0 V (a rectifier at 0 V, like a ReLU)."""
        if self.rail_lo is not None:
            return float(self.rail_lo)
        return turn_on_volts(make_diode(self.diode, **self.diode_params), self.gmin)

    def one_sided(self) -> bool:
        """True when the upper clipping diodes can never conduct: every node voltage is a
        weighted mean of source voltages (times the amplifier gains), so a node stays below
        ``input_volts * gain^(L-1)``; the activation is then a rectifier (ReLU-like)."""
        reach = max(abs(self.input_volts), abs(self.bias_volts)) * max(1.0, self.gain) ** (len(self.sizes) - 2)
        return self.rail_hi >= reach

    def init_range(self) -> tuple:
        """``(init_lo, init_hi)`` (S): the given values, else :func:`default_init_range`."""
        lo, hi = default_init_range(self.g_min, self.g_max)
        return (lo if self.init_lo is None else float(self.init_lo),
                hi if self.init_hi is None else float(self.init_hi))

    def resolved(self) -> "NetworkConfig":
        """This config with the automatic choices made (``paired``, the initial conductance
        range); what a run file stores."""
        lo, hi = self.init_range()
        return dataclasses.replace(self, paired=self.is_paired(), init_lo=lo, init_hi=hi)


@dataclass(frozen=True)
class EstimatorConfig:
    """The gradient estimator (see :mod:`fastres.eqprop`).

    ``estimator``: ``centered`` (nudges of +-beta, error O(beta^2)), ``one-sided`` (+beta,
    O(beta)), ``random-sign`` (one-sided with a random sign per step) or ``exact`` (implicit
    differentiation; not a circuit procedure, a reference). ``beta_rel``: beta relative to the
    mean output-node conductance, so the nudge moves the outputs by about ``beta_rel`` volts per
    volt of error. ``target_volts``: the one-hot target (V). ``gradcheck_every`` epochs, the run
    records the EqProp-vs-exact gradient error on ``gradcheck_samples`` test samples (0: never).
    """

    estimator: str = "centered"
    beta_rel: float = 0.1
    target_volts: float = 0.5
    gradcheck_every: int = 0
    gradcheck_samples: int = 16

    def __post_init__(self):
        _plain(self)
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        _finite("estimator", beta_rel=self.beta_rel, target_volts=self.target_volts)
        if not self.beta_rel > 0:
            raise ConfigError(f"beta_rel={self.beta_rel!r} must be a finite number > 0 (the nudging strength)")
        _int_at_least("estimator", 0, gradcheck_every=self.gradcheck_every)
        _at_least_one("estimator", gradcheck_samples=self.gradcheck_samples)


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD with momentum on the conductances, clipped to ``[g_min, g_max]``.

    ``lr``: one dimensionless learning rate per layer (None: the default rule of
    :func:`default_rates`, which scales with the hidden layers' widths); decayed by
    ``lr_decay`` per epoch.
    """

    lr: tuple | None = None
    momentum: float = 0.0
    lr_decay: float = 0.9
    batch_size: int = 20

    def __post_init__(self):
        _plain(self)
        if self.lr is not None:
            object.__setattr__(self, "lr", _rates("lr", self.lr, positive=False))
        _finite("optimizer", momentum=self.momentum, lr_decay=self.lr_decay)
        if not (0 < self.lr_decay <= 1):
            raise ConfigError(f"lr_decay={self.lr_decay!r} must be in (0, 1] (a factor per epoch)")
        if not (0 <= self.momentum < 1):
            raise ConfigError(f"momentum={self.momentum!r} must be in [0, 1)")
        _at_least_one("optimizer", batch_size=self.batch_size)

    def rates(self, sizes) -> list:
        """The learning rate of each conductance layer of a network of layer ``sizes`` (input
        first): ``lr`` as given (one value for all layers, or one per layer), else
        :func:`default_rates`."""
        sizes = parse_arch(sizes)
        n_layers = len(sizes) - 1
        if self.lr is None:
            return default_rates(sizes)
        if len(self.lr) == 1 and n_layers > 1:
            return [self.lr[0]] * n_layers
        if len(self.lr) != n_layers:
            raise ConfigError(f"lr: need one learning rate per layer ({n_layers}), got {len(self.lr)}")
        return list(self.lr)


@dataclass(frozen=True)
class DataConfig:
    """The dataset: ``mnist`` or ``fashion-mnist``, looked up in ``data`` (a directory) or the
    search path (see :mod:`fastres.datasets`); the first ``n_train`` / ``n_test`` samples."""

    dataset: str = "mnist"
    data: str | None = None
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self):
        _plain(self)
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}: use 'mnist' or 'fashion-mnist'")
        for key in ("n_train", "n_test"):
            v = getattr(self, key)
            if v is not None:
                _at_least_one("data", **{key: v})


#: the linear solvers of a layered network's Newton direction (SolverConfig.linear)
LINEAR_SOLVERS = ("auto", "schur", "cg")


@dataclass(frozen=True)
class SolverConfig:
    """Newton's SPICE-style tolerances (see :class:`fastres.solver.Newton`): ``reltol``,
    ``vntol`` (V), ``abstol`` (A), ``maxiter``; ``eval_batch`` samples per evaluation solve;
    ``linear`` the Newton direction's linear solver for a layered network: ``schur`` (dense
    Schur complement per sample), ``cg`` (conjugate gradients on the layer structure, products
    with the shared conductances over the minibatch) or ``auto`` (by layer sizes)."""

    reltol: float = 1e-12
    vntol: float = 1e-12
    abstol: float = 1e-15
    maxiter: int = 100
    eval_batch: int = 10000
    linear: str = "auto"

    def __post_init__(self):
        _plain(self)
        if self.linear not in LINEAR_SOLVERS:
            raise ConfigError(f"solver.linear={self.linear!r}: use one of {', '.join(LINEAR_SOLVERS)}")
        _finite("solver", reltol=self.reltol, vntol=self.vntol, abstol=self.abstol)
        if min(self.reltol, self.vntol, self.abstol) < 0:
            raise ConfigError("solver tolerances must be >= 0")
        _at_least_one("solver", maxiter=self.maxiter, eval_batch=self.eval_batch)


@dataclass(frozen=True)
class RunConfig:
    """``epochs`` to train, the ``seed`` of every random draw, ``store_samples`` test samples
    whose node voltages each checkpoint keeps, the MLP baseline's hidden activation
    (``auto``: the one the diodes make), its learning rates ``mlp_lr`` (one per layer, or
    one for all; None: the rule of :mod:`fastres.baseline`) and ``mlp_target``, the "on" value
    of its one-hot squared-error target (None: :func:`fastres.baseline.default_mlp_target`, 1.5
    for relu, 1 otherwise)."""

    epochs: int = 10
    seed: int = 0
    store_samples: int = 256
    mlp_activation: str = "auto"
    mlp_lr: tuple | None = None
    mlp_target: float | None = None

    def __post_init__(self):
        _plain(self)
        _at_least_one("run", epochs=self.epochs)
        _int_at_least("run", 0, seed=self.seed, store_samples=self.store_samples)
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise ConfigError(f"mlp_activation={self.mlp_activation!r}: use auto, hardtanh or relu")
        if self.mlp_lr is not None:
            object.__setattr__(self, "mlp_lr", _rates("mlp_lr", self.mlp_lr, positive=True))
        if self.mlp_target is not None:
            _finite("run", mlp_target=self.mlp_target)
            object.__setattr__(self, "mlp_target", float(self.mlp_target))
            if self.mlp_target <= 0:
                raise ConfigError(f"mlp_target={self.mlp_target!r}: the MLP's one-hot target must be > 0")


DEVICE_MODELS = ("ideal", "linear", "soft-bounds", "exponential", "table")

#: named device presets (see DeviceConfig); "realistic" is documented with its sources there
DEVICE_PRESETS = {
    "ideal": {},
    "realistic": {"model": "exponential", "levels": 32, "a_up": 0.25, "a_down": 0.25,
                  "write_noise": 0.005, "d2d_step": 0.1, "d2d_bounds": 0.05,
                  "d2d_nonlinearity": 0.1, "stuck": 0.001, "read_noise": 0.01,
                  "rounding": "stochastic", "max_pulses": 8},
}


@dataclass(frozen=True)
class DeviceConfig:
    """The programmable conductance (see :mod:`fastres.pulsed`; ``ideal``: any value in
    ``[g_min, g_max]``, written exactly, today's behaviour).

    ``preset`` names a set of defaults (``ideal``, ``realistic``) that the other fields
    override. Pulsed models: ``linear`` (constant step), ``soft-bounds`` (step proportional to
    the distance to the bound in the pulse's direction), ``exponential`` (NeuroSim's LTP/LTD
    curve ``G(P) = g_min + B (1 - exp(-P / A))`` with ``A = a_up P_max`` for potentiation,
    ``a_down`` for depression), ``table`` (a measured curve: a CSV file ``table`` of rows
    ``pulse, g_potentiation, g_depression`` in S, interpolated). ``levels``: the number of
    distinct states from ``g_min`` to ``g_max`` (``levels - 1`` pulses apart; initial
    conductances are programmed onto them); ``up_down``: asymmetry, up steps ``(1 + up_down)``
    and down steps ``(1 - up_down)`` times the nominal step. ``rounding`` of the desired
    number of pulses: ``stochastic`` or ``deterministic``; at most ``max_pulses`` per device
    per step; ``accumulate``: accumulate-then-pulse (a per-device accumulator fires whole
    pulses). Non-idealities: ``write_noise`` (cycle to cycle: a fraction of the range per
    pulse, in quadrature, NeuroSim's convention), ``d2d_step``, ``d2d_bounds``,
    ``d2d_nonlinearity`` (device-to-device relative spreads, drawn once from the run's seed),
    ``stuck`` (fraction of devices stuck, half at ``g_min``, half at ``g_max``), ``read_noise``
    (relative spread of the conductances a training step's solves see, drawn once per
    minibatch and shared by its free and nudged phases). ``weight_scale`` (the MLP baseline on
    devices only, ``--baseline mlp``): the largest weight a device holds, ``w_max``, in units of
    the baseline's default range (3 Glorot bounds of the layer, see
    :class:`fastres.pulsed.WeightDevices`); 2 maps twice the weights onto the same conductance
    range, so a pulse moves a weight twice as far.

    The ``realistic`` preset: NeuroSim V3.0's default real device (31 pulses from ``g_min`` to
    ``g_max``, so 32 levels; nonlinearity NL = +-4.22, whose normalised A is about 0.25 in
    NeuroSim's table; cycle-to-cycle sigma 0.5 % of the range per pulse), with the
    device-to-device spreads, stuck fraction and read noise of aihwkit-style defaults scaled
    down (10 % step, 5 % bounds, 10 % nonlinearity, 0.1 % stuck, 1 % read noise).
    """

    preset: str = "ideal"
    model: str | None = None
    levels: int | None = None
    up_down: float | None = None
    a_up: float | None = None
    a_down: float | None = None
    table: str | None = None
    rounding: str | None = None
    max_pulses: int | None = None
    accumulate: bool | None = None
    write_noise: float | None = None
    d2d_step: float | None = None
    d2d_bounds: float | None = None
    d2d_nonlinearity: float | None = None
    stuck: float | None = None
    read_noise: float | None = None
    weight_scale: float | None = None

    _DEFAULTS = {"model": "ideal", "levels": None, "up_down": 0.0, "a_up": 0.25, "a_down": 0.25,
                 "table": None, "rounding": "stochastic", "max_pulses": 16, "accumulate": False,
                 "write_noise": 0.0, "d2d_step": 0.0, "d2d_bounds": 0.0, "d2d_nonlinearity": 0.0,
                 "stuck": 0.0, "read_noise": 0.0, "weight_scale": 1.0}

    def __post_init__(self):
        _plain(self)
        if self.preset not in DEVICE_PRESETS:
            raise ConfigError(f"unknown device preset {self.preset!r}: use one of {', '.join(DEVICE_PRESETS)}")
        r = self.resolved_params()
        if r["model"] not in DEVICE_MODELS:
            raise ConfigError(f"unknown device model {r['model']!r}: use one of {', '.join(DEVICE_MODELS)}")
        if r["model"] == "ideal":
            return
        if r["levels"] is not None:
            _int_at_least("device", 2, levels=r["levels"])
        if r["model"] in ("linear", "soft-bounds", "exponential") and r["levels"] is None:
            raise ConfigError(f"device model {r['model']}: give levels=N (the number of states)")
        if r["model"] == "table" and not r["table"]:
            raise ConfigError("device model table: give table=FILE (CSV: pulse, g_up, g_down in S)")
        if r["rounding"] not in ("stochastic", "deterministic"):
            raise ConfigError(f"device.rounding={r['rounding']!r}: use stochastic or deterministic")
        _at_least_one("device", max_pulses=r["max_pulses"])
        if not isinstance(r["accumulate"], bool):
            raise ConfigError(f"device.accumulate={r['accumulate']!r} must be true or false")
        for key in ("up_down", "a_up", "a_down", "write_noise", "d2d_step", "d2d_bounds",
                    "d2d_nonlinearity", "stuck", "read_noise", "weight_scale"):
            _finite("device", **{key: r[key]})
        if not r["weight_scale"] > 0:
            raise ConfigError(f"device.weight_scale={r['weight_scale']!r} must be > 0 (a factor on "
                              f"the MLP weights' range)")
        if not -1 < r["up_down"] < 1:
            raise ConfigError(f"device.up_down={r['up_down']!r} must be in (-1, 1)")
        if not (r["a_up"] > 0 and r["a_down"] > 0):
            raise ConfigError("device.a_up and a_down (normalised nonlinearity) must be > 0")
        for key in ("write_noise", "d2d_step", "d2d_bounds", "d2d_nonlinearity", "read_noise"):
            if r[key] < 0:
                raise ConfigError(f"device.{key}={r[key]!r} must be >= 0 (a spread)")
        if not 0 <= r["stuck"] < 1:
            raise ConfigError(f"device.stuck={r['stuck']!r} must be a fraction in [0, 1)")

    def resolved_params(self) -> dict:
        """Every parameter: the field if set, else the preset's, else the default."""
        out = dict(self._DEFAULTS)
        out.update(DEVICE_PRESETS.get(self.preset, {}))
        for k in self._DEFAULTS:
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out

    @property
    def ideal(self) -> bool:
        return self.resolved_params()["model"] == "ideal"


@dataclass(frozen=True)
class WiresConfig:
    """Crossbar wires (see :mod:`fastres.crossbar`; ``wire_ohms`` 0: ideal wires, no crossbar).

    ``wire_ohms`` (ohm) per wire segment between neighbouring cells of a line (and from a
    line's end cell to its driver or sense node); ``tile`` the tile side in cells (None: one
    tile for the whole matrix); ``driver_ohms``, ``sense_ohms`` (ohm) in series at the row
    lines' driven ends and the column lines' summed ends."""

    wire_ohms: float = 0.0
    tile: int | None = None
    driver_ohms: float = 0.0
    sense_ohms: float = 0.0

    def __post_init__(self):
        _plain(self)
        if isinstance(self.tile, str) and self.tile.strip().lower() == "whole":
            object.__setattr__(self, "tile", None)
        _finite("wires", wire_ohms=self.wire_ohms, driver_ohms=self.driver_ohms,
                sense_ohms=self.sense_ohms)
        for key in ("wire_ohms", "driver_ohms", "sense_ohms"):
            if getattr(self, key) < 0:
                raise ConfigError(f"wires.{key}={getattr(self, key)!r}: a resistance must be >= 0 ohm")
        if self.tile is not None:
            _at_least_one("wires", tile=self.tile)
        if self.wire_ohms == 0 and (self.driver_ohms or self.sense_ohms):
            raise ConfigError("wires.driver_ohms / sense_ohms need crossbar wires: set wire_ohms > 0")

    @property
    def active(self) -> bool:
        return self.wire_ohms > 0

    def tile_cells(self) -> int | None:
        return self.tile


SECTIONS = {"network": NetworkConfig, "estimator": EstimatorConfig, "optimizer": OptimizerConfig,
            "data": DataConfig, "solver": SolverConfig, "run": RunConfig, "device": DeviceConfig,
            "wires": WiresConfig}

#: flat option name -> its section (names are unique across sections)
OPTION_SECTION = {f.name: sec for sec, cls in SECTIONS.items() for f in dataclasses.fields(cls)}

#: names of both a section and an option in it: ``data`` (directory), ``estimator`` (method)
_SHARED_NAMES = tuple(s for s in SECTIONS if s in OPTION_SECTION)

_INT_OPTIONS = {"tile", "levels", "max_pulses", "epochs", "seed", "store_samples", "batch_size", "n_train", "n_test", "maxiter",
                "eval_batch", "gradcheck_every", "gradcheck_samples"}


def _coerce(name, value):
    """A flat option's value as its field expects it (ints from JSON floats like 2.0)."""
    if name in _INT_OPTIONS and isinstance(value, float) and value.is_integer():
        return int(value)
    if name in ("lr", "mlp_lr") and isinstance(value, list):
        return tuple(value)
    return value


class TrainConfig:
    """Every option of a training run: six sections (see the module docstring).

    ``TrainConfig(network=NetworkConfig(...), optimizer=...)`` from sections, or
    ``TrainConfig(arch="784-100-10", diode="pwl", lr=[100, 30])`` from flat option names
    (both may be mixed: flat names override the given sections). Immutable: derive a changed
    config with :meth:`replace`.
    """

    __slots__ = tuple(SECTIONS)

    def __init__(self, network=None, estimator=None, optimizer=None, data=None, solver=None,
                 run=None, device=None, wires=None, **options):
        given = {"network": network, "estimator": estimator, "optimizer": optimizer,
                 "data": data, "solver": solver, "run": run, "device": device, "wires": wires}
        for name in _SHARED_NAMES:  # `data` and `estimator` name a section and an option
            v = given[name]
            if v is not None and not isinstance(v, (dict, SECTIONS[name])):
                options[name] = v
                given[name] = None
        unknown = sorted(set(options) - set(OPTION_SECTION))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
        for sec, cls in SECTIONS.items():
            base = given[sec]
            if base is None:
                base = cls()
            elif isinstance(base, dict):
                base = _section_from_dict(sec, base)
            elif not isinstance(base, cls):
                raise ConfigError(f"section {sec}: expected a {cls.__name__}, got {type(base).__name__}")
            mine = {k: _coerce(k, v) for k, v in options.items() if OPTION_SECTION[k] == sec}
            if mine:
                try:
                    base = dataclasses.replace(base, **mine)
                except TypeError as exc:
                    raise ConfigError(f"section {sec}: {exc}") from None
            object.__setattr__(self, sec, base)
        self.optimizer.rates(self.network.sizes)  # one rate per layer

    def __setattr__(self, name, value):
        raise AttributeError("TrainConfig is immutable: use cfg.replace(...)")

    def __eq__(self, other):
        return isinstance(other, TrainConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return "TrainConfig(" + ", ".join(f"{s}={getattr(self, s)!r}" for s in SECTIONS) + ")"

    def replace(self, **options) -> "TrainConfig":
        """A copy with sections (``network=NetworkConfig(...)``) or flat options replaced."""
        secs = {s: getattr(self, s) for s in SECTIONS}
        for s in SECTIONS:
            if s in options and (_is_section(s, options[s]) or isinstance(options[s], SECTIONS[s])):
                v = options.pop(s)
                secs[s] = v if isinstance(v, SECTIONS[s]) else _section_from_dict(s, v)
        for name in _SHARED_NAMES:  # the option of the same name as a section
            if name in options:
                secs[name] = dataclasses.replace(secs[name], **{name: options.pop(name)})
        return TrainConfig(**secs, **options)

    # -- derived quantities ------------------------------------------------------------------
    @property
    def sizes(self) -> tuple:
        return self.network.sizes

    @property
    def lr(self) -> list:
        """Learning rates, one per conductance layer (dimensionless)."""
        return self.optimizer.rates(self.sizes)

    def baseline_activation(self) -> str:
        """The MLP baseline's hidden activation: the one the diodes make."""
        if self.run.mlp_activation != "auto":
            return self.run.mlp_activation
        return "relu" if self.network.one_sided() else "hardtanh"

    def resolved(self) -> "TrainConfig":
        """Automatic choices made (``paired``, the initial conductance range, the learning
        rates): what a run file stores, so a stored run keeps its values when the default rule
        changes."""
        return self.replace(network=self.network.resolved(),
                            optimizer=dataclasses.replace(self.optimizer, lr=tuple(self.lr)))

    def describe(self) -> str:
        """A short one-line description: architecture, diodes, dataset."""
        return f"{self.network.arch} ({self.network.diode} diodes) on {self.data.dataset}"

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """``{section: {option: value}}``, JSON-serialisable (what layout version 2 stores)."""
        out = {}
        for s in SECTIONS:
            d = dataclasses.asdict(getattr(self, s))
            if s == "optimizer" and d["lr"] is not None:
                d["lr"] = list(d["lr"])
            if s == "run" and d["mlp_lr"] is not None:
                d["mlp_lr"] = list(d["mlp_lr"])
            out[s] = d
        return out

    def to_flat(self) -> dict:
        """``{option: value}`` without sections."""
        return {k: v for sec in self.to_dict().values() for k, v in sec.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From ``{section: {option: value}}``, flat ``{option: value}``, or a mix."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of options, got {type(d).__name__}")
        sections = {k: v for k, v in d.items() if _is_section(k, v)}
        flat = {k: v for k, v in d.items() if not _is_section(k, v)}
        for k, v in sections.items():
            if not isinstance(v, dict):
                raise ConfigError(f"config section [{k}] must be a table of options, got {v!r}")
        return cls(**sections, **flat)

    @classmethod
    def from_flat(cls, d: dict) -> "TrainConfig":
        return cls(**d)

    @staticmethod
    def read_file(path) -> dict:
        """Options from a TOML (``.toml``) or JSON file, as a dict (sectioned or flat; merge,
        then :meth:`from_dict`)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        try:
            if path.suffix == ".toml":
                import tomllib
                d = tomllib.loads(text)
            else:
                d = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is a config error
            raise ConfigError(f"{path}: cannot parse config file: {exc}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: a config file must hold a mapping of options (or of "
                              f"[sections]), not a {type(d).__name__}")
        return d


def _section_from_dict(name, d) -> object:
    cls = SECTIONS[name]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown option(s) in section [{name}]: {', '.join(unknown)}")
    try:
        return cls(**{k: _coerce(k, v) for k, v in d.items()})
    except TypeError as exc:
        raise ConfigError(f"section [{name}]: {exc}") from None


def _is_section(key, value) -> bool:
    """``data`` is both a section and an option (the dataset directory): a table is the section."""
    return key in SECTIONS and (key not in OPTION_SECTION or isinstance(value, dict))


def merge(base: dict, override: dict) -> dict:
    """Merge two config dicts (sectioned or flat) into one sectioned dict; ``override`` wins."""
    out = {s: {} for s in SECTIONS}
    for d in (base, override):
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of options, got {type(d).__name__}")
        for k, v in d.items():
            if _is_section(k, v):
                if not isinstance(v, dict):
                    raise ConfigError(f"config section [{k}] must be a table of options, got {v!r}")
                for kk, vv in v.items():
                    out[k][kk] = vv
            elif k in OPTION_SECTION:
                out[OPTION_SECTION[k]][k] = v
            else:
                raise ConfigError(f"unknown option {k!r}")
    return out


def _migrate_1(d: dict) -> dict:
    """Layout 1 -> 2: flat options into sections. Layout-1 files predate ``paired`` (absent:
    a run from before paired layers existed, so unpaired) and ``gmin`` (then always 1e-12 S)."""
    d = dict(d)
    d.setdefault("paired", False)
    unknown = sorted(set(d) - set(OPTION_SECTION))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in a layout-1 config")
    return merge({}, d)


#: layout version -> function turning its stored config into the next version's
MIGRATIONS = {1: _migrate_1}


def config_from_stored(d: dict, layout_version: int) -> TrainConfig:
    """The :class:`TrainConfig` of a run file's stored config, migrated from the file's layout
    version to the current one step by step (see :data:`MIGRATIONS`)."""
    v = int(layout_version)
    if v > CONFIG_LAYOUT or (v < CONFIG_LAYOUT and v not in MIGRATIONS):
        raise ConfigError(f"run files of layout version {v} are not readable by this fastres "
                          f"(it reads versions {min(MIGRATIONS)} to {CONFIG_LAYOUT})")
    while v < CONFIG_LAYOUT:
        d = MIGRATIONS[v](d)
        v += 1
    return TrainConfig.from_dict(d)


def run_config(store) -> TrainConfig:
    """The :class:`TrainConfig` of an open run file (a :class:`fastres.store.RunStore`),
    migrated from its layout version; an invalid one is a StoreError naming the file."""
    from .store import StoreError
    try:
        return config_from_stored(store.config, store.layout_version)
    except FastresError as exc:
        raise StoreError(f"{store.path}: stored config is not valid for this fastres: {exc}") from None
