"""Equilibrium Propagation on a :class:`~fastres.network.LayeredNetwork`.

Free phase: inputs applied, the circuit settles (``x_0``). Nudged phase: currents
``-beta * dC/dV`` (A, ``beta`` in S, ``C`` in V^2) are injected at the output nodes and the
circuit settles again (``x_beta``), warm-started from ``x_0``. Each conductance's gradient uses
only its own voltage drop in the two phases::

    dC/dg ~ (dV_beta^2 - dV_0^2) / (2 beta)                      one-sided
    dC/dg ~ (dV_{+beta}^2 - dV_{-beta}^2) / (4 beta)              centered
    one-sided with a random sign of beta per step                random-sign

The exact gradient at equilibrium comes from implicit differentiation (one adjoint solve with
the same Jacobian), so the estimators can be checked against it as ``beta -> 0``.

Loss: ``C = 1/2 sum_k (out_k - t_k)^2`` with ``out_k = V(o_k+) - V(o_k-)`` (V) and ``t`` the
one-hot target scaled by ``target_volts``. Gradients are averaged over the batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .config import ESTIMATORS
from .errors import FastresError
from .kernels import adjoint as _adjoint
from .kernels import updates as _updates
from .kernels.status import Status
from .network import LayeredNetwork, NetworkProblem
from .solver import Newton, chunks, solve

EQPROP_ESTIMATORS = tuple(e for e in ESTIMATORS if e != "exact")


@dataclass(frozen=True)
class EqProp:
    """The EqProp algorithm config: ``beta`` (S) and the gradient estimator."""

    beta: float = 1e-5
    estimator: str = "centered"

    def __post_init__(self):
        if not (np.isfinite(self.beta) and self.beta > 0):
            raise FastresError(f"beta={self.beta!r} must be a finite number > 0 (siemens)")
        if self.estimator not in EQPROP_ESTIMATORS:
            raise FastresError(f"unknown EqProp estimator {self.estimator!r}: use one of "
                               f"{', '.join(EQPROP_ESTIMATORS)}")


def check_labels(y, B, n_classes):
    """``y`` must be (B,) integer class labels in ``0..n_classes-1``; raises FastresError."""
    y = np.asarray(y)
    if y.shape != (B,):
        raise FastresError(f"labels have shape {y.shape}, expected ({B},) for {B} samples")
    if y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes):
        bad = y if y.dtype.kind not in "iu" else y[(y < 0) | (y >= n_classes)]
        raise FastresError(f"labels must be integers in 0..{n_classes - 1} (the network's classes), "
                           f"got {bad[:5].tolist()}")


def loss_and_grad(out, y, target_volts):
    """Per-sample loss (B,) in V^2 and ``dC/d(out)`` (B, C) in V for outputs ``out`` (B, C)."""
    check_labels(y, out.shape[0], out.shape[1])
    T = np.zeros_like(out)
    T[np.arange(out.shape[0]), y] = target_volts
    d = out - T
    return 0.5 * np.sum(d * d, axis=1), d


@dataclass
class PhaseStats:
    """Solver statistics of one EqProp step: Newton iterations and non-converged samples."""

    free_iterations: int = 0
    nudged_iterations: int = 0
    nonconverged: int = 0
    samples: int = 0
    free_seconds: float = 0.0
    nudged_seconds: float = 0.0


def _from_to(net: LayeredNetwork, X_volts, x, l):
    """(from-voltages (B, n_{l-1}), to-voltages (B, n_l)) of the conductances of layer l (V)."""
    u = X_volts if l == 1 else net.gains[l] * net.layer(x, l - 1)
    return np.ascontiguousarray(u), np.ascontiguousarray(net.layer(x, l))


def _drop_terms(net, U, xa, xb, Vb, first=True):
    """For every W and B: ``(row, col, prod)`` with ``sum_s dV_a^2 - dV_b^2 = row + col - 2 prod``.

    Bias conductances are handled as a (1, n) matrix whose from-voltage is ``Vb``. With
    ``first=False`` the input layer's ``W1`` is left out (see :func:`first_layer_factors`).
    """
    terms = {}
    B = xa.shape[0]
    ones = np.full((B, 1), Vb)
    for l in range(1, net.L + 1):
        ua, va = _from_to(net, U, xa, l)
        ub, vb = _from_to(net, U, xb, l)
        terms[f"B{l}"] = _updates.fixed_from_terms(ones, va, vb)  # the bias source does not move
        if l > 1:
            terms[f"W{l}"] = _updates.drop_square_terms(ua, va, ub, vb)
        elif first:  # layer 1 hangs from the input sources, which do not move either
            terms["W1"] = _updates.fixed_from_terms(ua, va, vb)
    return terms


def grads_from_terms(terms, scale, params):
    """Materialise ``scale * (row + col - 2 prod)`` as arrays shaped like ``params``."""
    return {k: (scale * (r[:, None] + c[None, :] - 2.0 * p)).reshape(params[k].shape)
            for k, (r, c, p) in terms.items()}


@dataclass
class Phases:
    """One EqProp step's result: gradient terms and ``scale`` (see :func:`grads_from_terms`),
    the free state (B, nF) V, per-sample losses (B,) V^2 and solver statistics."""

    terms: dict
    scale: float
    free: np.ndarray
    loss: np.ndarray
    stats: PhaseStats
    base_scale: float = 1.0
    n_ok: int = 1
    first: tuple | None = None  # W1 factors when the fused input-layer update is used


@dataclass
class States:
    """Equilibrium states of one estimator step for a batch (all (B, nF), V): the free state,
    and the two states whose squared drops are differenced (``xa`` minus ``xb``, times
    ``scale``, divided by the number of samples that converged), with per-sample ``ok`` flags.
    Everything a reducer sums over ranks is here."""

    free: np.ndarray
    xa: np.ndarray
    xb: np.ndarray
    ok: np.ndarray
    scale: float
    stats: PhaseStats


def eqprop_states(prob: NetworkProblem, y, eq: EqProp, target_volts, alg: Newton, rng=None) -> States:
    """Free and nudged phases for a batch (the solver part of an EqProp step); the phases share
    the problem's conductances, hence a factor cache."""
    t0 = time.perf_counter()
    net = prob.net
    if prob.cache is None:
        prob.cache = net.factor_cache(prob.b.shape[0])
    free = solve(prob, alg, check=False)
    xf, itf, stf = free.x, free.iterations, free.status
    t1 = time.perf_counter()
    out = net.outputs(xf)
    C, dC = loss_and_grad(out, y, target_volts)
    beta = eq.beta
    if eq.estimator == "random-sign":
        if rng is None:
            raise FastresError("the random-sign estimator needs a random generator")
        beta = beta * (1.0 if rng.random() < 0.5 else -1.0)
    inj = net.output_injection(beta * dC)
    plus = solve(prob.nudged(inj, xf), alg, check=False)
    xp, itp, stp = plus.x, plus.iterations, plus.status
    ok = (stf == Status.CONVERGED) & (stp == Status.CONVERGED)
    nudged_it = int(itp.sum())
    if eq.estimator == "centered":
        minus = solve(prob.nudged(-inj, xf), alg, check=False)
        ok &= minus.status == Status.CONVERGED
        nudged_it += int(minus.iterations.sum())
        xa, xb, scale = xp, minus.x, 1.0 / (4.0 * eq.beta)
    else:
        xa, xb, scale = xp, xf, 1.0 / (2.0 * beta)
    stats = PhaseStats(int(itf.sum()), nudged_it, int((~ok).sum()), prob.b.shape[0], t1 - t0,
                       time.perf_counter() - t1)
    return States(xf, xa, xb, ok, scale, stats)


