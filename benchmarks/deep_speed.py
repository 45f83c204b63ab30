"""Training-step speed of deep layered networks: the dense-Schur path against the layered CG
path (``solver.linear``), per-step medians, the 60,000-sample epoch estimate, and the crossover.

    OPENBLAS_NUM_THREADS=1 python benchmarks/deep_speed.py [--arch 784-1024-1024-10 ...]
        [--diode pwl shockley] [--linear schur cg] [--steps 10] [--warmup 5] [--repeats 3]
    python benchmarks/deep_speed.py --crossover [--widths 64 128 256 384 512]
    python benchmarks/deep_speed.py --arch 784-8192-10 784-32768-10 --diode pwl --steps 3
    python benchmarks/deep_speed.py --arch 784-32768-10 --diode pwl --ab-kernels OLD/kernels

Wide single layers (784-8192-10, 784-32768-10) take several seconds a step on the dense
path; give ``--schur-limit`` a larger value to time it anyway. ``rss`` is the process's peak
resident memory so far (GiB), so run the largest network alone for its own figure.

A step is ``Trainer.step`` on a minibatch of 20 (centered EqProp, default settings; paired
hidden layers where there are two or more) on synthetic MNIST-like pixels (seeded, 80 % zeros),
after ``--warmup`` steps (``solver`` and ``update`` columns: the step's median solver time,
kernel arrays and all phases, and gradient terms plus optimiser, ms; ``cpu``: the process's
CPU time per step, all threads, which other jobs on the machine do not inflate). Both paths of one configuration run in the same process, alternating
repeat by repeat, so their ratio is measured under the same load. ``--crossover`` times
784-h-h-10 for several widths h with both paths. The Schur path is skipped where a step would
take over ``--schur-limit`` seconds (measured on the first warm-up step).

``--ab-kernels DIR`` compares the CG solver kernel (``kernels/layered.py``) with another
version of it, ``DIR`` a copy of an older ``kernels/`` folder: it records the inputs of every
``solve_layered`` call of one training step (after one warm-up step; CG path, one thread is
the intended use) and solves them ``--repeats`` times with either kernel, alternating in one
process, so the two share the machine's load. Prints the CPU time of the step's solves per
round, the median ratio new / old, the Newton iterations per sample and phase, and the largest
difference of the solutions (V).
"""
import argparse
import os
import resource
import sys
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

BATCH = 20
EPOCH = 60000
TARGETS_MIN = {"784-1024-1024-10": 10.0, "784-1024-1024-1024-10": 15.0, "784-32768-10": 20.0}


def _pixels(rng, n, n_in=784):
    X = rng.uniform(0.0, 1.0, (n, n_in))
    X[rng.random((n, n_in)) < 0.8] = 0.0
    return X


class Runner:
    """A Trainer and its synthetic data; ``step()`` returns seconds and solver statistics."""

    def __init__(self, arch, diode, linear, seed=0):
        from fastres.train import TrainConfig, Trainer
        self.trainer = Trainer(TrainConfig(arch=arch, diode=diode, linear=linear))
        self.rng = np.random.default_rng(seed)
        self.trainer.init_state(self.rng)
        self.X = _pixels(self.rng, 50 * BATCH)
        self.y = self.rng.integers(0, 10, self.X.shape[0])
        self.k = 0

    def step(self):
        s = (self.k % 50) * BATCH
        t0 = time.perf_counter()
        c0 = time.process_time()
        st = self.trainer.step(self.X[s:s + BATCH], self.y[s:s + BATCH], self.rng)
        self.k += 1
        st.cpu_seconds = time.process_time() - c0
        return time.perf_counter() - t0, st


