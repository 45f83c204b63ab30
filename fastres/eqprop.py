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

import numba
import numpy as np

from .errors import FastresError
from .kernels import adjoint as _adjoint
from .kernels import updates as _updates
from .network import LayeredNetwork
from .solve import chunks

ESTIMATORS = ("centered", "one-sided", "random-sign")


@dataclass(frozen=True)
class EqProp:
    """The EqProp algorithm config: ``beta`` (S) and the gradient estimator."""

    beta: float = 1e-5
    estimator: str = "centered"

    def __post_init__(self):
        if not (np.isfinite(self.beta) and self.beta > 0):
            raise FastresError(f"beta={self.beta!r} must be a finite number > 0 (siemens)")
        if self.estimator not in ESTIMATORS:
            raise FastresError(f"unknown estimator {self.estimator!r}: use one of {', '.join(ESTIMATORS)}")


def loss_and_grad(out, y, target_volts):
    """Per-sample loss (B,) in V^2 and ``dC/d(out)`` (B, C) in V for outputs ``out`` (B, C)."""
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
    """Equilibrium states of one EqProp step for a batch (all (B, nF), V): the free state, and
    the two states whose squared drops are differenced (``xa`` minus ``xb``, times ``scale``,
    divided by the number of samples that converged), with per-sample ``ok`` flags."""

    free: np.ndarray
    xa: np.ndarray
    xb: np.ndarray
    ok: np.ndarray
    scale: float
    stats: PhaseStats


def eqprop_states(net: LayeredNetwork, params, X, y, eq: EqProp, target_volts, rng=None,
                  arrays=None) -> States:
    """Free and nudged phases for a batch (the solver part of an EqProp step)."""
    t0 = time.perf_counter()
    arrays = net.arrays(params) if arrays is None else arrays
    b = net.source_currents(X, params, arrays)
    cache = net.factor_cache(X.shape[0])  # the phases share conductances, hence most factors
    xf, itf, stf = net.solve_b(b, arrays, x0=net.initial_guess(b, params, arrays), check=False, cache=cache)
    t1 = time.perf_counter()
    out = net.outputs(xf)
    C, dC = loss_and_grad(out, y, target_volts)
    beta = eq.beta
    if eq.estimator == "random-sign":
        if rng is None:
            raise FastresError("the random-sign estimator needs a random generator")
        beta = beta * (1.0 if rng.random() < 0.5 else -1.0)
    inj = net.output_injection(beta * dC)
    xp, itp, stp = net.solve_b(b + inj, arrays, x0=xf, check=False, cache=cache)
    ok = (stf == 0) & (stp == 0)
    nudged_it = int(itp.sum())
    if eq.estimator == "centered":
        xm, itm, stm = net.solve_b(b - inj, arrays, x0=xf, check=False, cache=cache)
        ok &= stm == 0
        nudged_it += int(itm.sum())
        xa, xb, scale = xp, xm, 1.0 / (4.0 * eq.beta)
    else:
        xa, xb, scale = xp, xf, 1.0 / (2.0 * beta)
    stats = PhaseStats(int(itf.sum()), nudged_it, int((~ok).sum()), X.shape[0], t1 - t0,
                       time.perf_counter() - t1)
    return States(xf, xa, xb, ok, scale, stats)


def first_layer_factors(U, va, vb):
    """The input layer's EqProp gradient in factored form, for
    :func:`fastres.kernels.updates.fixed_from_step`: ``(uT (n_from, B), d = va - vb (B, n_to),
    col = sum_s va^2 - vb^2 (n_to,))`` in V, V and V^2, from the input source voltages ``U``
    (B, n_from) and the first layer's node voltages in the two phases ``va, vb`` (B, n_to)."""
    d = va - vb
    col = np.einsum("sj,sj->j", va, va) - np.einsum("sj,sj->j", vb, vb)
    return np.ascontiguousarray(U.T), np.ascontiguousarray(d), col


def phases_from_states(net: LayeredNetwork, X, y, st: States, target_volts, fused_first=False) -> "Phases":
    """Gradient terms and losses of a batch from its equilibrium states. Samples that did not
    converge contribute nothing (their two states are made equal) and are not counted.

    With ``fused_first`` the input layer's ``W1`` gets factors (``Phases.first``, see
    :func:`first_layer_factors`) for the fused update instead of terms."""
    xa = st.xa
    if not st.ok.all():
        xa = xa.copy()
        xa[~st.ok] = st.xb[~st.ok]
    U = net.input_voltages(X)
    terms = _drop_terms(net, U, xa, st.xb, net.spec.bias_volts, first=not fused_first)
    first = None
    if fused_first:
        first = first_layer_factors(U, net.layer(xa, 1), net.layer(st.xb, 1))
    C, _ = loss_and_grad(net.outputs(st.free), y, target_volts)
    n_ok = int(st.ok.sum())
    return Phases(terms, st.scale / max(n_ok, 1), st.free, C, st.stats, st.scale, n_ok, first)