def exact_states(prob: NetworkProblem, y, target_volts, alg: Newton) -> States:
    """The exact gradient at equilibrium in the form of :class:`States`: with ``lam`` the
    adjoint (``J lam = dC/dx``, see :func:`exact_gradient`) and ``h = max|x| / max|lam|``, the
    states ``x - h lam`` and ``x + h lam`` with scale ``1 / (4 h)`` make the drop-square
    difference ``-(u - v)(mu - nu)``, i.e. ``dC/dg`` exactly (``(A + D)^2 - (A - D)^2 = 4 A D``),
    so the exact gradient takes the same reduction and update path as EqProp."""
    t0 = time.perf_counter()
    free = solve(prob, alg, check=False)
    t1 = time.perf_counter()
    lam = adjoint(prob.net, prob.system(alg), free.x, y, target_volts)
    ok = free.converged & np.all(np.isfinite(lam), axis=1)
    lam[~ok] = 0.0
    h = max(float(np.max(np.abs(free.x), initial=0.0)), 1e-300) / max(float(np.max(np.abs(lam), initial=0.0)), 1e-300)
    stats = PhaseStats(int(free.iterations.sum()), 0, int((~ok).sum()), free.x.shape[0], t1 - t0,
                       time.perf_counter() - t1)
    return States(free.x, free.x - h * lam, free.x + h * lam, ok, 1.0 / (4.0 * h), stats)


