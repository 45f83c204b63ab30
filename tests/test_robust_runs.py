"""Nothing lost: a full disk stops a run with a clear message and keeps its file; a run killed
before its first epoch resumes; --resume never ignores options; bad inputs are errors."""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from fastres.errors import FastresError
from fastres.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")
needs_mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(),
                                 reason=f"MNIST not found at {MNIST}")
SMALL = ["--n-train", "100", "--n-test", "40", "--threads", "1", "--quiet", "--data", str(MNIST)]


def fastres(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "fastres.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=timeout)


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB file system (tmpfs; needs root and the right to mount), else skip: the test
    needs a real full disk, which an unprivileged container cannot make."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", f"fastres-{uuid.uuid4().hex[:6]}", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (not root, or no mount rights): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@needs_mnist
def test_full_disk_keeps_the_run_and_it_resumes_elsewhere(small_fs, tmp_path):
    # 784-64-10: checkpoint 0 (0.8 MB) fits; the first commit's copy and epoch do not
    run = small_fs / "run.h5"
    r = fastres("train", "--arch", "784-64-10", "--diode", "pwl", "--epochs", "3", *SMALL, "--out", run)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert "cannot commit to the run file" in r.stderr and "unchanged" in r.stderr
    store = RunStore.open(run)  # still a valid run, with its last complete checkpoint
    assert store.latest_checkpoint == 0
    assert not [p for p in small_fs.iterdir() if p.name.endswith(".tmp")]  # no copy left behind
    moved = tmp_path / "moved.h5"
    shutil.copy(run, moved)
    r = fastres("train", "--resume", moved, "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert RunStore.open(moved).latest_checkpoint == 3


@needs_mnist
def test_killed_before_the_first_epoch_resumes_bit_identically(tmp_path):
    """Checkpoint 0 alone (a run killed during epoch 1) resumes, and ends like a run never
    interrupted."""
    whole, cut = tmp_path / "whole.h5", tmp_path / "cut.h5"
    args = ["--arch", "784-12-10", "--epochs", "2", *SMALL]
    assert fastres("train", *args, "--out", whole).returncode == 0
    # what a kill during epoch 1 leaves: the file as created (checkpoint 0 only)
    from fastres.config import TrainConfig
    from fastres.datasets import load_data
    from fastres.train import Trainer, _meta
    from fastres.store import generator_state
    cfg = TrainConfig(arch="784-12-10", epochs=2, n_train=100, n_test=40, data=str(MNIST)).resolved()
    rng = np.random.default_rng(cfg.run.seed)
    tr = Trainer(cfg)
    tr.init_state(rng)
    RunStore.create(cut, config=cfg.to_dict(), meta=_meta(cfg, load_data(cfg)), params=tr.params,
                    rng_state=generator_state(rng))
    r = fastres("train", "--resume", cut, "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = RunStore.open(whole).load_checkpoint(), RunStore.open(cut).load_checkpoint()
    assert a.epoch == b.epoch == 2
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k


@needs_mnist
def test_resume_refuses_options_and_records_more_epochs(tmp_path):
    run = tmp_path / "r.h5"
    assert fastres("train", "--arch", "784-8-10", "--epochs", "1", *SMALL, "--out", run).returncode == 0
    for flags in (["--lr", "999,999"], ["--batch-size", "3"], ["--arch", "784-9-10"], ["--seed", "4"]):
        r = fastres("train", "--resume", run, *flags)
        assert r.returncode == 2 and flags[0] in r.stderr and "would change it" in r.stderr, r.stderr
    r = fastres("train", "--resume", run, "--epochs", "2", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    store = RunStore.open(run)
    assert store.config["run"]["epochs"] == 2 and store.latest_checkpoint == 2
    assert store.meta["config_changes"][0]["epochs"] == [1, 2]
    r = fastres("watch", run, "--once")
    assert "epoch 2/2" in r.stdout


def test_resume_and_gradcheck_refuse_an_mlp_run():
    mlp = ROOT / "tests" / "data" / "layout1-mlp-784-6-10.h5"
    r = fastres("train", "--resume", mlp)
    assert r.returncode == 2 and "only EqProp runs resume" in r.stderr and "Traceback" not in r.stderr
    r = fastres("gradcheck", "--run", mlp)
    assert r.returncode == 2 and "no analog network" in r.stderr and "Traceback" not in r.stderr


def test_nan_inputs_and_bad_labels_are_errors_before_any_update():
    from fastres.config import TrainConfig
    from fastres.train import Trainer
    tr = Trainer(TrainConfig(arch="16-6-3"))
    tr.init_state(np.random.default_rng(0))
    before = {k: v.copy() for k, v in tr.params.items()}
    X = np.random.default_rng(1).uniform(0, 1, (4, 16))
    y = np.array([0, 1, 2, 0])
    X[2, 5] = np.nan
    with pytest.raises(FastresError, match="NaN or Inf"):
        tr.step(X, y, np.random.default_rng(2))
    X[2, 5] = 0.5
    for bad, match in ((np.array([0, 1, 99, 0]), "labels must be integers"),
                       (np.array([0, 1, 2]), "labels have shape")):
        with pytest.raises(FastresError, match=match):
            tr.step(X, bad, np.random.default_rng(2))
    for k in before:
        assert np.array_equal(before[k], tr.params[k])


@pytest.mark.parametrize("options, match", [
    (dict(epochs=1.5), "integer"), (dict(n_test="100"), "integer"), (dict(epochs=None), "integer"),
    (dict(epochs=True), "integer"), (dict(target_volts=float("nan")), "finite"),
    (dict(n_train=0), ">= 1"), (dict(gradcheck_samples=0), ">= 1"), (dict(store_samples=-1), ">= 0"),
    (dict(gradcheck_every=-1), ">= 0"), (dict(lr="abc"), "expected numbers"), (dict(seed=-1), ">= 0"),
    (dict(diode="shockley", diode_params={"ron": 10}), "ron"), (dict(diode_params={"foo": 1}), "foo"),
])
def test_bad_config_values_are_named(options, match):
    from fastres.config import TrainConfig
    with pytest.raises(FastresError, match=match):
        TrainConfig(**options)


def test_numpy_scalars_are_numbers():
    from fastres.config import TrainConfig
    cfg = TrainConfig(epochs=np.int64(3), beta_rel=np.float32(0.25), input_volts=np.float64(50))
    d = cfg.to_dict()
    assert d["run"]["epochs"] == 3 and type(d["run"]["epochs"]) is int
    assert type(d["estimator"]["beta_rel"]) is float


def test_config_file_of_the_wrong_shape(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("[1, 2]")
    r = fastres("train", "--config", p, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "mapping" in r.stderr and "Traceback" not in r.stderr
    p.write_text('{"diode_params": {"foo": 1}}')
    r = fastres("train", "--config", p, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and "foo" in r.stderr and "Traceback" not in r.stderr


def test_a_flipped_bit_in_the_metrics_is_detected(tmp_path):
    import h5py
    from fastres.store import StoreError
    p = tmp_path / "m.h5"
    st = RunStore.create(p, config={}, meta={}, params={"w": np.ones(3)})
    st.write_checkpoint(1, {"w": np.ones(3)}, {}, np.random.default_rng(0),
                        metrics={"test_error": 0.25, "train_loss": 1.5})
    assert RunStore.open(p).metrics()["test_error"][0] == 0.25
    with h5py.File(p, "r+") as f:
        a = f["metrics/test_error"][()]
        a.view(np.uint64)[0] ^= np.uint64(1 << 40)  # one bit
        f["metrics/test_error"][0] = a[0]
    with pytest.raises(StoreError, match="checksum"):
        RunStore.open(p).metrics()
    r = fastres("watch", p, "--once")
    assert r.returncode == 2 and "checksum" in r.stderr and "Traceback" not in r.stderr


def test_a_flipped_bit_in_a_checkpoint_is_detected(tmp_path):
    import h5py
    from fastres.store import StoreError
    p = tmp_path / "c.h5"
    RunStore.create(p, config={}, meta={}, params={"w": np.linspace(1, 2, 1000)})
    with h5py.File(p, "r+") as f:  # corrupt the stored (compressed) chunk bytes on disk
        off = f["checkpoints/000000/params/w"].id.get_chunk_info(0).byte_offset
    with open(p, "r+b") as fh:
        fh.seek(off + 20)
        b = fh.read(1)
        fh.seek(off + 20)
        fh.write(bytes([b[0] ^ 0x10]))
    with pytest.raises(StoreError):
        RunStore.open(p).load_checkpoint(0)


@needs_mnist
def test_eval_fails_when_solves_fail(tmp_path):
    """Conductances evaluated with a one-iteration Newton: the solves do not converge, and
    eval says so with a non-zero exit status instead of printing an error rate alone."""
    from fastres.config import TrainConfig
    from fastres.datasets import load_data
    from fastres.network import LayeredNetwork
    from fastres.train import _meta
    cfg = TrainConfig(arch="784-12-10", diode="shockley", n_train=50, n_test=30, data=str(MNIST),
                      maxiter=1, epochs=1).resolved()
    net = LayeredNetwork.from_config(cfg.network)
    params = net.init_params(np.random.default_rng(0))
    p = tmp_path / "bad.h5"
    RunStore.create(p, config=cfg.to_dict(), meta=_meta(cfg, load_data(cfg)), params=params)
    r = fastres("eval", p, "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "did not converge" in r.stderr and '"nonconverged": ' in r.stdout


@pytest.mark.parametrize("argv", [
    ["train", "--arch", "784-x-10", "--out", "X.h5"], ["train", "--diode-param", "foo=1", "--out", "X.h5"],
    ["train", "--diode-param", "ron=10", "--out", "X.h5"], ["train", "--diode-param", "IS", "--out", "X.h5"],
    ["train", "--seed", "-1", "--out", "X.h5"], ["train", "--lr", "a,b", "--out", "X.h5"],
    ["train", "--target-volts", "nan", "--out", "X.h5"], ["train", "--n-test", "0", "--out", "X.h5"],
    ["train", "--threads", "0", "--out", "X.h5"], ["train"], ["eval", "missing.h5"],
    ["eval", "tests/data/layout1-mlp-784-6-10.h5"], ["gradcheck", "--samples", "0"],
    ["gradcheck", "--arch", "784-7-10", "--diode", "nonsense"], ["export", "missing.h5", "o.cir", "--sample", "1"],
    ["watch", "missing.h5", "--once"], ["watch", "README.md", "--once"], ["report", "README.md"],
    ["op", "missing.cir"], ["op", "README.md"], ["train", "--resume", "README.md"],
])
def test_cli_bad_input_is_an_error_not_a_traceback(argv, tmp_path):
    argv = [str(tmp_path / a) if a == "X.h5" else a for a in argv]
    r = fastres(*argv)
    assert r.returncode == 2, (argv, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "fastres: error:" in r.stderr, (argv, r.stderr)