def eqprop_phases(net: LayeredNetwork, params, X, y, eq: EqProp, target_volts, rng=None,
                  arrays=None) -> Phases:
    """Free and nudged phases for a batch; the gradient in factored form (no per-conductance loop).

    Samples whose free or nudged solve did not converge are left out of the gradient and counted.
    """
    st = eqprop_states(net, params, X, y, eq, target_volts, rng, arrays)
    return phases_from_states(net, X, y, st, target_volts)


def eqprop_gradient(net: LayeredNetwork, params, X, y, eq: EqProp, target_volts, rng=None,
                    arrays=None):
    """EqProp estimate of ``dC/dparams`` (same keys and shapes, V^2/S), batch mean.

    Returns ``(grads, free_state (B, nF) V, per-sample loss (B,), PhaseStats)``.
    """
    ph = eqprop_phases(net, params, X, y, eq, target_volts, rng, arrays)
    return grads_from_terms(ph.terms, ph.scale, params), ph.free, ph.loss, ph.stats


def exact_gradient(net: LayeredNetwork, params, X, y, target_volts, arrays=None):
    """Exact ``dC/dparams`` at equilibrium by implicit differentiation (batch mean, V^2/S).

    ``J lam = dC/dx`` (one adjoint solve per sample); for a conductance between from-node
    voltage ``u`` (with adjoint ``mu``) and to-node voltage ``v`` (adjoint ``nu``):
    ``dC/dg = -sum_s (u - v)(mu - nu)``, where fixed nodes have zero adjoint.
    """
    arrays = net.arrays(params) if arrays is None else arrays
    GKK, GKE, gEE, _ = arrays
    U = net.input_voltages(X)
    b = net.source_currents(X, params, arrays)
    x, _, _ = net.solve_b(b, arrays, x0=net.initial_guess(b, params, arrays))
    out = net.outputs(x)
    C, dC = loss_and_grad(out, y, target_volts)
    rhs = -net.output_injection(dC)  # dC/dx
    lam = np.empty_like(x)
    B = x.shape[0]
    n = chunks(B)
    args = (GKK, GKE, gEE, net.vdfix, net.da, net.db, net.dkind, net.dpar, x,
            np.ascontiguousarray(rhs), lam)
    if n == 1:
        _adjoint.adjoint_range(*args, 0, B)
    else:
        _adjoint.adjoint_solve(*args, n)
    if not np.all(np.isfinite(lam)):
        raise FastresError("adjoint solve failed: singular Jacobian at the operating point")
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


def gradcheck(net: LayeredNetwork, params, X, y, target_volts, betas=(1e-3, 1e-4, 1e-5, 1e-6),
              n_fd=6, rng=None):
    """Agreement table: EqProp (one-sided, centered) vs the exact gradient for each beta, and
    finite differences of the loss vs the exact gradient on ``n_fd`` random conductances.

    Betas are relative to the mean output-node conductance (S), so that ``beta * 1 V`` of error
    moves the outputs by about ``beta`` volts.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    exact, _, _ = exact_gradient(net, params, X, y, target_volts)
    G_out = float(np.mean(params[f"W{net.L}"].sum(axis=0) + params[f"B{net.L}"]))
    rows = []
    for rb in betas:
        beta = rb * G_out
        row = {"beta_rel": rb, "beta": beta}
        for est in ("one-sided", "centered"):
            g, _, _, _ = eqprop_gradient(net, params, X, y, EqProp(beta, est), target_volts)
            row[est] = relative_error(g, exact)
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
            _, _, C = exact_gradient(net, p, X, y, target_volts)
            return float(C.mean())

        num = (mean_loss(g0 + h) - mean_loss(g0 - h)) / (2 * h)
        fd.append({"param": k, "index": idx, "exact": float(exact[k][idx]), "finite_difference": num,
                   "rel_error": abs(num - exact[k][idx]) / max(abs(num), abs(exact[k][idx]), 1e-300)})
    return {"eqprop": rows, "finite_difference": fd}