def first_layer_factors(U, va, vb):
    """The input layer's EqProp gradient in factored form, for
    :func:`fastres.kernels.updates.fixed_from_step`: ``(uT (n_from, B), d = va - vb (B, n_to),
    col = sum_s va^2 - vb^2 (n_to,))`` in V, V and V^2, from the input source voltages ``U``
    (B, n_from) and the first layer's node voltages in the two phases ``va, vb`` (B, n_to)."""
    d = va - vb
    col = np.einsum("sj,sj->j", va, va) - np.einsum("sj,sj->j", vb, vb)
    return np.ascontiguousarray(U.T), np.ascontiguousarray(d), col


def phases_from_states(net: LayeredNetwork, U, y, st: States, target_volts, fused_first=False) -> "Phases":
    """Gradient terms and losses of a batch from its equilibrium states. Samples that did not
    converge contribute nothing (their two states are made equal) and are not counted.

    With ``fused_first`` the input layer's ``W1`` gets factors (``Phases.first``, see
    :func:`first_layer_factors`) for the fused update instead of terms."""
    xa = st.xa
    if not st.ok.all():
        xa = xa.copy()
        xa[~st.ok] = st.xb[~st.ok]
    terms = _drop_terms(net, U, xa, st.xb, net.spec.bias_volts, first=not fused_first)
    first = None
    if fused_first:
        first = first_layer_factors(U, net.layer(xa, 1), net.layer(st.xb, 1))
    C, _ = loss_and_grad(net.outputs(st.free), y, target_volts)
    n_ok = int(st.ok.sum())
    return Phases(terms, st.scale / max(n_ok, 1), st.free, C, st.stats, st.scale, n_ok, first)


def eqprop_gradient(net: LayeredNetwork, params, X, y, eq: EqProp, target_volts, alg: Newton = Newton(),
                    rng=None):
    """EqProp estimate of ``dC/dparams`` (same keys and shapes, V^2/S), batch mean.

    Returns ``(grads, free_state (B, nF) V, per-sample loss (B,), PhaseStats)``.
    """
    prob = net.problem(params, X)
    st = eqprop_states(prob, y, eq, target_volts, alg, rng)
    ph = phases_from_states(net, prob.U, y, st, target_volts)
    return grads_from_terms(ph.terms, ph.scale, params), ph.free, ph.loss, ph.stats


def adjoint(net: LayeredNetwork, system, x, y, target_volts) -> np.ndarray:
    """``lam`` (B, nF) with ``J(x) lam = dC/dx`` per sample (rows NaN where J is singular).

    ``system``: a :class:`~fastres.system.KernelSystem` (dense Schur solve per sample) or a
    :class:`~fastres.network.LayeredSystem` (the same CG as its Newton directions), as
    ``problem.system(alg)`` returns it."""
    C, dC = loss_and_grad(net.outputs(x), y, target_volts)
    rhs = -net.output_injection(dC)  # dC/dx
    if hasattr(system, "adjoint"):
        return system.adjoint(net.vdfix, x, rhs)
    lam = np.empty_like(x)
    B = x.shape[0]
    n = chunks(B)
    args = (system.GKK, system.GKE, system.gEE, net.vdfix, net.da, net.db, net.dkind, net.dpar, x,
            np.ascontiguousarray(rhs), lam)
    if n == 1:
        _adjoint.adjoint_range(*args, 0, B)
    else:
        _adjoint.adjoint_solve(*args, n)
    return lam


