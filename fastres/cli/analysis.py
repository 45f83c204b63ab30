"""``fastres report``, ``fastres compare``, ``fastres export`` and ``fastres watch``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import UsageError
from .train import add_wire_args


def add_commands(sub):
    r = sub.add_parser("report", help="plots and a summary of a training run",
                       description="Write learning curves, conductance histograms, fraction of "
                                   "conductances at their bounds, confusion matrix, node-voltage "
                                   "distribution, gradient check (if recorded) and summary.txt.")
    r.add_argument("run", metavar="RUN.h5")
    r.add_argument("--out", metavar="DIR", help="output directory (default: RUN_report/ next to RUN.h5)")
    r.set_defaults(func=run_report)

    c = sub.add_parser("compare", help="overlay the test-error learning curves of several runs")
    c.add_argument("runs", metavar="RUN.h5", nargs="+")
    c.add_argument("--out", metavar="PNG", default="compare.png",
                   help="output image (default: compare.png in the current directory)")
    c.set_defaults(func=run_compare)

    e = sub.add_parser("export", help="write a trained network with one test sample's inputs "
                                      "as an ngspice netlist")
    e.add_argument("run", metavar="RUN.h5")
    e.add_argument("out", metavar="OUT.cir")
    e.add_argument("--epoch", type=int, help="checkpoint epoch (default: the latest)")
    e.add_argument("--sample", type=int, required=True, metavar="K",
                   help="index of the test sample (in the run's test set) driving the inputs")
    e.add_argument("--data", metavar="DIR", help="dataset directory (default: the run's config, "
                                                 "then the search path, then the run's data_root)")
    add_wire_args(e)
    e.set_defaults(func=run_export)

    w = sub.add_parser("watch", help="follow a (live) training run in the terminal")
    w.add_argument("run", metavar="RUN.h5")
    w.add_argument("--interval", type=float, default=5.0, metavar="S",
                   help="seconds between polls (default 5)")
    w.add_argument("--once", action="store_true", help="print the latest epoch once and exit")
    w.set_defaults(func=run_watch)


def run_report(args) -> int:
    from ..report import make_report
    for f in make_report(args.run, args.out):
        print(f)
    return 0


def run_compare(args) -> int:
    from ..analysis import open_run
    from ..report import compare_runs
    out = compare_runs(args.runs, args.out)
    for p in args.runs:
        s = open_run(p).summary()
        best = "-" if s["best_test_error"] is None else f"{100 * s['best_test_error']:.2f}% (epoch {s['best_epoch']})"
        last = "-" if s["last_test_error"] is None else f"{100 * s['last_test_error']:.2f}%"
        print(f"{p}: {s['arch']} {s['diode']}, {s['epochs']}/{s['configured_epochs']} epochs, "
              f"best test error {best}, last {last}")
    print(out)
    return 0


def run_export(args) -> int:
    from ..analysis import export_netlist
    from . import say_compiling
    say_compiling()
    r = export_netlist(args.run, args.out, args.sample, args.epoch, args.data, args.wire_ohms, args.tile)
    print(f"wrote {args.out}: checkpoint epoch {r['epoch']}, test sample {r['sample']} "
          f"(label {r['label']}); run it with: ngspice -b {args.out}")
    print(f"fastres predicted class: {r['pred']}")
    print("output voltages, V(op_k) - V(on_k):")
    for k, v in enumerate(r["outputs"]):
        mark = "  <- predicted" if k == r["pred"] else ""
        print(f"  class {k}: {v:+.12e} V  (V(op{k}) = {r['nodes'][f'op{k}']:+.12e}, "
              f"V(on{k}) = {r['nodes'][f'on{k}']:+.12e}){mark}")
    return 0


def watch(path, interval=5.0, once=False, out=None, max_polls=None) -> int:
    """Print a line per new epoch of run ``path`` until it reaches its configured epochs
    (``once``: print the latest state and return). Ctrl-C stops watching cleanly (returns 0)."""
    from ..analysis import open_run, status_line
    from ..store import StoreError
    out = sys.stdout if out is None else out
    if not (interval > 0):
        raise UsageError(f"--interval {interval}: must be > 0 seconds")
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
                    print(f"[{stamp}] {status_line(run, snap)}", file=out, flush=True)
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


def run_watch(args) -> int:
    return watch(args.run, args.interval, args.once)
