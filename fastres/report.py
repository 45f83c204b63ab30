"""Plots and a text summary of a training run (matplotlib, Agg; ``pip install fastres[plot]``).

``make_report("RUN.h5", "RUN_report")`` writes:

* ``learning_curves.png`` -- train/test error (%) and loss per epoch;
* ``conductances.png`` -- per layer, histogram of the conductances at checkpoint 0 and at the
  last checkpoint, g_min and g_max marked;
* ``bounds.png`` -- per layer, fraction of conductances at g_min and at g_max, per checkpoint;
* ``confusion.png`` -- confusion matrix of the last checkpoint's test predictions;
* ``voltages.png`` -- distribution of the stored node voltages (``v_layer*``) of the first
  stored test samples, first vs last epoch;
* ``gradcheck.png`` -- EqProp-vs-exact gradient relative error per epoch (only when the run
  recorded ``gradcheck_rel_error``; otherwise summary.txt says it was skipped);
* ``summary.txt`` -- the numbers of :meth:`fastres.analysis.Run.summary`, written with ``repr``
  so they equal the values in the file exactly.

Everything comes from ONE snapshot of the file, so a report of a live run is consistent.
``compare_runs(paths, out_png)`` overlays the test-error curves of several runs;
``make_panel(path, out_png)`` draws a compact 2x2 overview (used for the README figure).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .analysis import Run, RunSnapshot, bound_fractions, layer_names, open_run
from .config import DeviceConfig
from .errors import FastresError
from .pulsed import pulse_curve

__all__ = ["make_report", "compare_runs", "make_panel", "format_summary", "default_out_dir",
           "levels_figure", "levels_table"]


def _figure(figsize):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend change)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise FastresError(f"plots need matplotlib, which is not installed ({exc}): "
                           f"pip install fastres[plot]") from None
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, ax, xlabel, ylabel, title=None, title_size=10, legend_size=7):
    """Label ``ax``, add its grid and legend and lay the figure out (every report figure ends so)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()


def _save(fig, path: Path, dpi=100) -> Path:
    try:
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise FastresError(f"{path}: cannot write plot: {exc.strerror or exc}") from None
    return path


def default_out_dir(path) -> Path:
    """``RUN_report/`` next to ``RUN.h5``."""
    p = Path(path)
    return p.with_name(p.stem + "_report")


def _label(run: Run) -> str:
    c = run.config
    return f"{run.path.stem} ({c.get('arch')}, {c.get('diode')})"


# --------------------------------------------------------------------------- axes drawers

def _draw_learning(ax_err, ax_loss, m):
    ep = m["epoch"]
    for name, style in (("train_error", "-o"), ("test_error", "-s")):
        if name in m:
            ax_err.plot(ep, 100 * np.asarray(m[name]), style, ms=3, label=name.replace("_", " "))
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("error (%)")
    ax_err.grid(alpha=0.3)
    ax_err.legend(fontsize=8)
    if ax_loss is not None:
        for name, style in (("train_loss", "-o"), ("test_loss", "-s")):
            if name in m:
                ax_loss.plot(ep, m[name], style, ms=3, label=name.replace("_", " "))
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss (V$^2$)")
        ax_loss.grid(alpha=0.3)
        ax_loss.legend(fontsize=8)


def _draw_conductance_hist(ax, p0, p1, l, e0, e1, g_min, g_max):
    def vals(p):
        parts = [np.ravel(p[f"W{l}"])] + ([np.ravel(p[f"B{l}"])] if f"B{l}" in p else [])
        return np.concatenate(parts) * 1e6
    bins = np.linspace(0, g_max * 1e6 * 1.02, 61)
    ax.hist(vals(p0), bins=bins, alpha=0.55, label=f"epoch {e0}", color="tab:gray")
    ax.hist(vals(p1), bins=bins, alpha=0.55, label=f"epoch {e1}", color="tab:blue")
    ax.axvline(g_min * 1e6, color="tab:red", ls="--", lw=1, label="g_min")
    ax.axvline(g_max * 1e6, color="tab:red", ls=":", lw=1, label="g_max")
    ax.set_yscale("log")
    ax.set_xlabel("conductance (µS)")
    ax.set_ylabel("count")
    ax.set_title(f"layer {l} conductances", fontsize=9)
    ax.legend(fontsize=7)


