"""Tests of fastres.datasets: real MNIST / Fashion-MNIST, manifests, corruption, search, download.

All tests run offline: downloads use ``file://`` URLs into temporary directories.
"""

import copy
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastres import datasets
from fastres.datasets import DatasetError

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = (REPO / ".." / "shared" / "data" / "mnist").resolve()
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = [f["name"] for f in datasets.MANIFESTS["mnist"]["files"]]

# From /work/shared/data/mnist/README.txt
MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _has_all(d):
    return d.is_dir() and all((d / (f + ".gz")).is_file() or (d / f).is_file() for f in FILES)


needs_mnist = pytest.mark.skipif(
    not _has_all(MNIST_DIR), reason=f"MNIST IDX files not present in {MNIST_DIR}")
needs_fashion = pytest.mark.skipif(
    not _has_all(FASHION_DIR),
    reason=f"Fashion-MNIST not installed in {FASHION_DIR} (Debian package dataset-fashion-mnist)")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """cwd = an empty temp dir, FASTRES_DATA unset, no system dirs: the real data is not found."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {n: () for n in datasets.DATASET_NAMES})
    return work


@pytest.fixture(scope="module")
def mnist():
    if not _has_all(MNIST_DIR):
        pytest.skip(f"MNIST IDX files not present in {MNIST_DIR}")
    return datasets.load("mnist", root=MNIST_DIR, download=False)


def _copy_mnist(dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copy(MNIST_DIR / (f + ".gz"), dst / (f + ".gz"))
    return dst


# ----------------------------------------------------------------------------- real data


@needs_mnist
def test_mnist_real(mnist):
    ds = mnist
    assert ds.name == "mnist"
    assert Path(ds.root) == MNIST_DIR
    assert ds.x_train.shape == (60000, 784) and ds.x_train.dtype == np.float64
    assert ds.x_test.shape == (10000, 784) and ds.x_test.dtype == np.float64
    assert ds.y_train.shape == (60000,) and ds.y_train.dtype == np.int64
    assert ds.y_test.shape == (10000,) and ds.y_test.dtype == np.int64
    for x in (ds.x_train, ds.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    # scaled bytes: every value is k/255
    k = ds.x_test[:100] * 255.0
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert np.bincount(ds.y_train, minlength=10).tolist() == MNIST_TRAIN_HIST
    assert np.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_HIST
    assert ds.y_train[0] == 5 and ds.y_test[0] == 7
    assert ds.checksums == {f["name"]: f["sha256"] for f in datasets.MANIFESTS["mnist"]["files"]}


@needs_mnist
def test_found_via_shared_relative_to_cwd(isolated):
    # layout <tmp>/work (cwd) and <tmp>/shared/data/mnist -> the real copy
    shared = isolated.parent / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / "mnist").symlink_to(MNIST_DIR, target_is_directory=True)
    ds = datasets.load("mnist", download=False)
    assert Path(ds.root) == isolated.parent / "shared" / "data" / "mnist"
    assert ds.y_test[0] == 7
    # ./data/mnist comes first in the search order
    assert datasets.candidate_dirs("mnist") == [
        isolated / "data" / "mnist", isolated.parent / "shared" / "data" / "mnist"]


@needs_mnist
def test_env_var_parent_and_direct(isolated, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(MNIST_DIR.parent))  # parent containing mnist/
    assert datasets.candidate_dirs("mnist")[0] == MNIST_DIR
    monkeypatch.setenv(datasets.ENV_VAR, str(MNIST_DIR))  # the directory itself
    ds = datasets.load("mnist", download=False)
    assert Path(ds.root) == MNIST_DIR


@needs_mnist
def test_subset(mnist):
    s = datasets.subset(mnist, n_train=100, n_test=7)
    assert s.x_train.shape == (100, 784) and s.y_train.shape == (100,)
    assert s.x_test.shape == (7, 784) and s.y_test.shape == (7,)
    np.testing.assert_array_equal(s.x_train, mnist.x_train[:100])
    np.testing.assert_array_equal(s.y_test, mnist.y_test[:7])
    assert s.name == "mnist" and s.root == mnist.root
    full = datasets.subset(mnist)
    assert full.x_train.shape == (60000, 784) and full.x_test.shape == (10000, 784)
    with pytest.raises(ValueError):
        datasets.subset(mnist, n_train=60001)
    with pytest.raises(ValueError):
        datasets.subset(mnist, n_test=-1)
    with pytest.raises(TypeError):
        datasets.subset(mnist, n_train=1.5)


@needs_fashion
def test_fashion_mnist_real(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    ds = datasets.load("fashion-mnist", download=False)  # found in /usr/share
    assert ds.name == "fashion-mnist"
    assert Path(ds.root) == FASHION_DIR
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train.dtype == np.int64 and ds.x_train.dtype == np.float64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # Fashion-MNIST is balanced: 6000 / 1000 per class
    assert np.bincount(ds.y_train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert ds.y_train[0] == 9 and ds.y_test[0] == 9  # ankle boot
    assert ds.checksums == {
        f["name"]: f["sha256"] for f in datasets.MANIFESTS["fashion-mnist"]["files"]}


@needs_mnist
def test_mnist_dir_is_not_fashion(isolated, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(MNIST_DIR))
    with pytest.raises(DatasetError) as ei:
        datasets.load("fashion-mnist", download=False)
    msg = str(ei.value)
    assert str(MNIST_DIR) in msg and "holds mnist, not fashion-mnist" in msg


# ----------------------------------------------------------------------------- API / manifests


def test_unknown_name():
    with pytest.raises(ValueError) as ei:
        datasets.load("cifar10", download=False)
    assert "'mnist'" in str(ei.value) and "'fashion-mnist'" in str(ei.value)


@pytest.mark.parametrize("name", datasets.DATASET_NAMES)
def test_manifest_json_matches_dict(name):
    path = REPO / "data" / "manifests" / f"{name}.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == datasets.MANIFESTS[name]
    assert path.read_text() == datasets.manifest_json(name)


@pytest.mark.parametrize("name", datasets.DATASET_NAMES)
def test_manifest_structure(name):
    man = datasets.MANIFESTS[name]
    assert man["name"] == name
    roles = [f["role"] for f in man["files"]]
    assert sorted(roles) == sorted(["train-images", "train-labels", "test-images", "test-labels"])
    for f in man["files"]:
        assert len(f["sha256"]) == 64 and len(f["gz_sha256"]) == 64
        assert f["urls"] and all(u.endswith(f["name"] + ".gz") for u in f["urls"])
        n = 60000 if f["role"].startswith("train") else 10000
        assert f["shape"] == ([n, 28, 28] if f["role"].endswith("images") else [n])


# ----------------------------------------------------------------------------- corrupt files


def _corrupt_case(d, how):
    """Corrupt one file of the MNIST copy in ``d``; returns the name of the corrupted file."""
    gz = d / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(gz.read_bytes())
    if how == "truncated-gz":
        data = gz.read_bytes()
        gz.write_bytes(data[: len(data) // 2])
        return gz.name
    if how == "not-gzip":
        gz.write_bytes(b"this is not gzip data at all")
        return gz.name
    gz.unlink()
    plain = d / "t10k-labels-idx1-ubyte"
    if how == "flipped-byte":
        b = bytearray(raw)
        b[100] ^= 0x01  # a label changes: structure intact, checksum wrong
        plain.write_bytes(bytes(b))
    elif how == "bad-magic":
        plain.write_bytes(b"\x00\x00\x08\x03" + raw[4:])
    elif how == "truncated-raw":
        plain.write_bytes(raw[:-10])
    elif how == "wrong-count":
        plain.write_bytes(raw[:4] + (9999).to_bytes(4, "big") + raw[8:])
    return plain.name


@needs_mnist
@pytest.mark.parametrize("how,problem", [
    ("truncated-gz", "gzip"),
    ("not-gzip", "gzip"),
    ("flipped-byte", "checksum mismatch"),
    ("bad-magic", "magic"),
    ("truncated-raw", "truncated"),
    ("wrong-count", "shape"),
])
def test_corrupt_file_raises(isolated, how, problem):
    d = _copy_mnist(isolated / "copy")
    bad = _corrupt_case(d, how)
    with pytest.raises(DatasetError) as ei:
        datasets.load("mnist", root=d, download=True)  # download must not mask corruption
    msg = str(ei.value)
    assert str(d / bad) in msg, msg
    assert problem in msg, msg


@needs_mnist
def test_corrupt_file_in_search_path_is_not_skipped(isolated):
    _copy_mnist(isolated / "data" / "mnist")
    (isolated / "data" / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00junk")
    with pytest.raises(DatasetError) as ei:
        datasets.load("mnist", download=False)
    assert "train-labels-idx1-ubyte.gz" in str(ei.value)


@needs_mnist
def test_uncompressed_files_accepted(isolated):
    d = _copy_mnist(isolated / "plain")
    for f in FILES:
        (d / f).write_bytes(gzip.decompress((d / (f + ".gz")).read_bytes()))
        (d / (f + ".gz")).unlink()
    ds = datasets.load("mnist", root=d, download=False)
    assert ds.y_test[0] == 7 and ds.x_train.shape == (60000, 784)


# ----------------------------------------------------------------------------- search failures


def test_missing_everywhere_lists_directories(isolated, monkeypatch):
    partial = isolated / "envdata" / "mnist"
    partial.mkdir(parents=True)
    (partial / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv(datasets.ENV_VAR, str(isolated / "envdata"))
    with pytest.raises(DatasetError) as ei:
        datasets.load("mnist", download=False)
    msg = str(ei.value)
    for d in datasets.candidate_dirs("mnist"):
        assert str(d) in msg, (d, msg)
    assert str(isolated / "data" / "mnist") in msg
    assert str((isolated / ".." / "shared" / "data" / "mnist").resolve()) in msg
    assert "missing file(s) train-images-idx3-ubyte, t10k-images-idx3-ubyte" in msg
    assert "no such directory" in msg
    assert "download=False" in msg


def test_missing_explicit_root(isolated):
    with pytest.raises(DatasetError) as ei:
        datasets.load("fashion-mnist", root=isolated / "nowhere", download=False)
    assert str(isolated / "nowhere") in str(ei.value)


# ----------------------------------------------------------------------------- download


def _mirror_manifest(monkeypatch, name, urls_for):
    mans = copy.deepcopy(datasets.MANIFESTS)
    for f in mans[name]["files"]:
        f["urls"] = urls_for(f["name"])
    monkeypatch.setattr(datasets, "MANIFESTS", mans)


@needs_mnist
def test_download_from_file_url(isolated, tmp_path, monkeypatch):
    mirror = _copy_mnist(tmp_path / "mirror")
    dead = tmp_path / "dead-mirror"  # does not exist: first URL fails, second works
    _mirror_manifest(monkeypatch, "mnist", lambda n: [
        (dead / (n + ".gz")).as_uri(), (mirror / (n + ".gz")).as_uri()])
    ds = datasets.load("mnist")  # download=True by default
    cache = isolated / "data" / "mnist"
    assert Path(ds.root) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f + ".gz" for f in FILES)
    assert ds.y_train[0] == 5 and ds.y_test[0] == 7
    assert np.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_HIST
    # second call finds the cache, no network needed
    _mirror_manifest(monkeypatch, "mnist", lambda n: [])
    assert Path(datasets.load("mnist", download=False).root) == cache


@needs_mnist
def test_download_only_missing_files_into_root(isolated, tmp_path, monkeypatch):
    mirror = _copy_mnist(tmp_path / "mirror")
    root = isolated / "myroot"
    root.mkdir()
    shutil.move(mirror / "train-images-idx3-ubyte.gz", root)  # the mirror lacks it now
    _mirror_manifest(monkeypatch, "mnist", lambda n: [(mirror / (n + ".gz")).as_uri()])
    ds = datasets.load("mnist", root=root)
    assert Path(ds.root) == root
    assert not (isolated / "data").exists()  # explicit root: downloads go to root
    assert ds.x_train.shape == (60000, 784)


@needs_mnist
def test_download_checksum_mismatch(isolated, tmp_path, monkeypatch):
    mirror = _copy_mnist(tmp_path / "mirror")
    lab = mirror / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(lab.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # valid IDX, valid gzip, wrong content
    lab.write_bytes(gzip.compress(bytes(raw)))
    _mirror_manifest(monkeypatch, "mnist", lambda n: [(mirror / (n + ".gz")).as_uri()])
    with pytest.raises(DatasetError) as ei:
        datasets.load("mnist")
    msg = str(ei.value)
    assert "t10k-labels-idx1-ubyte" in msg and "checksum mismatch" in msg
    assert lab.as_uri() in msg
    assert str(isolated / "data" / "mnist") in msg  # directories searched are listed
    cache = isolated / "data" / "mnist"
    # good files were moved into place; the bad one and no temporary file left behind
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        f + ".gz" for f in FILES if f != "t10k-labels-idx1-ubyte")


def test_download_network_unavailable(isolated, tmp_path, monkeypatch):
    _mirror_manifest(monkeypatch, "fashion-mnist",
                     lambda n: [(tmp_path / "nothing-here" / (n + ".gz")).as_uri()])
    with pytest.raises(DatasetError) as ei:
        datasets.load("fashion-mnist")
    msg = str(ei.value)
    for f in FILES:
        assert f in msg
    assert "download failures" in msg
    assert str(isolated / "data" / "fashion-mnist") in msg
    assert list((isolated / "data" / "fashion-mnist").iterdir()) == []
