"""Gradient estimators: the role that turns a minibatch into equilibrium states.

An estimator has ``states(prob, y, alg, rng) -> States`` (the solver part, run on this rank's
share of the minibatch) and leaves the gradient in the factored form of
:func:`fastres.eqprop.phases_from_states` (two states whose squared voltage drops are
differenced), so every estimator shares one reduction (:mod:`fastres.reducers`) and one update
path (:mod:`fastres.optimizers`):

- :class:`EqPropEstimator`: Equilibrium Propagation, ``centered``, ``one-sided`` or
  ``random-sign`` (the circuit procedure: free and nudged phases).
- :class:`ExactEstimator`: the exact gradient at equilibrium (implicit differentiation, one
  adjoint solve per sample): a reference for what EqProp approximates, not a circuit procedure.
"""
from __future__ import annotations

import numpy as np

from .config import EstimatorConfig
from .eqprop import EqProp, States, eqprop_states, exact_states
from .network import NetworkProblem
from .solver import Newton


def output_conductance(params, L) -> float:
    """Mean conductance (S) into an output node: ``W{L}`` column sums plus ``B{L}``."""
    return float(np.mean(params[f"W{L}"].sum(axis=0) + params[f"B{L}"]))


class EqPropEstimator:
    """Equilibrium Propagation with beta (S) = ``beta_rel`` times the mean output-node
    conductance (recomputed from the current conductances every step)."""

    def __init__(self, cfg: EstimatorConfig):
        self.cfg = cfg

    def beta(self, params, L) -> float:
        return self.cfg.beta_rel * output_conductance(params, L)

    def states(self, prob: NetworkProblem, y, alg: Newton, rng) -> States:
        eq = EqProp(self.beta(prob.params, prob.net.L), self.cfg.estimator)
        return eqprop_states(prob, y, eq, self.cfg.target_volts, alg, rng)


class ExactEstimator(EqPropEstimator):
    """The exact gradient (``estimator = "exact"``); ``beta`` is reported but not used."""

    def states(self, prob: NetworkProblem, y, alg: Newton, rng) -> States:
        return exact_states(prob, y, self.cfg.target_volts, alg)


def make_estimator(cfg: EstimatorConfig):
    """The estimator role of a run's ``estimator`` config section."""
    return ExactEstimator(cfg) if cfg.estimator == "exact" else EqPropEstimator(cfg)
