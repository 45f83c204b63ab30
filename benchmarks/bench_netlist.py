"""asv benchmarks of the netlist path (issue 10): a 784-100-10 deck read with ``read_netlist``
and solved through ``DCProblem`` with a dict of 784 source arrays (the deck and batch of
``benchmarks/netlist_speed.py``, B = 5000 here to keep an asv run short).

``time_end_to_end`` is what a user runs: ``solve(DCProblem(circuit, sources))`` from the read
circuit (compile, sources -> currents, start, Newton); the others time its parts. BLAS is
single-threaded (OPENBLAS_NUM_THREADS=1, set before numpy is imported).
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"

import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from fastres import DCProblem, Newton, solve  # noqa: E402
from fastres.netlist import read_netlist  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netlist_speed import deck_text, source_batch  # noqa: E402

BATCH = 5000


class Netlist784Shockley:
    """B = 5000 samples of the 784-100-10 Shockley deck (IS = 1e-12 A)."""

    timeout = 600
    alg = Newton()

    def setup(self):
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory(prefix="fastres_asv_") as tmp:
            path = os.path.join(tmp, "deck.cir")
            with open(path, "w", encoding="utf-8") as f:
                f.write(deck_text(rng))
            self.circuit = read_netlist(path)
        self.sources = source_batch(rng, BATCH)
        self.cc = self.circuit.compile()
        sol = solve(DCProblem(self.cc, self.sources), self.alg)  # JIT compile
        assert sol.converged.all()

    def time_end_to_end(self):
        solve(DCProblem(self.circuit, self.sources), self.alg)

    def time_end_to_end_zero_start(self):
        solve(DCProblem(self.circuit, self.sources, guess="zero"), self.alg)

    def time_end_to_end_linear_start(self):
        solve(DCProblem(self.circuit, self.sources, guess="linear"), self.alg)

    def time_clipped_start(self):
        prob = DCProblem(self.cc, self.sources)
        prob.batch(self.alg)
        prob.start(self.alg, BATCH)

    def time_compile(self):
        self.circuit.compile()

    def time_sources(self):
        DCProblem(self.cc, self.sources).batch(self.alg)

    def track_iterations(self):
        return float(np.mean(solve(DCProblem(self.cc, self.sources), self.alg).iterations))

    track_iterations.unit = "Newton iterations per sample"
