"""MPI data parallelism (mpi4py, the HPC standard): who am I, and how many of us are there.

``mpirun -n K fastres train ...`` (or ``srun`` under Slurm) starts K copies; each solves the
free and nudged phases for its share of every minibatch, the update terms of all conductances
are summed with one ``Allreduce`` of a single contiguous buffer per step, and every rank
applies the same update (see :meth:`fastres.train.Trainer.step`). Rank 0 alone writes the HDF5
file. The global batch and the learning rule do not depend on K; results agree across K up to
floating-point summation order.
"""
from __future__ import annotations

import os

from .errors import FastresError

_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "HYDRA_CONTROL_FD")


def launched_by_mpi() -> bool:
    """True when an MPI launcher (mpirun/mpiexec, or srun with several tasks) started us."""
    if any(v in os.environ for v in _LAUNCHER_VARS):
        return True
    try:
        return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ
    except ValueError:
        return False


def world():
    """``MPI.COMM_WORLD`` when running under MPI with more than one rank, else None."""
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise FastresError("started by an MPI launcher but mpi4py is not installed: "
                           "pip install -e '.[mpi]' (brings mpi4py and an MPI library)") from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def abort(comm, code: int) -> None:
    """Stop every rank (a failed rank must not leave the others waiting in a collective)."""
    if comm is not None:
        comm.Abort(code)
