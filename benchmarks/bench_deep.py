"""asv benchmarks of one EqProp training step of deep, wide layered networks at the default
minibatch of 20: 784-1024-1024-10 and 784-1024-1024-1024-10 (paired hidden layers), either
diode, on the layered CG solver path (``linear = "cg"``, which ``auto`` picks for them), and
784-100-100-10 on both paths (where ``auto`` keeps the dense Schur path), and one wide hidden
layer (784-2048-10 to 784-32768-10) on both paths.

The inputs are synthetic MNIST-like pixels (seeded; about 80 % exact zeros, the rest U[0, 1]).
``benchmarks/deep_speed.py`` prints per-step medians, epoch estimates and the crossover.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

from fastres.train import TrainConfig, Trainer  # noqa: E402

BATCH = 20
WARMUP = 5  # steps before timing: compiled kernels loaded, conductances moved off their init


def _pixels(rng, n, n_in=784):
    X = rng.uniform(0.0, 1.0, (n, n_in))
    X[rng.random((n, n_in)) < 0.8] = 0.0
    return X


class _Step:
    """``Trainer.step`` on a minibatch of 20 (centered EqProp, default hyper-parameters)."""

    timeout = 1200

    def _setup(self, arch, diode, linear):
        self.trainer = Trainer(TrainConfig(arch=arch, diode=diode, linear=linear))
        self.rng = np.random.default_rng(0)
        self.trainer.init_state(self.rng)
        self.X = _pixels(self.rng, 50 * BATCH)
        self.y = self.rng.integers(0, 10, self.X.shape[0])
        self.k = 0
        for _ in range(WARMUP):
            self._step()

    def _step(self):
        s = (self.k % 50) * BATCH
        self.trainer.step(self.X[s:s + BATCH], self.y[s:s + BATCH], self.rng)
        self.k += 1


class DeepTrainStep(_Step):
    """Deep, wide networks on the layered CG path."""

    params = (["784-1024-1024-10", "784-1024-1024-1024-10"], ["pwl", "shockley"])
    param_names = ["arch", "diode"]

    def setup(self, arch, diode):
        self._setup(arch, diode, "cg")

    def time_step(self, arch, diode):
        self._step()

    def track_epoch_minutes(self, arch, diode):
        import time
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            self._step()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 60000 / BATCH / 60.0

    track_epoch_minutes.unit = "min"


class CrossoverStep(_Step):
    """784-h-h-10 on either linear solver path (the crossover that ``auto`` encodes)."""

    params = (["784-100-100-10", "784-256-256-10", "784-512-512-10"], ["schur", "cg"])
    param_names = ["arch", "linear"]

    def setup(self, arch, linear):
        self._setup(arch, "pwl", linear)

    def time_step(self, arch, linear):
        self._step()


class WideStep(_Step):
    """One wide hidden layer on either path (``auto`` picks CG from ``CG_FROM_WIDTH`` nodes);
    ``peakmem`` the whole process (784-32768-10: conductances 0.4 GB, run file aside)."""

    params = (["784-2048-10", "784-8192-10", "784-32768-10"], ["schur", "cg"])
    param_names = ["arch", "linear"]

    def setup(self, arch, linear):
        self._setup(arch, "shockley", linear)

    def time_step(self, arch, linear):
        self._step()

    def peakmem_step(self, arch, linear):
        self._step()
