"""CPU time of one 784-100-10 training step (batch 20, pwl) and of its parts, ideal or pulsed.

    python benchmarks/device_step_cpu.py ideal|realistic ["dict(read_noise=0.0)"]

CPU time (``time.thread_time``; run with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 so all work
is on this thread) is immune to the waiting a shared machine adds to wall-clock time. Prints
the median over steps 30..149 of the whole step and of the read (``apparent``: read noise),
the optimiser's step (desired changes and pulses) and the estimator (the solves). Run the
cases in alternation, in fresh processes, to compare them.
"""
import sys, time, numpy as np
from fastres.train import TrainConfig, Trainer
from fastres.config import DeviceConfig
dev = sys.argv[1]; extra = eval(sys.argv[2]) if len(sys.argv) > 2 else {}
cfg = TrainConfig(arch="784-100-10", diode="pwl")
if dev != "ideal":
    cfg = cfg.replace(device=DeviceConfig(preset=dev, **extra))
tr = Trainer(cfg); rng = np.random.default_rng(0); tr.init_state(rng)
X = rng.uniform(0, 1, (4000, 784)); X[rng.random(X.shape) < 0.8] = 0.0
y = rng.integers(0, 10, 4000)
opt = tr.optimizer
T = {"apparent": [], "opt.step": [], "estimator": []}
def wrap(obj, name, key):
    f = getattr(obj, name)
    def g(*a, **k):
        t0 = time.thread_time(); r = f(*a, **k); T[key].append(time.thread_time() - t0); return r
    setattr(obj, name, g)
wrap(opt, "apparent", "apparent"); wrap(opt, "step", "opt.step"); wrap(tr.estimator, "states", "estimator")
tot = []
for k in range(150):
    s = (k % 200) * 20
    t0 = time.thread_time(); tr.step(X[s:s + 20], y[s:s + 20], rng); tot.append(time.thread_time() - t0)
print(dev, extra, "CPU ms per step: total %.2f" % (1e3 * np.median(tot[30:])), " ".join("%s %.2f" % (k, 1e3 * np.median(v[30:])) for k, v in T.items()))
