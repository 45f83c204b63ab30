"""``fastres sweep``: the search space, the early-stop rule, the best config as TOML, and tiny
sweeps on a small MNIST subset (trials are real ``fastres train`` processes)."""
import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fastres.cli import main
from fastres.config import TrainConfig
from fastres.errors import ConfigError, UsageError
from fastres.store import RunStore
from fastres import sweep as sw

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(),
                                 reason=f"MNIST not at {MNIST}")

TINY = ["--arch", "784-6-10", "--diode", "pwl", "--n-train", "60", "--n-test", "40", "--epochs", "2",
        "--data", str(MNIST), "--jobs", "2"]


def spec(space, **kw):
    base = sw.base_from_config(TrainConfig(arch="784-6-10", diode="pwl", n_train=60, n_test=40, epochs=2,
                                           data=str(MNIST)))
    return sw.SweepSpec(base=base, space=tuple(space.items()), **kw)


def test_axes_parse_toml_values_lists_and_ranges():
    assert sw.parse_axis("beta_rel=0.05,0.1") == ("beta_rel", sw.Choice((0.05, 0.1)))
    assert sw.parse_axis("lr=[40,12],[60, 18]") == ("lr", sw.Choice(([40, 12], [60, 18])))
    assert sw.parse_axis("diode=pwl,shockley") == ("diode", sw.Choice(("pwl", "shockley")))
    assert sw.parse_axis("paired=true,false") == ("paired", sw.Choice((True, False)))
    assert sw.parse_axis("lr_scale=0.25..4:log") == ("lr_scale", sw.Range(0.25, 4.0, True))
    assert sw.parse_axis("batch_size=4..40") == ("batch_size", sw.Range(4.0, 40.0, False))


@pytest.mark.parametrize("arg, needle", [
    ("beta_rell=0.1", "did you mean beta_rel"),
    ("network=1", "not a config option"),
    ("beta_rel", "expected KEY=VALUE"),
    ("beta_rel=0.1,", "empty value"),
    ("lr_scale=4..1", "need low < high"),
    ("lr_scale=0..1:log", "log range needs low > 0"),
])
def test_bad_axes_are_clear_errors(arg, needle):
    with pytest.raises((ConfigError, UsageError), match=needle):
        sw.parse_axis(arg)


def test_bad_specs_and_values_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="need random trials"):
        spec({"lr_scale": sw.Range(0.5, 2.0)})
    with pytest.raises(ConfigError, match="lr and lr_scale"):
        spec({"lr": sw.Choice((10,)), "lr_scale": sw.Choice((1,))})
    with pytest.raises(UsageError, match="at least one key"):
        spec({})
    bad = spec({"beta_rel": sw.Choice((0.1, -1.0))})
    with pytest.raises(ConfigError, match=r"trial t001_beta_rel=-1: .*beta_rel"):
        sw.open_sweep(tmp_path / "s", bad)
    assert not (tmp_path / "s").exists()  # nothing created for an invalid sweep


def test_grid_and_random_trials():
    grid = sw.make_trials(spec({"lr_scale": sw.Choice((0.5, 1)), "beta_rel": sw.Choice((0.05, 0.1, 0.2))}))
    assert [t.settings for t in grid[:4]] == [
        {"lr_scale": 0.5, "beta_rel": 0.05}, {"lr_scale": 0.5, "beta_rel": 0.1},
        {"lr_scale": 0.5, "beta_rel": 0.2}, {"lr_scale": 1, "beta_rel": 0.05}]
    assert len(grid) == 6 and grid[3].name == "t003_lr_scale=1_beta_rel=0.05"
    sp = spec({"lr_scale": sw.Range(0.25, 4.0, log=True), "batch_size": sw.Range(4, 40),
               "seed": sw.Choice((0, 1))}, random=20, search_seed=3)
    a, b = sw.make_trials(sp), sw.make_trials(sp)
    assert [t.settings for t in a] == [t.settings for t in b] and len(a) == 20
    assert all(0.25 <= t.settings["lr_scale"] <= 4 and isinstance(t.settings["batch_size"], int)
               and 4 <= t.settings["batch_size"] <= 40 and t.settings["seed"] in (0, 1) for t in a)
    assert len({t.settings["lr_scale"] for t in a}) > 10
    other = sw.make_trials(spec(dict(sp.space), random=20, search_seed=4))
    assert [t.settings for t in other] != [t.settings for t in a]


