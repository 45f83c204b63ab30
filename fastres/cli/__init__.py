"""The ``fastres`` command line: parse, call the library, print.

Subcommands: ``op`` (DC operating point of a SPICE deck; :mod:`.op`), ``train``, ``eval``,
``gradcheck`` (:mod:`.train`), ``sweep`` (:mod:`.sweep`), ``report``, ``compare``, ``export``,
``watch`` (:mod:`.analysis`). One error handler (:func:`main`): the project's own errors
(:class:`~fastres.errors.FastresError`) and unreadable files print ``fastres: error: ...``
and exit with status 2, a DC solve that does not converge exits with status 1, and anything
else is a bug and shows its traceback.
"""
from __future__ import annotations

import os

# Let Numba own the cores: BLAS threads beside Numba threads slow batched small solves down
# 15-500x on 2 cores. Must be set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

EXIT_BAD_INPUT = 2
EXIT_NOT_CONVERGED = 1


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__
    from . import analysis, op, sweep, train
    p = argparse.ArgumentParser(prog="fastres", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"fastres {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    op.add_commands(sub)
    train.add_commands(sub)
    sweep.add_commands(sub)
    analysis.add_commands(sub)
    return p


def kernels_cached() -> bool:
    """True when Numba's on-disk cache holds the Newton kernels (else the first solve compiles
    every kernel, about 30 s)."""
    from .. import kernels
    cache = Path(kernels.__file__).parent / "__pycache__"
    return any(cache.glob("newton.solve_range-*.nbi")) and any(cache.glob("newton.solve_b-*.nbi"))


def say_compiling(log=None) -> None:
    """Tell the user about the one-time compile before it happens (stderr)."""
    if not kernels_cached():
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
            "fastres: compiling kernels, first run only (about 30 s; cached afterwards)")


def main(argv=None) -> int:
    from ..errors import ConvergenceError, FastresError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConvergenceError as exc:
        print(f"fastres: error: {exc}", file=sys.stderr)
        return EXIT_NOT_CONVERGED
    except FastresError as exc:
        print(f"fastres: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"fastres: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fastres: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `fastres op deck.cir | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
