"""Software baseline: a same-size MLP trained with backpropagation in plain numpy.

The analog (resistor/diode) network trained with Equilibrium Propagation is
compared against an ordinary multilayer perceptron of the same layer sizes,
trained with minibatch SGD + momentum on the same data.  Everything is float64,
vectorised over the minibatch (matrix products, no Python loop over samples),
and fully reproducible from ``MLPConfig.seed``.

Usage::

    from fastres.datasets import load
    from fastres.baseline import MLPConfig, train_mlp, mlp_error

    d = load("mnist")
    cfg = MLPConfig(sizes=(784, 100, 10))          # defaults: hardtanh + MSE
    params, history = train_mlp(cfg, d, on_epoch=print)
    mlp_error(params, d.x_test, d.y_test, cfg.activation)   # fraction in [0, 1]

Model
-----
For layer ``l = 1 .. L`` (``L = len(sizes) - 1``)::

    z_l = h_{l-1} @ W{l} + b{l}          W{l}: (n_{l-1}, n_l), b{l}: (n_l,)
    h_l = act(z_l)        for hidden layers l < L
    y   = out_act(z_L)    output layer (``output_activation``, default linear)

with ``h_0 = x`` (``(N, sizes[0])``, pixel intensities in [0, 1]) or, when
``mirrored_inputs`` is set, ``h_0 = [x, -x]`` (``(N, 2 * sizes[0])``): each pixel
drives a positive and a negated input, as in the analog network where every
pixel is applied as a +V and a -V source.  For an MLP this is equivalent (the
two halves of ``W1`` just add up) but it makes the parameter count the same as
the analog network's conductance count.

Activations (``act``):

* ``"hardtanh"`` (default): ``clip(z, -1, 1)`` -- the piecewise-linear
  saturation of an anti-parallel diode pair (voltage clipped at +-1 in the same
  normalised units as the inputs).  Derivative 1 inside (-1, 1), 0 outside.
* ``"sigmoid"``: ``1 / (1 + exp(-z))``.
* ``"relu"``: ``max(z, 0)``.

Losses (per sample; reported losses are the mean over samples):

* ``"mse"`` (default): ``0.5 * sum_k (y_k - t_k)^2`` with target
  ``t = target_scale * one_hot(label)`` -- the squared-error cost used for the
  analog network's output nodes.  The predicted class is ``argmax_k y_k``.
* ``"xent"``: softmax cross-entropy on the output ``y`` (natural log, nats);
  requires a linear output layer.

Parameters ``params`` are a dict ``{"W1": ..., "b1": ..., "W2": ..., ...}`` of
float64 arrays.  Weights are initialised Glorot(Xavier)-uniform,
``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` (``init="glorot_normal"``:
``N(0, 2 / (fan_in + fan_out))``), biases at zero.  With mirrored inputs
``fan_in`` of layer 1 is ``2 * sizes[0]``.

Training: each epoch draws a permutation of the training set from
``np.random.Generator(np.random.PCG64(seed))`` (the same generator, after the
weight initialisation), and walks it in minibatches of ``batch_size`` (the last
batch may be smaller).  The update is classical momentum on the batch-mean
gradient ``g``::

    v <- momentum * v - lr_l * g ;   theta <- theta + v

with a per-layer learning rate ``lr_l`` (the same for W{l} and b{l}) multiplied
by ``lr_decay ** (epoch - 1)`` in epoch ``epoch`` (1-based).

Performance note: the minibatch products are small (32 x 784 @ 784 x 100), so
OpenBLAS threading *hurts*: with ``OPENBLAS_NUM_THREADS=1`` an epoch is about
10x faster than with 2 threads on a 2-core machine.  Set it before starting
Python (numpy cannot change it afterwards without threadpoolctl).

Measured (full MNIST, defaults, ``OPENBLAS_NUM_THREADS=1``, 2-core machine
shared with another job; ``train_mlp(MLPConfig(sizes=...), load("mnist"))``):

* 784-100-10, 15 epochs: test error 3.76 % (train 3.20 %), 1.5-2.0 s/epoch.
* 784-100-100-10, 15 epochs: test error 2.78 % (train 1.93 %), 1.1-2.3 s/epoch.

Hardtanh + linear-output MSE does not reach 2 % at 100 hidden units in 15
epochs: about 80 % of the hidden pre-activations end up saturated (zero
gradient).  Best 784-100-10 variants found (15 epochs): ``target_scale=3.0``
-> 3.38 %; hardtanh + ``loss="xent"`` (lr 0.05) -> 2.6-3.0 %; relu + MSE
(``target_scale=2``) -> 3.05 %.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "INITS",
    "MLPConfig",
    "init_params",
    "default_mlp_rates",
    "default_mlp_target",
    "train_mlp",
    "mlp_forward",
    "mlp_predict",
    "mlp_error",
    "mlp_loss",
    "loss_and_grads",
]

#: Names accepted for ``MLPConfig.activation`` (hidden layers).
ACTIVATIONS = ("hardtanh", "sigmoid", "relu")
#: Names accepted for ``MLPConfig.output_activation``.
OUTPUT_ACTIVATIONS = ("linear",) + ACTIVATIONS
#: Names accepted for ``MLPConfig.loss``.
LOSSES = ("mse", "xent")
#: Names accepted for ``MLPConfig.init``.
INITS = ("glorot_uniform", "glorot_normal")

#: Default learning rate of the weight layers feeding hidden layers (at the reference
#: 784-100-10 for relu; every size for the other activations).
DEFAULT_HIDDEN_LR = 0.01
#: Default learning rate of the output weight layer (hardtanh and sigmoid hidden layers).
DEFAULT_OUTPUT_LR = 0.002
#: relu's default output-layer rate is this over the layer's fan-in (see default_mlp_rates).
OUTPUT_LR_SCALE = 4.0
#: ``n_l + n_{l+1}`` of the reference 784-100-10's hidden layer (see default_mlp_rates).
REFERENCE_FAN = 110
#: The relu MLP's default one-hot target (see default_mlp_target); other activations keep 1.
RELU_TARGET = 1.5


def default_mlp_target(activation: str = "relu") -> float:
    """The default value of the "on" output of the squared-error one-hot target.

    relu: :data:`RELU_TARGET` (1.5) at every size; hardtanh and sigmoid: 1 (their former
    default, not re-measured). A target ``s`` is, exactly, the target 1 with the output layer's
    initial weights divided by ``s`` and every hidden layer's learning rate multiplied by
    ``s^2`` (the relu network is positively homogeneous and the loss scales by ``s^2``): it is
    the relative speed of the hidden layers and the output layer and the output layer's initial
    scale (Glorot's, an output spread of about 0.4 for a 784-100-10 MLP on MNIST pixels, against
    a target margin of 1), which no choice of the two learning rates alone reaches. Measured
    (2 epochs of full MNIST, batch 20, seed 0, the rates of :func:`default_mlp_rates`; README
    "Defaults across network sizes"): targets 1, 1.5, 2, 2.5, 3, 4 gave 6.05, 5.35, 5.69, 7.04,
    6.66, 8.28 % at 784-32-10 and 4.36, 3.85, 3.72, 3.54, 3.70, 4.09 % at 784-100-10; 1.5 is
    the one at or below both EqProp rows that is also the best at 784-16-10 and 784-32-32-10
    (1.5 and 2: 7.30 and 7.91 %; 4.55 and 4.91 %). The value is measured, not derived.
    """
    return RELU_TARGET if activation == "relu" else 1.0


def default_mlp_rates(sizes, mirrored_inputs: bool = False, activation: str = "relu") -> tuple:
    """The default learning rate of each weight layer of an MLP of layer ``sizes``.

    The rule (relu, the activation of the default rectifying circuit):

    * output layer: ``4 / fan_in`` (``fan_in = n_{L-1}``, doubled for mirrored inputs when
      there is no hidden layer);
    * a layer into a hidden layer of ``n_l`` units followed by ``n_{l+1}``:
      ``0.01 * sqrt((n_l + n_{l+1}) / 110)`` (halved for mirrored inputs into layer 1).

    Derivation (standard parameterisation, Glorot initialisation ``Var W_l = 2 / (fan_in +
    fan_out)``, SGD with momentum on the squared error). An output-layer step ``-lr e_k h_j``
    moves the output ``z_k`` by ``lr e_k sum_j h_j^2 ~ lr fan_in E[h^2]``: ``lr ~ 1/fan_in``
    keeps that move size-independent (4/fan_in is 0.04 at 100 hidden units). A step of a hidden layer moves a unit's pre-activation by ``lr |x|^2
    delta_j`` with ``delta_j = sum_k W_jk e_k ~ sqrt(n_{l+1} Var W) ~ sqrt(2 n_{l+1} / (n_l +
    n_{l+1}))``: a narrow layer's units move several times further per step than a wide one's
    (6x from 1024 to 16 units), and too far a move leaves a relu dead. ``lr ~ sqrt((n_l +
    n_{l+1}) / n_{l+1})`` keeps the move of a unit, normalised at 0.01 for 784-100-10. Mirrored
    inputs double ``|x|^2`` (halve the first rate) and the output layer's fan-in without a
    hidden layer. Measured (2 epochs of full MNIST, batch 20, relu, the one-hot target 1;
    README "Defaults across network sizes"): 784-16-10 7.84 %, 784-32-10 6.05 %, 784-100-10
    4.36 %, 784-1024-10 2.39 %, against 17.86 %, 7.22 %, 5.10 % and 2.70 % with the former
    fixed 0.01 / 0.002. A grid of both rates around the rule at 784-32-10 and 784-100-10 (same
    README section) found no pair better at both sizes than the rule (best 6.09 % and 4.11 %,
    and the hidden multiplier that helps 784-100-10 hurts 784-32-10), within the spread over
    seeds; the default target 1.5 (:func:`default_mlp_target`) brings them to 7.30, 5.35,
    3.85 and 2.32 %.

    Other activations (``hardtanh``, ``sigmoid``) keep the former fixed rates,
    :data:`DEFAULT_HIDDEN_LR` into hidden layers and :data:`DEFAULT_OUTPUT_LR` for the output
    layer: a saturated hardtanh layer gives ``E[h^2] ~ 1`` and its output layer diverges above
    ~0.005 with momentum 0.9, so the relu rule does not carry over and was not measured for them.
    """
    sizes = tuple(int(s) for s in sizes)
    L = len(sizes) - 1
    if activation != "relu":
        return (DEFAULT_HIDDEN_LR,) * (L - 1) + (DEFAULT_OUTPUT_LR,)
    out = []
    for l in range(1, L + 1):
        mirror = 2 if (mirrored_inputs and l == 1) else 1
        if l < L:
            out.append(DEFAULT_HIDDEN_LR * math.sqrt((sizes[l] + sizes[l + 1]) / REFERENCE_FAN) / mirror)
        else:
            out.append(OUTPUT_LR_SCALE / (sizes[L - 1] * mirror))
    return tuple(out)

#: On pulsed devices (:func:`device_weight_ranges`): the largest weight a device holds, in
#: units of the layer's Glorot bound (covers the weights a 784-100-10 MLP reaches).
DEVICE_RANGE = 3.0

#: Samples per chunk when evaluating large arrays (bounds memory, not results).
EVAL_CHUNK = 10000


# --------------------------------------------------------------------------- config


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class MLPConfig:
    """Hyper-parameters of the baseline MLP (validated on construction; every
    invalid field raises ``ValueError`` naming that field).

    Attributes
    ----------
    sizes : tuple of int
        Layer widths, input first, e.g. ``(784, 100, 10)`` or
        ``(784, 100, 100, 10)``.  At least 2 entries, all >= 1.  ``sizes[0]``
        is the number of data features (pixels) *before* mirroring.
    activation : str
        Hidden-layer nonlinearity, one of :data:`ACTIVATIONS`; default
        ``"hardtanh"`` = clip to [-1, 1] (diode-pair clipping).
    output_activation : str
        ``"linear"`` (default) or one of :data:`ACTIVATIONS`, applied to the
        output layer.  ``loss="xent"`` requires ``"linear"``.
    lr : None, float or sequence of float
        Learning rate (dimensionless step on the batch-mean gradient), one for
        all layers or one per weight layer (``len(sizes) - 1`` values), > 0.
        ``None`` (default) = :func:`default_mlp_rates`: for relu, ``4 / fan_in``
        for the output layer and ``0.01 * sqrt((n_l + n_{l+1}) / 110)`` into a
        hidden layer; for hardtanh and sigmoid :data:`DEFAULT_HIDDEN_LR` (0.01)
        into hidden layers and :data:`DEFAULT_OUTPUT_LR` (0.002) for the output
        layer -- tuned on MNIST for hardtanh + MSE, momentum 0.9, batch 32 (the
        linear output layer of a saturated hardtanh layer diverges above ~0.005
        with momentum 0.9).
    lr_decay : float
        Multiplicative learning-rate factor per epoch, in (0, 1]; epoch ``e``
        (1-based) uses ``lr * lr_decay ** (e - 1)``.
    momentum : float
        Classical momentum coefficient in [0, 1).
    batch_size : int
        Samples per minibatch (>= 1); the last batch of an epoch may be smaller.
    epochs : int
        Passes over the training set (>= 0).
    seed : int
        Seed (>= 0) of the ``PCG64`` generator used for initialisation and
        shuffling; the run is bit-reproducible from it.
    loss : str
        ``"mse"`` (default) or ``"xent"``, see the module docstring.
    target_scale : None or float
        Value of the "on" output in the MSE one-hot target (others are 0), > 0.
        Unused by ``"xent"``. ``None`` (default) = :func:`default_mlp_target`: 1.5 for relu,
        1 for hardtanh and sigmoid.
    init : str
        ``"glorot_uniform"`` (default) or ``"glorot_normal"``; biases start at 0.
    mirrored_inputs : bool
        Feed ``[x, -x]`` instead of ``x`` (first weight matrix has
        ``2 * sizes[0]`` rows), mirroring the analog network's +x / -x inputs.
    """

    sizes: Sequence[int] = (784, 100, 10)
    activation: str = "hardtanh"
    output_activation: str = "linear"
    lr: Union[None, float, Sequence[float]] = None
    lr_decay: float = 1.0
    momentum: float = 0.9
    batch_size: int = 32
    epochs: int = 15
    seed: int = 0
    loss: str = "mse"
    target_scale: Optional[float] = None
    init: str = "glorot_uniform"
    mirrored_inputs: bool = False

    def __post_init__(self):
        # sizes
        try:
            sizes = tuple(self.sizes)
        except TypeError:
            raise ValueError(f"sizes must be a sequence of ints, got {self.sizes!r}") from None
        if len(sizes) == 0:
            raise ValueError("sizes is empty; need at least (n_inputs, n_outputs)")
        if len(sizes) < 2:
            raise ValueError(f"sizes={sizes!r} needs at least 2 entries (inputs and outputs)")
        for i, s in enumerate(sizes):
            if not _is_int(s) or s < 1:
                raise ValueError(f"sizes[{i}]={s!r} must be a positive int")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        n_layers = len(sizes) - 1

        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={self.activation!r} unknown; valid: {', '.join(ACTIVATIONS)}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation={self.output_activation!r} unknown; "
                f"valid: {', '.join(OUTPUT_ACTIVATIONS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} unknown; valid: {', '.join(LOSSES)}")
        if self.loss == "xent" and self.output_activation != "linear":
            raise ValueError(
                f"output_activation={self.output_activation!r} incompatible with loss='xent' "
                "(softmax needs a linear output layer)")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} unknown; valid: {', '.join(INITS)}")

        # lr
        if self.lr is None:
            object.__setattr__(self, "lr", default_mlp_rates(sizes, self.mirrored_inputs, self.activation))
        if _is_real(self.lr):
            lrs = (float(self.lr),) * n_layers
        else:
            try:
                lrs = tuple(self.lr)
            except TypeError:
                raise ValueError(f"lr must be a float or a sequence of floats, got {self.lr!r}") from None
            if len(lrs) != n_layers:
                raise ValueError(
                    f"lr has {len(lrs)} values but the network has {n_layers} weight layers")
        for i, v in enumerate(lrs):
            if not _is_real(v) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"lr[{i}]={v!r} must be a finite number > 0 (lr={self.lr!r})")
        object.__setattr__(self, "lr", float(self.lr) if _is_real(self.lr)
                           else tuple(float(v) for v in lrs))

        if not _is_real(self.lr_decay) or not (0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay={self.lr_decay!r} must be in (0, 1]")
        if not _is_real(self.momentum) or not (0 <= self.momentum < 1):
            raise ValueError(f"momentum={self.momentum!r} must be in [0, 1)")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be an int >= 1")
        if not _is_int(self.epochs) or self.epochs < 0:
            raise ValueError(f"epochs={self.epochs!r} must be an int >= 0")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an int >= 0")
        if self.target_scale is None:
            object.__setattr__(self, "target_scale", default_mlp_target(self.activation))
        if not _is_real(self.target_scale) or not math.isfinite(self.target_scale) \
                or self.target_scale <= 0:
            raise ValueError(f"target_scale={self.target_scale!r} must be a finite number > 0")
        if not isinstance(self.mirrored_inputs, (bool, np.bool_)):
            raise ValueError(f"mirrored_inputs={self.mirrored_inputs!r} must be a bool")

    @property
    def n_layers(self) -> int:
        """Number of weight layers, ``len(sizes) - 1``."""
        return len(self.sizes) - 1

    @property
    def layer_lrs(self) -> tuple:
        """Per-layer learning rates (tuple of ``n_layers`` floats)."""
        if isinstance(self.lr, tuple):
            return self.lr
        return (float(self.lr),) * self.n_layers

    def n_params(self) -> int:
        """Number of trainable scalars (weights + biases)."""
        widths = list(self.sizes)
        if self.mirrored_inputs:
            widths[0] *= 2
        return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


# --------------------------------------------------------------------------- model


def _act(name: str, z: np.ndarray) -> np.ndarray:
    if name == "hardtanh":
        return np.clip(z, -1.0, 1.0)
    if name == "sigmoid":
        # numerically stable logistic
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "linear":
        return z
    raise ValueError(f"activation={name!r} unknown; valid: {', '.join(OUTPUT_ACTIVATIONS)}")


def _act_grad(name: str, z: np.ndarray, h: np.ndarray) -> np.ndarray:
    """d act / d z, given pre-activation ``z`` and output ``h = act(z)``."""
    if name == "hardtanh":
        return ((z > -1.0) & (z < 1.0)).astype(np.float64)
    if name == "sigmoid":
        return h * (1.0 - h)
    if name == "relu":
        return (z > 0.0).astype(np.float64)
    if name == "linear":
        return np.ones_like(z)
    raise ValueError(f"activation={name!r} unknown; valid: {', '.join(OUTPUT_ACTIVATIONS)}")


def _n_layers(params: dict) -> int:
    n = 0
    while f"W{n + 1}" in params:
        n += 1
    if n == 0:
        raise ValueError("params holds no weight matrix 'W1'")
    for l in range(1, n + 1):
        if f"b{l}" not in params:
            raise ValueError(f"params lacks bias 'b{l}'")
    return n


def _prepare_input(params: dict, x, mirrored_inputs: Optional[bool]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n_samples, n_features), got shape {x.shape}")
    n_in = params["W1"].shape[0]
    if mirrored_inputs is None:  # infer from the first weight matrix
        mirrored_inputs = (n_in == 2 * x.shape[1]) and n_in != x.shape[1]
    if mirrored_inputs:
        x = np.concatenate([x, -x], axis=1)
    if x.shape[1] != n_in:
        raise ValueError(
            f"x has {x.shape[1]} features{' after mirroring' if mirrored_inputs else ''} "
            f"but W1 expects {n_in}")
    return x


def _forward(params, x, activation, output_activation, n_layers):
    """Forward pass keeping pre-activations ``zs`` and activations ``hs`` (hs[0] = x)."""
    hs, zs = [x], []
    h = x
    for l in range(1, n_layers + 1):
        z = h @ params[f"W{l}"]
        z += params[f"b{l}"]
        name = activation if l < n_layers else output_activation
        h = _act(name, z)
        zs.append(z)
        hs.append(h)
    return zs, hs


def mlp_forward(params: dict, x, activation: str = "hardtanh", *,
                output_activation: str = "linear",
                mirrored_inputs: Optional[bool] = None) -> np.ndarray:
    """Network output ``(N, n_out)`` for inputs ``x`` ``(N, n_features)``.

    ``mirrored_inputs=None`` infers mirroring from ``W1`` (``2 * n_features``
    rows means mirrored).  Evaluated in chunks of :data:`EVAL_CHUNK` samples.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} unknown; valid: {', '.join(ACTIVATIONS)}")
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"output_activation={output_activation!r} unknown; "
                         f"valid: {', '.join(OUTPUT_ACTIVATIONS)}")
    n_layers = _n_layers(params)
    x = _prepare_input(params, x, mirrored_inputs)
    n_out = params[f"W{n_layers}"].shape[1]
    out = np.empty((x.shape[0], n_out), dtype=np.float64)
    for i in range(0, x.shape[0], EVAL_CHUNK):
        _, hs = _forward(params, x[i:i + EVAL_CHUNK], activation, output_activation, n_layers)
        out[i:i + EVAL_CHUNK] = hs[-1]
    return out


