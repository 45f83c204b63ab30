"""CPU time of one 784-100-10 training step (batch 20, pwl) and of its parts, ideal or pulsed.

    python benchmarks/device_step_cpu.py ideal|realistic ["dict(read_noise=0.0)"]
        [--data DIR] [--steps 150] [--skip 30]

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
"""
import argparse
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
args = ap.parse_args()
extra = eval(args.extra)
cfg = TrainConfig(arch="784-100-10", diode="pwl")
if args.device != "ideal":
    cfg = cfg.replace(device=DeviceConfig(preset=args.device, **extra))
tr = Trainer(cfg)
rng = np.random.default_rng(0)
tr.init_state(rng)
n = 20 * args.steps
if args.data:
    from fastres.datasets import load_data
    data = load_data(cfg.replace(data=DataConfig(data=args.data)))
    order = rng.permutation(data.x_train.shape[0])[:n]
    X, y = data.x_train[order], data.y_train[order]
else:
    X = rng.uniform(0, 1, (n, 784))
    X[rng.random(X.shape) < 0.8] = 0.0
    y = rng.integers(0, 10, n)
opt = tr.optimizer
T = {"apparent": [], "system": [], "estimator": [], "opt.step": []}


def wrap(obj, name, key):
    f = getattr(obj, name)

    def g(*a, **k):
        t0 = time.thread_time()
        r = f(*a, **k)
        T[key].append(time.thread_time() - t0)
        return r
    setattr(obj, name, g)


wrap(opt, "apparent", "apparent")
wrap(tr.net, "system", "system")
wrap(opt, "step", "opt.step")
wrap(tr.estimator, "states", "estimator")
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
