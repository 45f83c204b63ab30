"""Run files of earlier layouts still open, evaluate, export and resume, and the redesign kept
training bit-identical (hashes recorded before it, see benchmarks/bitident.py)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fastres.analysis import evaluate_run, export_netlist, open_run
from fastres.config import CONFIG_LAYOUT, TrainConfig, config_from_stored
from fastres.errors import FastresError
from fastres.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MNIST = ROOT.parent / "shared" / "data" / "mnist"
OLD = DATA / "layout1-784-6-6-10.h5"          # written by commit ae14368 (layout version 1)
OLD_MLP = DATA / "layout1-mlp-784-6-10.h5"
EXPECTED = json.loads((DATA / "layout1-expected.json").read_text())

sys.path.insert(0, str(ROOT / "benchmarks"))
import bitident  # noqa: E402

needs_mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(),
                                 reason=f"MNIST not found at {MNIST}")
SAME_MACHINE = json.loads((DATA / "bitident.json").read_text())["fingerprint"] == bitident.fingerprint()


def test_layout1_config_migrates():
    store = RunStore.open(OLD)
    assert store.layout_version == 1 and "arch" in store.config  # flat, as stored then
    cfg = config_from_stored(store.config, 1)
    assert cfg.network.arch == "784-6-6-10" and cfg.network.paired is True
    assert cfg.lr == [100.0, 30.0, 30.0] and cfg.data.n_train == 60 and cfg.run.epochs == 2
    # a layout-1 config without `paired` predates paired layers: unpaired
    flat = dict(store.config)
    del flat["paired"]
    assert config_from_stored(flat, 1).network.paired is False
    # round trip of the current layout
    assert config_from_stored(cfg.to_dict(), CONFIG_LAYOUT) == cfg
    with pytest.raises(FastresError, match="layout version 9"):
        config_from_stored(cfg.to_dict(), 9)


def test_layout1_files_open_for_analysis():
    run = open_run(OLD)
    assert run.layout_version == 1 and run.config["arch"] == "784-6-6-10"
    s = run.summary()
    assert s["epochs"] == 2 and s["arch"] == "784-6-6-10" and s["complete"]
    tn = run.network()
    assert tn.net.spec.paired and tn.epoch == 2
    mlp = open_run(OLD_MLP)
    assert mlp.kind == "mlp" and mlp.summary()["epochs"] == 1
    with pytest.raises(FastresError, match="MLP baseline"):
        evaluate_run(OLD_MLP)


@needs_mnist
def test_layout1_file_evaluates_and_exports_as_before(tmp_path):
    r = evaluate_run(OLD, data_dir=MNIST)
    for k, v in EXPECTED["eval"].items():
        assert r[k] == pytest.approx(v, rel=1e-12, abs=0), k
    out = export_netlist(OLD, tmp_path / "old.cir", sample=3, data_dir=MNIST)
    assert out["pred"] == EXPECTED["export_sample3_pred"]
    np.testing.assert_allclose(out["outputs"][:2], EXPECTED["export_sample3_outputs_class0_class1"],
                               rtol=1e-10)


@needs_mnist
def test_layout1_file_resumes(tmp_path):
    path = tmp_path / "old.h5"
    shutil.copy(OLD, path)
    r = subprocess.run([sys.executable, "-m", "fastres.cli", "train", "--resume", str(path), "--epochs", "3",
                        "--threads", "1", "--quiet"], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    store = RunStore.open(path)
    assert store.layout_version == 1 and store.latest_checkpoint == 3  # appended, layout kept
    assert list(store.metrics()["epoch"]) == [1, 2, 3]
    if SAME_MACHINE:  # the same conductances as the code that wrote the file
        assert bitident.params_hashes(path) == EXPECTED["resume_to_3_threads1_hashes"]


@needs_mnist
@pytest.mark.skipif(not SAME_MACHINE, reason="bit-identity hashes were recorded on another machine "
                                             "(CPU / numpy / numba / BLAS fingerprint differs)")
def test_training_bit_identical_to_the_recorded_hashes():
    """Five short runs (pwl, Shockley, paired on 2 threads, resumed, 2 MPI ranks) end with the
    recorded conductances, to the last bit. Recorded at commit ae14368 (before the redesign,
    which kept them) and re-recorded after the solver fix of issue 13 (fresh device currents in
    the convergence test, no drifted exponential), which moved the paired Shockley run's
    conductances by at most 1e-15 S (relative 3e-9); the other four runs kept their hashes."""
    assert bitident.main(["--data", str(MNIST)]) == 0


def test_train_config_sections_and_flat_names():
    cfg = TrainConfig(arch="784-20-10", diode="pwl", lr=[1, 2], estimator="one-sided", data="/d",
                      epochs=3)
    assert cfg.network.diode == "pwl" and cfg.optimizer.lr == (1.0, 2.0)
    assert cfg.estimator.estimator == "one-sided" and cfg.data.data == "/d" and cfg.run.epochs == 3
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg == TrainConfig.from_dict(cfg.to_flat())
    assert cfg.replace(data="/e").data.data == "/e" and cfg.replace(data="/e").data.dataset == "mnist"
    with pytest.raises(FastresError, match="unknown option"):
        TrainConfig(arch="784-20-10", learning_rate=3)
    with pytest.raises(FastresError, match="one learning rate per layer"):
        TrainConfig(arch="784-20-10", lr=[1, 2, 3])
