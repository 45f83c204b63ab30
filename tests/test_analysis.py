"""Run analysis: reader, report, compare, export (ngspice round trip), watch; live and corrupt files."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fastres.cli import analysis as analysis_cli
from fastres.cli import main as fastres_main
from fastres.analysis import open_run
from fastres.report import compare_runs, make_report, parse_summary
from fastres.store import RunStore, StoreError
from fastres.train import TrainConfig, load_data, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(arch="784-12-10", n_train=300, n_test=100, epochs=2)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module", autouse=True)
def _cwd_at_repo_root():
    """MNIST is found at ../shared/data/mnist relative to the working directory."""
    old = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(old)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "small.h5"
    os.chdir(ROOT)
    train(TrainConfig(**SMALL), path, progress=False, log=quiet)
    return path


@pytest.fixture(scope="module")
def gradcheck_run(tmp_path_factory):
    """A real run that records the EqProp-vs-exact gradient agreement every epoch."""
    import fastres.train as tr
    from fastres.eqprop import eqprop_gradient
    path = tmp_path_factory.mktemp("gc") / "gc.h5"
    os.chdir(ROOT)
    mp = pytest.MonkeyPatch()
    if not hasattr(tr, "eqprop_gradient"):  # Trainer.gradcheck uses it; import it if train.py forgot
        mp.setattr(tr, "eqprop_gradient", eqprop_gradient, raising=False)
    try:
        train(TrainConfig(**SMALL, gradcheck_every=1, gradcheck_samples=4), path, progress=False,
              log=quiet)
    finally:
        mp.undo()
    return path


def cli(argv, capsys):
    """Run ``fastres <argv>`` (the analysis commands) through the one command-line entry."""
    rc = fastres_main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------------------- reader

def test_reader_matches_store(run_file):
    run = open_run(run_file)
    store = RunStore.open(run_file)
    assert run.meta == store.meta and store.layout_version == 2
    # the stored config is sectioned (layout 2); the reader gives it flat, migrated
    assert run.train_config().to_dict() == store.config
    assert run.config == {k: v for sec in store.config.values() for k, v in sec.items()}
    m = run.metrics
    ref = store.metrics()
    assert list(m) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(m[k], ref[k])
    assert len(m) == 2 and list(m["epoch"]) == [1, 2]
    rows = m.table()
    assert [r["epoch"] for r in rows] == [1, 2] and isinstance(rows[0]["epoch"], int)
    assert rows[1]["test_error"] == float(ref["test_error"][1])
    assert run.epochs == [0, 1, 2] and run.latest_epoch == 2
    g = run.conductances()
    assert set(g) == {"W1", "B1", "W2", "B2"} and g["W1"].shape == (1568, 12)
    for k, v in store.load_checkpoint(1).params.items():
        np.testing.assert_array_equal(run.conductances(1)[k], v)
    s = run.samples(2)
    assert {"test_pred", "test_label", "v_layer1", "v_layer2"} <= set(s)
    assert s["v_layer1"].shape == (100, 12)  # store_samples=256 > n_test=100
    with pytest.raises(StoreError, match="no checkpoint for epoch 7"):
        run.conductances(7)


def test_network_rebuild_reproduces_stored_predictions(run_file):
    run = open_run(run_file)
    tn = run.network()
    assert tn.epoch == 2
    net, params = tn
    assert net.spec.sizes == (784, 12, 10)
    data = load_data(TrainConfig.from_dict(run.config))
    np.testing.assert_array_equal(tn.predict(data.x_test), run.samples(2)["test_pred"])
    x = tn.solve(data.x_test[:5])
    np.testing.assert_allclose(net.layer(x, 1), run.samples(2)["v_layer1"][:5], rtol=0, atol=1e-12)


def test_summary_values(run_file):
    run = open_run(run_file)
    s = run.summary()
    m = RunStore.open(run_file).metrics()
    assert s["epochs"] == 2 and s["configured_epochs"] == 2 and s["complete"] is True
    assert s["best_test_error"] == float(np.min(m["test_error"]))
    assert s["best_epoch"] == int(m["epoch"][np.argmin(m["test_error"])])
    assert s["last_test_error"] == float(m["test_error"][-1])
    assert s["mean_epoch_seconds"] == float(np.mean(m["epoch_seconds"]))
    assert s["mean_samples_per_second"] == float(np.mean(m["samples_per_second"]))
    assert s["nonconverged_train_total"] == int(np.sum(m["nonconverged"]))
    assert s["gradcheck_recorded"] is False and s["last_gradcheck_rel_error"] is None
    assert set(s["at_bounds"]) == {1, 2}
    for f in s["at_bounds"].values():
        assert 0.0 <= f["g_min"] <= 1.0 and 0.0 <= f["g_max"] <= 1.0


# --------------------------------------------------------------------------- report

def _independent_bounds(params, l, g_min, g_max):
    g = np.concatenate([params[f"W{l}"].ravel(), params[f"B{l}"].ravel()])
    return (np.mean(np.isclose(g, g_min, rtol=1e-9, atol=0) | (g < g_min)),
            np.mean(np.isclose(g, g_max, rtol=1e-9, atol=0) | (g > g_max)))


def test_report_files_and_summary_numbers(run_file, tmp_path):
    out = tmp_path / "rep"
    files = make_report(run_file, out)
    names = {Path(f).name for f in files}
    assert names == {"learning_curves.png", "conductances.png", "bounds.png", "confusion.png",
                     "voltages.png", "summary.txt"}
    for f in files:
        assert Path(f).stat().st_size > 0
        if f.endswith(".png"):
            assert Path(f).read_bytes()[:8] == PNG_SIGNATURE and Path(f).stat().st_size > 5000
    summary = parse_summary((out / "summary.txt").read_text())
    store = RunStore.open(run_file)
    m, cfg = store.metrics(), open_run(run_file).config  # flat options
    te = m["test_error"]
    assert float(summary["best_test_error"]) == float(np.min(te))
    assert int(summary["best_epoch"]) == int(m["epoch"][np.argmin(te)])
    assert float(summary["last_test_error"]) == float(te[-1])
    assert float(summary["last_train_error"]) == float(m["train_error"][-1])
    assert float(summary["last_test_loss"]) == float(m["test_loss"][-1])
    assert int(summary["epochs"]) == len(m["epoch"]) == 2
    assert float(summary["mean_epoch_seconds"]) == float(np.mean(m["epoch_seconds"]))
    assert float(summary["total_train_seconds"]) == float(np.sum(m["epoch_seconds"]))
    assert float(summary["mean_samples_per_second"]) == float(np.mean(m["samples_per_second"]))
    assert float(summary["last_samples_per_second"]) == float(m["samples_per_second"][-1])
    assert int(summary["nonconverged_train_total"]) == int(np.sum(m["nonconverged"]))
    assert int(summary["nonconverged_eval_total"]) == int(np.sum(m["eval_nonconverged"]))
    assert float(summary["g_min"]) == cfg["g_min"] and float(summary["g_max"]) == cfg["g_max"]
    params = store.load_checkpoint(2).params
    for l in (1, 2):
        lo, hi = _independent_bounds(params, l, cfg["g_min"], cfg["g_max"])
        assert float(summary[f"layer{l}_at_g_min"]) == lo
        assert float(summary[f"layer{l}_at_g_max"]) == hi
    assert summary["gradcheck_recorded"] == "False"
    assert any("gradcheck" in n and "skipped" in n for n in summary["note"])


def test_report_with_gradcheck(gradcheck_run, tmp_path):
    files = make_report(gradcheck_run, tmp_path / "rep")
    gc_png = tmp_path / "rep" / "gradcheck.png"
    assert str(gc_png) in files and gc_png.stat().st_size > 5000
    m = RunStore.open(gradcheck_run).metrics()
    summary = parse_summary((tmp_path / "rep" / "summary.txt").read_text())
    assert summary["gradcheck_recorded"] == "True"
    assert float(summary["last_gradcheck_rel_error"]) == float(m["gradcheck_rel_error"][-1])
    assert not any("gradcheck" in n for n in summary["note"])


def test_cli_report_default_dir_and_compare(run_file, gradcheck_run, tmp_path, capsys):
    local = tmp_path / "r.h5"
    shutil.copyfile(run_file, local)
    rc, out, err = cli(["report", local], capsys)
    assert rc == 0, err
    printed = out.split()
    assert str(tmp_path / "r_report" / "summary.txt") in printed
    assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in printed)
    png = tmp_path / "cmp.png"
    rc, out, err = cli(["compare", run_file, gradcheck_run, "--out", png], capsys)
    assert rc == 0, err
    assert png.read_bytes()[:8] == PNG_SIGNATURE and str(png) in out
    assert compare_runs([run_file], tmp_path / "one.png") == str(tmp_path / "one.png")


# --------------------------------------------------------------------------- corrupt files

def test_truncated_and_corrupt_files(run_file, tmp_path):
    blob = Path(run_file).read_bytes()
    cases = {"empty.h5": b"", "text.h5": b"this is not a run file\n" * 10}
    for frac in (0.02, 0.3, 0.7, 0.97):
        cases[f"trunc{int(100 * frac)}.h5"] = blob[:int(len(blob) * frac)]
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(StoreError) as ei:
            run = open_run(p)
            run.summary()
            for e in run.epochs:
                run.conductances(e)
                if e:
                    run.samples(e)
        assert str(p) in str(ei.value), (name, str(ei.value))
        with pytest.raises(StoreError, match=str(p)):
            make_report(p, tmp_path / f"{name}_rep")
    with pytest.raises(StoreError, match="does not exist"):
        open_run(tmp_path / "missing.h5")


def test_cli_error_names_file(tmp_path, capsys):
    p = tmp_path / "bad.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    for argv in (["report", p], ["watch", p, "--once"], ["export", p, tmp_path / "o.cir", "--sample", "0"]):
        rc, out, err = cli(argv, capsys)
        assert rc == 2 and f"fastres: error: {p}" in err, (argv, err)


# --------------------------------------------------------------------------- live run

def test_reading_a_live_run(tmp_path):
    """Poll a file while another process trains into it: every read is a complete epoch."""
    path = tmp_path / "live.h5"
    epochs = 6
    code = textwrap.dedent(f"""
        from fastres.train import TrainConfig, train
        train(TrainConfig(arch="784-12-10", n_train=300, n_test=100, epochs={epochs}),
              {str(path)!r}, progress=False, log=lambda s: None)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen, polls = set(), 0
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            finished = proc.poll() is not None
            if path.exists():
                run = open_run(path)
                snap = run.snapshot()
                polls += 1
                assert snap.epochs == list(range(snap.latest + 1))
                assert list(snap.metrics["epoch"] if len(snap.metrics) else []) == snap.epochs[1:]
                assert all(len(v) == len(snap.epochs) - 1 for v in snap.metrics.values())
                g = run.conductances(snap.latest)
                assert g["W1"].shape == (1568, 12)
                if snap.latest:
                    s = run.samples(snap.latest)
                    assert s["test_pred"].shape == (100,)
                summary = run.summary(snap)
                assert summary["epochs"] == snap.latest
                seen.add(snap.latest)
            if finished:
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert max(seen) == epochs
    assert len(seen) >= 3, f"only saw epochs {sorted(seen)} in {polls} polls"
    assert open_run(path).summary()["complete"] is True


