"""Training-step cost of crossbar wires: a minibatch step (free and nudged phases, update) of
the wired network against the wire-free one, interleaved in one process, medians.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_crossbar.py [--arch 784-100-10]
        [--tile 128] [--wire-ohms 1.0] [--steps 3] [--rounds 3] [--threads N]

Each round times ``--steps`` steps of the wire-free network, then of the wired one (tiles of
``--tile`` cells, ``whole`` for one tile), on the same MNIST minibatches (batch 20, pwl
diodes, seed 0, after two warm-up steps each). Prints the median step of each, their ratio
(the issue's target: an epoch with 128 x 128 tiles at most 10x the wire-free epoch), in wall
time and in the process's CPU time (with ``--threads 1`` the CPU time is the step's own work
and much less sensitive to other load on a shared machine than the wall time), the wired
step's split (the per-update reduction of the wires, the phases' Newton solves, the devices'
drops and the update) and the process's peak resident memory (target < 4 GiB).
"""
import argparse
import os
import resource
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="784-100-10")
    ap.add_argument("--tile", default="128")
    ap.add_argument("--wire-ohms", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    import numba
    if args.threads:
        numba.set_num_threads(args.threads)
    from fastres.config import TrainConfig
    from fastres.crossbar import parse_tile
    from fastres.datasets import load_data
    from fastres.train import Trainer
    base = dict(arch=args.arch, diode="pwl", n_train=20 * (2 + args.steps * args.rounds), n_test=10)
    cfgs = {"ideal": TrainConfig(**base).resolved(),
            "wired": TrainConfig(**base, wire_ohms=args.wire_ohms, tile=parse_tile(args.tile)).resolved()}
    data = load_data(cfgs["ideal"])
    X, y = data.x_train, data.y_train
    trainers, rngs = {}, {}
    for k, cfg in cfgs.items():
        trainers[k] = Trainer(cfg)
        rngs[k] = np.random.default_rng(0)
        trainers[k].init_state(rngs[k])
        for s in range(2):  # warm-up (compiles the kernels)
            trainers[k].step(X[20 * s:20 * s + 20], y[20 * s:20 * s + 20], rngs[k])
    times = {k: [] for k in cfgs}
    cpu = {k: [] for k in cfgs}
    split = {"reduction+solves": [], "drops+update": []}
    batch = 2
    for _ in range(args.rounds):
        for k in cfgs:
            for s in range(args.steps):
                i = 20 * (batch + s)
                t0, c0 = time.perf_counter(), time.process_time()
                st = trainers[k].step(X[i:i + 20], y[i:i + 20], rngs[k])
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
                if k == "wired":
                    split["reduction+solves"].append(st.solver_seconds)
                    split["drops+update"].append(st.update_seconds)
        batch += args.steps
    med = {k: float(np.median(v)) for k, v in times.items()}
    mcpu = {k: float(np.median(v)) for k, v in cpu.items()}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.arch}, pwl, batch 20, {numba.get_num_threads()} threads, wires {args.wire_ohms:g} ohm, "
          f"tile {args.tile}; medians of {len(times['ideal'])} steps, interleaved")
    print(f"wire-free step {1e3 * med['ideal']:.1f} ms, wired step {1e3 * med['wired']:.1f} ms, "
          f"ratio {med['wired'] / med['ideal']:.0f}x (target <= 10x)")
    print(f"CPU time: wire-free step {1e3 * mcpu['ideal']:.1f} ms, wired step {1e3 * mcpu['wired']:.1f} ms, "
          f"ratio {mcpu['wired'] / mcpu['ideal']:.0f}x; load average at the end {os.getloadavg()[0]:.1f}")
    print(f"wired split: reduction + phases {1e3 * np.median(split['reduction+solves']):.1f} ms, "
          f"drops + update {1e3 * np.median(split['drops+update']):.1f} ms; epoch of 60,000 samples "
          f"at this rate {3000 * med['wired'] / 60:.1f} min; peak memory {rss:.2f} GiB (target < 4)")


if __name__ == "__main__":
    main()
