"""asv benchmarks of the DC solver on the paper-shaped 784-100-10 network and small graphs.

Every benchmark solves with inputs already prepared (``DCProblem`` built once, so ``time_solve``
is the Newton solve alone) unless named ``end_to_end``. BLAS is single-threaded
(OPENBLAS_NUM_THREADS=1, set before numpy is imported) so the numbers measure fastres's own
Numba threads, not an oversubscribed BLAS.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from fastres import DCProblem, Newton, PiecewiseLinear, solve  # noqa: E402
from fastres.generators import input_batch, layered_circuit, random_graph_circuit  # noqa: E402

SIZES = (784, 100, 10)
BATCH = 10_000


def _layered(diode=None, batch=BATCH, seed=0):
    """The benchmark network: 784-100-10, conductances U[1e-6, 1e-4] S, rails at 0 V, inputs
    U[0, 1] V mirrored (``layered_circuit`` defaults), and a batch of ``batch`` input vectors."""
    rng = np.random.default_rng(seed)
    circuit = layered_circuit(SIZES, rng, diode=diode)
    return circuit, input_batch(SIZES[0], batch, rng)


class _LayeredSolve:
    """Shared setup: compile, prepare the batch once, warm up the Numba kernels."""

    diode = None
    timeout = 300
    alg = Newton()

    def setup(self):
        circuit, self.sources = _layered(self.diode)
        self.cc = circuit.compile()
        self.prob = DCProblem(self.cc, self.sources)
        sol = solve(self.prob, self.alg)  # JIT compile + prepare (cached in prob)
        assert sol.converged.all()

    def time_solve(self):
        solve(self.prob, self.alg)

    def time_end_to_end(self):
        """Including ``cc.prepare`` of the source batch (a fresh DCProblem)."""
        solve(DCProblem(self.cc, self.sources), self.alg)

    def track_samples_per_second(self):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            solve(self.prob, self.alg)
            times.append(time.perf_counter() - t0)
        return BATCH / float(np.median(times))

    track_samples_per_second.unit = "samples/s"


class Layered784Shockley(_LayeredSolve):
    """B = 10000 samples of 784-100-10 with Shockley diodes (IS = 1e-14 A, N = 1)."""

    diode = None


class Layered784PWL(_LayeredSolve):
    """B = 10000 samples of 784-100-10 with piecewise-linear diodes (ron 1 ohm, roff 1 Gohm)."""

    diode = PiecewiseLinear()


class RandomGraph:
    """B = 2000 samples of a 40-node random resistor/diode graph (dense Jacobian path)."""

    params = ["shockley", "pwl"]
    param_names = ["diode"]
    B = 2000

    def setup(self, diode):
        rng = np.random.default_rng(1)
        model = None if diode == "shockley" else PiecewiseLinear(ron=10.0, roff=1e6, vfwd=0.3)
        self.circuit = random_graph_circuit(40, rng, diode=model)
        self.prob = DCProblem(self.circuit.compile(), {
            "vs0": rng.uniform(-2.0, 2.0, self.B), "vs1": rng.uniform(-2.0, 2.0, self.B),
            "is0": rng.uniform(-1e-3, 1e-3, self.B)})
        solve(self.prob, Newton(), check=False)  # JIT warm-up

    def time_solve(self, diode):
        solve(self.prob, Newton(), check=False)

    def track_samples_per_second(self, diode):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            solve(self.prob, Newton(), check=False)
            times.append(time.perf_counter() - t0)
        return self.B / float(np.median(times))

    track_samples_per_second.unit = "samples/s"


class Compile:
    """``Circuit.compile`` of 784-100-10 (158k resistors, 200 diodes)."""

    timeout = 300

    def setup(self):
        self.circuit, _ = _layered(batch=1)

    def time_compile(self):
        self.circuit.compile()

    def time_build_circuit(self):
        _layered(batch=1)


class NumpyReference:
    """The plain-numpy reference solver on 200 samples of 784-100-10 (the speed-up baseline)."""

    timeout = 300
    B = 200

    def setup(self):
        # The reference solver is a test twin, not part of the package: it lives in the
        # repository's tests/naive.py, so put that directory on sys.path to import it.
        tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests")
        if tests not in sys.path:
            sys.path.insert(0, tests)
        from naive import reference_solve
        self.reference_solve = reference_solve
        self.circuit, self.sources = _layered(batch=self.B)

    def time_reference_solve(self):
        self.reference_solve(self.circuit, self.sources)

    def track_samples_per_second(self):
        t0 = time.perf_counter()
        self.reference_solve(self.circuit, self.sources)
        return self.B / (time.perf_counter() - t0)

    track_samples_per_second.unit = "samples/s"
