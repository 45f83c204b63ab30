"""Static power of solved circuits: what the diodes dissipate, per sample.

The resistors' share is a few BLAS products over the batch (see
:func:`fastres.evaluate.static_power`); the diodes' is this loop.
"""
import numpy as np
from numba import njit, prange

from .blocks import block_range
from .devices import diode_ig
from .stamping import load_sample


@njit(cache=True)
def diode_power_range(x, vdfix, da, db, dkind, dpar, out, lo, hi):
    """Samples ``lo..hi-1`` of :func:`diode_power` (serial)."""
    vext = np.empty(x.shape[1] + vdfix.shape[1])
    for s in range(lo, hi):
        load_sample(x, vdfix, s, vext)
        p = 0.0
        for k in range(da.shape[0]):
            v = vext[da[k]] - vext[db[k]]
            i, _ = diode_ig(dkind[k], dpar[k], v)
            p += i * v
        out[s] = p


@njit(cache=True, parallel=True)
def diode_power(x, vdfix, da, db, dkind, dpar, out, nchunks):
    """``out[s] = sum_k i_k(v_k) v_k`` (W): the power the diodes of sample ``s`` dissipate at
    free-node voltages ``x`` (B, nF) V and fixed voltages ``vdfix`` (B or 1, nXd) V; chunks of
    samples in parallel (the result does not depend on ``nchunks``)."""
    B = x.shape[0]
    for c in prange(nchunks):
        lo, hi = block_range(B, nchunks, c)
        if lo < hi:
            diode_power_range(x, vdfix, da, db, dkind, dpar, out, lo, hi)
