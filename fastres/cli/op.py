"""``fastres op``: the DC operating point of an ngspice deck."""
from __future__ import annotations

import json

import numpy as np

from ..errors import UsageError


def add_commands(sub):
    op = sub.add_parser("op", help="DC operating point of an ngspice deck")
    op.add_argument("deck", help="SPICE netlist (ngspice subset: R D V I A(sidiode) E/F amplifiers)")
    op.add_argument("--json", action="store_true", help='print {"node": volts, ...}')
    op.add_argument("--sweep", metavar="S.npz", help="one (B,) array per source name to override")
    op.add_argument("--out", metavar="O.npz", help="write nodes (names) and v (B x nodes) to O.npz")
    op.add_argument("--reltol", type=float, default=1e-12)
    op.add_argument("--vntol", type=float, default=1e-12, help="volts")
    op.add_argument("--abstol", type=float, default=1e-15, help="amperes")
    op.add_argument("--maxiter", type=int, default=100)
    op.set_defaults(func=run_op)


def _read_sweep(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            sources = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read sweep file: {exc}") from None
    for k, v in sources.items():
        if v.ndim != 1:
            raise UsageError(f"{path}: array {k!r} must have shape (B,), got {v.shape}")
    return sources


def run_op(args) -> int:
    from ..errors import ConvergenceError
    from ..netlist import read_netlist
    from ..solver import DCProblem, Newton, solve
    from . import say_compiling

    circuit = read_netlist(args.deck)
    sources = _read_sweep(args.sweep) if args.sweep else {}
    alg = Newton(reltol=args.reltol, vntol=args.vntol, abstol=args.abstol, maxiter=args.maxiter)
    say_compiling()
    try:
        sol = solve(DCProblem(circuit, sources), alg)
    except ConvergenceError as exc:
        raise ConvergenceError(f"{args.deck}: {exc}", exc.samples, exc.solution) from None
    if args.out:
        np.savez(args.out, nodes=np.array(sol.nodes), v=sol.v, iterations=sol.iterations,
                 residual=sol.residual, converged=sol.converged)
    if args.json:
        if sol.batch_size == 1:
            print(json.dumps(sol.as_dict(0)))
        else:
            print(json.dumps({n: sol.voltage(n).tolist() for n in sol.nodes}))
    elif not args.out or sol.batch_size == 1:
        if sol.batch_size == 1:
            width = max(len(n) for n in sol.nodes)
            for n in sol.nodes:
                print(f"v({n}){' ' * (width - len(n))} = {sol.voltage(n)[0]:.15e}")
        else:
            print(f"{sol.batch_size} samples solved; use --out O.npz or --json for the voltages")
    else:
        print(f"{sol.batch_size} samples solved, written to {args.out}")
    return 0
