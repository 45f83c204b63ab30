"""``fastres sweep``: grid or random search over config keys, each trial an ordinary run."""
from __future__ import annotations

import dataclasses
import os
import signal
import sys

from ..errors import UsageError
from .train import add_config_options, config_from_args


def add_commands(sub):
    s = sub.add_parser(
        "sweep", help="grid or random search over training options, trials side by side",
        description="Each trial is a `fastres train` run (one thread) in DIR, named by its number and "
                    "settings; trials run --jobs at a time. Run it again on DIR to resume: finished "
                    "trials are not repeated, interrupted ones continue from their checkpoint. Ends "
                    "with DIR/results.txt and .csv, DIR/best.toml (for `fastres train --config`) and "
                    "DIR/best.png. Options other than the sweep's own are the base config of every "
                    "trial, as for `fastres train`.")
    s.add_argument("dir", metavar="DIR", help="the sweep directory (created, or resumed)")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values of a config option to try (TOML values: 0.1, [40,12], pwl, true); "
                        "KEY=LOW..HIGH[:log] draws from a range (with --random); lr_scale=V1,V2 "
                        "multiplies the base learning rates")
    s.add_argument("--spec", metavar="FILE", help="TOML sweep file: [grid] key = [values] or "
                   "{low, high, log}, [base] options, random, search_seed, prune, prune_after, prune_min")
    s.add_argument("--random", type=int, metavar="N", help="N random trials instead of the full grid")
    s.add_argument("--search-seed", type=int, help="seed of the random trials' draws (default 0)")
    s.add_argument("--prune", choices=["median", "none"], help="early stop of trials behind the median "
                   "of the others (default median)")
    s.add_argument("--prune-after", type=int, metavar="E", help="first epoch checked (default 1)")
    s.add_argument("--prune-min", type=int, metavar="K", help="other trials that must have reached the "
                   "epoch (default 3)")
    s.add_argument("--jobs", type=int, metavar="N", help="trials run side by side, one thread each "
                   "(default: the number of cores)")
    s.add_argument("--ranks", type=int, metavar="K", help="run each trial on K MPI ranks (one thread "
                   "each; a cluster: --jobs trials of K ranks side by side)")
    s.add_argument("--mpiexec", metavar="CMD", help="the MPI launcher for --ranks (default: mpiexec; "
                   "e.g. 'srun --exclusive' under Slurm)")
    s.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    s.add_argument("--plot-best", type=int, default=3, metavar="K", help="trials in best.png (0: no plot)")
    add_config_options(s)
    s.set_defaults(func=run_sweep)


def _search_defaults() -> dict:
    """The options that define a search besides its keys (stored in the sweep directory), with
    their defaults (:class:`fastres.sweep.SweepSpec`, the one place stating them)."""
    from ..sweep import SweepSpec
    return {f.name: f.default for f in dataclasses.fields(SweepSpec) if f.name not in ("base", "space")}


def _gave_spec(args, flags) -> bool:
    """True when the command line describes a sweep (else it resumes DIR's stored one)."""
    return bool(args.grid or args.spec or any(getattr(args, k) is not None for k in _search_defaults())
                or args.config or args.lr or args.diode_param or args.device or args.device_param
                or any(getattr(args, n, None) is not None for n in flags))


def spec_from_args(args):
    """The :class:`~fastres.sweep.SweepSpec` of the command line and ``--spec`` file."""
    from ..sweep import SweepSpec, base_from_config, parse_axis, read_spec_file
    from .train import FLAGS
    if not _gave_spec(args, FLAGS):
        return None
    filed = read_spec_file(args.spec) if args.spec else {"grid": []}
    space = dict(filed["grid"])
    for arg in args.grid:
        key, axis = parse_axis(arg)
        space[key] = axis  # the command line overrides the file
    search = {k: filed.get(k, d) if getattr(args, k) is None else getattr(args, k)
              for k, d in _search_defaults().items()}
    base = base_from_config(config_from_args(args, filed.get("base", {})))
    return SweepSpec(base=base, space=tuple(space.items()), **search)


def run_sweep(args) -> int:
    from .. import sweep as sw
    from . import kernels_cached
    if args.plot_best < 0:
        raise UsageError(f"--plot-best {args.plot_best}: must be >= 0")
    if args.mpiexec and args.ranks is None:
        raise UsageError("--mpiexec goes with --ranks K")
    launcher = () if args.ranks is None else sw.mpi_launcher(args.ranks, args.mpiexec)
    jobs = args.jobs if args.jobs is not None else max(1, (os.cpu_count() or 1) // (args.ranks or 1))
    sweep = sw.open_sweep(args.dir, spec_from_args(args))
    cached = kernels_cached()
    if not cached:
        print("fastres: the first trial compiles the kernels (about 30 s, cached afterwards); the "
              "others start after its first epoch")
    # a plain `kill` of the sweep stops its trials too (run_sweep's cleanup runs on SystemExit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    rows = sw.run_sweep(sweep, jobs, retry_failed=args.retry_failed, first_alone=not cached,
                        launcher=launcher)
    files = sw.write_results(sweep, rows, args.plot_best)
    print(sw.format_table(rows, [k for k, _ in sweep.spec.space]), end="")
    for what in ("table", "csv", "best", "plot"):
        if what in files:
            print(f"{what}: {files[what]}")
    if "best" not in files:
        print("no trial finished: no best.toml")
    return 0
