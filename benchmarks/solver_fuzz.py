"""Fuzz the DC solver with random small circuits; every converged answer is checked.

    python benchmarks/solver_fuzz.py                    # 100,000 circuits, seed 0
    python benchmarks/solver_fuzz.py -n 20000 --seed 1 --ngspice-sample 0.01
    python benchmarks/solver_fuzz.py -n 6000 --ngspice-sample 1.0 --ngspice-cache ng.json --exact

Each circuit (:func:`random_circuit`: 1-10 nodes, resistors 1 ohm..1 Gohm, Shockley diodes with
IS 1e-16..1e-6 A and N 0.01..3, piecewise-linear diodes, voltage sources up to 100 V, current
sources up to 10 mA) is solved by fastres (one sample, default :class:`fastres.Newton`). An
answer reported converged is checked by :func:`check_answer` against an independent KCL
evaluation in numpy (``tests/naive.py``): at every free node the net current divided by the
node's conductance (an estimate of the voltage error, V) must be below ``max(1e-9 V, 1e-12
max|v|)``; one that is not counts as *wrong*. ngspice (``.options reltol=1e-12 vntol=1e-15
abstol=1e-18``, no pseudo-transient fallback) runs on every circuit fastres refuses and on a
random sample of the rest (all of them with ``--ngspice-sample 1.0``: then ngspice's own
refusals are counted too; ``--ngspice-cache`` keeps its answers for the next run). Printed:
converged, wrong, refused (by reason), aids used, how many circuits ngspice solves that fastres
does not (and how many of those answers put a Shockley diode beyond its ``imax`` guard, which
fastres refuses by design), and vice versa on the sample; with ``--exact``, where the two
disagree, each is compared with a 60-digit decimal solve (:func:`exact_op`).

``tests/test_solver_property.py`` runs the same generator and checks on a few thousand circuits.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import naive  # noqa: E402  (tests/naive.py: the plain-numpy twins)

from fastres import Circuit, DCProblem, Newton, PiecewiseLinear, Shockley, solve  # noqa: E402
from fastres.circuit import CurrentSource, Diode, Resistor, VoltageSource  # noqa: E402
from fastres.errors import CircuitError  # noqa: E402
from fastres.kernels.status import Status  # noqa: E402

#: options of the ngspice reference runs (as tests/test_ngspice.py)
NGSPICE_OPTIONS = {"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18, "gmin": 1e-12}
#: voltage-error tolerance of a converged answer: max(VTOL, VREL * max|v|) (V)
VTOL = 1e-9
VREL = 1e-12


def _loguniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def random_diode(rng):
    """A Shockley diode (IS 1e-16..1e-6 A, N 0.01..3, log-uniform) or, one time in three, a
    piecewise-linear one (ron 0.1..1e4 ohm, roff 1e4..1e10 ohm, vfwd 0..1 V, sometimes a
    reverse breakdown)."""
    if rng.random() < 2 / 3:
        return Shockley(IS=_loguniform(rng, 1e-16, 1e-6), N=_loguniform(rng, 0.01, 3.0))
    ron = _loguniform(rng, 0.1, 1e4)
    roff = max(_loguniform(rng, 1e4, 1e10), ron)
    if rng.random() < 0.3:
        return PiecewiseLinear(ron=ron, roff=roff, vfwd=rng.uniform(0, 1),
                               vrev=rng.uniform(0.5, 50), rrev=_loguniform(rng, ron, roff))
    return PiecewiseLinear(ron=ron, roff=roff, vfwd=rng.uniform(0, 1))


def random_circuit(rng) -> Circuit:
    """A random connected circuit of 1-10 nodes (see the module docstring).

    Every node is joined to ground or an earlier node by a resistor (or, one time in four, a
    diode), so no node floats; then up to 2n more resistors and diodes between random node
    pairs (ground included), 0-3 nodes held by voltage sources (-100..100 V; all of them in a
    few percent of the circuits) and 0-2 current
    sources (+-1e-12..1e-2 A, log-uniform)."""
    n = int(rng.integers(1, 11))
    names = [f"n{i}" for i in range(n)]
    c = Circuit(title=f"fuzz n={n}", gmin=1e-12)
    k = 0

    def element(a, b):
        nonlocal k
        k += 1
        if rng.random() < 0.25:
            if rng.random() < 0.5:
                a, b = b, a
            c.add_diode(f"d{k}", a, b, random_diode(rng))
        else:
            c.add_resistor(f"r{k}", a, b, r=_loguniform(rng, 1.0, 1e9))

    for i in range(n):
        element(names[i], "0" if i == 0 or rng.random() < 0.3 else names[int(rng.integers(0, i))])
    for _ in range(int(rng.integers(0, 2 * n + 1))):
        a, b = rng.choice(n + 1, 2, replace=False)
        element("0" if a == n else names[a], "0" if b == n else names[b])
    nv = int(rng.integers(0, 4))
    if nv >= n and rng.random() < 0.8:  # every node held: some, not too many
        nv = n - 1
    held = rng.choice(n, min(n, nv), replace=False)
    for j, i in enumerate(held):
        c.add_voltage_source(f"v{j}", names[i], rng.uniform(-100.0, 100.0))
    for j in range(int(rng.integers(0, 3))):
        c.add_current_source(f"i{j}", names[int(rng.integers(0, n))],
                             rng.choice([-1.0, 1.0]) * _loguniform(rng, 1e-12, 1e-2))
    return c


def voltage_errors(circuit, volts):
    """Per free node: ``|net current| / node conductance`` (V), from the elements in numpy
    (``naive``); ``volts`` maps every node to V. Node conductance: the resistors' and the
    diodes' (at ``volts``) conductances meeting there."""
    net, _ = naive.element_kcl(circuit, volts)
    v = dict(volts)
    v["0"] = 0.0
    gnode = collections.defaultdict(float)
    for e in circuit.elements.values():
        if isinstance(e, Resistor):
            g, a, b = e.g, e.a, e.b
        elif isinstance(e, Diode):
            p = e.model.params(temp=circuit.temp, tnom=circuit.tnom, gmin=circuit.gmin)
            g = float(naive.diode(e.model.kind, p, v[e.anode] - v[e.cathode])[1])
            a, b = e.anode, e.cathode
        else:
            continue
        if a != b:
            gnode[a] += g
            gnode[b] += g
    return {n: abs(i) / gnode[n] if gnode[n] > 0 else (0.0 if i == 0 else math.inf)
            for n, i in net.items()}