def mlp_predict(params: dict, x, activation: str = "hardtanh", *,
                output_activation: str = "linear",
                mirrored_inputs: Optional[bool] = None) -> np.ndarray:
    """Raw network outputs (logits for ``"xent"``, output values for ``"mse"``),
    shape ``(N, n_out)``; the predicted class is ``argmax`` along axis 1.
    Same as :func:`mlp_forward`."""
    return mlp_forward(params, x, activation, output_activation=output_activation,
                       mirrored_inputs=mirrored_inputs)


def mlp_error(params: dict, x, y, activation: str = "hardtanh", *,
              output_activation: str = "linear",
              mirrored_inputs: Optional[bool] = None) -> float:
    """Classification error (fraction of samples with ``argmax(output) != y``, in [0, 1])."""
    y = np.asarray(y)
    out = mlp_forward(params, x, activation, output_activation=output_activation,
                      mirrored_inputs=mirrored_inputs)
    if y.shape != (out.shape[0],):
        raise ValueError(f"y has shape {y.shape}, expected ({out.shape[0]},)")
    if out.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.argmax(out, axis=1) != y))


def _loss_and_dout(out, y, loss, target_scale, need_grad=True):
    """Mean loss over the batch and d(mean loss)/d(out) (or None)."""
    n, k = out.shape
    if loss == "mse":
        diff = out.copy()
        diff[np.arange(n), y] -= target_scale
        value = 0.5 * float(np.sum(diff * diff)) / n
        return value, (diff / n if need_grad else None)
    if loss == "xent":
        m = out.max(axis=1, keepdims=True)
        e = np.exp(out - m)
        s = e.sum(axis=1, keepdims=True)
        logp_true = out[np.arange(n), y] - m[:, 0] - np.log(s[:, 0])
        value = -float(np.sum(logp_true)) / n
        if not need_grad:
            return value, None
        p = e / s
        p[np.arange(n), y] -= 1.0
        return value, p / n
    raise ValueError(f"loss={loss!r} unknown; valid: {', '.join(LOSSES)}")


