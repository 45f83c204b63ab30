"""``fastres train``, ``fastres eval`` and ``fastres gradcheck``: the training front end."""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from .errors import FastresError

def _yes_no(text):
    t = text.strip().lower()
    if t in ("yes", "true", "1", "on"):
        return True
    if t in ("no", "false", "0", "off"):
        return False
    raise ValueError(text)


_yes_no.__name__ = "yes/no value"  # argparse's error: "invalid yes/no value: 'x'"

_HELP = {"paired": "yes|no: hidden layers of rectifying and mirrored halves (default: yes for two or "
                   "more hidden layers of even sizes)"}

# command-line flag -> TrainConfig field (values parsed by type below)
_FLAGS = {
    "arch": str, "dataset": str, "data": str, "diode": str, "epochs": int, "batch_size": int,
    "momentum": float, "lr_decay": float, "beta_rel": float, "estimator": str, "target_volts": float,
    "input_volts": float, "bias_volts": float, "rail_lo": float, "rail_hi": float,
    "g_min": float, "g_max": float, "gain": float, "seed": int, "n_train": int, "n_test": int,
    "gradcheck_every": int, "mlp_activation": str, "paired": _yes_no,
}


def add_commands(sub):
    t = sub.add_parser("train", help="train a layered analog network with Equilibrium Propagation",
                       description="Options override the --config file, which overrides the defaults "
                                   "(see fastres.train.TrainConfig).")
    t.add_argument("--out", metavar="RUN.h5", help="the run file to create (all state goes there)")
    t.add_argument("--resume", metavar="RUN.h5", help="continue the run in RUN.h5 from its last checkpoint")
    t.add_argument("--config", metavar="FILE", help="TOML or JSON file of TrainConfig options")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    t.add_argument("--lr", help="learning rates, one per layer, comma separated (dimensionless)")
    t.add_argument("--diode-param", action="append", default=[], metavar="KEY=VALUE",
                   help="diode model parameter, e.g. IS=1e-14, N=1 (shockley) or ron=10 (pwl)")
    t.add_argument("--baseline", choices=["mlp"], help="train the same-size software MLP with "
                   "backpropagation on the same data and schedule instead")
    t.add_argument("--threads", type=int, help="Numba threads (default: all cores)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, typ in _FLAGS.items():
        t.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=_HELP.get(name))
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on the train and test sets")
    e.add_argument("run", metavar="RUN.h5")
    e.add_argument("--epoch", type=int, help="checkpoint epoch (default: the latest)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--data", help="dataset directory (default: the search path)")
    e.set_defaults(func=_cmd_eval)

    g = sub.add_parser("gradcheck", help="EqProp vs exact (adjoint) gradient agreement for a network")
    g.add_argument("--arch", default="784-100-10")
    g.add_argument("--run", metavar="RUN.h5", help="use the conductances of a run's checkpoint")
    g.add_argument("--epoch", type=int)
    g.add_argument("--samples", type=int, default=8)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--diode", default=None)
    g.add_argument("--data", help="dataset directory (default: the search path)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_cmd_gradcheck)


def _set_threads(n):
    if n is not None:
        import numba
        if n < 1:
            raise FastresError(f"--threads {n}: must be >= 1")
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _parse_kv(items):
    out = {}
    for item in items:
        if "=" not in item:
            raise FastresError(f"--diode-param {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise FastresError(f"--diode-param {item!r}: {v!r} is not a number") from None
    return out


def config_from_args(args):
    from .train import TrainConfig
    d = {}
    if args.config:
        d.update(TrainConfig.from_file(args.config))
    for name in _FLAGS:
        val = getattr(args, name, None)
        if val is not None:
            d[name] = val
    if args.lr:
        try:
            d["lr"] = [float(v) for v in args.lr.split(",")]
        except ValueError:
            raise FastresError(f"--lr {args.lr!r}: expected numbers separated by commas") from None
    if args.diode_param:
        d["diode_params"] = {**d.get("diode_params", {}), **_parse_kv(args.diode_param)}
    return TrainConfig.from_dict(d)


def _cmd_train(args) -> int:
    from . import train as tr
    from .parallel import abort, world
    comm = world()
    if comm is not None and args.threads is None:
        args.threads = 1  # one Numba thread per rank: the ranks own the cores
    _set_threads(args.threads)
    rank = 0 if comm is None else comm.Get_rank()
    log = print if rank == 0 else (lambda *a, **k: None)
    try:
        if args.resume:
            if args.out or args.config:
                raise FastresError("--resume continues a run with its stored config: do not give --out or --config")
            tr.resume(args.resume, epochs=args.epochs, progress=not args.quiet, comm=comm, log=log)
            return 0
        if not args.out:
            raise FastresError("give --out RUN.h5 (or --resume RUN.h5)")
        cfg = config_from_args(args)
        if args.baseline == "mlp":
            if comm is not None:
                raise FastresError("--baseline mlp runs in one process; start it without mpirun")
            from .baseline_run import train_baseline
            train_baseline(cfg, args.out, overwrite=args.overwrite)
            return 0
        tr.train(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet, comm=comm, log=log)
        return 0
    except Exception as exc:
        if comm is None:
            raise
        print(f"fastres: error (MPI rank {rank} of {comm.Get_size()}): {exc}", file=sys.stderr, flush=True)
        abort(comm, 2)
        raise


def evaluate_run(path, epoch=None, data_dir=None) -> dict:
    """Test and train error of a run's checkpoint, recomputed from its conductances."""
    from .analysis_cli import load_run_data
    from .store import RunStore
    from .train import TrainConfig, Trainer
    run = RunStore.open(path)
    if run.meta.get("kind") == "mlp":
        raise FastresError(f"{path}: an MLP baseline run; its errors are in its metrics")
    cfg = TrainConfig.from_stored(run.config)
    ck = run.load_checkpoint(epoch)
    data = load_run_data(run, data_dir)  # falls back to where the run was trained from
    trainer = Trainer(cfg)
    trainer.params = ck.params
    t0 = time.perf_counter()
    test_loss, test_err, _, bad_test = trainer.evaluate(data.x_test, data.y_test, cfg.eval_batch)
    train_loss, train_err, _, bad_train = trainer.evaluate(data.x_train, data.y_train, cfg.eval_batch)
    m = run.metrics()
    rows = np.flatnonzero(m["epoch"] == ck.epoch) if "epoch" in m else []
    epoch_seconds = float(m["epoch_seconds"][rows[0]]) if len(rows) else None
    return {"run": str(path), "epoch": ck.epoch, "test_error": test_err, "train_error": train_err,
            "test_loss": test_loss, "train_loss": train_loss, "epoch_seconds": epoch_seconds,
            "nonconverged": bad_test + bad_train, "eval_seconds": time.perf_counter() - t0}


def _cmd_eval(args) -> int:
    r = evaluate_run(args.run, args.epoch, args.data)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['run']} epoch {r['epoch']}: test error {100 * r['test_error']:.2f}% "
              f"(loss {r['test_loss']:.4f}), train error {100 * r['train_error']:.2f}% "
              f"(loss {r['train_loss']:.4f}), epoch time {r['epoch_seconds']} s")
    return 0


