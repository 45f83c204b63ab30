"""A/B speed comparison of two fastres installations on this machine, interleaved.

    python benchmarks/ab_compare.py OLD_PYTHON NEW_PYTHON [--rounds 5] [--cases ...]

Each round runs every case once in the old and once in the new installation (alternating, so
a noisy neighbour hits both alike), each in a fresh process that loads the compiled kernels,
warms up, then times ``--steps`` calls. Prints the median per case and the ratio new / old of
the medians (above 1: the new one is slower). The cases are the asv ``TrainStep`` and solver
benchmarks' workloads, written against the public API both versions share (``TrainConfig``,
``Trainer.step``; ``DCProblem``, ``solve``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

CASE_CODE = {
    "step": textwrap.dedent("""
        import time, numpy as np
        from fastres.train import TrainConfig, Trainer
        tr = Trainer(TrainConfig(arch=ARCH, diode=DIODE))
        rng = np.random.default_rng(0)
        tr.init_state(rng)
        X = rng.uniform(0, 1, (4000, 784)); X[rng.random(X.shape) < 0.8] = 0.0
        y = rng.integers(0, 10, 4000)
        k = 0
        def step():
            global k
            s = (k % 200) * 20
            tr.step(X[s:s + 20], y[s:s + 20], rng)
            k += 1
        for _ in range(20):
            step()
        t = []
        for _ in range(STEPS):
            t0 = time.perf_counter(); step(); t.append(time.perf_counter() - t0)
        print(float(np.median(t)))
    """),
    "solve": textwrap.dedent("""
        import time, numpy as np
        from fastres import DCProblem, Newton, solve
        from fastres.generators import input_batch, layered_circuit
        rng = np.random.default_rng(0)
        c = layered_circuit((784, 100, 10), rng)
        prob = DCProblem(c.compile(), input_batch(784, 10000, rng))
        solve(prob, Newton())
        t = []
        for _ in range(max(3, STEPS // 10)):
            t0 = time.perf_counter(); solve(prob, Newton()); t.append(time.perf_counter() - t0)
        print(float(np.median(t)))
    """),
}

CASES = ["step:784-100-10:pwl", "step:784-100-10:shockley", "step:784-100-100-10:pwl",
         "step:784-100-100-10:shockley", "step:784-1024-10:pwl", "solve:784-100-10:shockley"]


def run_case(python, case, steps):
    kind, arch, diode = case.split(":")
    code = f"ARCH, DIODE, STEPS = {arch!r}, {diode!r}, {steps}\n" + CASE_CODE[kind]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd="/tmp")
    if out.returncode != 0:
        raise RuntimeError(f"{python} {case}: {out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--cases", nargs="*", default=CASES)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    import numpy as np
    res = {c: {"old": [], "new": []} for c in args.cases}
    for r in range(args.rounds):
        for c in args.cases:
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for who in order:
                res[c][who].append(run_case(getattr(args, who), c, args.steps))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"{'case':34} {'old (ms)':>10} {'new (ms)':>10} {'new/old':>8}")
    table = {}
    for c in args.cases:
        o, n = np.median(res[c]["old"]), np.median(res[c]["new"])
        table[c] = {"old_s": o, "new_s": n, "ratio": n / o, "old_all": res[c]["old"], "new_all": res[c]["new"]}
        print(f"{c:34} {1e3 * o:10.2f} {1e3 * n:10.2f} {n / o:8.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