def _backward(params, zs, hs, dout, activation, output_activation, n_layers):
    """Backprop of d(loss)/d(out) -> gradients dict with the keys of ``params``."""
    grads = {}
    delta = dout * _act_grad(output_activation, zs[-1], hs[-1]) \
        if output_activation != "linear" else dout
    for l in range(n_layers, 0, -1):
        grads[f"W{l}"] = hs[l - 1].T @ delta
        grads[f"b{l}"] = delta.sum(axis=0)
        if l > 1:
            delta = (delta @ params[f"W{l}"].T) * _act_grad(activation, zs[l - 2], hs[l - 1])
    return grads


def _check_labels(y, n, n_out, what):
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"{what} has shape {y.shape}, expected ({n},)")
    if n and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class labels, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_out):
        raise ValueError(f"{what} holds labels outside 0..{n_out - 1}")
    return y.astype(np.int64, copy=False)


def loss_and_grads(params: dict, x, y, cfg: MLPConfig):
    """Mean loss over ``(x, y)`` and its exact gradient w.r.t. every entry of
    ``params`` (dict with the same keys and shapes).  Used by training and the
    gradient-check test."""
    n_layers = _n_layers(params)
    x = _prepare_input(params, x, cfg.mirrored_inputs)
    y = _check_labels(y, x.shape[0], params[f"W{n_layers}"].shape[1], "y")
    zs, hs = _forward(params, x, cfg.activation, cfg.output_activation, n_layers)
    value, dout = _loss_and_dout(hs[-1], y, cfg.loss, cfg.target_scale)
    return value, _backward(params, zs, hs, dout, cfg.activation, cfg.output_activation, n_layers)


