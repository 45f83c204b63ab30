"""MNIST and Fashion-MNIST: locate, verify, download and decode the four IDX files.

Usage::

    from fastres import datasets
    ds = datasets.load("mnist")                  # or "fashion-mnist"
    ds.x_train.shape, ds.y_train.shape           # (60000, 784), (60000,)
    small = datasets.subset(ds, n_train=1000, n_test=200)

Arrays returned by :func:`load`:

* ``x_train`` -- ``(60000, 784)`` float64, pixel intensity scaled to [0, 1]
  (raw byte / 255; 0 = background, 1 = full ink), rows are 28 x 28 images
  flattened in row-major (C) order.
* ``y_train`` -- ``(60000,)`` int64 class labels in 0..9.
* ``x_test`` -- ``(10000, 784)`` float64 in [0, 1]; ``y_test`` -- ``(10000,)`` int64.

Where the files are looked for (first directory holding all four files wins;
each file may be present gzipped, ``<name>.gz``, or uncompressed, ``<name>``):

1. the explicit ``root`` argument (``root`` itself, or ``root/<dataset>``); when
   ``root`` is given no other place is searched and downloads go into ``root``;
2. the environment variable ``FASTRES_DATA``: ``$FASTRES_DATA/<dataset>``, then
   ``$FASTRES_DATA`` itself (so it may point either at a parent directory or
   directly at the directory holding the files);
3. ``./data/<dataset>`` (relative to the current working directory; also the
   download cache);
4. ``../shared/data/<dataset>`` (relative to the current working directory);
5. for fashion-mnist, ``/usr/share/datasets/fashion-mnist`` (Debian package
   ``dataset-fashion-mnist``).

Every file is verified against the sha256 of its *uncompressed* content recorded
in :data:`MANIFESTS` (gzip headers -- timestamps, stored file names -- differ
between otherwise identical copies, so the ``.gz`` digests are informational
only).  A corrupt file (bad gzip stream, truncated, wrong IDX magic number or
dimensions, wrong sha256) raises :class:`DatasetError` naming the file; loading
never silently continues past a bad file.

If no directory holds the files and ``download=True``, the missing files are
fetched into the cache directory, trying each mirror URL of the manifest in
turn (``urllib``, 30 s timeout), verified, and moved into place atomically
(written to a temporary file in the same directory, then ``os.replace``).

The canonical manifests are the :data:`MANIFESTS` dict below; the JSON copies in
``data/manifests/*.json`` of the repository must be identical to it (a test
checks this).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .config import ConfigError
from .errors import FastresError

__all__ = [
    "DATASET_NAMES",
    "MANIFESTS",
    "Dataset",
    "DatasetError",
    "load",
    "subset",
    "manifest",
    "manifest_json",
    "candidate_dirs",
]

#: Names accepted by :func:`load`.
DATASET_NAMES = ("mnist", "fashion-mnist")

#: Environment variable naming a data directory (or a parent of ``mnist/`` etc.).
ENV_VAR = "FASTRES_DATA"

#: Seconds allowed for each download attempt.
DOWNLOAD_TIMEOUT = 30.0

#: Directories searched last, per dataset (system-wide installs).
SYSTEM_DIRS = {
    "mnist": (),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def _file_entry(name, role, sha256, gz_sha256, gz_md5_published, shape, mirrors):
    return {
        "name": name,
        "role": role,
        "sha256": sha256,
        "gz_sha256": gz_sha256,
        "gz_md5_published": gz_md5_published,
        "shape": list(shape),
        "urls": [base + name + ".gz" for base in mirrors],
    }


#: Canonical manifests.  Per file: ``name`` (uncompressed file name; the gzipped
#: copy is ``name + ".gz"``), ``role``, ``sha256`` of the UNCOMPRESSED content
#: (what is verified), ``gz_sha256`` of the reference ``.gz`` copy (informational:
#: other copies differ in the gzip header), ``gz_md5_published`` (the publisher's
#: MD5 of the original ``.gz``, informational), ``shape`` of the decoded IDX array
#: and the download ``urls`` (tried in order).
MANIFESTS = {
    "mnist": {
        "name": "mnist",
        "description": "MNIST handwritten digits (LeCun, Cortes, Burges): 60000 training and "
        "10000 test images, 28x28 unsigned bytes, labels 0-9.",
        "gz_sha256_source": "/work/shared/data/mnist (train-images .gz is a lossless rebuild; "
        "its uncompressed content equals the original)",
        "files": [
            _file_entry(
                "train-images-idx3-ubyte", "train-images",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "64c6f2193d2ca853efc755bdd4a5729c71ed509e756558ce7cef34e507a1b186",
                "f68b3c2dcbeaaa9fbdd348bbdeb94873", (60000, 28, 28), _MNIST_MIRRORS),
            _file_entry(
                "train-labels-idx1-ubyte", "train-labels",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "ec02e7948609e5754d47881c09b8afdd8dfa60600b9e5388c8c54a67069ec772",
                "d53e105ee54ea40749a09fcbcd1e9432", (60000,), _MNIST_MIRRORS),
            _file_entry(
                "t10k-images-idx3-ubyte", "test-images",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b",
                "9fb629c4189551a2d022fa330f9573f3", (10000, 28, 28), _MNIST_MIRRORS),
            _file_entry(
                "t10k-labels-idx1-ubyte", "test-labels",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                "fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c",
                "ec29112dd5afa0611ce80d1b7f02629c", (10000,), _MNIST_MIRRORS),
        ],
    },
    "fashion-mnist": {
        "name": "fashion-mnist",
        "description": "Fashion-MNIST (Zalando Research): 60000 training and 10000 test images "
        "of clothing, 28x28 unsigned bytes, labels 0-9.",
        "gz_sha256_source": "/usr/share/datasets/fashion-mnist (Debian dataset-fashion-mnist; "
        "gzip header normalised by Debian, so these .gz digests differ from the upstream files)",
        "files": [
            _file_entry(
                "train-images-idx3-ubyte", "train-images",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d", (60000, 28, 28), _FASHION_MIRRORS),
            _file_entry(
                "train-labels-idx1-ubyte", "train-labels",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                "25c81989df183df01b3e8a0aad5dffbe", (60000,), _FASHION_MIRRORS),
            _file_entry(
                "t10k-images-idx3-ubyte", "test-images",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                "bef4ecab320f06d8554ea6380940ec79", (10000, 28, 28), _FASHION_MIRRORS),
            _file_entry(
                "t10k-labels-idx1-ubyte", "test-labels",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                "bb300cfdad3c16e7a12a480ee83cd310", (10000,), _FASHION_MIRRORS),
        ],
    },
}


class DatasetError(FastresError, RuntimeError):
    """A dataset cannot be found, downloaded or decoded; the message names every
    directory searched / the offending file and what is wrong with it."""


@dataclass(eq=False, repr=False)
class Dataset:
    """A decoded, verified dataset.

    Attributes
    ----------
    x_train : ndarray, shape (60000, 784), float64
        Training images, pixel intensity scaled to [0, 1] (byte / 255), each row
        a 28 x 28 image flattened row-major.
    y_train : ndarray, shape (60000,), int64
        Training labels, integers 0..9.
    x_test : ndarray, shape (10000, 784), float64
        Test images, same encoding as ``x_train``.
    y_test : ndarray, shape (10000,), int64
        Test labels, integers 0..9.
    name : str
        ``"mnist"`` or ``"fashion-mnist"``.
    root : pathlib.Path
        Directory the files were read from.
    checksums : dict
        File name (uncompressed, e.g. ``"train-images-idx3-ubyte"``) -> verified
        sha256 (hex) of its uncompressed content.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    root: Path
    checksums: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Number of classes (10 for both MNIST and Fashion-MNIST)."""
        return 10

    @property
    def image_shape(self) -> tuple:
        """Shape of one image, ``(28, 28)``."""
        return (28, 28)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, root={str(self.root)!r}, "
            f"x_train={self.x_train.shape}, y_train={self.y_train.shape}, "
            f"x_test={self.x_test.shape}, y_test={self.y_test.shape})"
        )


# --------------------------------------------------------------------------- manifests


def _check_name(name):
    if name not in MANIFESTS:
        valid = ", ".join(repr(n) for n in DATASET_NAMES)
        raise ValueError(f"unknown dataset {name!r}; valid names are {valid}")


def manifest(name: str) -> dict:
    """Return a deep copy of the canonical manifest of dataset ``name``."""
    _check_name(name)
    return copy.deepcopy(MANIFESTS[name])


def manifest_json(name: str) -> str:
    """The manifest of ``name`` serialised as in ``data/manifests/<name>.json``."""
    return json.dumps(manifest(name), indent=2) + "\n"


# --------------------------------------------------------------------------- searching


def candidate_dirs(name: str, root=None) -> list:
    """Directories searched for dataset ``name``, in order (see module docstring).

    Relative entries are resolved against the current working directory at call
    time; duplicates (same absolute path) are dropped.
    """
    _check_name(name)
    cands = []
    if root is not None:
        root = Path(root).expanduser()
        cands += [root, root / name]
    else:
        env = os.environ.get(ENV_VAR)
        if env:
            env_path = Path(env).expanduser()
            cands += [env_path / name, env_path]
        cands += [Path("data") / name, Path("..") / "shared" / "data" / name]
        cands += [Path(p) for p in SYSTEM_DIRS.get(name, ())]
    out, seen = [], set()
    for c in cands:
        key = os.path.abspath(c)
        if key not in seen:
            seen.add(key)
            out.append(Path(key))
    return out


def _find_file(directory: Path, fname: str):
    """Path of ``fname`` (uncompressed preferred) or ``fname.gz`` in ``directory``, or None."""
    for p in (directory / fname, directory / (fname + ".gz")):
        if p.is_file():
            return p
    return None


def _missing_files(directory: Path, files) -> list:
    return [f["name"] for f in files if _find_file(directory, f["name"]) is None]


# --------------------------------------------------------------------------- decoding


class _BadFile(Exception):
    """Internal: a file failed a check; converted to DatasetError by the caller."""

    def __init__(self, path, problem, digest=None):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.digest = digest


class _WrongDataset(Exception):
    """Internal: the file belongs to a different known dataset (e.g. MNIST for fashion-mnist)."""


def _read_bytes(path: Path, gzipped: bool) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _BadFile(path, f"cannot read ({exc})") from exc
    if not gzipped:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _BadFile(path, f"bad or truncated gzip stream ({exc})") from exc


def _parse_idx(data: bytes, entry: dict, where) -> np.ndarray:
    """Decode an unsigned-byte IDX file (big-endian header) and check it against ``entry``."""
    expect_shape = tuple(entry["shape"])
    ndim = len(expect_shape)
    magic_expected = _IDX_IMAGES_MAGIC if ndim == 3 else _IDX_LABELS_MAGIC
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise _BadFile(where, f"truncated: only {len(data)} bytes, no IDX header")
    magic = int(np.frombuffer(data, dtype=">u4", count=1)[0])
    if magic != magic_expected:
        hint = " (the content looks gzip-compressed: name it *.gz)" if data[:2] == b"\x1f\x8b" else ""
        raise _BadFile(
            where, f"wrong IDX magic number {magic} (0x{magic:08x}); expected {magic_expected} "
            f"for {entry['role']}{hint}")
    if len(data) < header_len:
        raise _BadFile(where, f"truncated IDX header ({len(data)} of {header_len} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dims != expect_shape:
        raise _BadFile(where, f"IDX header gives shape {dims}, expected {expect_shape}")
    n_payload = int(np.prod(dims))
    if len(data) - header_len != n_payload:
        kind = "truncated" if len(data) - header_len < n_payload else "trailing data"
        raise _BadFile(
            where, f"{kind}: header declares {n_payload} data bytes, file holds "
            f"{len(data) - header_len}")
    return np.frombuffer(data, dtype=np.uint8, count=n_payload, offset=header_len).reshape(dims)


def _other_dataset_with(fname: str, digest: str, name: str):
    """Name of another known dataset whose file ``fname`` has sha256 ``digest``, or None."""
    for other, man in MANIFESTS.items():
        if other == name:
            continue
        for f in man["files"]:
            if f["name"] == fname and f["sha256"] == digest:
                return other
    return None


def _load_file(path: Path, entry: dict, name: str, gzipped=None):
    """Read, checksum and decode one file; returns (uint8 array, sha256 hex).

    ``gzipped`` defaults to "the name ends in .gz"."""
    if gzipped is None:
        gzipped = path.suffix == ".gz"
    data = _read_bytes(path, gzipped)
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        other = _other_dataset_with(entry["name"], digest, name)
        if other is not None:
            raise _WrongDataset(f"holds {other}, not {name} ({path.name})")
        # Structural checks first: they give a more specific diagnosis.
        _parse_idx(data, entry, path)
        raise _BadFile(
            path, f"checksum mismatch: sha256 of uncompressed content is {digest}, "
            f"expected {entry['sha256']}", digest=digest)
    return _parse_idx(data, entry, path), digest


def _format_search(searched) -> str:
    return "\n".join(f"  - {d}: {why}" for d, why in searched)


def _load_dir(directory: Path, name: str, searched):
    """Load all four files from ``directory``; returns a Dataset.

    Raises ``_WrongDataset`` if a file belongs to another known dataset, and
    DatasetError (naming the file) for any other defect.
    """
    man = MANIFESTS[name]
    arrays, checksums = {}, {}
    for entry in man["files"]:
        path = _find_file(directory, entry["name"])
        try:
            arr, digest = _load_file(path, entry, name)
        except _BadFile as exc:
            raise DatasetError(
                f"{name}: corrupt file {exc.path}: {exc.problem}\n"
                f"directories searched:\n{_format_search(searched + [(directory, exc.problem)])}"
            ) from None
        arrays[entry["role"]] = arr
        checksums[entry["name"]] = digest
    for split in ("train", "test"):
        n_img = arrays[f"{split}-images"].shape[0]
        n_lab = arrays[f"{split}-labels"].shape[0]
        if n_img != n_lab:  # cannot happen with the manifests above, kept as a guard
            raise DatasetError(f"{name}: {split} has {n_img} images but {n_lab} labels in {directory}")
    labels = [arrays["train-labels"], arrays["test-labels"]]
    for lab, entry_role in zip(labels, ("train-labels", "test-labels")):
        if lab.size and int(lab.max()) > 9:
            raise DatasetError(f"{name}: {entry_role} in {directory} holds label {int(lab.max())} > 9")

    def images(a):
        return a.reshape(a.shape[0], -1).astype(np.float64) / 255.0

    return Dataset(
        x_train=images(arrays["train-images"]),
        y_train=arrays["train-labels"].astype(np.int64),
        x_test=images(arrays["test-images"]),
        y_test=arrays["test-labels"].astype(np.int64),
        name=name,
        root=directory,
        checksums=checksums,
    )


# --------------------------------------------------------------------------- download


def _download_file(entry: dict, target_dir: Path, name: str) -> list:
    """Download ``entry`` into ``target_dir`` as ``<name>.gz``; returns the list of
    failures (empty on success).  Each URL is tried in turn; content is verified
    before the atomic ``os.replace`` into place."""
    failures = []
    dest = target_dir / (entry["name"] + ".gz")
    for url in entry["urls"]:
        tmp_name = None
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp:
                payload = resp.read()
            fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{entry['name']}.", suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                _load_file(Path(tmp_name), entry, name, gzipped=True)
            except _BadFile as exc:
                failures.append(f"{url}: {exc.problem}")
                continue
            except _WrongDataset as exc:
                failures.append(f"{url}: {exc}")
                continue
            os.replace(tmp_name, dest)
            tmp_name = None
            return []
        except (OSError, ValueError) as exc:  # URLError/HTTPError/timeouts are OSError
            failures.append(f"{url}: {exc}")
        finally:
            if tmp_name is not None and os.path.exists(tmp_name):
                os.unlink(tmp_name)
    if not entry["urls"]:
        failures.append("no download URL in the manifest")
    return failures


# --------------------------------------------------------------------------- public API


def load(name: str = "mnist", root=None, *, download: bool = True) -> Dataset:
    """Load a verified copy of MNIST or Fashion-MNIST.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
        Which dataset; anything else raises ValueError.
    root : path-like, optional
        Directory holding the four IDX files (gzipped or not), or a parent of
        ``<name>/``.  When given, only this place is searched and downloads go
        here.  Otherwise the search order of the module docstring is used and
        downloads go to ``./data/<name>``.
    download : bool
        Fetch missing files from the manifest mirrors if no directory holds them.

    Returns
    -------
    Dataset
        ``x_train`` (60000, 784) float64 and ``x_test`` (10000, 784) float64 with
        pixel intensities scaled to [0, 1]; ``y_train`` (60000,) and ``y_test``
        (10000,) int64 labels 0..9; ``name``; ``root`` (directory used);
        ``checksums`` (file name -> sha256 of uncompressed content).

    Raises
    ------
    ValueError
        Unknown ``name``.
    DatasetError
        No directory holds the files and downloading is disabled or failed (the
        message lists every directory searched and what was missing or wrong), or
        a file is corrupt (message names the file and the problem).
    """
    _check_name(name)
    files = MANIFESTS[name]["files"]
    searched = []  # (directory, problem)
    for directory in candidate_dirs(name, root):
        if not directory.is_dir():
            searched.append((directory, "no such directory"))
            continue
        missing = _missing_files(directory, files)
        if missing:
            searched.append((directory, "missing file(s) " + ", ".join(missing)))
            continue
        try:
            return _load_dir(directory, name, searched)
        except _WrongDataset as exc:
            searched.append((directory, str(exc)))

    if not download:
        raise DatasetError(
            f"{name}: dataset files not found and download=False; directories searched:\n"
            f"{_format_search(searched)}\n"
            f"(set {ENV_VAR}, pass root=..., or allow download)")

    target = Path(os.path.abspath(root if root is not None else Path("data") / name))
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"{name}: cannot create download directory {target} ({exc}); directories searched:\n"
            f"{_format_search(searched)}") from exc
    failures = []
    for entry in files:
        if _find_file(target, entry["name"]) is not None:
            continue
        for msg in _download_file(entry, target, name):
            failures.append(f"{entry['name']}: {msg}")
    if failures:
        raise DatasetError(
            f"{name}: dataset files not found and download into {target} failed.\n"
            f"directories searched:\n{_format_search(searched)}\n"
            "download failures:\n" + "\n".join(f"  - {f}" for f in failures))
    try:
        return _load_dir(target, name, searched)
    except _WrongDataset as exc:
        raise DatasetError(
            f"{name}: download directory {target} {exc}; directories searched:\n"
            f"{_format_search(searched)}") from None


def subset(dataset: Dataset, n_train=None, n_test=None) -> Dataset:
    """First ``n_train`` training and ``n_test`` test samples of ``dataset`` (None = all).

    The arrays of the result are views into ``dataset`` (no copy): ``x_train``
    is ``(n_train, 784)`` float64 in [0, 1], ``y_train`` ``(n_train,)`` int64,
    and likewise for the test split.
    """
    def count(n, available, what):
        if n is None:
            return available
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{what} must be an int or None, got {n!r}")
        if n < 0 or n > available:
            raise ValueError(f"{what}={n} out of range 0..{available}")
        return int(n)

    nt = count(n_train, dataset.x_train.shape[0], "n_train")
    ns = count(n_test, dataset.x_test.shape[0], "n_test")
    return replace(
        dataset,
        x_train=dataset.x_train[:nt],
        y_train=dataset.y_train[:nt],
        x_test=dataset.x_test[:ns],
        y_test=dataset.y_test[:ns],
        checksums=dict(dataset.checksums),
    )


# -- the dataset of a run's config (fastres.config.TrainConfig) ----------------------------------
def load_data(cfg):
    """The configured dataset (subset if asked), checked against the architecture."""
    d = cfg.data
    data = load(d.dataset, d.data)
    n_classes = _n_classes(data)  # of the whole dataset: a small subset may miss a class
    if d.n_train or d.n_test:
        data = subset(data, d.n_train, d.n_test)
    check_data(cfg, data, n_classes)
    return data


def _n_classes(data) -> int:
    return int(max(data.y_train.max(), data.y_test.max())) + 1


def check_data(cfg, data, n_classes=None):
    """The architecture fits the data: input size = pixels, output size = ``n_classes``
    (default: the largest label + 1)."""
    sizes = cfg.sizes
    arch, dataset = cfg.network.arch, cfg.data.dataset
    if data.x_train.shape[1] != sizes[0]:
        raise ConfigError(f"arch {arch}: the input size must be {data.x_train.shape[1]} for {dataset}")
    n_classes = _n_classes(data) if n_classes is None else n_classes
    if sizes[-1] != n_classes:
        raise ConfigError(f"arch {arch}: the output size must be {n_classes} for {dataset}")
