"""Optimisers: the role that turns a minibatch's gradient into new conductances.

:class:`BoundedSGD` is SGD with momentum on conductances clipped to the device range
``[g_min, g_max]`` (S), the ideal programmable resistor. A step changes a conductance by
``-lr * g_max^2 * dC/dg`` (``lr`` dimensionless, ``dC/dg`` in V^2/S), i.e. the learning rates
act on conductances measured in units of ``g_max``. The input layer's update is fused into one
pass over its conductances that never materialises the gradient and returns the column sums
the next Jacobian needs (:meth:`column_sums`). Device models (finite, noisy, pulsed updates)
plug in here as other optimisers with the same ``step`` / ``state`` / ``load`` methods.
"""
from __future__ import annotations

import numba
import numpy as np

from .eqprop import Phases
from .errors import FastresError
from .kernels import updates as _updates

PARALLEL_MIN_UPDATE = 1 << 20  # conductances: below this a serial update pass is faster
UPDATE_BLOCKS = 16  # fixed row blocks of the fused input-layer update (threads take blocks)


class BoundedSGD:
    """SGD with momentum, clipped to ``[g_min, g_max]`` (S); ``lr`` one rate per layer, in units
    of ``g_max`` (see the module docstring). ``clip=False``: the steps are not clipped (the
    desired changes a device model turns into pulses)."""

    def __init__(self, lr, momentum, g_min, g_max, clip=True):
        self.lr = [float(v) for v in lr]
        self.momentum = float(momentum)
        self.g_min = float(g_min)
        self.g_max = float(g_max)
        self.bounds = (self.g_min, self.g_max) if clip else (-np.inf, np.inf)
        self.vel = None
        self._w1 = None  # the W1 array whose column sums are kept
        self._blocks = None
        self._colsum = None

    # -- state -------------------------------------------------------------------------------
    def init(self, params):
        """Fresh optimiser state (zero momentum) for ``params``."""
        self.vel = {k: np.zeros_like(v) for k, v in params.items()}

    def state(self) -> dict:
        """The arrays a checkpoint stores (momentum buffers, same keys as the params)."""
        return self.vel

    def load(self, state, params):
        """Restore :meth:`state` from a checkpoint; the initial checkpoint (epoch 0) has none:
        zero momentum, as at the start."""
        if not state:
            self.init(params)
            return
        missing = sorted(set(params) - set(state))
        if missing:
            raise FastresError(f"optimiser state lacks {', '.join(missing)}")
        self.vel = {k: np.array(state[k], dtype=np.float64) for k in params}
        for k in params:
            if self.vel[k].shape != params[k].shape:
                    raise FastresError(f"optimiser state {k} has shape {self.vel[k].shape}, "
                                   f"expected {params[k].shape}")

    def apparent(self, params) -> dict:
        """The conductances the solves see: ideal devices read exactly what was written."""
        return params

    # -- the column sums of W1 (S), kept up to date by the fused update ----------------------
    def column_sums(self, params) -> np.ndarray:
        """``params["W1"].sum(axis=0)`` with the fused update's fixed block structure (so a
        resumed run continues bit-identically); recomputed when W1 is a new array."""
        if self._track(params["W1"]):
            _updates.block_column_sums(params["W1"], self._blocks, self._colsum)
        return self._colsum

    def sum_buffers(self, W1):
        """Scratch ``(UPDATE_BLOCKS, n_to)`` and the column-sum buffer ``(n_to,)`` (S) for a
        fused update of ``W1`` that writes its new column sums (the pulsed devices' step);
        :meth:`column_sums` returns them afterwards."""
        self._track(W1)
        return self._blocks, self._colsum

    def _track(self, W) -> bool:
        """Make ``W`` the W1 whose column sums are kept (buffers for the fused update); True
        if it was not already, i.e. its sums are not known yet."""
        if self._w1 is W:
            return False
        self._w1 = W
        if self._colsum is None or self._colsum.shape != (W.shape[1],):
            self._blocks = np.empty((UPDATE_BLOCKS, W.shape[1]))
            self._colsum = np.empty(W.shape[1])
        return True

    # -- the step ----------------------------------------------------------------------------
    def step(self, params, ph: Phases, lr_factor: float):
        """Apply one minibatch's gradient (``ph``, with the input layer in fused factors) in
        place to ``params``; ``lr_factor`` the schedule's decay so far."""
        self._track(params["W1"])  # the fused update writes the sums of the updated W1
        gscale = self.g_max * self.g_max * lr_factor
        threads = numba.get_num_threads()
        opt = (self.momentum, *self.bounds)
        uT, d, col = ph.first  # the input layer: fused, the gradient never materialised
        _updates.fixed_from_step(params["W1"], uT, d, col, ph.scale, self.vel["W1"],
                                 self.lr[0] * gscale, *opt, self._blocks, self._colsum)
        for l in range(1, len(self.lr) + 1):
            lr = self.lr[l - 1] * gscale
            for key in (f"W{l}", f"B{l}") if l > 1 else ("B1",):
                row, col, prod = ph.terms[key]
                W = params[key].reshape(len(row), len(col))
                args = (W, row, col, prod, ph.scale, self.vel[key].reshape(W.shape), lr, *opt)
                if W.size >= PARALLEL_MIN_UPDATE and threads > 1:
                    _updates.drop_square_step(*args, threads)
                else:
                    _updates.drop_square_step_rows(*args, 0, W.shape[0])