def mlp_loss(params: dict, x, y, cfg: MLPConfig) -> float:
    """Mean loss (``cfg.loss``) over ``(x, y)``, evaluated in chunks."""
    return _loss_and_error(params, x, y, cfg)[0]


def _loss_and_error(params, x, y, cfg):
    n_layers = _n_layers(params)
    x = _prepare_input(params, x, cfg.mirrored_inputs)
    n = x.shape[0]
    y = _check_labels(y, n, params[f"W{n_layers}"].shape[1], "y")
    if n == 0:
        return float("nan"), float("nan")
    total, wrong = 0.0, 0
    for i in range(0, n, EVAL_CHUNK):
        xb, yb = x[i:i + EVAL_CHUNK], y[i:i + EVAL_CHUNK]
        _, hs = _forward(params, xb, cfg.activation, cfg.output_activation, n_layers)
        value, _ = _loss_and_dout(hs[-1], yb, cfg.loss, cfg.target_scale, need_grad=False)
        total += value * xb.shape[0]
        wrong += int(np.sum(np.argmax(hs[-1], axis=1) != yb))
    return total / n, wrong / n


# --------------------------------------------------------------------------- training


def init_params(cfg: MLPConfig, rng: np.random.Generator) -> dict:
    """Glorot-initialised weights ``W{l}`` ``(fan_in, fan_out)`` and zero biases ``b{l}``."""
    widths = list(cfg.sizes)
    if cfg.mirrored_inputs:
        widths[0] *= 2
    params = {}
    for l, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        if cfg.init == "glorot_uniform":
            a = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-a, a, size=(fan_in, fan_out))
        else:  # glorot_normal
            w = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))
        params[f"W{l}"] = np.ascontiguousarray(w, dtype=np.float64)
        params[f"b{l}"] = np.zeros(fan_out, dtype=np.float64)
    return params


