"""Training speed of ``fastres train``: one full MNIST epoch (60,000 samples: free and nudged
phases and updates) per architecture and diode model, with samples/s per phase and the share of
time in the solver, the update and Python. Targets on the 2-core machine: 784-100-10 <= 10 s,
784-1024-10 <= 60 s.

    OPENBLAS_NUM_THREADS=1 python benchmarks/train_speed.py [--arch 784-100-10 784-1024-10]
        [--diode pwl shockley] [--n-train 60000] [--repeats 1]

Each configuration is a fresh run (default hyper-parameters, seed 0) of one epoch; the numbers
come from the run file's metrics. Medians over ``--repeats``.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

TARGETS = {"784-100-10": 10.0, "784-1024-10": 60.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["784-100-10", "784-1024-10"])
    ap.add_argument("--diode", nargs="+", default=["pwl", "shockley"])
    ap.add_argument("--n-train", type=int, default=60000)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    import numba
    from fastres.store import RunStore
    from fastres.train import TrainConfig, train
    print(f"{numba.get_num_threads()} Numba threads, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}; "
          f"{args.n_train} samples, batch {args.batch_size}, median of {args.repeats}")
    print(f"{'arch':>12} {'diode':>8} {'epoch s':>8} {'samples/s':>9} {'free ph/s':>9} {'nudged/s':>9} "
          f"{'solver':>7} {'update':>7} {'python':>7} {'target':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            for diode in args.diode:
                rows = []
                for r in range(args.repeats):
                    cfg = TrainConfig(arch=arch, diode=diode, epochs=1, n_train=args.n_train, n_test=1000,
                                      batch_size=args.batch_size)
                    path = Path(tmp) / f"{arch}-{diode}-{r}.h5"
                    train(cfg, path, overwrite=True, log=lambda s: None, progress=False)
                    m = RunStore.open(path).metrics()
                    rows.append({k: float(v[-1]) for k, v in m.items()})
                med = {k: float(np.median([row[k] for row in rows])) for k in rows[0]}
                T = med["epoch_seconds"]
                full = T * 60000 / args.n_train
                tgt = TARGETS.get(arch)
                verdict = "" if tgt is None else f"{'PASS' if full <= tgt else 'MISS'} <= {tgt:.0f} s"
                print(f"{arch:>12} {diode:>8} {T:8.1f} {med['samples_per_second']:9.0f} "
                      f"{args.n_train / med['free_phase_seconds']:9.0f} "
                      f"{args.n_train / med['nudged_phase_seconds']:9.0f} "
                      f"{100 * med['solver_seconds'] / T:6.0f}% {100 * med['update_seconds'] / T:6.0f}% "
                      f"{100 * med['python_seconds'] / T:6.0f}% {verdict:>12}", flush=True)
    print("(nudged/s counts samples through both nudged phases of the centered estimator; "
          "a 60,000-sample epoch time is extrapolated linearly when --n-train is smaller)")


if __name__ == "__main__":
    sys.exit(main())
