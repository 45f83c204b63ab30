"""Tests of fastres.store: round trips, metrics back-fill, crash safety under SIGKILL,
concurrent readers, error reporting and on-disk compression."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from fastres.errors import FastresError
from fastres.store import (
    LAYOUT_VERSION, Checkpoint, RunStore, StoreError, generator_state, restore_generator,
)

REPO = Path(__file__).resolve().parents[1]


def _params(seed=0, n_hidden=100, n_in=1568, n_out=20):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.uniform(1e-6, 1e-4, (n_hidden, n_in)),
        "b1": rng.uniform(1e-6, 1e-4, n_hidden),
        "W2": rng.uniform(1e-6, 1e-4, (n_out, n_hidden)),
        "b2": rng.uniform(1e-6, 1e-4, n_out),
    }


CONFIG = {"lr": 0.05, "beta": 0.5, "epochs": 10, "layers": [1568, 100, 20], "seed": 3,
          "dataset": "mnist", "solver": {"tol": 1e-9}}
META = {"seed": 3, "dataset": "mnist", "dataset_checksums": {"train-images-idx3-ubyte": "ab" * 32,
                                                             "train-labels-idx1-ubyte": "cd" * 32},
        "command": ["fastres", "train", "--epochs", "10"]}


def _tmp_files(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- round trip

def test_round_trip(tmp_path):
    path = tmp_path / "RUN.h5"
    p0 = _params(0, 10, 30, 4)
    p0["counts"] = np.arange(7, dtype=np.int64)
    p0["g32"] = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rng = np.random.default_rng(42)
    store = RunStore.create(path, config=CONFIG, meta=META, params=p0, rng_state=rng)
    assert store.checkpoints() == [0]
    assert store.config == CONFIG
    assert store.meta["seed"] == 3 and store.meta["dataset_checksums"] == META["dataset_checksums"]
    for key in ("fastres_version", "created", "numpy_version", "numba_version", "host"):
        assert key in store.meta

    rng.random(17)  # advance the stream
    saved = {}
    for epoch in (1, 2, 3):
        params = {k: v * (1 + epoch) for k, v in p0.items()}
        opt = {"m_W1": np.full((10, 30), epoch, dtype=np.float64), "t": np.array(epoch)}
        state = generator_state(rng)
        votes = np.arange(12, dtype=np.float32).reshape(4, 3) + epoch
        store.write_checkpoint(epoch, params, opt, state, extra={"step": 100 * epoch},
                               metrics={"loss": 1.0 / epoch, "acc": 0.1 * epoch},
                               extra_arrays={"voltages": votes, "pred": np.arange(4) % 3})
        saved[epoch] = (params, opt, state, rng.random(5), votes)  # continuation of stream

    with RunStore.open(path) as run:
        assert run.checkpoints() == [0, 1, 2, 3]
        assert run.latest_checkpoint == 3
        assert run.config == CONFIG
        m = run.metrics()
        assert list(m) == ["epoch", "loss", "acc"]
        np.testing.assert_array_equal(m["epoch"], [1, 2, 3])
        assert m["epoch"].dtype == np.int64
        np.testing.assert_array_equal(m["loss"], [1.0, 0.5, 1.0 / 3])
        for epoch, (params, opt, state, cont, votes) in saved.items():
            ck = run.load_checkpoint(epoch)
            assert isinstance(ck, Checkpoint) and ck.epoch == epoch
            assert list(ck.params) == list(params)  # insertion order kept
            for k, v in params.items():
                assert ck.params[k].dtype == v.dtype and ck.params[k].shape == v.shape
                assert ck.params[k].tobytes() == v.tobytes()  # bit-identical
            for k, v in opt.items():
                assert ck.optimizer[k].tobytes() == np.asarray(v).tobytes()
            assert ck.extra == {"step": 100 * epoch}
            assert ck.rng_state == state
            np.testing.assert_array_equal(restore_generator(ck.rng_state).random(5), cont)
            np.testing.assert_array_equal(ck.rng().random(5), cont)
            s = run.samples(epoch)
            assert s["voltages"].tobytes() == votes.tobytes() and s["voltages"].dtype == np.float32
        assert run.load_checkpoint().epoch == 3  # None = latest
        ck0 = run.load_checkpoint(0)
        assert ck0.optimizer == {} and ck0.extra == {}
        np.testing.assert_array_equal(ck0.rng().random(3), np.random.default_rng(42).random(3))
        with pytest.raises(StoreError, match="no checkpoint for epoch 7"):
            run.load_checkpoint(7)
        with pytest.raises(StoreError, match="no samples stored for epoch 0"):
            run.samples(0)

    with h5py.File(path, "r") as f:  # documented convenience attributes
        assert f.attrs["layout_version"] == LAYOUT_VERSION
        assert f.attrs["lr"] == 0.05 and f.attrs["seed"] == 3 and f.attrs["dataset"] == "mnist"
        assert json.loads(f.attrs["config"]) == CONFIG
        assert json.loads(f.attrs["dataset_checksums"]) == META["dataset_checksums"]
        assert dict(f["dataset"].attrs) == {**META["dataset_checksums"], "name": "mnist"}
        assert f.attrs["latest_checkpoint"] == 3
        assert f["checkpoints/000002"].attrs["epoch"] == 2
        assert json.loads(f["checkpoints/000002"].attrs["extra"]) == {"step": 200}


@pytest.mark.parametrize("name", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_generator_state_round_trip(name):
    rng = np.random.Generator(getattr(np.random, name)(2024))
    rng.random(3), rng.integers(0, 10, 5)
    rng.random(1, dtype=np.float32)  # leaves a buffered uint32 in some generators
    state = generator_state(rng)
    restored = restore_generator(json.loads(json.dumps(state)))
    np.testing.assert_array_equal(restored.random(50), rng.random(50))
    np.testing.assert_array_equal(restored.integers(0, 2 ** 62, 9), rng.integers(0, 2 ** 62, 9))


def test_restore_generator_errors():
    with pytest.raises(StoreError, match="unknown bit generator 'Nope'"):
        restore_generator({"bit_generator": "Nope"})
    with pytest.raises(StoreError, match="'bit_generator'"):
        restore_generator({"state": 1})


# --------------------------------------------------------------------------- metrics

def test_metrics_backfill_nan(tmp_path):
    path = tmp_path / "RUN.h5"
    store = RunStore.create(path, config={}, meta={}, params={"w": np.ones(3)})
    assert store.metrics() == {}
    store.append_epoch({"epoch": 1, "loss": 2.0})
    store.append_epoch({"epoch": 2, "loss": 1.5, "acc": np.float32(0.25)})  # new: back-filled
    store.append_epoch({"epoch": 3, "acc": 0.5, "n_fail": 4})  # loss missing -> NaN
    store.write_checkpoint(4, {"w": np.ones(3)}, {}, generator_state(np.random.default_rng()),
                           metrics={"loss": 1.0, "converged": True})
    m = RunStore.open(path).metrics()
    assert list(m) == ["epoch", "loss", "acc", "n_fail", "converged"]
    assert {len(v) for v in m.values()} == {4}
    np.testing.assert_array_equal(m["epoch"], [1, 2, 3, 4])
    np.testing.assert_array_equal(m["loss"], [2.0, 1.5, np.nan, 1.0])
    np.testing.assert_array_equal(m["acc"], [np.nan, 0.25, 0.5, np.nan])
    np.testing.assert_array_equal(m["n_fail"], [np.nan, np.nan, 4, np.nan])
    np.testing.assert_array_equal(m["converged"], [np.nan, np.nan, np.nan, 1.0])
    with h5py.File(path, "r") as f:
        for ds in f["metrics"].values():
            assert ds.maxshape == (None,) and ds.chunks is not None


def test_metric_and_checkpoint_argument_errors(tmp_path):
    path = tmp_path / "RUN.h5"
    store = RunStore.create(path, config={}, meta={}, params={"w": np.ones(3)})
    rs = generator_state(np.random.default_rng(0))
    with pytest.raises(StoreError, match="required key 'epoch'"):
        store.append_epoch({"loss": 1.0})
    with pytest.raises(StoreError, match="metric 'loss' must be a real number"):
        store.append_epoch({"epoch": 1, "loss": "low"})
    with pytest.raises(StoreError, match="not after the latest stored checkpoint 0"):
        store.write_checkpoint(0, {"w": np.ones(3)}, {}, rs)
    with pytest.raises(StoreError, match=r"metrics\['epoch'\] = 5 differs"):
        store.write_checkpoint(4, {"w": np.ones(3)}, {}, rs, metrics={"epoch": 5})
    with pytest.raises(StoreError, match="non-numeric dtype"):
        store.write_checkpoint(1, {"w": np.array(["a"])}, {}, rs)
    with pytest.raises(StoreError, match="invalid params array name 'a/b'"):
        store.write_checkpoint(1, {"a/b": np.ones(2)}, {}, rs)
    # failed commits changed nothing and left no temp file
    run = RunStore.open(path)
    assert run.checkpoints() == [0] and run.metrics() == {}
    assert _tmp_files(path) == []
    with pytest.raises(StoreError, match="opened read-only"):
        run.append_epoch({"epoch": 1})
    run.close()
    with pytest.raises(StoreError, match="closed"):
        run.metrics()
    w = RunStore.open(path, writable=True)
    w.write_checkpoint(1, {"w": np.ones(3)}, {}, rs, metrics={"loss": 0.0})
    assert w.checkpoints() == [0, 1]


def test_config_meta_conflict(tmp_path):
    with pytest.raises(StoreError, match=r"config\['seed'\] = 1 disagrees with meta\['seed'\] = 2"):
        RunStore.create(tmp_path / "r.h5", config={"seed": 1}, meta={"seed": 2},
                        params={"w": np.ones(1)})
    assert not (tmp_path / "r.h5").exists()


# --------------------------------------------------------------------------- on-disk format

def test_params_gzip_chunked(tmp_path):
    path = tmp_path / "RUN.h5"
    p = _params(1)
    store = RunStore.create(path, config={}, meta={}, params=p)
    store.write_checkpoint(1, p, {"m_W1": np.zeros_like(p["W1"])},
                           generator_state(np.random.default_rng(1)),
                           extra_arrays={"pred": np.zeros(64, dtype=np.int64)})
    with h5py.File(path, "r") as f:
        for epoch in ("000000", "000001"):
            for name in p:
                ds = f[f"checkpoints/{epoch}/params/{name}"]
                assert ds.compression == "gzip" and ds.compression_opts == 4
                assert ds.shuffle and ds.chunks is not None
        assert f["checkpoints/000001/optimizer/m_W1"].compression == "gzip"
        assert f["samples/000001/pred"].compression == "gzip"


# --------------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "RUN.h5"
    with pytest.raises(StoreError) as ei:
        RunStore.open(path)
    assert str(path) in str(ei.value) and "does not exist" in str(ei.value)
    assert isinstance(ei.value, FastresError)
    with pytest.raises(StoreError, match="directory .* does not exist"):
        RunStore.create(path, config={}, meta={}, params={"w": np.ones(1)})


def test_truncated_file(tmp_path):
    good = tmp_path / "good.h5"
    RunStore.create(good, config=CONFIG, meta=META, params=_params(0, 50, 200))
    bad = tmp_path / "bad.h5"
    shutil.copyfile(good, bad)
    with open(bad, "r+b") as fh:
        fh.truncate(good.stat().st_size // 2)
    with pytest.raises(StoreError) as ei:
        RunStore.open(bad)
    assert str(bad) in str(ei.value) and "truncated or corrupt" in str(ei.value)
    RunStore.open(good)  # the original is untouched


def test_random_bytes_and_empty(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(np.random.default_rng(0).bytes(10000))
    with pytest.raises(StoreError, match="not an HDF5 file") as ei:
        RunStore.open(junk)
    assert str(junk) in str(ei.value)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="empty"):
        RunStore.open(empty)


def test_hdf5_not_a_run_and_bad_layouts(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreError, match="not a fastres run") as ei:
        RunStore.open(other)
    assert str(other) in str(ei.value)

    def broken(name, edit):
        p = tmp_path / f"{name}.h5"
        RunStore.create(p, config={}, meta={}, params={"w": np.ones(2)})
        with h5py.File(p, "r+") as f:
            edit(f)
        return p

    p = broken("v3", lambda f: f.attrs.__setitem__("layout_version", 3))
    with pytest.raises(StoreError, match="unknown fastres layout_version 3"):
        RunStore.open(p)
    p = broken("nometrics", lambda f: f.__delitem__("metrics"))
    with pytest.raises(StoreError, match="missing required group '/metrics'"):
        RunStore.open(p)
    p = broken("noconfig", lambda f: f.attrs.__delitem__("config"))
    with pytest.raises(StoreError, match="missing required root attribute 'config'"):
        RunStore.open(p)
    p = broken("nolatest", lambda f: f.attrs.__setitem__("latest_checkpoint", 9))
    with pytest.raises(StoreError, match="'/checkpoints/000009' is missing"):
        RunStore.open(p)


def test_overwrite_refusal(tmp_path):
    path = tmp_path / "RUN.h5"
    RunStore.create(path, config={"a": 1}, meta={}, params={"w": np.ones(2)})
    with pytest.raises(StoreError) as ei:
        RunStore.create(path, config={"a": 2}, meta={}, params={"w": np.ones(2)})
    assert str(path) in str(ei.value) and "overwrite=True" in str(ei.value)
    assert RunStore.open(path).config == {"a": 1}
    RunStore.create(path, config={"a": 3}, meta={}, params={"w": np.ones(2)}, overwrite=True)
    assert RunStore.open(path).config == {"a": 3}
    assert _tmp_files(path) == []


def test_stale_temp_file_removed(tmp_path):
    path = tmp_path / "RUN.h5"
    RunStore.create(path, config={}, meta={}, params={"w": np.ones(2)})
    stale = tmp_path / ".RUN.h5.99999999.tmp"  # beyond any pid_max: a dead writer
    stale.write_bytes(b"half-written garbage")
    RunStore.open(path)
    assert not stale.exists()


# --------------------------------------------------------------------------- multi-process

# Child process: resumes the run from its latest checkpoint and writes checkpoints forever
# (or up to argv[2]); params are BASE + epoch, extra["draw"] continues the saved RNG stream.
WRITER = textwrap.dedent("""
    import sys, numpy as np
    from fastres.store import RunStore, generator_state
    path, last = sys.argv[1], int(sys.argv[2])
    base = np.random.default_rng(1).random((40, 157))
    store = RunStore.open(path, writable=True)
    ck = store.load_checkpoint()
    rng = ck.rng()
    print("ready", flush=True)
    for e in range(ck.epoch + 1, last + 1):
        draw = rng.random(2).tolist()
        metrics = {"loss": 1.0 / e}
        if e % 3 == 0:
            metrics["acc"] = e / 1000.0
        store.write_checkpoint(e, {"W1": base + e, "b1": np.full(40, float(e))},
                               {"m": base * e}, generator_state(rng),
                               extra={"step": 10 * e, "draw": draw}, metrics=metrics,
                               extra_arrays={"pred": np.full(8, e)} if e % 4 == 0 else None)
