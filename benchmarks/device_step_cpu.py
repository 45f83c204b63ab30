"""CPU time of one 784-100-10 training step (batch 20, pwl) and of its parts, ideal or pulsed.

    python benchmarks/device_step_cpu.py ideal|realistic ["dict(read_noise=0.0)"]
        [--data DIR] [--steps 150] [--skip 30]
    python benchmarks/device_step_cpu.py realistic --ab-kernels OLD/kernels --data DIR
        [--steps 3000]

CPU time (``time.thread_time``; run with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 so all work
is on this thread) is immune to the waiting a shared machine adds to wall-clock time. Prints
the median over steps ``skip..steps-1`` of the whole step and of its parts: the read
(``apparent``: read noise), the system build (``system``), the estimator (``estimator``: the
solves), the optimiser's step (``opt.step``: desired changes and pulses) and the rest
(``other``: input voltages, problem set-up, gradient terms); the mean pulses a step; and the
median wall-clock time of a step (which a shared machine inflates).
``--data DIR``: MNIST's first training samples in the order a training run's seed-0 epoch
takes them (the firing rate of real data), else random sparse inputs. Run the cases in
alternation, in fresh processes, to compare them.
``--steps 3000 --skip 0`` with ``--data``: the whole first epoch (60,000 samples), the steps a
``device_speed.py`` epoch times. The default window (steps 30..149) sees fewer pulses a step
than the epoch's mean (MNIST, realistic: 4,354 against 5,287) and the solves of barely trained
networks, and so a smaller realistic / ideal ratio than whole epochs (README, Real devices).

``--ab-kernels DIR`` (``DIR`` another version's ``kernels/`` folder, e.g. main's): three
trainers in one process, step after step in turn on the same minibatches: ideal, the device
with this installation's pulse kernels, and the device with ``DIR``'s ``pulses.py`` (the rest
of the code is this installation's). Each step's CPU time is taken per trainer, so the three
share the machine's load step by step; prints the sum and median over steps ``skip..`` of each, the
ratios to the ideal trainer, and whether the two device runs ended bit-identical (they must:
the kernels change no bit). The read's and the optimiser's CPU time are shown too.
"""
import argparse
import importlib.util
import os
import sys
import time

import numpy as np

from fastres.config import DataConfig, DeviceConfig
from fastres.train import TrainConfig, Trainer

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("device")
ap.add_argument("extra", nargs="?", default="{}", help="DeviceConfig overrides, a Python dict")
ap.add_argument("--data", help="MNIST directory (else random sparse inputs)")
ap.add_argument("--steps", type=int, default=150)
ap.add_argument("--skip", type=int, default=30)
ap.add_argument("--ab-kernels", metavar="DIR", help="another version's kernels/ folder (see above)")
args = ap.parse_args()
extra = eval(args.extra)
cfg = TrainConfig(arch="784-100-10", diode="pwl")
ideal_cfg = cfg
if args.device != "ideal":
    cfg = cfg.replace(device=DeviceConfig(preset=args.device, **extra))
n = 20 * args.steps


def samples(rng):
    if args.data:
        from fastres.datasets import load_data
        data = load_data(cfg.replace(data=DataConfig(data=args.data)))
        order = rng.permutation(data.x_train.shape[0])[:n]
        return data.x_train[order], data.y_train[order]
    X = rng.uniform(0, 1, (n, 784))
    X[rng.random(X.shape) < 0.8] = 0.0
    return X, rng.integers(0, 10, n)


def wrap(obj, name, T, key):
    f = getattr(obj, name)

    def g(*a, **k):
        t0 = time.thread_time()
        r = f(*a, **k)
        T[key].append(time.thread_time() - t0)
        return r
    setattr(obj, name, g)