def check_answer(circuit, volts):
    """``(ok, worst error (V), tolerance (V))`` of a converged answer ``volts`` (dict, V)."""
    err = voltage_errors(circuit, volts)
    vmax = max([abs(x) for x in volts.values()] + [0.0])
    tol = max(VTOL, VREL * vmax)
    worst = max(err.values(), default=0.0)
    return bool(worst <= tol), worst, tol


def ngspice_op(circuit, cache=None, key=None):
    """ngspice's operating point (dict node -> V), or None when ngspice fails. ``cache``: a
    dict (``key`` -> answer or None) consulted first and filled (ngspice's answer depends on
    the circuit only, so one cache serves runs of different fastres versions)."""
    from fastres import ngspice
    from fastres.netlist import write_netlist
    if cache is not None and key in cache:
        return cache[key]
    try:
        ref = ngspice.run_op(write_netlist(circuit), extra_options=NGSPICE_OPTIONS, timeout=60)
    except ngspice.NgspiceError:
        ref = None
    if cache is not None:
        cache[key] = ref
    return ref


def beyond_imax(circuit, volts):
    """True if, at ``volts`` (dict, V), some Shockley diode is past its ``imax`` guard voltage
    ``vmax`` (its current above 1e6 A by default): an answer fastres refuses by design."""
    v = dict(volts)
    v["0"] = 0.0
    for e in circuit.of_type(Diode):
        if e.model.kind == Shockley.kind:
            p = e.model.params(temp=circuit.temp, tnom=circuit.tnom, gmin=circuit.gmin)
            if v[e.anode] - v[e.cathode] > p[3]:
                return True
    return False