""")


def _start_writer(path, last=10 ** 9):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(last)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"writer failed to start: {line}{proc.stderr.read()}"
    return proc


def _new_run(path):
    base = np.random.default_rng(1).random((40, 157))
    RunStore.create(path, config={"epochs": 0}, meta={"seed": 7},
                    params={"W1": base, "b1": np.zeros(40)},
                    rng_state=np.random.default_rng(7))
    # reference stream: 2 draws per epoch
    ref = np.random.default_rng(7).random(2 * 5000).reshape(5000, 2)
    return base, ref


def _check_consistent(store, base, ref):
    """Assert that metrics, checkpoint list and latest checkpoint agree; returns latest."""
    snap = store.snapshot()
    latest = snap.latest_checkpoint
    assert snap.checkpoints == list(range(latest + 1))
    m = snap.metrics
    if latest == 0:
        assert m == {}
        return 0
    assert {len(v) for v in m.values()} == {latest}
    np.testing.assert_array_equal(m["epoch"], np.arange(1, latest + 1))
    np.testing.assert_array_equal(m["loss"], 1.0 / np.arange(1, latest + 1))
    if "acc" in m:
        e = m["epoch"]
        np.testing.assert_array_equal(m["acc"], np.where(e % 3 == 0, e / 1000.0, np.nan))
    return latest


def _check_checkpoint(store, base, ref, epoch=None):
    ck = store.load_checkpoint(epoch)
    if ck.epoch > 0:
        np.testing.assert_array_equal(ck.params["W1"], base + ck.epoch)
        np.testing.assert_array_equal(ck.optimizer["m"], base * ck.epoch)
        assert ck.extra["step"] == 10 * ck.epoch
        assert ck.extra["draw"] == ref[ck.epoch - 1].tolist()  # RNG stream survives crashes
    # the saved generator state continues the reference stream
    np.testing.assert_array_equal(ck.rng().random(2), ref[ck.epoch])
    return ck


def test_crash_safety_sigkill(tmp_path):
    path = tmp_path / "RUN.h5"
    base, ref = _new_run(path)
    delays = np.random.default_rng(20240601).uniform(0.01, 0.3, 8)
    committed, left_tmp = 0, 0
    for delay in delays:
        proc = _start_writer(path)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close(), proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        left_tmp += bool(_tmp_files(path))
        store = RunStore.open(path)  # valid after every kill; removes the dead writer's temp
        assert _tmp_files(path) == []
        latest = _check_consistent(store, base, ref)
        assert latest >= committed  # nothing committed is ever lost
        committed = latest
        _check_checkpoint(store, base, ref)
    assert committed >= 8, f"writers made too little progress ({committed} checkpoints)"
    # a final clean writer resumes from the last state and finishes
    proc = _start_writer(path, last=committed + 3)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    store = RunStore.open(path)
    assert _check_consistent(store, base, ref) == committed + 3
    for epoch in store.checkpoints():
        _check_checkpoint(store, base, ref, epoch)
    print(f"{committed} checkpoints committed across 8 SIGKILLs; "
          f"{left_tmp} kills left a temp file behind")


def test_reader_during_writes(tmp_path):
    path = tmp_path / "RUN.h5"
    base, ref = _new_run(path)
    proc = _start_writer(path, last=40)
    seen, reads = set(), 0
    try:
        while proc.poll() is None or reads == 0:
            store = RunStore.open(path)  # open never fails mid-write
            latest = _check_consistent(store, base, ref)
            _check_checkpoint(store, base, ref)  # latest, possibly a newer version
            seen.add(latest)
            reads += 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    err = proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    assert proc.returncode == 0, err
    assert _check_consistent(RunStore.open(path), base, ref) == 40
    assert len(seen) >= 3, f"reader saw only versions {sorted(seen)} in {reads} reads"
