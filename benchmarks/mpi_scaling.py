"""MPI data-parallel scaling of ``fastres train``: samples/s per rank, parallel efficiency and
communication time per step, for K = 1 and 2 ranks (one Numba thread per rank), measured in the
same run of this script.

    python benchmarks/mpi_scaling.py [--arch 784-100-10] [--n-train 10000] [--ranks 1 2] [--repeats 3]

Needs the ``mpi`` extra (``pip install -e ".[mpi]"``). Each configuration is a fresh short
training run of two epochs; samples/s and the time inside the Allreduce are read back from the
run file's metrics for the second epoch (the first also loads the compiled kernels from Numba's
cache, a one-off cost of about 0.3 s per process that no number of ranks shortens); medians over
``--repeats``.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="784-100-10")
    ap.add_argument("--diode", default="pwl")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from fastres.store import RunStore
    mpiexec = Path(sys.executable).with_name("mpiexec")
    mpiexec = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install -e '.[mpi]'")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.ranks:
            rates, comm = [], []
            for r in range(args.repeats):
                out = Path(tmp) / f"k{k}_{r}.h5"
                cmd = [mpiexec, "-n", str(k), sys.executable, "-m", "fastres.cli", "train",
                       "--arch", args.arch, "--diode", args.diode, "--epochs", "2", "--n-train",
                       str(args.n_train), "--n-test", "1000", "--batch-size", str(args.batch_size),
                       "--threads", "1", "--quiet", "--out", str(out)]
                subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
                m = RunStore.open(out).metrics()
                rates.append(float(m["samples_per_second"][-1]))
                steps = -(-args.n_train // args.batch_size)
                comm.append(float(m["comm_seconds"][-1]) / steps)
            rows[k] = (float(np.median(rates)), float(np.median(comm)))
    base = rows[args.ranks[0]][0]
    print(f"{args.arch} ({args.diode}), batch {args.batch_size}, {args.n_train} samples, "
          f"median of {args.repeats}; one Numba thread per rank")
    print(f"{'ranks':>5} {'samples/s':>10} {'per rank':>9} {'speed-up':>9} {'efficiency':>10} {'comm/step':>10}")
    for k, (rate, c) in rows.items():
        sp = rate / base
        print(f"{k:5d} {rate:10.0f} {rate / k:9.0f} {sp:9.2f}x {sp / k * args.ranks[0]:10.2f} {1e3 * c:8.3f} ms")
    if 2 in rows and 1 in rows:
        sp = rows[2][0] / rows[1][0]
        print(f"target >= 1.7x at K = 2: {'PASS' if sp >= 1.7 else 'MISS'} ({sp:.2f}x)")


if __name__ == "__main__":
    main()