def _get(data, key):
    if isinstance(data, dict):
        if key not in data:
            raise ValueError(f"data lacks {key!r}")
        return data[key]
    if not hasattr(data, key):
        raise ValueError(f"data lacks attribute {key!r}")
    return getattr(data, key)


def _check_data(cfg, data):
    out = {}
    for split in ("train", "test"):
        x = np.asarray(_get(data, f"x_{split}"), dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != cfg.sizes[0]:
            raise ValueError(
                f"data.x_{split} has shape {x.shape}, expected (N, {cfg.sizes[0]}) "
                f"(sizes[0]={cfg.sizes[0]})")
        if x.size and not np.all(np.isfinite(x)):
            raise ValueError(f"data.x_{split} holds non-finite values")
        y = _check_labels(_get(data, f"y_{split}"), x.shape[0], cfg.sizes[-1], f"data.y_{split}")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    if out["x_train"].shape[0] == 0 and cfg.epochs > 0:
        raise ValueError("data.x_train is empty")
    return out


def device_weight_ranges(cfg: MLPConfig, factor: float = None) -> dict:
    """Largest weight a device holds per parameter array (for the MLP on pulsed devices):
    ``factor`` (default :data:`DEVICE_RANGE`) times the layer's Glorot bound
    ``sqrt(6 / (fan_in + fan_out))``, shared by ``W{l}`` and ``b{l}``."""
    factor = DEVICE_RANGE if factor is None else float(factor)
    widths = list(cfg.sizes)
    if cfg.mirrored_inputs:
        widths[0] *= 2
    out = {}
    for l, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        out[f"W{l}"] = out[f"b{l}"] = factor * math.sqrt(6.0 / (fan_in + fan_out))
    return out


def train_mlp(cfg: MLPConfig, data, *,
              on_epoch: Optional[Callable[[dict], None]] = None, device=None):
    """Train an MLP with minibatch SGD + momentum (backprop), fully reproducible from ``cfg.seed``.

    Parameters
    ----------
    cfg : MLPConfig
    data : Dataset-like
        Object (e.g. :class:`fastres.datasets.Dataset`) or dict with ``x_train``
        ``(N, sizes[0])`` float in [0, 1], ``y_train`` ``(N,)`` int labels in
        ``0..sizes[-1]-1``, and ``x_test``, ``y_test`` likewise.
    on_epoch : callable, optional
        Called with each history row right after it is recorded.
    device : :class:`fastres.pulsed.WeightDevices`, optional
        Weights stored in pulsed devices: the initial weights are programmed onto them, each
        minibatch's forward and backward pass use the weights the devices read (read noise),
        and each momentum step ``v`` is the desired change the devices turn into pulses
        (rows gain ``pulses``, the epoch's count). None: exact weights.

    Returns
    -------
    params : dict[str, ndarray]
        ``W1..WL`` (float64, ``(fan_in, fan_out)``) and ``b1..bL`` (``(fan_out,)``).
    history : list of dict
        One row per epoch: ``epoch`` (1-based int), ``train_loss`` and
        ``test_loss`` (mean per-sample loss, see module docstring),
        ``train_error`` and ``test_error`` (misclassified fraction in [0, 1],
        evaluated on the *whole* split with the parameters at the end of the
        epoch), ``lr`` (per-layer learning rates used, tuple), and
        ``epoch_seconds`` (wall-clock seconds of the SGD pass only, evaluation
        excluded) and ``eval_seconds`` (seconds spent evaluating both splits).
    """
    if not isinstance(cfg, MLPConfig):
        raise ValueError(f"cfg must be an MLPConfig, got {type(cfg).__name__}")
    d = _check_data(cfg, data)
    x_train, y_train = d["x_train"], d["y_train"]
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    params = init_params(cfg, rng)
    if device is not None:
        device.init(params)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    n_layers = cfg.n_layers
    base_lrs = cfg.layer_lrs
    n = x_train.shape[0]
    bs = cfg.batch_size
    mu = cfg.momentum
    history = []
    for epoch in range(1, cfg.epochs + 1):
        lrs = tuple(lr * cfg.lr_decay ** (epoch - 1) for lr in base_lrs)
        t0 = time.perf_counter()
        perm = rng.permutation(n)
        pulses = 0
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            xb = x_train[idx]
            if cfg.mirrored_inputs:
                xb = np.concatenate([xb, -xb], axis=1)
            yb = y_train[idx]
            seen = params if device is None else device.read(params)
            zs, hs = _forward(seen, xb, cfg.activation, cfg.output_activation, n_layers)
            _, dout = _loss_and_dout(hs[-1], yb, cfg.loss, cfg.target_scale)
            grads = _backward(seen, zs, hs, dout, cfg.activation, cfg.output_activation,
                              n_layers)
            for l in range(1, n_layers + 1):
                lr = lrs[l - 1]
                for key in (f"W{l}", f"b{l}"):
                    v = velocity[key]
                    v *= mu
                    v -= lr * grads[key]
                    if device is None:
                        params[key] += v
            if device is not None:
                pulses += device.update(params, velocity)
        t1 = time.perf_counter()
        train_loss, train_error = _loss_and_error(params, x_train, y_train, cfg)
        test_loss, test_error = _loss_and_error(params, d["x_test"], d["y_test"], cfg)
        t2 = time.perf_counter()
        if not (math.isfinite(train_loss)):
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (train_loss={train_loss}); lower lr={cfg.lr!r}")
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_error": train_error,
            "test_loss": test_loss,
            "test_error": test_error,
            "lr": lrs,
            "epoch_seconds": t1 - t0,
            "eval_seconds": t2 - t1,
        }
        if device is not None:
            row["pulses"] = pulses
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return params, history