# --------------------------------------------------------------------------- export

@pytest.mark.ngspice
def test_export_roundtrip_with_ngspice(run_file, tmp_path, capsys):
    from fastres.ngspice import run as ngspice_run
    from fastres.ngspice import run_op
    deck = tmp_path / "net.cir"
    k = 7
    rc, out, err = cli(["export", run_file, "--epoch", "2", "--sample", k, deck], capsys)
    assert rc == 0, err
    text = deck.read_text()
    ngspice_run(text)  # runs unchanged with ngspice -b (raises NgspiceError on any failure)
    ref = run_op(text, extra_options={"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18})

    run = open_run(run_file)
    tn = run.network(2)
    data = load_data(TrainConfig.from_dict(run.config))
    mine = tn.node_voltages(data.x_test[k])
    ncls = 10
    nodes = [f"{s}{c}" for c in range(ncls) for s in ("op", "on")]
    diff = max(abs(ref[n] - mine[n]) for n in nodes)
    assert diff <= 1e-9, f"output nodes differ from ngspice by {diff:.3e} V"
    hidden = [n for n in tn.net.node_names() if n.startswith("h")]
    assert max(abs(ref[n] - mine[n]) for n in hidden) <= 1e-9
    spice_out = np.array([ref[f"op{c}"] - ref[f"on{c}"] for c in range(ncls)])
    pred = int(tn.predict(data.x_test[k:k + 1])[0])
    assert int(np.argmax(spice_out)) == pred
    assert f"fastres predicted class: {pred}" in out
    printed = {int(c): float(v) for c, v in re.findall(r"class (\d+): (\S+) V", out)}
    assert sorted(printed) == list(range(ncls))
    assert max(abs(printed[c] - spice_out[c]) for c in range(ncls)) <= 1e-9  # printed outputs too


def test_export_bad_sample(run_file, tmp_path, capsys):
    rc, out, err = cli(["export", run_file, tmp_path / "o.cir", "--sample", "100"], capsys)
    assert rc == 2 and str(run_file) in err and "out of range" in err
    assert not (tmp_path / "o.cir").exists()


# --------------------------------------------------------------------------- watch

def test_watch_once_prints_latest_epoch(run_file, capsys):
    rc, out, err = cli(["watch", run_file, "--once"], capsys)
    assert rc == 0, err
    m = RunStore.open(run_file).metrics()
    assert len(out.strip().splitlines()) == 1
    assert "epoch 2/2" in out
    assert f"test error {100 * m['test_error'][-1]:.2f}%" in out
    assert f"samples/s {m['samples_per_second'][-1]:,.0f}" in out


def test_watch_exits_when_run_complete(run_file, capsys):
    rc, out, err = cli(["watch", run_file, "--interval", "0.01"], capsys)
    assert rc == 0 and "epoch 2/2" in out and "run complete (2/2 epochs)" in out


def test_watch_ctrl_c_exits_cleanly(tmp_path, monkeypatch, capsys):
    def interrupt(_):
        raise KeyboardInterrupt
    monkeypatch.setattr(analysis_cli.time, "sleep", interrupt)
    rc, out, err = cli(["watch", tmp_path / "not_yet.h5"], capsys)
    assert rc == 0 and "waiting for the run file" in out and "stopped watching" in out
    assert "Traceback" not in err