def test_lr_scale_multiplies_the_base_rates():
    sp = spec({"lr_scale": sw.Choice((0.4,))})
    cfg = sw.trial_config(sp, sw.make_trials(sp)[0])
    assert cfg.lr == pytest.approx([0.4 * r for r in TrainConfig(arch="784-6-10").lr])


def test_median_rule():
    sp = spec({"seed": sw.Choice((0,))}, prune_min=2, prune_after=2)
    others = [np.array([0.3, 0.2, 0.1]), np.array([0.5, 0.4]), np.array([0.9])]
    assert sw.behind(np.array([0.8, 0.7]), others, 1, sp) is None           # before prune_after
    why = sw.behind(np.array([0.8, 0.7]), others, 2, sp)                     # 0.7 > median(0.2, 0.4)
    assert why == {"epoch": 2, "best_test_error": 0.7, "median": pytest.approx(0.3), "others": 2}
    assert sw.behind(np.array([0.8, 0.25]), others, 2, sp) is None           # 0.25 < 0.3
    assert sw.behind(np.array([0.8, 0.7, 0.6]), others, 3, sp) is None       # one other reached 3
    assert sw.behind(np.array([0.8, 0.7]), others, 2, spec(dict(sp.space), prune="none")) is None


def test_config_toml_round_trips():
    cfg = TrainConfig(arch="784-8-8-10", diode="pwl", diode_params={"ron": 12.5}, lr=[40, 12, 12],
                      beta_rel=0.05, data="/x/y \"q\"", device={"preset": "realistic", "levels": 64}).resolved()
    text = sw.config_toml(cfg, "a header\nline two")
    assert text.startswith("# a header\n# line two\n")
    assert TrainConfig.from_dict(tomllib.loads(text)) == cfg


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_mnist
def test_tiny_grid_runs_resumes_and_writes_results(tmp_path, capsys):
    d = tmp_path / "sw"
    args = ["sweep", str(d), "--grid", "lr_scale=0.5,1", "--prune", "none", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    names = ["t000_lr_scale=0.5", "t001_lr_scale=1"]
    base = TrainConfig(arch="784-6-10").lr[0]  # the default rule's rate for these sizes
    for n, scale in zip(names, (0.5, 1.0)):
        run = RunStore.open(d / f"{n}.h5")
        assert run.latest_checkpoint == 2
        assert run.config["optimizer"]["lr"][0] == pytest.approx(scale * base)
    rows = _rows(d / "results.csv")
    assert sorted(r["trial"] for r in rows) == names and all(r["status"] == "done" for r in rows)
    assert [float(r["final_test_error"]) for r in rows] == sorted(float(r["final_test_error"]) for r in rows)
    table = (d / "results.txt").read_text()
    assert table in out and all(n in table for n in names)
    best = TrainConfig.from_dict(tomllib.loads((d / "best.toml").read_text()))
    best_run = RunStore.open(d / f"{rows[0]['trial']}.h5")
    assert best.to_dict() == best_run.config
    # best.toml trains the best trial again, bit for bit (one thread, as the trials ran)
    assert main(["train", "--config", str(d / "best.toml"), "--out", str(tmp_path / "again.h5"),
                 "--threads", "1", "--quiet"]) == 0
    again = RunStore.open(tmp_path / "again.h5").load_checkpoint().params
    assert all(np.array_equal(v, best_run.load_checkpoint().params[k]) for k, v in again.items())
    assert (d / "best.png").stat().st_size > 1000

    # again: nothing is repeated (the run files are untouched), the results are rewritten
    stamps = {n: (d / f"{n}.h5").stat().st_mtime_ns for n in names}
    assert main(args) == 0
    assert "2 trials, 2 done before, 0 to run" in capsys.readouterr().out
    assert stamps == {n: (d / f"{n}.h5").stat().st_mtime_ns for n in names}
    # the directory alone resumes it; different options are refused
    assert main(["sweep", str(d)]) == 0
    assert main(["sweep", str(d), "--grid", "lr_scale=0.5,2", "--prune", "none", *TINY]) == 2
    assert "holds a different sweep (differs in: space)" in capsys.readouterr().err


@needs_mnist
def test_interrupted_trial_resumes_from_its_checkpoint(tmp_path, capsys):
    d = tmp_path / "sw"
    sweep = sw.open_sweep(d, spec({"lr_scale": sw.Choice((0.5, 1))}, prune="none"))
    t0, t1 = sweep.trials
    cfg = sw.trial_config(sweep.spec, t0)
    (d / f"{t0.name}.json").write_text(json.dumps(cfg.to_dict()))
    # a trial stopped after its first epoch: run to 1 epoch, the stored config still says 2
    assert main(["train", "--config", str(d / f"{t0.name}.json"), "--out", str(d / f"{t0.name}.h5"),
                 "--epochs", "1", "--threads", "1", "--quiet"]) == 0
    with RunStore.open(d / f"{t0.name}.h5", writable=True) as st:
        st.update_config(cfg.to_dict())
    assert sweep.status(t0) == "partial" and sweep.status(t1) == "new"
    logs = []
    rows = sw.run_sweep(sweep, 2, log=logs.append, poll=0.1)
    assert f"{t0.name}: resumed" in "\n".join(logs[:3]) and f"{t1.name}: started" in "\n".join(logs[:3])
    assert "--resume" in (d / f"{t0.name}.log").read_text()
    assert {r["trial"]: (r["status"], r["epochs"]) for r in rows} == {t0.name: ("done", 2), t1.name: ("done", 2)}


@needs_mnist
def test_trials_behind_are_stopped_and_not_rerun(tmp_path):
    d = tmp_path / "sw"
    sp = spec({"lr_scale": sw.Choice((1.0, 0.9, 0.0))}, prune_min=2)
    sp = sw.SweepSpec(base={**sp.base, "run": {**sp.base["run"], "epochs": 12}}, space=sp.space, prune_min=2)
    sweep = sw.open_sweep(d, sp)
    logs = []
    rows = {r["trial"]: r for r in sw.run_sweep(sweep, 1, log=logs.append, poll=0.02)}
    t2 = sweep.trials[2].name  # learning rate 0: no better than its untrained start
    assert rows[t2]["status"].startswith("stopped at epoch") and rows[t2]["epochs"] < 12
    assert sweep.stopped[t2]["best_test_error"] > sweep.stopped[t2]["median"]
    assert [rows[t.name]["status"] for t in sweep.trials[:2]] == ["done", "done"]
    again = []
    sw.run_sweep(sw.open_sweep(d), 1, log=again.append, poll=0.02)
    assert f"{t2}: stopped, not run again" in again
    assert "2 done before, 1 stopped or failed before, 0 to run" in again[-1]


def test_failed_trials_are_recorded_and_not_rerun(tmp_path):
    sweep = sw.open_sweep(tmp_path / "sw", spec({"seed": sw.Choice((0,))}))
    logs = []
    rows = sw.run_sweep(sweep, 1, log=logs.append, poll=0.01, python="/bin/false")
    assert rows[0]["status"] == "failed (exit 1)" and "failed (exit status 1)" in logs[-1]
    again = []
    sw.run_sweep(sw.open_sweep(tmp_path / "sw"), 1, log=again.append, python="/bin/false")
    assert "not run again (--retry-failed runs it)" in again[0]
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["failed"]


@needs_mnist
def test_each_trial_on_two_mpi_ranks(tmp_path):
    try:
        launcher = sw.mpi_launcher(2)
        import mpi4py  # noqa: F401
    except (UsageError, ImportError):
        pytest.skip("no mpi4py / mpiexec (pip install -e '.[mpi]')")
    sweep = sw.open_sweep(tmp_path / "sw", spec({"lr_scale": sw.Choice((0.5, 1))}, prune="none"))
    rows = sw.run_sweep(sweep, 1, log=lambda s: None, poll=0.1, launcher=launcher)
    assert [r["status"] for r in rows] == ["done", "done"]
    for t in sweep.trials:
        assert "x 2 MPI ranks" in (tmp_path / "sw" / f"{t.name}.log").read_text()


@pytest.mark.parametrize("extra, needle", [
    (["--jobs", "0", "--grid", "seed=1"], "--jobs 0: must be >= 1"),
    (["--ranks", "0", "--grid", "seed=1"], "--ranks 0: must be an integer >= 1"),
    (["--mpiexec", "srun", "--grid", "seed=1"], "--mpiexec goes with --ranks"),
    (["--grid", "bogus=1,2"], "sweep key 'bogus' is not a config option"),
    (["--grid", "batch_size=0,20"], "batch_size=0 must be an integer >= 1"),
    (["--grid", "lr_scale=1..2"], "need random trials"),
    (["--random", "2"], "at least one key"),
    ([], "no sweep there"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, extra, needle):
    base = [] if not extra else ["--arch", "784-6-10"]
    assert main(["sweep", str(tmp_path / "sw"), *extra, *base]) == 2
    assert needle in capsys.readouterr().err


def test_spec_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('random = 4\nsearch_seed = 2\n[grid]\nlr_scale = {low = 0.5, high = 2.0, log = true}\n'
                 'seed = [0, 1]\n[base]\narch = "784-6-10"\nepochs = 1\n')
    from fastres.cli import build_parser
    from fastres.cli.sweep import spec_from_args
    sp = spec_from_args(build_parser().parse_args(["sweep", "D", "--spec", str(f), "--grid", "seed=5",
                                                   "--epochs", "3"]))
    assert sp.random == 4 and sp.search_seed == 2 and sp.base["run"]["epochs"] == 3
    assert dict(sp.space) == {"lr_scale": sw.Range(0.5, 2.0, True), "seed": sw.Choice((5,))}
    assert sp.base["network"]["arch"] == "784-6-10"
    f.write_text("[grid]\nbeta_rel = 0.1\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        sw.read_spec_file(f)


def test_one_sweep_per_directory(tmp_path):
    import fcntl
    import os
    sweep = sw.open_sweep(tmp_path / "sw", spec({"seed": sw.Choice((0,))}))
    fd = os.open(tmp_path / "sw" / ".sweep.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep holds it
        with pytest.raises(UsageError, match="another fastres sweep is running there"):
            sw.run_sweep(sweep, 1, python="/bin/false")
    finally:
        os.close(fd)
    assert sweep.status(sweep.trials[0]) == "new"


@needs_mnist
def test_killed_sweep_stops_its_trials(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    d = tmp_path / "sw"
    cmd = [sys.executable, "-m", "fastres.cli", "sweep", str(d), "--grid", "seed=0,1", "--prune", "none",
           *TINY[:-6], "--epochs", "50", "--data", str(MNIST), "--jobs", "2"]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    run = d / "t000_seed=0.h5"
    t0 = time.time()
    while not (run.exists() and RunStore.open(run).latest_checkpoint >= 1) and time.time() - t0 < 300:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, out
    pids = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in out.splitlines() if "(pid " in line]
    assert len(pids) == 2
    for pid in pids:  # no trial left running on its own
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert 1 <= RunStore.open(run).latest_checkpoint < 50


def test_table_keeps_settings_apart_from_its_columns():
    row = {"rank": 1, "trial": "t000_epochs=3", "status": "done", "epochs": 2, "final_test_error": 0.125,
           "best_test_error": 0.1, "best_epoch": 1, "epoch_seconds": 3.25, "run": "r.h5",
           "settings": {"epochs": 3, "lr": [40.0, 12.0]}}
    lines = sw.format_table([row], ["epochs", "lr"]).splitlines()
    assert lines[0] == ("| rank | trial | status | epochs | final test error | best test error | best epoch | "
                        "s / epoch | epochs | lr |")
    assert lines[2] == "| 1 | t000_epochs=3 | done | 2 | 12.50 % | 10.00 % | 1 | 3.2 | 3 | 40,12 |"


def test_help_states_the_spec_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = sw.SweepSpec(base={}, space=(("seed", sw.Choice((0,))),))
    for phrase in (f"draws (default {d.search_seed})", f"(default {d.prune})", f"checked (default {d.prune_after})",
                   f"epoch (default {d.prune_min})"):
        assert phrase in text