def _exact_diode(kind, p, v):
    """Current (A) and conductance (S) of a diode at ``v`` (V), in :class:`decimal.Decimal`
    (the models of ``kernels/devices.py``, Shockley's ``imax`` tangent included)."""
    from decimal import Decimal as D
    p = [D(float(x)) for x in p]
    if int(kind) == Shockley.kind:
        IS, vte, gmin, vmax = p[0], p[1], p[2], p[3]
        if v > vmax:
            e = (vmax / vte).exp()
            return IS * (e - 1) + IS * e / vte * (v - vmax) + gmin * v, IS * e / vte + gmin
        if v >= -3 * vte:
            e = (v / vte).exp()
            return IS * (e - 1) + gmin * v, IS * e / vte + gmin
        a = 3 * vte / D(1).exp()
        return -IS * (1 + (a / v) ** 3) + gmin * v, 3 * IS * a ** 3 / v ** 4 + gmin
    gon, goff, vfwd, vrev, grev = p
    if v >= vfwd:
        return goff * vfwd + gon * (v - vfwd), gon
    if v > -vrev:
        return goff * v, goff
    return -goff * vrev + grev * (v + vrev), grev


def exact_op(circuit, start, digits=60, maxiter=200):
    """The operating point to ``digits`` decimal digits (dict node -> V, as floats): Newton in
    :mod:`decimal` arithmetic on the element-by-element KCL equations, from ``start`` (a dict
    of V close to the answer, e.g. a converged fastres or ngspice answer). None if it does not
    get below a step of 1e-30 V (relative) in ``maxiter`` iterations."""
    from decimal import Decimal as D, localcontext
    with localcontext() as ctx:
        ctx.prec = digits
        held = {e.node: D(float(e.value)) for e in circuit.of_type(VoltageSource)}
        free = [n for n in circuit.nodes if n not in held]
        idx = {n: k for k, n in enumerate(free)}
        v = {n: D(float(start[n])) for n in free}
        v.update(held)
        v["0"] = D(0)
        n = len(free)
        for _ in range(maxiter):
            r = [D(0)] * n
            J = [[D(0)] * n for _ in range(n)]

            def stamp(a, b, i, g):
                if a in idx:
                    r[idx[a]] += i
                    J[idx[a]][idx[a]] += g
                if b in idx:
                    r[idx[b]] -= i
                    J[idx[b]][idx[b]] += g
                if a in idx and b in idx:
                    J[idx[a]][idx[b]] -= g
                    J[idx[b]][idx[a]] -= g
            for e in circuit.elements.values():
                if isinstance(e, Resistor):
                    g = D(float(e.g))
                    stamp(e.a, e.b, g * (v[e.a] - v[e.b]), g)
                elif isinstance(e, Diode):
                    p = e.model.params(temp=circuit.temp, tnom=circuit.tnom, gmin=circuit.gmin)
                    vd = v[e.anode] - v[e.cathode]
                    stamp(e.anode, e.cathode, *_exact_diode(e.model.kind, p, vd))
                elif isinstance(e, CurrentSource) and e.node in idx:
                    r[idx[e.node]] -= D(float(np.atleast_1d(e.value)[0]))
            M = [row + [-r[k]] for k, row in enumerate(J)]  # Gauss, partial pivoting
            for k in range(n):
                piv = max(range(k, n), key=lambda q: abs(M[q][k]))
                M[k], M[piv] = M[piv], M[k]
                for q in range(k + 1, n):
                    f = M[q][k] / M[k][k]
                    for j in range(k, n + 1):
                        M[q][j] -= f * M[k][j]
            dx = [D(0)] * n
            for k in reversed(range(n)):
                dx[k] = (M[k][n] - sum(M[k][j] * dx[j] for j in range(k + 1, n))) / M[k][k]
            big = max([abs(x) for x in dx] + [D(0)])
            t = D(1) if big < 1 else 1 / big  # at most 1 V per step
            for k, name in enumerate(free):
                v[name] += t * dx[k]
            scale = max([abs(v[m]) for m in free] + [D(1)])
            if big <= D("1e-30") * scale:
                return {m: float(v[m]) for m in free}
    return None


def free_nodes(circuit):
    held = {e.node for e in circuit.of_type(VoltageSource)}
    return [n for n in circuit.nodes if n not in held]