def exact_gradient(net: LayeredNetwork, params, X, y, target_volts, alg: Newton = Newton()):
    """Exact ``dC/dparams`` at equilibrium by implicit differentiation (batch mean, V^2/S).

    ``J lam = dC/dx`` (one adjoint solve per sample); for a conductance between from-node
    voltage ``u`` (with adjoint ``mu``) and to-node voltage ``v`` (adjoint ``nu``):
    ``dC/dg = -sum_s (u - v)(mu - nu)``, where fixed nodes have zero adjoint.
    Returns ``(grads, x (B, nF) V, per-sample loss (B,) V^2)``.
    """
    prob = net.problem(params, X)
    x = solve(prob, alg).x
    C, _ = loss_and_grad(net.outputs(x), y, target_volts)
    lam = adjoint(net, prob.system(alg), x, y, target_volts)
    if not np.all(np.isfinite(lam)):
        raise FastresError("adjoint solve failed: singular Jacobian at the operating point")
    U = prob.U
    B = x.shape[0]
    grads = {}
    for l in range(1, net.L + 1):
        u, v = _from_to(net, U, x, l)
        mu = np.zeros_like(u) if l == 1 else net.gains[l] * net.layer(lam, l - 1)
        nu = net.layer(lam, l)
        G = -(np.sum(u * mu, axis=0)[:, None] + np.sum(v * nu, axis=0)[None, :]
              - u.T @ nu - mu.T @ v)
        grads[f"W{l}"] = G / B
        grads[f"B{l}"] = np.sum((net.spec.bias_volts - v) * nu, axis=0) / B
    return grads, x, C


def flat(grads) -> np.ndarray:
    return np.concatenate([grads[k].ravel() for k in sorted(grads)])


def relative_error(a, b) -> float:
    """``||a - b|| / ||b||`` over all parameters."""
    fa, fb = flat(a), flat(b)
    return float(np.linalg.norm(fa - fb) / max(np.linalg.norm(fb), 1e-300))


def gradcheck_table(params, exact, estimate, loss, L, betas, n_fd, rng) -> dict:
    """The agreement table of :func:`gradcheck` for any network: ``estimate(beta, estimator)``
    gives EqProp's gradient (dict of arrays), ``loss(params)`` the mean loss (V^2), ``exact``
    the exact gradient, ``L`` the output layer's index. Betas are relative to the mean
    output-node conductance (S); finite differences on ``n_fd`` random conductances."""
    G_out = float(np.mean(params[f"W{L}"].sum(axis=0) + params[f"B{L}"]))
    rows = []
    for rb in betas:
        beta = rb * G_out
        row = {"beta_rel": rb, "beta": beta}
        for est in ("one-sided", "centered"):
            row[est] = relative_error(estimate(beta, est), exact)
        rows.append(row)
    fd = []
    keys = sorted(params)
    for _ in range(n_fd):
        k = keys[int(rng.integers(len(keys)))]
        idx = tuple(int(rng.integers(n)) for n in params[k].shape)
        g0 = params[k][idx]
        h = 1e-4 * g0

        def mean_loss(val):
            p = {kk: vv.copy() for kk, vv in params.items()}
            p[k][idx] = val
            return loss(p)

        num = (mean_loss(g0 + h) - mean_loss(g0 - h)) / (2 * h)
        fd.append({"param": k, "index": idx, "exact": float(exact[k][idx]), "finite_difference": num,
                   "rel_error": abs(num - exact[k][idx]) / max(abs(num), abs(exact[k][idx]), 1e-300)})
    return {"eqprop": rows, "finite_difference": fd}


def gradcheck(net: LayeredNetwork, params, X, y, target_volts, betas=(1e-3, 1e-4, 1e-5, 1e-6),
              n_fd=6, rng=None, alg: Newton = Newton()):
    """Agreement table: EqProp (one-sided, centered) vs the exact gradient for each beta, and
    finite differences of the loss vs the exact gradient on ``n_fd`` random conductances.

    Betas are relative to the mean output-node conductance (S), so that ``beta * 1 V`` of error
    moves the outputs by about ``beta`` volts.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    exact, _, _ = exact_gradient(net, params, X, y, target_volts, alg)
    return gradcheck_table(
        params, exact,
        lambda beta, est: eqprop_gradient(net, params, X, y, EqProp(beta, est), target_volts, alg)[0],
        lambda p: float(exact_gradient(net, p, X, y, target_volts, alg)[2].mean()),
        net.L, betas, n_fd, rng)
