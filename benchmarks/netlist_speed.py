"""Speed of the netlist path: a 784-100-10 deck read with ``read_netlist``, solved through
``DCProblem`` with a dict of 784 source arrays, against a plain numpy batched Newton.

    python benchmarks/netlist_speed.py [--batch 20000] [--rounds 3] [--numpy-batch N]
                                       [--seed 0] [--json FILE] [--cpu B]

The deck (written by :func:`deck_text`, a plain SPICE netlist): 784 input voltage sources
``vx<i>`` (node ``x<i>``), 100 hidden nodes ``h<j>`` each joined to every input by a resistor,
10 output nodes ``o<k>`` each joined to every hidden node; conductances U[1e-6, 1e-4] S; each
hidden node has two Shockley diodes (IS = 1e-12 A, N = 1) to ground, one each way. The batch:
inputs U[0, 1] V, ``{"vx<i>": (B,) volts}`` for all 784 sources (issue 10, "the netlist path").

What is timed (wall clock, medians over ``--rounds``, the two solvers interleaved per round):

* fastres end to end: ``solve(DCProblem(circuit, sources), Newton())`` with ``circuit`` the
  :class:`~fastres.circuit.Circuit` that ``read_netlist`` returned (read once, outside the
  timing; the solve compiles it, builds the source currents from the dict, chooses a start
  and runs Newton); and, in versions that have ``DCProblem.guess``, its parts:
  ``circuit.compile()``, ``prob.batch(alg)`` (sources -> currents), ``prob.start(alg, B)``,
  the Newton kernel (``solve_system``), and the end to end time with ``guess="zero"`` and, in
  versions that have it, ``guess="linear"`` (the default is then the clipped start).
  Without those parts (an older fastres) the script still times end to end and numpy, so
  ``OLD_PYTHON benchmarks/netlist_speed.py`` measures the old code on the same deck.
* numpy: ``reference_solve(circuit, sources)`` of ``tests/naive.py`` (batched Newton on the
  dense nodal Jacobian, ``numpy.linalg.solve``; builds its own system each call) on the first
  ``--numpy-batch`` samples (default: all of them, the same samples).

Printed: microseconds per sample of each, the ratio numpy / fastres (end to end), the mean
Newton iterations per sample, and the largest voltage difference between the two (V).

``--cpu B`` instead times, on one thread and in CPU time (``time.thread_time``, less exposed to
other processes on a shared machine than wall time), the start (``prob.start``) and then the
Newton kernel (``solve_system``) from it, for the default start and ``guess="linear"``, on the
first ``B`` samples; medians of ``--rounds`` (the first, which loads the kernels, not counted).
It uses only what older versions also have, so ``OLD_PYTHON benchmarks/netlist_speed.py --cpu
4000`` times the old code the same way.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from fastres import DCProblem, Newton, solve  # noqa: E402
from fastres.solver import solve_system  # noqa: E402
from fastres.netlist import read_netlist  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from naive import reference_solve  # noqa: E402

SIZES = (784, 100, 10)
TARGET_RATIO = 20.0


def deck_text(rng, sizes=SIZES, IS=1e-12, g_range=(1e-6, 1e-4), pwl=None) -> str:
    """A layered SPICE deck ``sizes = (n_in, hidden, n_out)``: input sources ``vx<i>`` at
    U[0, 1] V, every node of a layer joined to every node of the previous one by a resistor of
    conductance U[g_range] (S), two Shockley diodes (saturation current ``IS`` A) from each
    hidden node to ground, one each way; with ``pwl = (ron ohm, roff ohm, vfwd V)``,
    piecewise-linear diodes (XSPICE ``sidiode``) instead."""
    n_in, n_hid, n_out = sizes
    lo, hi = g_range
    lines = [f"layered {n_in}-{n_hid}-{n_out} netlist benchmark"]
    if pwl is None:
        lines.append(f".model dmod D(IS={IS!r} N=1)")
        letter = "d"
    else:
        ron, roff, vfwd = (float(v) for v in pwl)
        lines.append(f".model dmod sidiode(ron={ron!r} roff={roff!r} vfwd={vfwd!r} vrev=1e30 "
                     f"rrev={ron!r} epsilon=0 revepsilon=0)")
        letter = "a"
    for i, x in enumerate(rng.uniform(0.0, 1.0, n_in)):
        lines.append(f"vx{i} x{i} 0 DC {float(x)!r}")
    for j in range(n_hid):
        for i, g in enumerate(rng.uniform(lo, hi, n_in)):
            lines.append(f"rh{j}_{i} x{i} h{j} {float(1.0 / g)!r}")
        lines.append(f"{letter}h{j}p h{j} 0 dmod")
        lines.append(f"{letter}h{j}n 0 h{j} dmod")
    for k in range(n_out):
        for j, g in enumerate(rng.uniform(lo, hi, n_hid)):
            lines.append(f"ro{k}_{j} h{j} o{k} {float(1.0 / g)!r}")
    lines += [".op", ".end"]
    return "\n".join(lines) + "\n"


def source_batch(rng, B, n_in=SIZES[0]) -> dict:
    """``{"vx<i>": (B,) volts}``, inputs U[0, 1] V."""
    X = rng.uniform(0.0, 1.0, (B, n_in))
    return {f"vx{i}": X[:, i].copy() for i in range(n_in)}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cpu_parts(circuit, sources, rounds):
    """Serial CPU time per sample (us) of the start and of the Newton kernel from it, for the
    default start and ``guess="linear"`` (see the module docstring); prints and returns them."""
    cc = circuit.compile()
    alg = Newton()
    numba.set_num_threads(1)
    out = {}
    for guess in ("auto", "linear"):
        prob = DCProblem(cc, sources) if guess == "auto" else DCProblem(cc, sources, guess=guess)
        b, vdfix = prob.batch(alg)
        B = b.shape[0]
        ts, tn = [], []
        for _ in range(rounds + 1):
            t0 = time.thread_time()
            x = prob.start(alg, B)
            t1 = time.thread_time()
            it, _, _ = solve_system(cc.system, b, vdfix, x, alg)
            t2 = time.thread_time()
            ts.append(t1 - t0)
            tn.append(t2 - t1)
        st, nt = (1e6 * float(np.median(v[1:])) / B for v in (ts, tn))
        out[guess] = {"start": st, "newton": nt, "iterations": float(np.mean(it))}
        print(f"guess={guess!r}: start {st:.2f} + Newton kernel {nt:.2f} = {st + nt:.2f} us CPU "
              f"per sample, one thread ({np.mean(it):.2f} iterations, B = {B})", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--numpy-batch", type=int, default=None,
                    help="samples for the numpy baseline (default: the whole batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--cpu", type=int, metavar="B", default=None,
                    help="serial CPU time of the start and the Newton kernel on B samples")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    B = args.batch
    nB = B if args.numpy_batch is None else min(B, args.numpy_batch)
    with tempfile.TemporaryDirectory(prefix="fastres_netlist_") as tmp:
        path = os.path.join(tmp, "deck.cir")
        with open(path, "w", encoding="utf-8") as f:
            f.write(deck_text(rng))
        t_read, circuit = _timed(lambda: read_netlist(path))
    sources = source_batch(rng, B)
    if args.cpu is not None:
        return cpu_parts(circuit, {k: v[:args.cpu] for k, v in sources.items()}, args.rounds)
    sub = {k: v[:nB] for k, v in sources.items()}
    alg = Newton()
    print(f"784-100-10 deck, B = {B}, numba threads {numba.get_num_threads()}, "
          f"read_netlist {t_read:.2f} s", flush=True)
    solve(DCProblem(circuit, {k: v[:64] for k, v in sources.items()}), alg)  # JIT warm-up
    parts = hasattr(DCProblem, "guess")  # this version has the start guess and source_rows
    clipped = parts and "clipped" in getattr(sys.modules[DCProblem.__module__], "GUESSES", ())
    rows = {"end_to_end": [], "numpy": []}
    if parts:
        rows.update({"compile": [], "sources": [], "start": [], "newton": [], "zero_start": []})
    if clipped:
        rows.update({"linear_start": []})
    iters = {}
    sol = v_np = None
    for r in range(args.rounds):
        t, sol = _timed(lambda: solve(DCProblem(circuit, sources), alg))
        rows["end_to_end"].append(t)
        if parts:
            t, cc = _timed(lambda: circuit.compile())
            rows["compile"].append(t)
            prob = DCProblem(cc, sources)
            t, (b, vdfix) = _timed(lambda: prob.batch(alg))
            rows["sources"].append(t)
            t, x = _timed(lambda: prob.start(alg, B))
            rows["start"].append(t)
            t, _ = _timed(lambda: solve_system(cc.system, b, vdfix, x, alg))
            rows["newton"].append(t)
            t, z = _timed(lambda: solve(DCProblem(circuit, sources, guess="zero"), alg))
            rows["zero_start"].append(t)
            iters["zero_start"] = float(np.mean(z.iterations))
        if clipped:
            t, z = _timed(lambda: solve(DCProblem(circuit, sources, guess="linear"), alg))
            rows["linear_start"].append(t)
            iters["linear_start"] = float(np.mean(z.iterations))
        t, (nodes_np, v_np) = _timed(lambda: reference_solve(circuit, sub))
        rows["numpy"].append(t)
        print(f"  round {r}: end to end {rows['end_to_end'][-1]:.3f} s, numpy ({nB}) {t:.3f} s",
              flush=True)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    us = {k: 1e6 * med[k] / (nB if k == "numpy" else B) for k in med}
    ratio = us["numpy"] / us["end_to_end"]
    assert list(nodes_np) == sol.nodes
    dv = float(np.max(np.abs(sol.v[:nB] - v_np)))
    it_mean = float(np.mean(sol.iterations))
    print(f"fastres end to end : {us['end_to_end']:8.2f} us/sample  ({med['end_to_end']:.3f} s)")
    if parts:
        for key, text in (("compile", "compile"), ("sources", "sources -> b, vdfix"),
                          ("start", "start (guess)"), ("newton", "Newton kernel"),
                          ("zero_start", "end to end, guess='zero'"),
                          ("linear_start", "end to end, guess='linear'")):
            if key in us:
                more = f", {iters[key]:.2f} iterations" if key in iters else ""
                print(f"  {text:25s}: {us[key]:8.2f} us/sample  ({med[key]:.3f} s{more})")
    print(f"numpy batched Newton: {us['numpy']:8.2f} us/sample  ({med['numpy']:.3f} s for {nB})")
    print(f"ratio numpy / fastres end to end: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x: "
          f"{'PASS' if ratio >= TARGET_RATIO else 'MISS'})")
    print(f"Newton iterations per sample: {it_mean:.2f}; max |V fastres - V numpy| = {dv:.2e} V")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"batch": B, "numpy_batch": nB, "rounds": rows, "median_s": med,
                       "us_per_sample": us, "ratio": ratio, "iterations": it_mean,
                       "iterations_other_starts": iters, "max_dv": dv,
                       "threads": numba.get_num_threads()}, f, indent=1)


if __name__ == "__main__":
    main()