def solve_one(circuit, alg=Newton()):
    """fastres on one circuit: ``(status text or 'converged', volts dict or None, aid)``."""
    try:
        sol = solve(DCProblem(circuit), alg, check=False)
    except CircuitError as exc:  # the generator builds none, but count them if it ever does
        return f"circuit error: {exc}", None, 0
    st = Status(int(sol.status[0]))
    aid = int(getattr(sol, "aid", np.zeros(1, np.int64))[0])
    if st != Status.CONVERGED:
        return st.text, None, aid
    return "converged", sol.as_dict(), aid


class Tally:
    """Counts of a fuzz run (see :func:`run`)."""

    def __init__(self):
        self.n = 0
        self.converged = 0
        self.wrong = []             # (index, worst error V, tolerance V)
        self.refused = collections.Counter()
        self.aids = collections.Counter()
        self.ng_on_refused = 0      # refused by fastres and run through ngspice
        self.ng_solves_refused = 0  # ... which ngspice solved
        self.ng_solves_refused_kcl = 0  # ... with an answer that passes the KCL check
        self.ng_solves_by_reason = collections.Counter()
        self.ng_solves_beyond_imax = 0  # ... with a Shockley diode beyond imax in ngspice's answer
        self.ng_sampled = 0         # converged by fastres, sampled for ngspice
        self.ng_fails_sampled = 0   # ... which ngspice did not solve
        self.ng_disagree = []       # (index, max |dV| V) on the sample, beyond max(1e-9, 1e-9 max|v|)
        self.exact = []             # on those: (index, fastres error V, ngspice error V, max|v| V)

    def report(self, seconds=None) -> str:
        lines = [f"circuits: {self.n}" + (f" ({seconds:.0f} s)" if seconds else ""),
                 f"converged: {self.converged}",
                 f"wrong (converged, KCL voltage error > max(1e-9 V, 1e-12 max|v|)): {len(self.wrong)}"]
        if self.wrong:
            lines.append("  worst: " + ", ".join(f"#{i} {e:.3g} V (tol {t:.3g})"
                                                  for i, e, t in sorted(self.wrong, key=lambda w: -w[1])[:5]))
        lines.append(f"refused: {sum(self.refused.values())}")
        for why, k in self.refused.most_common():
            extra = (f"  (ngspice solves {self.ng_solves_by_reason[why]})"
                     if self.ng_on_refused else "")
            lines.append(f"  {k:7d}  {why}{extra}")
        lines.append("aids (converged only after plain Newton failed): "
                     + (", ".join(f"{k}: {v}" for k, v in sorted(self.aids.items())) or "none"))
        lines.append(f"ngspice on the refused: {self.ng_on_refused}; solves {self.ng_solves_refused}"
                     f" of them ({self.ng_solves_refused_kcl} with an answer passing the KCL check;"
                     f" {self.ng_solves_beyond_imax} with a Shockley diode beyond imax)")
        lines.append(f"ngspice on a sample of the converged: {self.ng_sampled}; fails on "
                     f"{self.ng_fails_sampled}; disagrees by > max(1e-9 V, 1e-9 max|v|) on "
                     f"{len(self.ng_disagree)}")
        if self.ng_on_refused + self.ng_sampled == self.n:
            ng_refuses = self.ng_fails_sampled + self.ng_on_refused - self.ng_solves_refused
            lines.append(f"ngspice ran on every circuit: refuses {ng_refuses} of {self.n} "
                         f"(fastres refuses {sum(self.refused.values())})")
        if self.ng_disagree:
            lines.append("  largest: " + ", ".join(f"#{i} {d:.3g} V" for i, d in
                                                    sorted(self.ng_disagree, key=lambda w: -w[1])[:5]))
        if self.exact:
            rel = lambda e, vm: e / max(1.0, vm)  # noqa: E731
            fe = [rel(f, vm) for _, f, _, vm in self.exact]
            ne = [rel(g, vm) for _, _, g, vm in self.exact]
            closer = sum(f <= g for _, f, g, _ in self.exact)
            lines.append(f"  against a 60-digit solve ({len(self.exact)} of them): fastres "
                         f"closer on {closer}; error / max(1 V, max|v|): "
                         f"fastres max {max(fe):.3g} median {float(np.median(fe)):.3g}, "
                         f"ngspice max {max(ne):.3g} median {float(np.median(ne)):.3g}")
        return "\n".join(lines)