def _draw_confusion(ax, pred, label, n_classes, title="confusion matrix"):
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (label.astype(np.int64), pred.astype(np.int64)), 1)
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(range(n_classes))
    ax.set_yticks(range(n_classes))
    ax.tick_params(labelsize=7)
    if n_classes <= 12:
        thresh = cm.max() / 2 if cm.size else 0
        for i in range(n_classes):
            for j in range(n_classes):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] > thresh else "black")
    err = 1.0 - np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title} (error {100 * err:.2f}%)", fontsize=9)
    return im


def _draw_voltages(ax, first, last, e0, e1, name, is_output):
    v1 = np.ravel(last[name])
    v0 = np.ravel(first[name]) if first is not None and name in first else None
    allv = v1 if v0 is None else np.concatenate([v0, v1])
    lo, hi = float(np.min(allv)), float(np.max(allv))
    if hi <= lo:
        hi = lo + 1e-6
    bins = np.linspace(lo, hi, 61)
    if v0 is not None and e0 != e1:
        ax.hist(v0, bins=bins, alpha=0.55, color="tab:gray", label=f"epoch {e0}")
    ax.hist(v1, bins=bins, alpha=0.55, color="tab:green", label=f"epoch {e1}")
    ax.set_xlabel("node voltage (V)")
    ax.set_ylabel("count")
    kind = "output" if is_output else "hidden"
    ax.set_title(f"{name} ({kind} nodes)", fontsize=9)
    ax.legend(fontsize=7)


def _vlayer_names(samples) -> list:
    names = [k for k in samples if k.startswith("v_layer") and k[7:].isdigit()]
    return sorted(names, key=lambda k: int(k[7:]))


# --------------------------------------------------------------------------- summary text

def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def format_summary(s: dict, notes=()) -> str:
    """``summary.txt``: ``key: value`` lines (floats as ``repr``, i.e. exactly the stored
    values), a ``#`` comment after some of them, then notes."""
    def pct(v):
        return "" if v is None else f"  # {100 * v:.2f} %"

    lines = [f"fastres run report: {s['path']}"]
    order = ["kind", "arch", "diode", "dataset", "seed", "configured_epochs", "epochs",
             "latest_checkpoint", "complete", "g_min", "g_max"]
    for k in order:
        lines.append(f"{k}: {_fmt(s.get(k))}")
    lines.append(f"best_test_error: {_fmt(s['best_test_error'])}{pct(s['best_test_error'])}")
    lines.append(f"best_epoch: {_fmt(s['best_epoch'])}")
    lines.append(f"last_test_error: {_fmt(s['last_test_error'])}{pct(s['last_test_error'])}")
    lines.append(f"last_epoch: {_fmt(s['last_epoch'])}")
    lines.append(f"last_train_error: {_fmt(s['last_train_error'])}{pct(s['last_train_error'])}")
    for k in ("last_test_loss", "last_train_loss", "mean_epoch_seconds", "total_train_seconds",
              "mean_samples_per_second", "last_samples_per_second", "nonconverged_train_total",
              "nonconverged_eval_total", "gradcheck_recorded", "last_gradcheck_rel_error",
              "device", "last_static_power_w", "last_pulses", "total_pulses", "bounds_epoch"):
        lines.append(f"{k}: {_fmt(s.get(k))}")
    for l, v in sorted(s.get("at_bounds", {}).items()):
        lines.append(f"layer{l}_at_g_min: {_fmt(v['g_min'])}  # {100 * v['g_min']:.3f} %")
        lines.append(f"layer{l}_at_g_max: {_fmt(v['g_max'])}  # {100 * v['g_max']:.3f} %")
    for n in notes:
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


def parse_summary(text: str) -> dict:
    """Read ``summary.txt`` back: ``{key: str value}`` (notes under ``"note"`` as a list)."""
    out = {"note": []}
    for line in text.splitlines()[1:]:
        key, sep, val = line.partition(": ")
        if not sep:
            continue
        if key == "note":
            out["note"].append(val)
        else:
            out[key] = val.split("  #")[0].strip()
    return out


