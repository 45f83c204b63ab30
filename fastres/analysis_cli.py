"""``fastres report``, ``fastres compare``, ``fastres export`` and ``fastres watch``.

Registered in the ``fastres`` command by :func:`add_commands`; also runnable on its own as
``python -m fastres.analysis_cli SUBCOMMAND ...``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .errors import FastresError


def add_commands(sub):
    r = sub.add_parser("report", help="plots and a summary of a training run",
                       description="Write learning curves, conductance histograms, fraction of "
                                   "conductances at their bounds, confusion matrix, node-voltage "
                                   "distribution, gradient check (if recorded) and summary.txt.")
    r.add_argument("run", metavar="RUN.h5")
    r.add_argument("--out", metavar="DIR", help="output directory (default: RUN_report/ next to RUN.h5)")
    r.set_defaults(func=_cmd_report)

    c = sub.add_parser("compare", help="overlay the test-error learning curves of several runs")
    c.add_argument("runs", metavar="RUN.h5", nargs="+")
    c.add_argument("--out", metavar="PNG", default="compare.png",
                   help="output image (default: compare.png in the current directory)")
    c.set_defaults(func=_cmd_compare)

    e = sub.add_parser("export", help="write a trained network with one test sample's inputs "
                                      "as an ngspice netlist")
    e.add_argument("run", metavar="RUN.h5")
    e.add_argument("out", metavar="OUT.cir")
    e.add_argument("--epoch", type=int, help="checkpoint epoch (default: the latest)")
    e.add_argument("--sample", type=int, required=True, metavar="K",
                   help="index of the test sample (in the run's test set) driving the inputs")
    e.add_argument("--data", metavar="DIR", help="dataset directory (default: the run's config, "
                                                 "then the search path, then the run's data_root)")
    e.set_defaults(func=_cmd_export)

    w = sub.add_parser("watch", help="follow a (live) training run in the terminal")
    w.add_argument("run", metavar="RUN.h5")
    w.add_argument("--interval", type=float, default=5.0, metavar="S",
                   help="seconds between polls (default 5)")
    w.add_argument("--once", action="store_true", help="print the latest epoch once and exit")
    w.set_defaults(func=_cmd_watch)


# --------------------------------------------------------------------------- report / compare

def _cmd_report(args) -> int:
    from .report import make_report
    for f in make_report(args.run, args.out):
        print(f)
    return 0


def _cmd_compare(args) -> int:
    from .analysis import open_run
    from .report import compare_runs
    out = compare_runs(args.runs, args.out)
    for p in args.runs:
        s = open_run(p).summary()
        best = "-" if s["best_test_error"] is None else f"{100 * s['best_test_error']:.2f}% (epoch {s['best_epoch']})"
        last = "-" if s["last_test_error"] is None else f"{100 * s['last_test_error']:.2f}%"
        print(f"{p}: {s['arch']} {s['diode']}, {s['epochs']}/{s['configured_epochs']} epochs, "
              f"best test error {best}, last {last}")
    print(out)
    return 0


# --------------------------------------------------------------------------- export

def load_run_data(run, data_dir=None):
    """The run's dataset (subset as configured), verified against the run's checksums."""
    from .datasets import DatasetError
    from .train import TrainConfig, load_data
    d = run.config
    if data_dir:
        d["data"] = str(data_dir)
    cfg = TrainConfig.from_stored(d)
    try:
        data = load_data(cfg)
    except DatasetError:
        root = run.meta.get("data_root")
        if data_dir or cfg.data or not root or not Path(root).is_dir():
            raise
        d["data"] = root  # the directory the run was trained from
        data = load_data(TrainConfig.from_stored(d))
    want = run.meta.get("dataset_checksums")
    if want and data.checksums != want:
        raise FastresError(f"{run.path}: the {cfg.dataset} files found at {data.root} differ from "
                           f"the ones the run was trained on (sha256 mismatch); pass --data DIR")
    return data


def export_netlist(path, out, sample, epoch=None, data_dir=None) -> dict:
    """Write the run's network (checkpoint ``epoch``, default latest) driven by test sample
    ``sample`` as an ngspice deck ``out``. Returns ``{"epoch", "sample", "label", "pred",
    "outputs" (V, per class), "nodes" ({name: V} of the output nodes), "text"}``."""
    from .analysis import open_run
    from .netlist import write_netlist
    run = open_run(path)
    tn = run.network(epoch)
    data = load_run_data(run, data_dir)
    n = data.x_test.shape[0]
    if not 0 <= sample < n:
        raise FastresError(f"{path}: --sample {sample} out of range: the run's test set has "
                           f"{n} samples (0..{n - 1})")
    x = data.x_test[sample]
    label = int(data.y_test[sample])
    volts = tn.node_voltages(x)
    ncls = tn.net.spec.sizes[-1]
    outputs = np.array([volts[f"op{k}"] - volts[f"on{k}"] for k in range(ncls)])
    pred = int(np.argmax(outputs))
    cfg = tn.config
    title = (f"fastres {cfg.arch} {cfg.diode} network from {Path(path).name} epoch {tn.epoch}, "
             f"{cfg.dataset} test sample {sample}")
    text = write_netlist(tn.circuit(x, title=title))
    head, _, rest = text.partition("\n")
    comments = [
        f"* run file: {Path(path).resolve()}",
        f"* checkpoint epoch {tn.epoch}; inputs: {cfg.dataset} test sample {sample} (label {label})",
        f"* class k output = V(op<k>) - V(on<k>); fastres predicts class {pred}",
        "* fastres output voltages (V): " + " ".join(f"{k}:{v:.12g}" for k, v in enumerate(outputs)),
    ]
    text = head + "\n" + "\n".join(comments) + "\n" + rest
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FastresError(f"{out}: cannot write netlist: {exc.strerror or exc}") from None
    nodes = {f"{s}{k}": volts[f"{s}{k}"] for k in range(ncls) for s in ("op", "on")}
    return {"epoch": tn.epoch, "sample": sample, "label": label, "pred": pred,
            "outputs": outputs, "nodes": nodes, "text": text}


def _cmd_export(args) -> int:
    r = export_netlist(args.run, args.out, args.sample, args.epoch, args.data)
    print(f"wrote {args.out}: checkpoint epoch {r['epoch']}, test sample {r['sample']} "
          f"(label {r['label']}); run it with: ngspice -b {args.out}")
    print(f"fastres predicted class: {r['pred']}")
    print("output voltages, V(op_k) - V(on_k):")
    for k, v in enumerate(r["outputs"]):
        mark = "  <- predicted" if k == r["pred"] else ""
        print(f"  class {k}: {v:+.12e} V  (V(op{k}) = {r['nodes'][f'op{k}']:+.12e}, "
              f"V(on{k}) = {r['nodes'][f'on{k}']:+.12e}){mark}")
    return 0


# --------------------------------------------------------------------------- watch

def _status_line(run, snap) -> str:
    m = snap.metrics
    total = run.configured_epochs
    if not len(m):
        return f"{run.path}: epoch 0/{total}: no epoch finished yet"
    i = len(m) - 1
    ep = int(m["epoch"][i])

    def val(name, fmt):
        a = m.get(name)
        if a is None or not np.isfinite(a[i]):
            return None
        return fmt(float(a[i]))

    parts = [f"epoch {ep}/{total}"]
    for label, name, fmt in (
            ("test error", "test_error", lambda v: f"{100 * v:.2f}%"),
            ("train error", "train_error", lambda v: f"{100 * v:.2f}%"),
            ("samples/s", "samples_per_second", lambda v: f"{v:,.0f}"),
            ("epoch time", "epoch_seconds", lambda v: f"{v:.1f} s"),
            ("non-converged", "nonconverged", lambda v: f"{int(v)}")):
        s = val(name, fmt)
        if s is not None:
            parts.append(f"{label} {s}")
    te = m.get("test_error")
    if te is not None and np.any(np.isfinite(te)):
        j = int(np.nanargmin(te))
        parts.append(f"best {100 * float(te[j]):.2f}% (epoch {int(m['epoch'][j])})")
    return "  ".join(parts)


def watch(path, interval=5.0, once=False, out=None, max_polls=None) -> int:
    """Print a line per new epoch of run ``path`` until it reaches its configured epochs
    (``once``: print the latest state and return). Ctrl-C stops watching cleanly (returns 0)."""
    from .analysis import open_run
    from .store import StoreError
    out = sys.stdout if out is None else out
    if not (interval > 0):
        raise FastresError(f"--interval {interval}: must be > 0 seconds")
    path = Path(path)
    last_shown = None
    waiting_said = False
    polls = 0
    try:
        while True:
            polls += 1
            if not path.exists() and not once:
                if not waiting_said:
                    print(f"{path}: waiting for the run file to appear ...", file=out, flush=True)
                    waiting_said = True
            else:
                run = open_run(path)  # re-opened each poll: follows a file replaced by --overwrite
                try:
                    snap = run.snapshot()
                except StoreError as exc:
                    if "replaced by a different run" not in str(exc):
                        raise
                    continue  # re-created between our two reads: read the new run now
                m = snap.metrics
                done_epoch = max(snap.latest, int(m["epoch"][-1]) if len(m) else 0)
                key = (run.meta.get("created"), len(m), snap.latest)
                if once or key != last_shown:
                    stamp = time.strftime("%H:%M:%S")
                    print(f"[{stamp}] {_status_line(run, snap)}", file=out, flush=True)
                    last_shown = key
                total = run.configured_epochs
                if once:
                    return 0
                if total is not None and done_epoch >= total:
                    print(f"{path}: run complete ({done_epoch}/{total} epochs)", file=out, flush=True)
                    return 0
            if max_polls is not None and polls >= max_polls:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"\nstopped watching {path}", file=out, flush=True)
        return 0


def _cmd_watch(args) -> int:
    return watch(args.run, args.interval, args.once)


# --------------------------------------------------------------------------- standalone

def build_parser():
    import argparse
    p = argparse.ArgumentParser(prog="fastres", description="fastres run analysis")
    sub = p.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return p


def main(argv=None) -> int:
    """``python -m fastres.analysis_cli ...``: the four commands, with ``fastres``'s error
    handling (``fastres: error: ...``, exit status 2)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FastresError, FileNotFoundError, IsADirectoryError, PermissionError, ValueError) as exc:
        msg = str(exc)
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)) and exc.filename:
            msg = f"{exc.filename}: {exc.strerror}"
        print(f"fastres: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
