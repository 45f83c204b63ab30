"""Evaluation of a layered network's conductances on a dataset: loss, predictions, voltages."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .eqprop import loss_and_grad
from .kernels.status import Status
from .network import LayeredNetwork
from .solver import Newton, solve


@dataclass
class Evaluation:
    """``loss_sum`` (V^2, summed over samples), ``pred`` (N,) predicted classes and
    ``nonconverged`` the number of samples whose solve did not converge."""

    loss_sum: float
    pred: np.ndarray
    nonconverged: int


def evaluate(net: LayeredNetwork, params, X, y, target_volts, alg: Newton, batch=10000) -> Evaluation:
    """Solve every sample of ``X`` (N, n_in) in chunks of ``batch`` and score it against
    labels ``y`` (N,). Non-converged samples are counted, not raised (they are rare and the
    count is reported with the error rate)."""
    system = net.system(params)
    loss_sum, preds, bad = 0.0, [np.zeros(0, dtype=np.int64)], 0
    N = X.shape[0]
    for s in range(0, N, batch):
        Xb = X[s:min(s + batch, N)]
        sol = solve(net.problem(params, Xb, system=system), alg, check=False)
        out = sol.outputs()
        C, _ = loss_and_grad(out, y[s:s + Xb.shape[0]], target_volts)
        loss_sum += float(C.sum())
        preds.append(np.argmax(out, axis=1))
        bad += int(np.sum(sol.status != Status.CONVERGED))
    return Evaluation(loss_sum, np.concatenate(preds), bad)


def layer_voltages(net: LayeredNetwork, params, X, alg: Newton) -> dict:
    """``{"v_layer<l>": (N, nodes of layer l) V}`` for inputs ``X`` (not-converged samples
    included as they ended)."""
    sol = solve(net.problem(params, X), alg, check=False)
    return {f"v_layer{l}": sol.layer(l).copy() for l in range(1, net.L + 1)}
