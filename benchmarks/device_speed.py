"""Epoch time of pulsed devices against ideal ones, interleaved (issue 11's speed target:
with every non-ideality on, a 784-100-10 epoch at most 1.5x the ideal epoch).

    python benchmarks/device_speed.py [--rounds 3] [--n-train 60000] [--threads 1]
        [--data DIR] [--cases ideal realistic realistic+acc] [--python OTHER_PYTHON ...]

Each round trains one epoch of every case, in turn, in a fresh ``fastres train`` process
(``--arch 784-100-10 --diode pwl --epochs 1``), and reads the epoch's ``epoch_seconds``
(training only, evaluation excluded) from the run file. Prints each case's median and min
and the ratios of the medians to the ideal case's (above 1: slower). On a shared machine,
interleaving makes a noisy neighbour hit every case alike. ``--python``: also run every case
with these interpreters (other fastres installations, e.g. a checkout of main in its own
venv), interleaved with this one's within each round; the ratios are taken within each
installation.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CASES = {"ideal": [], "realistic": ["--device", "realistic"],
         "realistic+acc": ["--device", "realistic", "--device-param", "accumulate=true"]}


def epoch_seconds(case, args, tmp, python=sys.executable):
    from fastres.store import RunStore
    out = Path(tmp) / f"{case}.h5"
    cmd = [python, "-m", "fastres.cli", "train", "--arch", "784-100-10", "--diode", "pwl",
           "--epochs", "1", "--threads", str(args.threads), "--n-train", str(args.n_train),
           "--n-test", "100", "--quiet", "--overwrite", "--out", str(out), *CASES[case]]
    if args.data:
        cmd += ["--data", str(Path(args.data).resolve())]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    # run from the temporary directory: ``-m`` puts the working directory first on the path,
    # and a checkout there would shadow the interpreter's own installation
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    if r.returncode != 0:
        raise RuntimeError(f"{case}: {r.stderr}")
    return float(RunStore.open(out).metrics()["epoch_seconds"][-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=60000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--python", nargs="*", default=[], help="other installations' interpreters")
    args = ap.parse_args(argv)
    pythons = [sys.executable, *args.python]
    times = {(p, c): [] for p in pythons for c in args.cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for c in args.cases:
                for p in pythons:
                    times[p, c].append(epoch_seconds(c, args, tmp, p))
                    who = f" [{p}]" if args.python else ""
                    print(f"round {r + 1} {c}{who}: {times[p, c][-1]:.1f} s", flush=True)
    for p in pythons:
        base = np.median(times[p, "ideal"]) if "ideal" in args.cases else None
        for c in args.cases:
            t = times[p, c]
            ratio = f", ratio to ideal {np.median(t) / base:.2f}" if base else ""
            who = f" [{p}]" if args.python else ""
            print(f"{c}{who}: median {np.median(t):.1f} s, min {np.min(t):.1f} s over {len(t)} epochs{ratio}")


if __name__ == "__main__":
    main()