# --------------------------------------------------------------------------- the report

#: The device models :func:`device_curves_figure` draws by default: (label, DeviceConfig fields).
CURVE_MODELS = (("linear, 32 levels", {"model": "linear", "levels": 32}),
                ("linear, 32 levels, up_down=0.3", {"model": "linear", "levels": 32, "up_down": 0.3}),
                ("soft bounds, 32 levels", {"model": "soft-bounds", "levels": 32}),
                ("exponential (realistic: A = 0.25 P_max)", {"preset": "realistic"}),
                ("exponential, a_up=1, a_down=0.1", {"model": "exponential", "levels": 32, "a_up": 1.0,
                                                      "a_down": 0.1}))


def _draw_pulse_curve(ax, cfg, g_min, g_max, label):
    P, g = pulse_curve(cfg, g_min, g_max)
    ax.plot(P, g * 1e6, marker=".", markersize=3, lw=1, label=label)


def device_curves_figure(out_png, models=CURVE_MODELS, g_min=1e-7, g_max=1e-4, table=None) -> str:
    """Conductance against pulse count (potentiation from ``g_min``, then depression) of each
    device model in ``models`` ((label, :class:`~fastres.config.DeviceConfig` fields) pairs),
    and of a measured curve ``table`` (CSV ``pulse, g_up, g_down`` in S) if given; nominal
    devices (no spread, no noise). Conductances in uS on the plot. Returns the PNG's path."""
    items = [(label, DeviceConfig(**fields)) for label, fields in models]
    if table is not None:
        items.append((f"table {Path(table).name}", DeviceConfig(model="table", table=str(table))))
    fig = _figure((7, 4.2))
    ax = fig.subplots()
    for label, cfg in items:
        _draw_pulse_curve(ax, cfg, g_min, g_max, label)
    _finish(fig, ax, "pulse number (potentiation, then depression)", "conductance (uS)",
            "pulsed device models: conductance against pulse count")
    return str(_save(fig, Path(out_png)))


def levels_table(paths) -> list:
    """One row per run file of ``paths``: ``(path, levels, epochs, test_error, train_error,
    pulses)`` from its last finished epoch (errors as fractions, ``pulses`` the last epoch's
    count; ``levels`` None for an ideal device). Runs without a finished epoch are errors."""
    rows = []
    for p in paths:
        run = open_run(p)
        m = run.snapshot().metrics
        if not len(m) or "test_error" not in m:
            raise FastresError(f"{p}: no finished epoch with a test error")
        dcfg = run.train_config().device
        levels = None if dcfg.ideal else dcfg.resolved_params()["levels"]
        pulses = float(m["pulses"][-1]) if "pulses" in m else 0.0
        rows.append((str(p), levels, int(m["epoch"][-1]), float(m["test_error"][-1]),
                     float(m["train_error"][-1]), pulses))
    return rows