def _cmd_gradcheck(args) -> int:
    from .eqprop import gradcheck
    from .train import TrainConfig, Trainer, load_data
    if args.samples < 1:
        raise FastresError(f"--samples {args.samples}: must be >= 1")
    if args.run:
        from .analysis_cli import load_run_data
        from .store import RunStore
        run = RunStore.open(args.run)
        cfg = TrainConfig.from_stored(run.config)
        params = run.load_checkpoint(args.epoch).params
        data = load_run_data(run, args.data)
    else:
        d = {"arch": args.arch, "n_train": 1, "n_test": max(args.samples, 1), "seed": args.seed}
        if args.diode:
            d["diode"] = args.diode
        if args.data:
            d["data"] = args.data
        cfg = TrainConfig.from_dict(d)
        params = None
        data = load_data(cfg)
    trainer = Trainer(cfg)
    if params is None:
        trainer.init_state(np.random.default_rng(args.seed))
        params = trainer.params
    X, y = data.x_test[:args.samples], data.y_test[:args.samples]
    res = gradcheck(trainer.net, params, X, y, cfg.target_volts)
    if args.json:
        print(json.dumps(res, default=lambda o: list(o) if isinstance(o, tuple) else float(o)))
        return 0
    print(f"EqProp vs exact gradient (implicit differentiation), {cfg.arch}, {args.samples} samples")
    print(f"{'beta/G_out':>11} {'beta (S)':>11} {'one-sided rel err':>18} {'centered rel err':>17}")
    for r in res["eqprop"]:
        print(f"{r['beta_rel']:11.0e} {r['beta']:11.3e} {r['one-sided']:18.3e} {r['centered']:17.3e}")
    print("finite differences of the loss vs the exact gradient:")
    for r in res["finite_difference"]:
        print(f"  {r['param']}{list(r['index'])}: exact {r['exact']:.6e}  fd {r['finite_difference']:.6e}  "
              f"rel err {r['rel_error']:.1e}")
    return 0
