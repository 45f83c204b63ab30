"""asv benchmarks of one EqProp training step (free and nudged phases plus the update) and of
the fused input-layer update, at the default minibatch of 20.

The inputs are synthetic MNIST-like pixels (seeded; about 80 % exact zeros, the rest U[0, 1])
so the benchmarks need no dataset. ``benchmarks/train_speed.py`` times whole MNIST epochs.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

from fastres.kernels import updates  # noqa: E402
from fastres.train import TrainConfig, Trainer  # noqa: E402

BATCH = 20
WARMUP = 20  # steps before timing: compiled kernels loaded, conductances moved off their init


def _pixels(rng, n, n_in=784):
    X = rng.uniform(0.0, 1.0, (n, n_in))
    X[rng.random((n, n_in)) < 0.8] = 0.0
    return X


class TrainStep:
    """``Trainer.step`` on a minibatch of 20 (centered EqProp, default hyper-parameters)."""

    params = (["784-100-10", "784-100-100-10", "784-1024-10"], ["pwl", "shockley"])
    param_names = ["arch", "diode"]
    timeout = 600

    def setup(self, arch, diode):
        self.trainer = Trainer(TrainConfig(arch=arch, diode=diode))
        self.rng = np.random.default_rng(0)
        self.trainer.init_state(self.rng)
        self.X = _pixels(self.rng, 200 * BATCH)
        self.y = self.rng.integers(0, 10, self.X.shape[0])
        self.k = 0
        for _ in range(WARMUP):
            self._step()

    def _step(self):
        s = (self.k % 200) * BATCH
        self.trainer.step(self.X[s:s + BATCH], self.y[s:s + BATCH], self.rng)
        self.k += 1

    def time_step(self, arch, diode):
        self._step()

    def track_samples_per_second(self, arch, diode):
        import time
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            self._step()
            times.append(time.perf_counter() - t0)
        return BATCH / float(np.median(times))

    track_samples_per_second.unit = "samples/s"


class FusedInputUpdate:
    """The fused input-layer SGD step (gradient, clip, column sums) for 1568 x n conductances."""

    params = [100, 1024]
    param_names = ["hidden"]

    def setup(self, hidden):
        rng = np.random.default_rng(1)
        U = 100.0 * _pixels(rng, BATCH)
        self.uT = np.ascontiguousarray(np.concatenate([U, -U], axis=1).T)
        va = rng.normal(0, 0.3, (BATCH, hidden))
        vb = va + rng.normal(0, 1e-3, va.shape)
        self.d = va - vb
        self.col = (va * va - vb * vb).sum(axis=0)
        self.W = rng.uniform(1e-7, 1e-4, (self.uT.shape[0], hidden))
        self.vel = np.zeros_like(self.W)
        self.partial = np.empty((16, hidden))
        self.colsum = np.empty(hidden)
        self.time_update(hidden)  # compile / load

    def time_update(self, hidden):
        updates.fixed_from_step(self.W, self.uT, self.d, self.col, 1e2, self.vel, 1e-8, 0.0, 1e-7, 1e-4,
                                self.partial, self.colsum)
