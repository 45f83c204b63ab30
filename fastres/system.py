"""The contract between the Python layer and the Newton kernels: :class:`KernelSystem`."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class KernelSystem(NamedTuple):
    """The batch-independent arrays of a DC system, as the Newton kernels take them.

    Free nodes (the unknowns) are ordered ``[K | E]``: ``nK`` nodes of a dense block, then
    ``nE`` nodes of an independent set (no resistor or diode between two of them), whose
    Jacobian block is diagonal and is eliminated exactly in every Newton step.

    - ``GKK`` (nK, nK), ``GKE`` (nK, nE), ``gEE`` (nE,): the resistor (linear) part of the
      Jacobian on the free nodes, S.
    - ``b0`` (nF,): constant source currents into the free nodes, A (bias sources of a layered
      network; zeros for a circuit, whose source currents are all per sample).
    - ``da``, ``db`` (nD,) int64: diode anode and cathode as indices of the extended voltage
      vector ``[free nodes (nF) | fixed voltages that diodes touch]``; ``dkind`` (nD,) int64 the
      device kind (see :data:`fastres.devices.DEVICE_KINDS`), ``dpar`` (nD, NPAR) float64 the
      device parameter rows (see ``kernels/devices.py``).

    The batch part of a solve is ``b`` (B, nF) source currents (A) and ``vdfix`` (B, nXd) or
    (1, nXd) the fixed voltages (V) at extended indices ``nF..``. The residual at free-node
    voltages ``x`` (V) is ``G_FF x - b + i_diodes(x)`` (A).
    """

    GKK: np.ndarray
    GKE: np.ndarray
    gEE: np.ndarray
    b0: np.ndarray
    da: np.ndarray
    db: np.ndarray
    dkind: np.ndarray
    dpar: np.ndarray

    @property
    def nK(self) -> int:
        return self.GKK.shape[0]

    @property
    def nE(self) -> int:
        return self.gEE.shape[0]

    @property
    def nF(self) -> int:
        return self.GKK.shape[0] + self.gEE.shape[0]

    @property
    def nD(self) -> int:
        return self.da.shape[0]
