"""The ``fastres`` command line.

Subcommands: ``op`` (DC operating point of a SPICE deck), ``train``, ``eval``, ``gradcheck``,
``report``, ``compare``, ``export``, ``watch``.
Bad input gets a one-line message naming the problem and exit status 2.
"""
from __future__ import annotations

import os

# Let Numba own the cores: BLAS threads beside Numba threads slow batched small solves down
# 15-500x on 2 cores. Must be set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the command line: printed as ``fastres: error: ...``, exit status 2."""


def _cmd_op(args) -> int:
    from .errors import ConvergenceError, FastresError
    from .netlist import read_netlist
    from .solve import DCProblem, Newton, solve

    circuit = read_netlist(args.deck)
    sources = {}
    if args.sweep:
        try:
            with np.load(args.sweep, allow_pickle=False) as z:
                sources = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
        except (OSError, ValueError) as exc:
            raise UsageError(f"{args.sweep}: cannot read sweep file: {exc}") from None
        for k, v in sources.items():
            if v.ndim != 1:
                raise UsageError(f"{args.sweep}: array {k!r} must have shape (B,), got {v.shape}")
    alg = Newton(reltol=args.reltol, vntol=args.vntol, abstol=args.abstol, maxiter=args.maxiter)
    try:
        sol = solve(DCProblem(circuit, sources), alg)
    except ConvergenceError as exc:
        print(f"fastres: error: {args.deck}: {exc}", file=sys.stderr)
        return 1
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="fastres", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"fastres {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    op = sub.add_parser("op", help="DC operating point of an ngspice deck")
    op.add_argument("deck", help="SPICE netlist (ngspice subset: R D V I A(sidiode) E/F amplifiers)")
    op.add_argument("--json", action="store_true", help='print {"node": volts, ...}')
    op.add_argument("--sweep", metavar="S.npz", help="one (B,) array per source name to override")
    op.add_argument("--out", metavar="O.npz", help="write nodes (names) and v (B x nodes) to O.npz")
    op.add_argument("--reltol", type=float, default=1e-12)
    op.add_argument("--vntol", type=float, default=1e-12, help="volts")
    op.add_argument("--abstol", type=float, default=1e-15, help="amperes")
    op.add_argument("--maxiter", type=int, default=100)
    op.set_defaults(func=_cmd_op)

    from . import analysis_cli, train_cli
    train_cli.add_commands(sub)
    analysis_cli.add_commands(sub)
    return p


def main(argv=None) -> int:
    from .errors import FastresError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, FastresError, FileNotFoundError, IsADirectoryError, PermissionError,
            ValueError) as exc:
        msg = str(exc)
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)) and exc.filename:
            msg = f"{exc.filename}: {exc.strerror}"
        print(f"fastres: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fastres: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fastres op deck.cir | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
