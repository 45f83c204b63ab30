"""Reducers: the role that combines the ranks' shares of a minibatch (data parallelism).

``reduce(states, B, lo, hi) -> States`` takes this rank's :class:`~fastres.eqprop.States` of
samples ``lo:hi`` of a minibatch of ``B`` and returns the whole minibatch's. With one process
(:class:`IdentityReducer`) that is the input; under MPI (:class:`MPIReducer`) the states travel
in ONE contiguous buffer summed by one Allreduce (each rank fills its own samples' rows, the
others contribute exact zeros), after which every rank holds the whole batch's states and
applies the same update -- bit-identical for any number of ranks.
"""
from __future__ import annotations

import numpy as np

from .eqprop import PhaseStats, States


class IdentityReducer:
    """One process: nothing to combine."""

    comm = None

    def share(self, B):
        """This rank's samples ``(lo, hi)`` of a minibatch of ``B``."""
        return 0, B

    def reduce(self, st: States, B, lo, hi) -> States:
        return st


class MPIReducer:
    """Data parallelism over an mpi4py communicator (see :mod:`fastres.parallel`)."""

    def __init__(self, comm):
        self.comm = comm

    def share(self, B):
        cut = np.linspace(0, B, self.comm.Get_size() + 1).astype(int)
        r = self.comm.Get_rank()
        return int(cut[r]), int(cut[r + 1])

    def reduce(self, st: States, B, lo, hi) -> States:
        from mpi4py import MPI
        nF = st.free.shape[1]
        buf = np.zeros(3 * B * nF + B + 3)
        view = buf[:3 * B * nF].reshape(3, B, nF)
        view[0, lo:hi] = st.free
        view[1, lo:hi] = st.xa
        view[2, lo:hi] = st.xb
        buf[3 * B * nF + lo:3 * B * nF + hi] = st.ok
        buf[-3:] = (st.stats.free_iterations, st.stats.nudged_iterations, st.stats.nonconverged)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        ok = buf[3 * B * nF:3 * B * nF + B] > 0.5
        stats = PhaseStats(int(buf[-3]), int(buf[-2]), int(buf[-1]), B, st.stats.free_seconds,
                           st.stats.nudged_seconds)
        return States(view[0], view[1], view[2], ok, st.scale, stats)


def make_reducer(comm=None):
    return IdentityReducer() if comm is None else MPIReducer(comm)