def ab_kernels(old_dir):
    """The three interleaved trainers of ``--ab-kernels`` (see the module docstring)."""
    import fastres.pulsed as fp
    if args.device == "ideal":
        sys.exit("--ab-kernels compares device kernels: give a device preset, not ideal")
    old_dir = os.path.abspath(old_dir)
    spec = importlib.util.spec_from_file_location("oldkernels", os.path.join(old_dir, "__init__.py"),
                                                  submodule_search_locations=[old_dir])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["oldkernels"] = pkg
    spec.loader.exec_module(pkg)
    kernels = {"new": fp._kp, "old": importlib.import_module("oldkernels.pulses")}
    runs = {"ideal": (ideal_cfg, None), "new": (cfg, "new"), "old": (cfg, "old")}
    trs, rngs, T = {}, {}, {}
    X = y = None
    for name, (c, kern) in runs.items():
        rngs[name] = np.random.default_rng(0)
        if kern:
            fp._kp = kernels[kern]  # the devices are drawn (pack_devices) with their kernels
        trs[name] = Trainer(c)
        trs[name].init_state(rngs[name])
        Xs, ys = samples(rngs[name])
        X, y = (Xs, ys) if X is None else (X, y)
        T[name] = {"step": [], "apparent": [], "opt.step": []}
        wrap(trs[name].optimizer, "apparent", T[name], "apparent")
        wrap(trs[name].optimizer, "step", T[name], "opt.step")
    for k in range(args.steps):
        s = 20 * k
        for name, (c, kern) in runs.items():
            if kern:
                fp._kp = kernels[kern]
            t0 = time.thread_time()
            trs[name].step(X[s:s + 20], y[s:s + 20], rngs[name])
            T[name]["step"].append(time.thread_time() - t0)
    fp._kp = kernels["new"]
    same = all(np.array_equal(trs["new"].params[key], trs["old"].params[key]) for key in trs["new"].params)
    sk = args.skip  # the first steps compile
    tot = {name: 1e3 * np.sum(T[name]["step"][sk:]) for name in runs}
    med = {name: 1e3 * np.median(T[name]["step"][sk:]) for name in runs}
    print(f"{args.device} {extra} {'MNIST' if args.data else 'random'}, steps {sk}..{args.steps - 1} "
          f"interleaved, CPU ms")
    for name in runs:
        parts = " ".join(f"{key} median {1e3 * np.median(v[sk:]):.3f}" for key, v in T[name].items() if key != "step")
        print(f"  {name:5s}: sum {tot[name]:.0f}, median a step {med[name]:.3f} ({parts})"
              + (f" | ratio to ideal: sums {tot[name] / tot['ideal']:.3f}, medians {med[name] / med['ideal']:.3f}"
                 if name != "ideal" else ""))
    print(f"  new / old: sums {tot['new'] / tot['old']:.3f}, medians {med['new'] / med['old']:.3f}; "
          f"device runs bit-identical: {same}")


if args.ab_kernels:
    ab_kernels(args.ab_kernels)
    sys.exit(0)
tr = Trainer(cfg)
rng = np.random.default_rng(0)
tr.init_state(rng)
X, y = samples(rng)
opt = tr.optimizer
T = {"apparent": [], "system": [], "estimator": [], "opt.step": []}
wrap(opt, "apparent", T, "apparent")
wrap(tr.net, "system", T, "system")
wrap(opt, "step", T, "opt.step")
wrap(tr.estimator, "states", T, "estimator")
tot, wall, pulses = [], [], []
for k in range(args.steps):
    s = k * 20
    w0, t0 = time.perf_counter(), time.thread_time()
    st = tr.step(X[s:s + 20], y[s:s + 20], rng)
    tot.append(time.thread_time() - t0)
    wall.append(time.perf_counter() - w0)
    pulses.append(st.pulses)
sk = args.skip
med = {key: 1e3 * np.median(v[sk:]) for key, v in T.items()}
other = 1e3 * np.median(np.array(tot[sk:]) - sum(np.array(v[sk:]) for v in T.values()))
print(args.device, extra, "MNIST" if args.data else "random", "CPU ms per step: total %.2f" % (1e3 * np.median(tot[sk:])),
      " ".join("%s %.2f" % kv for kv in med.items()), "other %.2f" % other,
      "| pulses/step %.0f" % np.mean(pulses[sk:]), "| wall ms per step %.2f" % (1e3 * np.median(wall[sk:])))