def levels_figure(paths, out_png) -> str:
    """Test error (%) against the device's level count (log-2 axis) of the run files
    ``paths`` (their last finished epoch; ideal-device runs drawn as a horizontal line), one
    point a run, labelled with its epoch count. Returns the PNG's path."""
    rows = levels_table(paths)
    fig = _figure((6, 4))
    ax = fig.subplots()
    dev = sorted((r for r in rows if r[1] is not None), key=lambda r: r[1])
    if dev:
        ax.plot([r[1] for r in dev], [100 * r[3] for r in dev], "-o", label="pulsed device (test)")
        ax.plot([r[1] for r in dev], [100 * r[4] for r in dev], ":s", ms=4,
                label="pulsed device (train, during the last epoch)")
        for r in dev:
            ax.annotate(f"{100 * r[3]:.2f} %", (r[1], 100 * r[3]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_xticks([r[1] for r in dev])
        ax.set_xticklabels([str(r[1]) for r in dev])
    for r in rows:
        if r[1] is None:
            ax.axhline(100 * r[3], color="tab:gray", ls="--", lw=1,
                       label=f"ideal device (test, {r[2]} epochs): {100 * r[3]:.2f} %")
    epochs = sorted({r[2] for r in rows})
    _finish(fig, ax, "device levels (linear model)", "error (%)",
            f"error against level count ({', '.join(map(str, epochs))} epochs)")
    return str(_save(fig, Path(out_png)))


def make_report(path, out_dir=None) -> list:
    """Write the report of run ``path`` into ``out_dir`` (default ``RUN_report/`` next to the
    file); returns the written files (PNGs, then ``summary.txt``)."""
    run = open_run(path)
    out = Path(out_dir) if out_dir is not None else default_out_dir(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FastresError(f"{out}: cannot create report directory: {exc.strerror or exc}") from None
    snap = run.snapshot()
    m = snap.metrics
    cfg = run.config
    written, notes = [], []
    is_net = run.kind != "mlp"

    if len(m):
        fig = _figure((10, 4))
        a1, a2 = fig.subplots(1, 2)
        _draw_learning(a1, a2, m)
        fig.suptitle(_label(run), fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out / "learning_curves.png"))
    else:
        notes.append("no finished epoch yet: learning curves skipped")

    dcfg = run.train_config().device
    if not dcfg.ideal:
        net = run.train_config().network
        fig = _figure((6, 4))
        ax = fig.subplots()
        try:
            _draw_pulse_curve(ax, dcfg, net.g_min, net.g_max, f"{dcfg.preset}/{dcfg.resolved_params()['model']}")
        except FastresError as exc:  # e.g. a measured curve's file no longer there
            notes.append(f"device curve skipped: {exc}")
        ax.set_xlabel("pulse number (potentiation, then depression)")
        ax.set_ylabel("conductance (uS)")
        ax.set_title("this run's device (nominal: no spread, no noise)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / "device_curve.png"))

    if is_net:
        g_min, g_max = float(cfg["g_min"]), float(cfg["g_max"])
        e0, e1 = snap.epochs[0], snap.latest
        p0 = run.conductances(e0)
        p1 = run.conductances(e1)
        layers = layer_names(p1)
        fig = _figure((5 * len(layers), 3.8))
        axes = np.atleast_1d(fig.subplots(1, len(layers)))
        for ax, l in zip(axes, layers):
            _draw_conductance_hist(ax, p0, p1, l, e0, e1, g_min, g_max)
        fig.tight_layout()
        written.append(_save(fig, out / "conductances.png"))

        known = {e0: p0, e1: p1}
        bf = {e: bound_fractions(known[e] if e in known else run.conductances(e), g_min, g_max)
              for e in snap.epochs}
        fig = _figure((6.5, 4))
        ax = fig.subplots()
        eps = list(snap.epochs)
        for l in layers:
            color = f"C{(l - 1) % 10}"
            ax.plot(eps, [100 * bf[e][l]["g_min"] for e in eps], "-o", ms=3, color=color,
                    label=f"layer {l} at g_min")
            ax.plot(eps, [100 * bf[e][l]["g_max"] for e in eps], "--s", ms=3, color=color,
                    mfc="white", label=f"layer {l} at g_max")
        _finish(fig, ax, "epoch (checkpoint)", "conductances at bound (%)",
                f"conductances clipped at g_min = {g_min:g} S / g_max = {g_max:g} S", title_size=9)
        written.append(_save(fig, out / "bounds.png"))
    else:
        notes.append("MLP baseline run: conductance plots skipped")

    sample_epochs = [e for e in snap.epochs if e > 0]
    last_s = first_s = None
    if sample_epochs:
        try:
            last_s = run.samples(snap.latest)
            first_s = run.samples(sample_epochs[0])
        except FastresError as exc:
            notes.append(f"no stored samples ({exc})")
    if last_s is not None and "test_pred" in last_s and "test_label" in last_s:
        n_classes = int(max(last_s["test_pred"].max(), last_s["test_label"].max())) + 1
        try:
            n_classes = max(n_classes, int(str(cfg.get("arch", "")).split("-")[-1]))
        except ValueError:
            pass
        fig = _figure((5.5, 4.8))
        ax = fig.subplots()
        im = _draw_confusion(ax, last_s["test_pred"], last_s["test_label"], n_classes,
                             f"epoch {snap.latest} test")
        fig.colorbar(im, ax=ax, shrink=0.8)
        fig.tight_layout()
        written.append(_save(fig, out / "confusion.png"))
    else:
        notes.append("no stored test predictions: confusion matrix skipped")
    vnames = _vlayer_names(last_s) if last_s is not None else []
    if vnames:
        fig = _figure((4.5 * len(vnames), 3.6))
        axes = np.atleast_1d(fig.subplots(1, len(vnames)))
        for ax, name in zip(axes, vnames):
            _draw_voltages(ax, first_s, last_s, sample_epochs[0], snap.latest, name,
                           name == vnames[-1])
        fig.tight_layout()
        written.append(_save(fig, out / "voltages.png"))
    else:
        notes.append("no stored node voltages (v_layer*): voltage distribution skipped")

    gc = m.get("gradcheck_rel_error")
    ok = gc is not None and np.any(np.isfinite(gc))
    if ok:
        sel = np.isfinite(gc)
        fig = _figure((6, 4))
        ax = fig.subplots()
        ax.semilogy(m["epoch"][sel], gc[sel], "-o", ms=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel("relative error |g_EP - g| / |g|")
        ax.set_title(f"EqProp vs exact gradient ({cfg.get('estimator')} estimator, "
                     f"{cfg.get('gradcheck_samples')} test samples)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        written.append(_save(fig, out / "gradcheck.png"))
    else:
        notes.append("gradcheck: metric 'gradcheck_rel_error' not recorded in this run "
                     f"(gradcheck_every = {cfg.get('gradcheck_every')}); gradient-agreement "
                     f"plot skipped")

    s = run.summary(snap)
    txt = out / "summary.txt"
    try:
        txt.write_text(format_summary(s, notes), encoding="utf-8")
    except OSError as exc:
        raise FastresError(f"{txt}: cannot write summary: {exc.strerror or exc}") from None
    written.append(txt)
    return [str(p) for p in written]


def compare_runs(paths, out_png) -> str:
    """Overlay the test-error learning curves of several runs in one PNG; returns its path."""
    if not paths:
        raise FastresError("compare_runs: give at least one run file")
    runs = [open_run(p) for p in paths]
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    for run in runs:
        m = run.snapshot().metrics
        if not len(m) or "test_error" not in m:
            ax.plot([], [], label=f"{_label(run)}: no finished epoch")
            continue
        ax.plot(m["epoch"], 100 * np.asarray(m["test_error"]), "-o", ms=3, label=_label(run))
    _finish(fig, ax, "epoch", "test error (%)", legend_size=8)
    out = Path(out_png)
    return str(_save(fig, out))


def make_panel(path, out_png, dpi=72) -> str:
    """A 2x2 overview of one run (learning curves, conductance histogram of the first layer,
    confusion matrix, hidden-node voltages) for documentation; returns the PNG path."""
    run = open_run(path)
    snap: RunSnapshot = run.snapshot()
    m = snap.metrics
    if not len(m):
        raise FastresError(f"{path}: no finished epoch yet; nothing to plot")
    cfg = run.config
    fig = _figure((10, 8))
    (a, b), (c, d) = fig.subplots(2, 2)
    _draw_learning(a, None, m)
    a.set_title("learning curves", fontsize=9)
    e0, e1 = snap.epochs[0], snap.latest
    p0, p1 = run.conductances(e0), run.conductances(e1)
    _draw_conductance_hist(b, p0, p1, 1, e0, e1, float(cfg["g_min"]), float(cfg["g_max"]))
    sample_epochs = [e for e in snap.epochs if e > 0]
    last_s, first_s = run.samples(e1), run.samples(sample_epochs[0])
    n_classes = int(str(cfg["arch"]).split("-")[-1])
    _draw_confusion(c, last_s["test_pred"], last_s["test_label"], n_classes, f"epoch {e1} test")
    _draw_voltages(d, first_s, last_s, sample_epochs[0], e1, "v_layer1", False)
    fig.suptitle(f"{_label(run)}: {len(m)} epochs, best test error "
                 f"{100 * float(np.nanmin(m['test_error'])):.2f}%", fontsize=10)
    fig.tight_layout()
    return str(_save(fig, Path(out_png), dpi=dpi))
