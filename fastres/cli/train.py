"""``fastres train``, ``fastres eval`` and ``fastres gradcheck``."""
from __future__ import annotations

import json
import sys

import numpy as np

from ..errors import UsageError


def _yes_no(text):
    t = text.strip().lower()
    if t in ("yes", "true", "1", "on"):
        return True
    if t in ("no", "false", "0", "off"):
        return False
    raise ValueError(text)


_yes_no.__name__ = "yes/no value"  # argparse's error: "invalid yes/no value: 'x'"


def _tile(text):
    """--tile: cells per tile side (an integer; 0 and below are refused by the config) or whole."""
    return "whole" if text.strip().lower() == "whole" else int(text)


_tile.__name__ = "tile size (cells, or whole)"

_HELP = {"paired": "yes|no: hidden layers of rectifying and mirrored halves (default: yes for two or "
                   "more hidden layers of even sizes)",
         "estimator": "centered | one-sided | random-sign (EqProp) | exact (implicit differentiation)",
         "linear": "auto | schur | cg: the Newton direction's linear solver (auto: cg for wide "
                   "multi-layer networks and very wide single hidden layers, see README "
                   "'Deep, wide networks')",
         "wire_ohms": "R: crossbar wires of R ohm per segment (default 0: ideal wires; see README "
                      "'Crossbar wires')",
         "tile": "T: crossbar tiles of at most T x T cells, or whole (one tile per matrix, the default)",
         "driver_ohms": "driver resistance (ohm) at each row line's driven end (needs --wire-ohms)",
         "sense_ohms": "sense resistance (ohm) at each column line's summed end (needs --wire-ohms)",
         "mlp_target": "the MLP baseline's one-hot target value (default: 1.5 for relu, 1 for "
                       "hardtanh; see docs/defaults.md)"}

# command-line flag -> TrainConfig option (fastres.config; values parsed by type below)
FLAGS = {
    "arch": str, "dataset": str, "data": str, "diode": str, "epochs": int, "batch_size": int,
    "momentum": float, "lr_decay": float, "beta_rel": float, "estimator": str, "target_volts": float,
    "input_volts": float, "bias_volts": float, "rail_lo": float, "rail_hi": float,
    "g_min": float, "g_max": float, "gain": float, "seed": int, "n_train": int, "n_test": int,
    "gradcheck_every": int, "mlp_activation": str, "mlp_target": float, "paired": _yes_no, "linear": str,
    "wire_ohms": float, "tile": _tile, "driver_ohms": float, "sense_ohms": float,
}


def add_commands(sub):
    t = sub.add_parser("train", help="train a layered analog network with Equilibrium Propagation",
                       description="Options override the --config file, which overrides the defaults "
                                   "(see fastres.config.TrainConfig).")
    t.add_argument("--out", metavar="RUN.h5", help="the run file to create (all state goes there)")
    t.add_argument("--resume", metavar="RUN.h5", help="continue the run in RUN.h5 from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_config_options(t)
    t.add_argument("--baseline", choices=["mlp"], help="train the same-size software MLP with "
                   "backpropagation on the same data and schedule instead")
    t.add_argument("--threads", type=int, help="Numba threads (default: all cores)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on the train and test sets")
    e.add_argument("run", metavar="RUN.h5")
    e.add_argument("--epoch", type=int, help="checkpoint epoch (default: the latest)")
    e.add_argument("--json", action="store_true", help="print the result as JSON (exit status 1 "
                                                       "if any solve did not converge)")
    e.add_argument("--data", help="dataset directory (default: the search path)")
    add_wire_args(e)
    e.set_defaults(func=run_eval)

    g = sub.add_parser("gradcheck", help="EqProp vs exact (adjoint) gradient agreement for a network")
    g.add_argument("--arch", default="784-100-10")
    g.add_argument("--run", metavar="RUN.h5", help="use the conductances of a run's checkpoint")
    g.add_argument("--epoch", type=int)
    g.add_argument("--samples", type=int, default=8)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--diode", default=None)
    g.add_argument("--data", help="dataset directory (default: the search path)")
    g.add_argument("--json", action="store_true")
    add_wire_args(g)
    g.set_defaults(func=run_gradcheck)


def add_config_options(p):
    """The options that make a TrainConfig (``--config``, ``--lr``, ``--arch``, ...; read back
    by :func:`config_from_args`): shared by ``train`` and ``sweep``."""
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of options, flat or in "
                                                    "[network], [estimator], ... sections")
    p.add_argument("--lr", help="learning rates, one per layer, comma separated (dimensionless)")
    p.add_argument("--mlp-lr", help="the MLP baseline's learning rates, one per layer or one for all, "
                                    "comma separated (default: the rule of fastres.baseline)")
    p.add_argument("--diode-param", action="append", default=[], metavar="KEY=VALUE",
                   help="diode model parameter, e.g. IS=1e-14, N=1 (shockley) or ron=10 (pwl)")
    p.add_argument("--device", metavar="PRESET", help="programmable-conductance model: ideal (default) "
                   "or realistic (see fastres.config.DeviceConfig)")
    p.add_argument("--device-param", action="append", default=[], metavar="KEY=VALUE",
                   help="device setting overriding the preset, e.g. model=soft-bounds, levels=64, "
                        "write_noise=0.01, accumulate=true, table=curve.csv")
    for name, typ in FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=_HELP.get(name))