def _rss_gib():
    """Peak resident memory of this process so far, GiB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(arch, diode, linears, steps, warmup, repeats, schur_limit):
    """{linear: (median step s, per-repeat medians, mean Newton iterations per sample,
    median solver s, median update s, median CPU s of the process)}."""
    runners = {}
    for lin in linears:
        r = Runner(arch, diode, lin)
        dt, _ = r.step()
        if lin == "schur" and dt > schur_limit:
            print(f"  ({arch} {diode} {lin}: first step {dt:.1f} s > {schur_limit} s, skipped)", flush=True)
            continue
        for _ in range(warmup - 1):
            r.step()
        runners[lin] = r
    out = {lin: [] for lin in runners}
    its = {lin: [] for lin in runners}
    parts = {lin: [] for lin in runners}
    for _ in range(repeats):
        for lin, r in runners.items():
            times = []
            for _ in range(steps):
                dt, st = r.step()
                times.append(dt)
                its[lin].append((st.free_iterations + st.nudged_iterations) / BATCH)
                parts[lin].append((st.solver_seconds, st.update_seconds, st.cpu_seconds))
            out[lin].append(float(np.median(times)))
    return {lin: (float(np.median(v)), v, float(np.mean(its[lin])),
                  *(float(np.median([p[i] for p in parts[lin]])) for i in range(3)))
            for lin, v in out.items()}


def ab_kernels(arch, diode, old_dir, rounds):
    """Old / new ``solve_layered`` on the recorded solves of one step (see the docstring)."""
    import importlib.util
    import fastres.network as fn
    spec = importlib.util.spec_from_file_location("oldkernels", os.path.join(old_dir, "__init__.py"),
                                                  submodule_search_locations=[old_dir])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["oldkernels"] = pkg
    spec.loader.exec_module(pkg)
    old = importlib.import_module("oldkernels.layered")
    new = fn._layered
    solve = new.solve_layered
    calls = []

    def copy(v):  # arrays, and the tuple of conductance matrices (the step updates W in place)
        if isinstance(v, np.ndarray):
            return v.copy()
        if isinstance(v, tuple):
            return tuple(copy(w) for w in v)
        return v

    def record(*a):
        calls.append([copy(v) for v in a])
        return solve(*a)

    r = Runner(arch, diode, "cg")
    r.step()
    new.solve_layered = record
    try:
        r.step()
    finally:
        new.solve_layered = solve
    if not calls:
        raise SystemExit("no solve_layered call recorded (run with NUMBA_NUM_THREADS=1)")

    def run(mod, c):
        a = [copy(v) for v in c]
        t0 = time.process_time()
        (solve if mod is new else mod.solve_layered)(*a)
        return time.process_time() - t0, a

    for c in calls:  # compile / load both
        run(old, c), run(new, c)
    t_old, t_new = [], []
    for k in range(rounds):
        so = sn = 0.0
        for c in calls:
            dt, ao = run(old, c)
            so += dt
            dt, an = run(new, c)
            sn += dt
            if k == 0:  # x is argument 13, iterations 26
                print(f"  phase: Newton iterations per sample old {ao[26].mean():.2f} new "
                      f"{an[26].mean():.2f}, max |x_new - x_old| {np.abs(an[13] - ao[13]).max():.1e} V")
        t_old.append(so)
        t_new.append(sn)
    print(f"{arch} {diode}: CPU ms of the step's solves, old {[round(1e3 * v) for v in t_old]} "
          f"new {[round(1e3 * v) for v in t_new]}; median new / old "
          f"{np.median(np.array(t_new) / np.array(t_old)):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["784-100-100-10", "784-1024-1024-10",
                                                   "784-1024-1024-1024-10"])
    ap.add_argument("--diode", nargs="+", default=["pwl", "shockley"])
    ap.add_argument("--linear", nargs="+", default=["schur", "cg"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--schur-limit", type=float, default=2.0)
    ap.add_argument("--crossover", action="store_true")
    ap.add_argument("--parallel", choices=["auto", "samples", "products"], default=None,
                    help="LayeredSystem.PARALLEL: how the CG path shares a solve among threads")
    ap.add_argument("--widths", nargs="+", type=int, default=[64, 128, 192, 256, 384, 512])
    ap.add_argument("--ab-kernels", metavar="DIR", default=None,
                    help="compare kernels/layered.py with the one in DIR (an older kernels/ copy)")
    args = ap.parse_args()
    if args.ab_kernels:
        for arch in args.arch:
            for diode in args.diode:
                ab_kernels(arch, diode, args.ab_kernels, args.repeats)
        return 0
    import numba
    if args.parallel:
        from fastres.network import LayeredSystem
        LayeredSystem.PARALLEL = args.parallel
    print(f"{numba.get_num_threads()} Numba threads, OPENBLAS_NUM_THREADS=1, batch {BATCH}, "
          f"median of {args.repeats} repeats x {args.steps} steps after {args.warmup} warm-up steps")
    if args.crossover:
        print(f"{'arch':>16} {'diode':>8} {'schur ms':>9} {'cg ms':>8} {'cg/schur':>8} {'schur cpu':>10} "
              f"{'cg cpu':>9} {'cpu ratio':>8}")
        for h in args.widths:
            arch = f"784-{h}-{h}-10"
            for diode in args.diode:
                m = measure(arch, diode, ["schur", "cg"], args.steps, args.warmup, args.repeats, 1e9)
                s, c = m["schur"][0], m["cg"][0]
                sc, cc = m["schur"][5], m["cg"][5]
                print(f"{arch:>16} {diode:>8} {1e3 * s:9.1f} {1e3 * c:8.1f} {c / s:8.2f} {1e3 * sc:10.1f} "
                      f"{1e3 * cc:9.1f} {cc / sc:8.2f}", flush=True)
        return 0
    print(f"{'arch':>22} {'diode':>8} {'linear':>6} {'step ms':>8} {'repeats ms':>16} {'solver':>7} "
          f"{'update':>7} {'cpu ms':>7} {'Newton/sample':>13} {'epoch min':>9} {'target':>12} {'rss':>5}")
    for arch in args.arch:
        for diode in args.diode:
            m = measure(arch, diode, args.linear, args.steps, args.warmup, args.repeats, args.schur_limit)
            for lin, (med, reps, its, solver, update, cpu) in m.items():
                ep = med * EPOCH / BATCH / 60.0
                tgt = TARGETS_MIN.get(arch)
                verdict = "" if tgt is None or lin != "cg" else f"{'PASS' if ep <= tgt else 'MISS'} <= {tgt:.0f}"
                reps_s = "/".join(f"{1e3 * v:.0f}" for v in reps)
                print(f"{arch:>22} {diode:>8} {lin:>6} {1e3 * med:8.1f} {reps_s:>16} {1e3 * solver:7.1f} "
                      f"{1e3 * update:7.1f} {1e3 * cpu:7.1f} {its:13.1f} {ep:9.2f} {verdict:>12} {_rss_gib():5.2f}",
                      flush=True)
            if len(m) == 2:
                (a, ma), (b, mb) = m.items()
                print(f"{'':>22} {'':>8} {b}/{a} = {mb[0] / ma[0]:.3f} (same run)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
