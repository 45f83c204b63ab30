"""Evaluation of a layered network's conductances on a dataset: loss, predictions, voltages."""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .eqprop import loss_and_grad
from .kernels import power as _power
from .kernels.status import Status
from .network import LayeredNetwork
from .solver import Newton, solve


@dataclass
class Evaluation:
    """``loss_sum`` (V^2, summed over samples), ``pred`` (N,) predicted classes and
    ``nonconverged`` the number of samples whose solve did not converge; ``power_sum`` (W) the
    static power of every sample's operating point, summed (see :func:`static_power`)."""

    loss_sum: float
    pred: np.ndarray
    nonconverged: int
    power_sum: float = 0.0


def evaluate(net: LayeredNetwork, params, X, y, target_volts, alg: Newton, batch=10000) -> Evaluation:
    """Solve every sample of ``X`` (N, n_in) in chunks of ``batch`` and score it against
    labels ``y`` (N,). Non-converged samples are counted, not raised (they are rare and the
    count is reported with the error rate)."""
    system = net.system(params)
    loss_sum, preds, bad, power = 0.0, [np.zeros(0, dtype=np.int64)], 0, 0.0
    N = X.shape[0]
    for s in range(0, N, batch):
        Xb = X[s:min(s + batch, N)]
        sol = solve(net.problem(params, Xb, system=system), alg, check=False)
        out = sol.outputs()
        C, _ = loss_and_grad(out, y[s:s + Xb.shape[0]], target_volts)
        loss_sum += float(C.sum())
        preds.append(np.argmax(out, axis=1))
        bad += int(np.sum(sol.status != Status.CONVERGED))
        power += float(static_power(net, params, Xb, sol.x).sum())
    return Evaluation(loss_sum, np.concatenate(preds), bad, power)


def static_power(net: LayeredNetwork, params, X, x) -> np.ndarray:
    """Static power (W) each sample's operating point dissipates, shape (B,): every
    conductance ``g (u - v)^2`` (input, bias and inter-layer ones; an ideal amplifier dissipates
    nothing) plus every clipping diode ``i(v) v``; equal to the power the sources deliver.
    ``X`` (B, n_in) pixels, ``x`` (B, nF) the solved free-node voltages (V)."""
    U = net.input_voltages(X)
    Vb = net.spec.bias_volts
    P = np.zeros(X.shape[0])
    for l in range(1, net.L + 1):
        u = U if l == 1 else net.gains[l] * net.layer(x, l - 1)
        v = net.layer(x, l)
        W, Bl = params[f"W{l}"], params[f"B{l}"]
        # sum_ij W_ij (u_i - v_j)^2 = (u^2) W 1 + (v^2) . colsum(W) - 2 (u W) . v, per sample
        P += (u * u) @ W.sum(axis=1) + (v * v) @ W.sum(axis=0) - 2.0 * np.einsum("sj,sj->s", u @ W, v)
        P += ((Vb - v) ** 2) @ Bl
    pd = np.empty(X.shape[0])
    _power.diode_power(np.ascontiguousarray(x), net.vdfix, net.da, net.db, net.dkind, net.dpar, pd,
                       max(1, min(X.shape[0], numba.get_num_threads())))
    return P + pd


def layer_voltages(net: LayeredNetwork, params, X, alg: Newton) -> dict:
    """``{"v_layer<l>": (N, nodes of layer l) V}`` for inputs ``X`` (not-converged samples
    included as they ended)."""
    sol = solve(net.problem(params, X), alg, check=False)
    return {f"v_layer{l}": sol.layer(l).copy() for l in range(1, net.L + 1)}