def add_wire_args(p):
    """``--wire-ohms R --tile T`` of eval and export: deploy a run's conductances on wires."""
    p.add_argument("--wire-ohms", type=float, metavar="R", help="evaluate on crossbar wires of R ohm "
                   "per segment instead of the run's own wires (0: ideal wires)")
    p.add_argument("--tile", type=_tile, metavar="T", help="with --wire-ohms: tiles of at most "
                   "T x T cells, or whole")


def set_threads(n):
    if n is not None:
        import numba
        if n < 1:
            raise UsageError(f"--threads {n}: must be >= 1")
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _parse_kv(items):
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--diode-param {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise UsageError(f"--diode-param {item!r}: {v!r} is not a number") from None
    return out


def _parse_device(items):
    """``--device-param KEY=VALUE``: integers, numbers, true/false, else text."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--device-param {item!r}: expected KEY=VALUE")
        k, v = (t.strip() for t in item.split("=", 1))
        if v.lower() in ("true", "false", "yes", "no"):
            out[k] = v.lower() in ("true", "yes")
            continue
        for conv in (int, float):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                pass
        else:
            out[k] = v
    return out


def config_from_args(args, base=None):
    """The TrainConfig of ``base`` (a config dict) overridden by ``--config FILE``, overridden
    by the flags."""
    from ..config import TrainConfig, merge
    d = merge(base or {}, TrainConfig.read_file(args.config) if args.config else {})
    flags = {name: getattr(args, name) for name in FLAGS if getattr(args, name, None) is not None}
    if args.lr:
        try:
            flags["lr"] = [float(v) for v in args.lr.split(",")]
        except ValueError:
            raise UsageError(f"--lr {args.lr!r}: expected numbers separated by commas") from None
    if getattr(args, "mlp_lr", None):
        try:
            flags["mlp_lr"] = [float(v) for v in args.mlp_lr.split(",")]
        except ValueError:
            raise UsageError(f"--mlp-lr {args.mlp_lr!r}: expected numbers separated by commas") from None
    merged = merge(d, flags)
    if args.device:
        merged["device"]["preset"] = args.device
    if args.device_param:
        merged["device"].update(_parse_device(args.device_param))
    if args.diode_param:
        merged["network"]["diode_params"] = {**merged["network"].get("diode_params", {}),
                                             **_parse_kv(args.diode_param)}
    return TrainConfig.from_dict(merged)


#: flags that --resume accepts: how far and where, never what (the stored config decides that)
RESUME_FLAGS = ("epochs", "data")


def check_resume_args(args):
    """--resume continues the stored config: refuse every flag that would change the run."""
    given = [f"--{n.replace('_', '-')}" for n in FLAGS if n not in RESUME_FLAGS
             and getattr(args, n, None) is not None]
    for flag, val in (("--out", args.out), ("--config", args.config), ("--lr", args.lr),
                      ("--mlp-lr", getattr(args, "mlp_lr", None)),
                      ("--diode-param", args.diode_param), ("--baseline", args.baseline),
                      ("--device", args.device), ("--device-param", args.device_param),
                      ("--overwrite", args.overwrite)):
        if val:
            given.append(flag)
    if given:
        raise UsageError(f"--resume continues a run with its stored config; {', '.join(given)} would "
                         f"change it (only --epochs N, --data DIR, --threads and --quiet go with "
                         f"--resume; start a new run with --out to change options)")


def run_train(args) -> int:
    from .. import train as tr
    from ..parallel import abort, world
    from . import say_compiling
    comm = world()
    if comm is not None and args.threads is None:
        args.threads = 1  # one Numba thread per rank: the ranks own the cores
    set_threads(args.threads)
    rank = 0 if comm is None else comm.Get_rank()
    log = print if rank == 0 else (lambda *a, **k: None)
    try:
        if args.resume:
            check_resume_args(args)
            if rank == 0:
                say_compiling()
            tr.resume(args.resume, epochs=args.epochs, data_dir=args.data, progress=not args.quiet,
                      comm=comm, log=log)
            return 0
        if not args.out:
            raise UsageError("give --out RUN.h5 (or --resume RUN.h5)")
        cfg = config_from_args(args)
        if args.baseline == "mlp":
            if comm is not None:
                raise UsageError("--baseline mlp runs in one process; start it without mpirun")
            from ..baseline_run import train_baseline
            train_baseline(cfg, args.out, overwrite=args.overwrite)
            return 0
        if rank == 0:
            say_compiling()
        tr.train(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet, comm=comm, log=log)
        return 0
    except Exception as exc:
        if comm is None:
            raise
        print(f"fastres: error (MPI rank {rank} of {comm.Get_size()}): {exc}", file=sys.stderr, flush=True)
        abort(comm, 2)
        raise


def run_eval(args) -> int:
    from ..analysis import evaluate_run
    from . import say_compiling
    say_compiling()
    r = evaluate_run(args.run, args.epoch, args.data, args.wire_ohms, args.tile)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['run']} epoch {r['epoch']}: test error {100 * r['test_error']:.2f}% "
              f"(loss {r['test_loss']:.4f}), train error {100 * r['train_error']:.2f}% "
              f"(loss {r['train_loss']:.4f}), epoch time {r['epoch_seconds']} s"
              + (" | DIVERGED in training (see its metrics loss_growth, pinned_fraction)" if r["diverged"] else ""))
        if r["worst_line_drop_v"] is not None:
            print(f"on crossbar wires of {r['wire_ohms']:g} ohm per segment, tile "
                  f"{r['tile'] or 'whole'}: worst line IR drop {r['worst_line_drop_v']:.4g} V (first test samples)")
    if r["nonconverged"]:
        print(f"fastres: error: {args.run}: {r['nonconverged']} of {r['samples']} solves did not "
              f"converge; the error rates above count them as they ended", file=sys.stderr)
        return 1
    return 0


def run_gradcheck(args) -> int:
    from ..config import TrainConfig
    from ..datasets import load_data
    from ..crossbar import make_network, wired_gradcheck_table, with_wires
    from ..eqprop import gradcheck
    from ..solver import Newton
    from . import say_compiling
    if args.samples < 1:
        raise UsageError(f"--samples {args.samples}: must be >= 1")
    if args.run:
        from ..analysis import load_run_data, open_run
        run = open_run(args.run)
        tn = run.network(args.epoch, args.wire_ohms, args.tile)
        cfg, net, params = tn.config, tn.net, tn.params
        data = load_run_data(run, args.data)
    else:
        d = {"arch": args.arch, "n_train": 1, "n_test": max(args.samples, 1), "seed": args.seed}
        if args.diode:
            d["diode"] = args.diode
        if args.data:
            d["data"] = args.data
        cfg = with_wires(TrainConfig(**d), args.wire_ohms, args.tile)
        net = make_network(cfg)
        params = net.init_params(np.random.default_rng(args.seed), *cfg.network.init_range())
        data = load_data(cfg)
    X, y = data.x_test[:args.samples], data.y_test[:args.samples]
    say_compiling()
    check = wired_gradcheck_table if net.wired else gradcheck
    res = check(net, params, X, y, cfg.estimator.target_volts, alg=Newton.from_config(cfg.solver))
    if args.json:
        print(json.dumps(res, default=lambda o: list(o) if isinstance(o, tuple) else float(o)))
        return 0
    wires = (f", crossbar wires {cfg.wires.wire_ohms:g} ohm, tile {cfg.wires.tile or 'whole'}"
             if net.wired else "")
    print(f"EqProp vs exact gradient (implicit differentiation), {cfg.network.arch}{wires}, {args.samples} samples")
    print(f"{'beta/G_out':>11} {'beta (S)':>11} {'one-sided rel err':>18} {'centered rel err':>17}")
    for r in res["eqprop"]:
        print(f"{r['beta_rel']:11.0e} {r['beta']:11.3e} {r['one-sided']:18.3e} {r['centered']:17.3e}")
    print("finite differences of the loss vs the exact gradient:")
    for r in res["finite_difference"]:
        print(f"  {r['param']}{list(r['index'])}: exact {r['exact']:.6e}  fd {r['finite_difference']:.6e}  "
              f"rel err {r['rel_error']:.1e}")
    return 0

