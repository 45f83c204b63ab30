"""Training-step cost of crossbar wires: a minibatch step (free and nudged phases, update) of
the wired network against the wire-free one, interleaved in one process, medians.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_crossbar.py [--arch 784-100-10]
        [--tile 128] [--wire-ohms 1.0] [--steps 3] [--rounds 3] [--threads N]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_crossbar.py --profile-tile 128x100 [--rounds 7]

Each round times ``--steps`` steps of the wire-free network, then of the wired one (tiles of
``--tile`` cells, ``whole`` for one tile), on the same MNIST minibatches (batch 20, pwl
diodes, seed 0, after two warm-up steps each). Prints the median step of each, their ratio
(the issue's target: an epoch with 128 x 128 tiles at most 10x the wire-free epoch), in wall
time and in the process's CPU time (with ``--threads 1`` the CPU time is the step's own work
and much less sensitive to other load on a shared machine than the wall time), the wired
step's split (the per-update reduction of the wires, the phases' Newton solves, the devices'
drops and the update) and the process's peak resident memory (target < 4 GiB).

``--profile-tile TRxTC`` profiles the multifrontal factor of one tile of that shape instead
(1 ohm wires, devices uniform in 1e-6..1e-4 S): the flops of each front-size class counted
from the symbolic structure (``m_F m_U^2 + m_F^2 m_U + m_F^3 / 3`` a front), the CPU time of
its eliminations and assemblies (each front timed alone, medians over ``--rounds`` factors,
the timer's own cost subtracted) and the achieved GFlop/s, and the back substitution of 40
right-hand sides (the free and nudged states of a batch of 20) with its flops.
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
    ap.add_argument("--profile-tile", metavar="TRxTC")
    args = ap.parse_args()
    if args.profile_tile:
        return profile_tile(*(int(v) for v in args.profile_tile.lower().split("x")), args.rounds)
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


def profile_tile(Tr, Tc, rounds):
    """Print the factor's flops, time and GFlop/s per front-size class of one Tr x Tc tile."""
    import numba
    from numba import njit
    from fastres.crossbar import TilePattern
    from fastres.kernels import wires as W

    @njit
    def clock():
        with numba.objmode(t="f8"):
            t = time.process_time()
        return t

    @njit
    def timed_factor(vals, indptr, fstart, uptr, cptr, cidx, uoff, ustk, work, moff, mstore, vrel, urel,
                     t_asm, t_elim):
        nf = fstart.shape[0] - 1
        for f in range(nf):
            t0 = clock()
            W.assemble(f, vals, indptr, fstart, uptr, cptr, cidx, uoff, ustk, work, moff, mstore, vrel, urel)
            t1 = clock()
            if f < nf - 1:
                W.eliminate(f, fstart, uptr, uoff, work, moff, mstore, W.FACTOR_BLAS_MIN)
                n = (uptr[f + 1] - uptr[f]) ** 2  # the move down the stack, as in W.factor
                for a in range(n):
                    work[ustk[f] + a] = work[uoff[f] + a]
            t_elim[f] += clock() - t1
            t_asm[f] += t1 - t0

    @njit
    def clock_cost(n):
        s = 0.0
        for _ in range(n):
            t0 = clock()
            s += clock() - t0
        return s / n

    rng = np.random.default_rng(0)
    pat = TilePattern(Tr, Tc)
    vals = pat.values(rng.uniform(1e-6, 1e-4, (Tr, Tc)), 1.0, 1.0, 1.0)
    work, mstore = np.empty(pat.work_size), np.empty(pat.moff[-1])
    args = (vals, pat.indptr, pat.fstart, pat.uptr, pat.cptr, pat.cidx, pat.uoff, pat.ustk, work, pat.moff, mstore,
            pat.vrel, pat.urel)
    mF, mU = np.diff(pat.fstart), np.diff(pat.uptr)
    m = mF + mU
    flops = (mF * mU ** 2 + mF ** 2 * mU + mF ** 3 / 3.0)
    flops[-1] = 0.0  # the root is assembled, not eliminated
    nf = mF.size
    clock_cost(10)
    tick = float(np.median([clock_cost(2000) for _ in range(5)]))
    ta, te = np.zeros((rounds, nf)), np.zeros((rounds, nf))
    timed_factor(*args, np.zeros(nf), np.zeros(nf))
    tf, tb = [], []
    N, k, B = 2 * Tr * Tc, Tr + Tc, 40
    w = np.empty((N, B))
    ends = rng.uniform(-1, 1, (k, B))
    for r in range(rounds):
        timed_factor(*args, ta[r], te[r])
        c0 = time.process_time()
        W.factor(*args)
        c1 = time.process_time()
        w[N - k:] = ends
        W.back_substitute(pat.fstart, pat.uptr, pat.uidx, pat.moff, mstore, w)
        tb.append(time.process_time() - c1)
        tf.append(c1 - c0)
    ta, te = np.median(ta, axis=0) - tick, np.median(te, axis=0) - tick
    print(f"tile {Tr} x {Tc}: {nf} fronts, factor {flops.sum():.3g} flops in {1e3 * np.median(tf):.2f} ms CPU "
          f"({flops.sum() / np.median(tf) / 1e9:.2f} GFlop/s), back substitution of {B} right-hand sides "
          f"{2 * B * (mF * m)[:-1].sum():.3g} flops in {1e3 * np.median(tb):.2f} ms; medians of {rounds}; "
          f"fronts of m >= {W.FACTOR_BLAS_MIN} by LAPACK/BLAS; timer cost {1e6 * tick:.2f} us subtracted a front")
    edges = [0, 16, 32, 48, 64, 96, 128, 256, 1 << 30]
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (m >= a) & (m < b)
        sel[-1] = False
        if sel.any():
            t_e, t_a = te[sel].sum(), ta[sel].sum()
            print(f"  m in [{a:3d}, {b:4d}): {sel.sum():5d} fronts, {flops[sel].sum():9.3g} flops, eliminate "
                  f"{1e3 * t_e:6.2f} ms ({flops[sel].sum() / max(t_e, 1e-9) / 1e9:5.2f} GFlop/s), "
                  f"assemble {1e3 * t_a:6.2f} ms")
    print(f"  root (m = {m[-1]}): assemble {1e3 * ta[-1]:.2f} ms")


if __name__ == "__main__":
    main()