AID_NAMES = {1: "gmin stepping", 2: "source stepping"}


def run(n, seed=0, ngspice_sample=0.0, ngspice_refused=True, alg=Newton(), progress=False,
        ngspice_cache=None, exact=False):
    """Fuzz ``n`` circuits from ``np.random.default_rng(seed)``; circuit ``i`` is
    ``random_circuit(np.random.default_rng([seed, i]))``. Returns a :class:`Tally`.
    ``ngspice_cache``: a dict of ngspice answers by ``"seed:i"``, used and filled. ``exact``:
    where fastres and ngspice disagree, both are compared with :func:`exact_op`."""
    t = Tally()
    pick = np.random.default_rng([seed, 1 << 30])
    t0 = time.time()
    for i in range(n):
        c = random_circuit(np.random.default_rng([seed, i]))
        why, volts, aid = solve_one(c, alg)
        t.n += 1
        if volts is not None:
            t.converged += 1
            if aid:
                t.aids[AID_NAMES.get(aid, str(aid))] += 1
            ok, worst, tol = check_answer(c, volts)
            if not ok:
                t.wrong.append((i, worst, tol))
            if ngspice_sample > 0 and pick.random() < ngspice_sample:
                t.ng_sampled += 1
                ref = ngspice_op(c, ngspice_cache, f"{seed}:{i}")
                if ref is None:
                    t.ng_fails_sampled += 1
                else:
                    nodes = free_nodes(c)
                    d = max([abs(volts[m] - ref[m]) for m in nodes] + [0.0])
                    vmax = max([abs(x) for x in volts.values()] + [0.0])
                    if d > max(1e-9, 1e-9 * vmax):
                        t.ng_disagree.append((i, d))
                        ex = exact_op(c, volts) if exact else None
                        if ex is not None:
                            t.exact.append((i, max(abs(volts[m] - ex[m]) for m in ex),
                                            max(abs(ref[m] - ex[m]) for m in ex), vmax))
        else:
            t.refused[why] += 1
            if ngspice_refused:
                t.ng_on_refused += 1
                ref = ngspice_op(c, ngspice_cache, f"{seed}:{i}")
                if ref is not None:
                    t.ng_solves_refused += 1
                    t.ng_solves_by_reason[why] += 1
                    if beyond_imax(c, ref):
                        t.ng_solves_beyond_imax += 1
                    if check_answer(c, {m: ref[m] for m in c.nodes})[0]:
                        t.ng_solves_refused_kcl += 1
        if progress and (i + 1) % 1000 == 0:
            print(f"  {i + 1} circuits, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="circuits (default 100,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ngspice-sample", type=float, default=0.002,
                    help="fraction of the converged circuits also run through ngspice")
    ap.add_argument("--no-ngspice", action="store_true", help="no ngspice runs at all")
    ap.add_argument("--no-aids", action="store_true", help="plain Newton only (Newton(aids=False))")
    ap.add_argument("--ngspice-cache", type=Path, default=None,
                    help="JSON file of ngspice answers by circuit, read if present and rewritten "
                         "(ngspice's answers do not depend on fastres: reuse them across runs)")
    ap.add_argument("--exact", action="store_true",
                    help="where fastres and ngspice disagree, compare both with a 60-digit solve")
    args = ap.parse_args(argv)
    alg = Newton(aids=False) if args.no_aids else Newton()
    cache = None
    if args.ngspice_cache is not None:
        cache = json.loads(args.ngspice_cache.read_text()) if args.ngspice_cache.exists() else {}
    t0 = time.time()
    t = run(args.n, args.seed, 0.0 if args.no_ngspice else args.ngspice_sample,
            not args.no_ngspice, alg, progress=True, ngspice_cache=cache, exact=args.exact)
    if cache is not None:
        args.ngspice_cache.write_text(json.dumps(cache))
    print(t.report(time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
