"""Property tests of the DC solver over random small circuits (issue 13, "What it must show").

A few thousand seeded random circuits (``benchmarks/solver_fuzz.py``: 1-10 nodes, resistors
1 ohm..1 Gohm, Shockley diodes with IS 1e-16..1e-6 A and N 0.01..3, piecewise-linear diodes,
sources up to 100 V, current sources) are solved by fastres. Every answer reported converged is
checked against an independent KCL evaluation in numpy (``tests/naive.py``): the net current at
each free node divided by that node's conductance (V) must stay below ``max(1e-9 V, 1e-12
max|v|)``. Non-convergences are counted with their reasons (printed; ``pytest -s`` shows them)
and bounded; wrong answers must be zero. A deterministic sample of the converged circuits is
compared with ngspice.
"""
import collections
import sys
from pathlib import Path

import numpy as np
import pytest

from fastres import DCProblem, Newton, solve
from fastres.kernels.status import Status

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import solver_fuzz as fuzz  # noqa: E402

SEED = 13
N = 3000


@pytest.fixture(scope="module")
def outcomes():
    """Per circuit index: (circuit, reason or 'converged', volts or None, aid)."""
    out = []
    for i in range(N):
        c = fuzz.random_circuit(np.random.default_rng([SEED, i]))
        why, volts, aid = fuzz.solve_one(c)
        out.append((c, why, volts, aid))
    return out


def test_no_wrong_answer_reported_converged(outcomes):
    wrong = []
    for i, (c, why, volts, _) in enumerate(outcomes):
        if volts is not None:
            ok, worst, tol = fuzz.check_answer(c, volts)
            if not ok:
                wrong.append((i, worst, tol))
    assert wrong == [], f"{len(wrong)} wrong answers reported converged: {wrong[:5]}"


def test_nonconvergences_are_counted_with_their_reasons(outcomes):
    reasons = collections.Counter(why for _, why, volts, _ in outcomes if volts is None)
    aids = collections.Counter(int(aid) for _, _, volts, aid in outcomes if volts is not None)
    converged = sum(1 for o in outcomes if o[2] is not None)
    print(f"\n{N} circuits: {converged} converged (aids {dict(aids)}), refused {dict(reasons)}")
    known = {s.text for s in Status if s != Status.CONVERGED}
    assert set(reasons) <= known  # every refusal is a solver status, none a crash or CircuitError
    assert converged >= 0.95 * N
    assert set(aids) <= {0, 1, 2}
    # every circuit whose every node is held is solved, trivially
    held = [o for o in outcomes if not fuzz.free_nodes(o[0])]
    assert held and all(o[2] is not None for o in held)


def test_aids_only_where_plain_newton_fails(outcomes):
    """A circuit that plain Newton solves gives the same answer, bit for bit, with the aids on;
    one an aid solved is one plain Newton did not."""
    for c, why, volts, aid in outcomes[:600]:
        plain = solve(DCProblem(c), Newton(aids=False), check=False)
        if plain.converged[0]:
            assert volts == plain.as_dict() and aid == 0
        elif volts is not None:
            assert aid in (1, 2)


@pytest.mark.ngspice
def test_sample_agrees_with_ngspice(outcomes):
    """Every 60th converged circuit against ngspice (reltol 1e-12): agreement to
    max(1e-9 V, 1e-9 max|v|) wherever ngspice finds an operating point."""
    sample = [o for o in outcomes if o[2] is not None][::60]
    assert len(sample) >= 40
    compared = 0
    for c, _, volts, _ in sample:
        ref = fuzz.ngspice_op(c)
        if ref is None:
            continue  # ngspice did not converge; fastres's answer passed the KCL check
        compared += 1
        nodes = fuzz.free_nodes(c)
        d = max([abs(volts[n] - ref[n]) for n in nodes] + [0.0])
        vmax = max(abs(v) for v in volts.values())
        assert d <= max(1e-9, 1e-9 * vmax), f"max |dV| = {d:.3g} V on {c.title}"
    assert compared >= 0.75 * len(sample)
