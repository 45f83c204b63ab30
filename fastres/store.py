"""One HDF5 file per training run: configuration, provenance, per-epoch metrics, checkpoints.

Usage::

    from fastres.store import RunStore, generator_state, restore_generator

    store = RunStore.create("RUN.h5", config=cfg, meta={"seed": 0, "dataset": "mnist"},
                            params={"W1": W1, "b1": b1})          # checkpoint 0 (epoch 0)
    rng = np.random.default_rng(0)
    for epoch in range(1, n_epochs + 1):
        ...
        store.write_checkpoint(epoch, params, optimizer, generator_state(rng),
                               extra={"step": step}, metrics={"loss": loss, "acc": acc})

    run = RunStore.open("RUN.h5")                  # read-only view (monitors, analysis)
    run.metrics()["loss"]; ck = run.load_checkpoint(); rng = restore_generator(ck.rng_state)
    run = RunStore.open("RUN.h5", writable=True)  # resume training

The file layout (layout_version 2; see :data:`READABLE_LAYOUTS`) is documented in
``docs/hdf5-layout.md``. Layout versions differ only in how the ``config`` attribute is
organised (1: flat options, 2: sections); this module stores and returns it as it is, and
:func:`fastres.config.config_from_stored` migrates it by the file's :attr:`RunStore.layout_version`.
A file keeps the version it was created with when a resumed run appends to it.

Crash safety
------------
HDF5 is not crash-safe when modified in place, so the file named ``RUN.h5`` is never
modified.  Every commit (:meth:`RunStore.append_epoch`, :meth:`RunStore.write_checkpoint`)
copies ``RUN.h5`` to ``.RUN.h5.<pid>.tmp`` in the same directory, opens the copy with
h5py in ``r+`` mode, appends, closes it, fsyncs it, ``os.replace``-s it over ``RUN.h5``
and fsyncs the directory.  A reader (e.g. a live monitor in another process) therefore
always sees either the previous or the next complete file, whatever instant the writer
is killed at (SIGKILL, power loss after the fsyncs).  Writers serialise on an advisory
``fcntl.flock`` of the sidecar file ``.RUN.h5.lock`` (which stays in the directory; it
holds no data).  Temporary files left by dead writers are removed on the next open or
commit.  No HDF5 handle is kept open between calls.

The cost is a full copy of the file per commit (see the report / docs for timings);
this is negligible compared with an epoch of training for the network sizes fastres
targets.
"""

from __future__ import annotations

import copy
import hashlib
import json
import numbers
import os
import platform
import re
import shutil
import socket
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from .errors import FastresError

try:  # POSIX advisory locks; without them concurrent *writers* are not serialised.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None

__all__ = [
    "StoreError", "RunStore", "Checkpoint", "Snapshot",
    "generator_state", "restore_generator", "LAYOUT_VERSION", "FORMAT",
]

#: Value of the root attribute ``format`` identifying a fastres run file.
FORMAT = "fastres-run"
#: Value of the root attribute ``layout_version`` written by this module (new files).
LAYOUT_VERSION = 2
#: Layout versions this module opens (their groups and datasets are the same).
READABLE_LAYOUTS = (1, 2)

#: Root attributes owned by the store; config/meta keys with these names get no
#: convenience attribute (they remain in the JSON ``config`` / ``meta`` attributes).
RESERVED_ROOT_ATTRS = frozenset(
    {"format", "layout_version", "config", "meta", "latest_checkpoint", "dataset_checksums"})

_REQUIRED_ROOT_ATTRS = ("format", "layout_version", "config", "meta", "latest_checkpoint")
_REQUIRED_GROUPS = ("checkpoints", "metrics", "samples", "dataset")
_CHECKPOINT_ATTRS = ("epoch", "rng_state", "time", "extra")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_GZIP_LEVEL = 4
_METRIC_CHUNK = 256
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_thread_lock = threading.Lock()  # the flock alone does not exclude threads sharing a tmp name


class StoreError(FastresError):
    """A run file is missing, corrupt, not a fastres run, or an operation on it is invalid."""


@dataclass
class Checkpoint:
    """One stored checkpoint (arrays are fresh in-memory copies)."""

    epoch: int
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    rng_state: dict
    extra: dict = field(default_factory=dict)
    time: str = ""

    def rng(self) -> np.random.Generator:
        """A generator continuing the stream saved in this checkpoint."""
        return restore_generator(self.rng_state)


@dataclass
class Snapshot:
    """Metrics and checkpoint list read from one consistent version of the file."""

    metrics: dict[str, np.ndarray]
    checkpoints: list[int]
    latest_checkpoint: int


# --------------------------------------------------------------------------- JSON helpers

def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _json_object_hook(d):
    if set(d) == {"__ndarray__", "dtype"}:
        return np.asarray(d["__ndarray__"], dtype=np.dtype(d["dtype"]))
    return d


def _dumps(obj, what: str, where: str) -> str:
    try:
        return json.dumps(obj, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{where}: {what} is not JSON-serialisable: {e}") from e


def _loads(text, what: str, where: str):
    try:
        return json.loads(text, object_hook=_json_object_hook)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{where}: attribute {what!r} is not valid JSON: {e}") from e


# --------------------------------------------------------------------------- RNG helpers

def generator_state(rng) -> dict:
    """JSON-safe state of a ``np.random.Generator`` (or ``BitGenerator``).

    Returns ``rng.bit_generator.state`` with numpy arrays (e.g. MT19937 / Philox keys)
    encoded as ``{"__ndarray__": [...], "dtype": "<u8"}``; Python ints of any size stay
    ints (JSON handles the 128-bit PCG64 state).  :func:`restore_generator` inverts it.
    """
    if isinstance(rng, np.random.Generator):
        bg = rng.bit_generator
    elif isinstance(rng, np.random.BitGenerator):
        bg = rng
    else:
        raise StoreError(f"generator_state: expected numpy Generator or BitGenerator, "
                         f"got {type(rng).__name__}")
    return json.loads(json.dumps(bg.state, default=_json_default))


def restore_generator(state: dict) -> np.random.Generator:
    """A ``np.random.Generator`` whose bit generator (looked up by name, e.g. ``PCG64``)
    is set to ``state`` (as produced by :func:`generator_state` or the raw
    ``bit_generator.state`` dict); it continues the saved stream exactly."""
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise StoreError(f"restore_generator: state must be a dict with key 'bit_generator', "
                         f"got {state!r:.200}")
    name = state["bit_generator"]
    cls = getattr(np.random, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise StoreError(f"restore_generator: unknown bit generator {name!r} "
                         f"(not a numpy.random.BitGenerator)")
    decoded = json.loads(json.dumps(state, default=_json_default), object_hook=_json_object_hook)
    bg = cls()
    try:
        bg.state = decoded
    except (TypeError, ValueError, KeyError) as e:
        raise StoreError(f"restore_generator: invalid {name} state: {e}") from e
    return np.random.Generator(bg)


def _rng_state_dict(rng_state, where: str) -> dict:
    if isinstance(rng_state, (np.random.Generator, np.random.BitGenerator)):
        return generator_state(rng_state)
    if not isinstance(rng_state, dict) or "bit_generator" not in rng_state:
        raise StoreError(f"{where}: rng_state must be a Generator or a dict from "
                         f"generator_state() with key 'bit_generator', got {type(rng_state).__name__}")
    restore_generator(rng_state)  # validates name and structure now, not at resume time
    return rng_state


# --------------------------------------------------------------------------- validation helpers

def _check_name(name, what: str, where: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise StoreError(f"{where}: invalid {what} name {name!r} (must be a non-empty string "
                         f"without '/')")
    return name


def _check_arrays(arrays, what: str, where: str) -> dict[str, np.ndarray]:
    if arrays is None:
        return {}
    if not isinstance(arrays, dict):
        raise StoreError(f"{where}: {what} must be a dict name -> numpy array, "
                         f"got {type(arrays).__name__}")
    out = {}
    for name, arr in arrays.items():
        _check_name(name, f"{what} array", where)
        a = np.asarray(arr)
        if a.dtype.kind not in "biufc":
            raise StoreError(f"{where}: {what} array {name!r} has non-numeric dtype {a.dtype}")
        out[name] = a
    return out


def _metric_value(name, value, where: str) -> float | int:
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise StoreError(f"{where}: metric {name!r} must be a scalar, got array of shape "
                             f"{value.shape}")
        value = value.reshape(()).item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, numbers.Real):
        raise StoreError(f"{where}: metric {name!r} must be a real number, "
                         f"got {type(value).__name__} {value!r:.80}")
    if name == "epoch":
        if isinstance(value, float) and not value.is_integer():
            raise StoreError(f"{where}: metric 'epoch' must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _check_metrics(metrics, where: str) -> dict[str, float | int]:
    if not isinstance(metrics, dict):
        raise StoreError(f"{where}: metrics must be a dict name -> number, "
                         f"got {type(metrics).__name__}")
    if "epoch" not in metrics:
        raise StoreError(f"{where}: metrics row has no required key 'epoch' "
                         f"(keys: {sorted(map(str, metrics))})")
    return {_check_name(k, "metric", where): _metric_value(k, v, where) for k, v in metrics.items()}


def _attr_scalar(value):
    """``value`` as an HDF5-storable scalar attribute, or None if it is not a plain scalar."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    return None


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _default_meta() -> dict:
    from importlib import metadata

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    fastres_version = version("fastres")
    if fastres_version is None:
        from .version import __version__ as fastres_version
    return {
        "fastres_version": fastres_version,
        "created": _utc_now(),
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "numba_version": version("numba"),
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
        "command": list(sys.argv),
    }


# --------------------------------------------------------------------------- file helpers

def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some filesystems/platforms cannot open directories
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _tmp_pattern(path: Path) -> re.Pattern:
    return re.compile(r"^\." + re.escape(path.name) + r"\.(\d+)\.tmp$")


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _discard(tmp: Path) -> None:
    """Remove a commit's temporary file if it is still there (the commit failed)."""
    if tmp.exists():
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove_stale_tmp(path: Path, all_others: bool) -> None:
    """Remove ``.RUN.h5.<pid>.tmp`` of dead writers (``all_others``: of every other pid,
    used while holding the writer lock).  Best effort: errors are ignored."""
    pat = _tmp_pattern(path)
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        m = pat.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            if not all_others:
                continue
        elif not all_others and _pid_alive(pid):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            pass


@contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    with _thread_lock:
        if fcntl is None:  # pragma: no cover
            yield
            return
        lock = path.with_name(f".{path.name}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{path}: cannot create writer lock file {lock}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _diagnose(path: Path, err: BaseException) -> str:
    """Explain why h5py could not open ``path``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(min(size, 1 << 16))
    except OSError as e:
        return f"{path}: cannot read run file: {e}"
    if size == 0:
        return f"{path}: run file is empty (0 bytes), not an HDF5 file"
    offsets = [0] + [512 << k for k in range(8)]
    if not any(head[o:o + 8] == _HDF5_SIGNATURE for o in offsets if o + 8 <= len(head)):
        return f"{path}: not an HDF5 file (no HDF5 signature; {size} bytes)"
    return f"{path}: HDF5 file is truncated or corrupt ({size} bytes; h5py: {err})"


@contextmanager
def _h5open(path: Path, mode: str) -> Iterator[h5py.File]:
    if mode == "r" and not path.exists():
        raise StoreError(f"{path}: run file does not exist")
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not a run file")
    try:
        f = h5py.File(path, mode, locking=False)
    except FileNotFoundError as e:
        raise StoreError(f"{path}: run file does not exist") from e
    except OSError as e:
        raise StoreError(_diagnose(path, e)) from e
    try:
        try:
            yield f
        except (OSError, KeyError, RuntimeError) as e:
            raise StoreError(f"{path}: HDF5 file is corrupt or incomplete "
                             f"({type(e).__name__}: {e})") from e
    finally:
        try:
            f.close()
        except Exception:  # pragma: no cover - closing a broken file
            pass


def _validate(f: h5py.File, path: Path) -> None:
    """Raise StoreError unless ``f`` is a complete fastres run of a known layout."""
    attrs = f.attrs
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path}: HDF5 file is not a fastres run (root attribute 'format' "
                         f"is {attrs.get('format')!r}, expected {FORMAT!r})")
    version = attrs.get("layout_version")
    if version is None:
        raise StoreError(f"{path}: fastres run has no root attribute 'layout_version'")
    if int(version) not in READABLE_LAYOUTS:
        raise StoreError(f"{path}: unknown fastres layout_version {int(version)} "
                         f"(this fastres reads layout versions {', '.join(map(str, READABLE_LAYOUTS))}); "
                         f"upgrade fastres or convert the file")
    for name in _REQUIRED_ROOT_ATTRS:
        if name not in attrs:
            raise StoreError(f"{path}: fastres run is missing required root attribute {name!r}")
    for name in _REQUIRED_GROUPS:
        if not isinstance(f.get(name), h5py.Group):
            raise StoreError(f"{path}: fastres run is missing required group '/{name}'")
    latest = int(attrs["latest_checkpoint"])
    key = f"{latest:06d}"
    ck = f["checkpoints"].get(key)
    if not isinstance(ck, h5py.Group):
        raise StoreError(f"{path}: latest_checkpoint is {latest} but group "
                         f"'/checkpoints/{key}' is missing")
    for sub in ("params", "optimizer"):
        if not isinstance(ck.get(sub), h5py.Group):
            raise StoreError(f"{path}: checkpoint '/checkpoints/{key}' has no '{sub}' group")
    for a in _CHECKPOINT_ATTRS:
        if a not in ck.attrs:
            raise StoreError(f"{path}: checkpoint '/checkpoints/{key}' is missing attribute {a!r}")
    lengths = {n: d.shape[0] for n, d in f["metrics"].items()}
    if lengths and ("epoch" not in lengths or len(set(lengths.values())) != 1):
        raise StoreError(f"{path}: metric datasets are inconsistent (lengths {lengths}; "
                         f"all must equal the length of '/metrics/epoch')")


def _write_arrays(group: h5py.Group, arrays: dict[str, np.ndarray]) -> None:
    for name, a in arrays.items():
        if a.ndim == 0 or a.size == 0:  # scalars/empties cannot be chunked
            group.create_dataset(name, data=a)
        else:
            # fletcher32: HDF5 checksums every chunk and refuses to read a corrupted one
            group.create_dataset(name, data=a, chunks=True, compression="gzip",
                                 compression_opts=_GZIP_LEVEL, shuffle=True, fletcher32=True)


def _read_arrays(group: h5py.Group) -> dict[str, np.ndarray]:
    return {name: ds[()] for name, ds in group.items() if isinstance(ds, h5py.Dataset)}


def _append_metrics(f: h5py.File, row: dict[str, float | int]) -> None:
    g = f["metrics"]
    n = g["epoch"].shape[0] if "epoch" in g else 0
    for name, ds in g.items():
        ds.resize((n + 1,))
        ds[n] = row.get(name, np.nan if ds.dtype.kind == "f" else 0)
    for name, value in row.items():
        if name in g:
            continue
        if name == "epoch":  # first row ever
            ds = g.create_dataset(name, shape=(n + 1,), maxshape=(None,), dtype=np.int64,
                                  chunks=(_METRIC_CHUNK,))
        else:
            ds = g.create_dataset(name, shape=(n + 1,), maxshape=(None,), dtype=np.float64,
                                  chunks=(_METRIC_CHUNK,), fillvalue=np.nan)
        ds[n] = value


def _metrics_digest(out: dict) -> str:
    """sha256 over the metric names and their values (little-endian bytes), in stored order."""
    h = hashlib.sha256()
    for name, a in out.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def _seal_metrics(f: h5py.File) -> None:
    """Store the checksum of ``/metrics`` (attribute ``sha256``) after a change."""
    f["metrics"].attrs["sha256"] = _metrics_digest(_read_metrics(f, verify=False))


def _read_metrics(f: h5py.File, verify: bool = True) -> dict[str, np.ndarray]:
    """The metrics; with ``verify``, checked against their stored checksum (files written
    before metrics had one are read as they are)."""
    g = f["metrics"]
    out = {"epoch": g["epoch"][()]} if "epoch" in g else {}
    for name, ds in g.items():
        if name != "epoch":
            out[name] = ds[()]
    want = g.attrs.get("sha256")
    if verify and want is not None and _metrics_digest(out) != want:
        raise StoreError(f"{f.filename}: the metrics do not match their checksum: the file was "
                         f"altered or corrupted after it was written")
    return out


def _list_checkpoints(f: h5py.File) -> list[int]:
    return sorted(int(k) for k in f["checkpoints"].keys())


# --------------------------------------------------------------------------- RunStore

class RunStore:
    """Handle on one run file.  Holds no HDF5 handle: each call opens, works, closes.

    Use :meth:`create` for a new run (writable) and :meth:`open` for an existing one
    (read-only unless ``writable=True``).
    """

    def __init__(self, path, *, writable: bool, _config: dict, _meta: dict,
                 _layout_version: int = LAYOUT_VERSION):
        self.path = Path(path)
        self.writable = writable
        self.layout_version = int(_layout_version)  # of the file's config (see the module doc)
        self._config = _config
        self._meta = _meta
        self._closed = False

    # ---- construction
    @classmethod
    def create(cls, path, *, config: dict, meta: dict, params: dict,
               overwrite: bool = False, rng_state=None) -> "RunStore":
        """Write a new run file holding ``config``, ``meta`` and checkpoint 0 (``params``;
        its ``rng_state`` is the optional ``rng_state`` argument, else JSON ``null``).

        Missing provenance keys of ``meta`` (fastres/numpy/numba/h5py/python versions,
        ``created``, ``host``, ``command``) are filled in.  Refuses to replace an existing
        file unless ``overwrite=True``.
        """
        path = Path(path)
        where = f"{path}"
        if not path.parent.is_dir():
            raise StoreError(f"{path}: cannot create run file, directory {path.parent} "
                             f"does not exist")
        if path.exists() and not overwrite:
            raise StoreError(f"{path}: run file already exists; refusing to overwrite it "
                             f"(overwrite=True, or --overwrite on the command line, replaces it)")
        if not isinstance(config, dict):
            raise StoreError(f"{where}: config must be a dict, got {type(config).__name__}")
        if not isinstance(meta, dict):
            raise StoreError(f"{where}: meta must be a dict, got {type(meta).__name__}")
        params = _check_arrays(params, "params", where)
        if not params:
            raise StoreError(f"{where}: params must contain at least one array")
        rng0 = None if rng_state is None else _rng_state_dict(rng_state, where)
        full_meta = _default_meta()
        full_meta.update(meta)
        checksums = full_meta.get("dataset_checksums", {}) or {}
        if not isinstance(checksums, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in checksums.items()):
            raise StoreError(f"{where}: meta['dataset_checksums'] must be a dict "
                             f"file name -> sha256 hex string")
        full_meta["dataset_checksums"] = dict(checksums)
        config_json = _dumps(config, "config", where)
        meta_json = _dumps(full_meta, "meta", where)
        # Round trip so the in-memory copies equal what readers will see.
        config_rt = _loads(config_json, "config", where)
        meta_rt = _loads(meta_json, "meta", where)

        convenience: dict[str, Any] = {}
        for k, v in full_meta.items():
            if k in RESERVED_ROOT_ATTRS:
                continue
            s = _attr_scalar(v)
            if s is not None:
                convenience[k] = s
            elif v is not None:
                convenience[k] = _dumps(v, f"meta[{k!r}]", where)
        flat_config = {}
        for k, v in config.items():  # sections are flattened one level for the root attributes
            if isinstance(v, dict):
                flat_config.update(v)
            else:
                flat_config[k] = v
        for k, v in flat_config.items():
            if not isinstance(k, str) or k in RESERVED_ROOT_ATTRS:
                continue
            s = _attr_scalar(v)
            if s is None:
                continue
            if k in convenience and convenience[k] != s:
                raise StoreError(f"{where}: config[{k!r}] = {s!r} disagrees with "
                                 f"meta[{k!r}] = {convenience[k]!r}; both would be the root "
                                 f"attribute {k!r}")
            convenience[k] = s

        with _writer_lock(path):
            if path.exists() and not overwrite:
                raise StoreError(f"{path}: run file already exists; refusing to overwrite it "
                                 f"(overwrite=True, or --overwrite on the command line, replaces it)")
            _remove_stale_tmp(path, all_others=True)
            tmp = _tmp_path(path)
            try:
                try:
                    with _h5open(tmp, "w") as f:
                        f.attrs["format"] = FORMAT
                        f.attrs["layout_version"] = LAYOUT_VERSION
                        f.attrs["config"] = config_json
                        f.attrs["meta"] = meta_json
                        f.attrs["dataset_checksums"] = _dumps(checksums, "dataset_checksums", where)
                        for k, v in convenience.items():
                            f.attrs[k] = v
                        f.create_group("checkpoints", track_order=True)
                        f.create_group("metrics", track_order=True)
                        f.create_group("samples", track_order=True)
                        ds = f.create_group("dataset")
                        if isinstance(full_meta.get("dataset"), str):
                            ds.attrs["name"] = full_meta["dataset"]
                        for fname, digest in checksums.items():
                            ds.attrs[fname] = digest
                        _write_checkpoint_group(f, 0, params, {}, rng0, {}, where)
                        f.attrs["latest_checkpoint"] = 0
                        f.flush()  # write errors (ENOSPC) surface here, not in a silent close
                    _fsync_path(tmp)
                    with _h5open(tmp, "r") as f:  # complete, or no run file is created
                        _validate(f, tmp)
                except (OSError, StoreError, RuntimeError) as e:
                    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    raise StoreError(f"{path}: cannot create the run file ({reason}); nothing was "
                                     f"written") from e
                if overwrite:
                    os.replace(tmp, path)
                else:
                    try:  # atomic "create only if absent"
                        os.link(tmp, path)
                    except FileExistsError:
                        raise StoreError(f"{path}: run file already exists; refusing to "
                                         f"overwrite it (overwrite=True, or --overwrite on the command line, replaces it)")
                    except OSError:  # filesystem without hard links
                        os.replace(tmp, path)
                    else:
                        os.unlink(tmp)
                _fsync_path(path.parent, directory=True)
            finally:
                _discard(tmp)
        return cls(path, writable=True, _config=config_rt, _meta=meta_rt)

    @classmethod
    def open(cls, path, *, writable: bool = False) -> "RunStore":
        """Open an existing run; validates the layout.  Read-only unless ``writable``."""
        path = Path(path)
        _remove_stale_tmp(path, all_others=False)
        with _h5open(path, "r") as f:
            _validate(f, path)
            config = _loads(f.attrs["config"], "config", str(path))
            meta = _loads(f.attrs["meta"], "meta", str(path))
            version = int(f.attrs["layout_version"])
        return cls(path, writable=writable, _config=config, _meta=meta, _layout_version=version)

    # ---- lifecycle
    def close(self) -> None:
        """Mark the store closed (no HDF5 handle is held, so nothing else to release)."""
        self._closed = True

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "closed" if self._closed else ("writable" if self.writable else "read-only")
        return f"RunStore({str(self.path)!r}, {mode})"

    def _check_open(self, write: bool = False) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: run store is closed")
        if write and not self.writable:
            raise StoreError(f"{self.path}: run store was opened read-only; use "
                             f"RunStore.open(path, writable=True) to append")

    @contextmanager
    def _read(self) -> Iterator[h5py.File]:
        self._check_open()
        with _h5open(self.path, "r") as f:
            _validate(f, self.path)
            yield f

    def _commit(self, fn: Callable[[h5py.File], None], need_bytes: int = 0) -> None:
        """Copy-on-write commit: copy, modify the copy, flush, verify, fsync, atomically replace.

        Any failure before the replace (disk full, I/O error, a write error that HDF5 would
        only report while closing) leaves ``RUN.h5`` untouched and raises :class:`StoreError`
        saying so; the copy is discarded. ``need_bytes``: the (uncompressed) size of what
        ``fn`` adds. The free space is checked first (the copy, plus that, plus 1 MiB), since
        HDF5 does not survive running out of space in the middle of a write."""
        self._check_open(write=True)
        path = self.path
        with _writer_lock(path):
            _remove_stale_tmp(path, all_others=True)
            if not path.exists():
                raise StoreError(f"{path}: run file does not exist (deleted or moved?)")
            need = path.stat().st_size + int(need_bytes) + (1 << 20)
            try:
                free = shutil.disk_usage(path.parent).free
            except OSError:
                free = need
            if free < need:
                raise StoreError(
                    f"{path}: cannot commit to the run file (not enough disk space: the commit needs "
                    f"about {need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free); the file is "
                    f"unchanged and keeps its last checkpoint. Free disk space (or copy the file "
                    f"elsewhere) and continue with: fastres train --resume {path}")
            tmp = _tmp_path(path)
            try:
                try:
                    shutil.copyfile(path, tmp)
                    with _h5open(tmp, "r+") as f:
                        _validate(f, path)
                        fn(f)
                        f.flush()  # write errors (ENOSPC) surface here, not in a silent close
                    _fsync_path(tmp)
                    with _h5open(tmp, "r") as f:  # the copy is a complete run, or it goes
                        _validate(f, tmp)
                except (OSError, StoreError, RuntimeError) as e:
                    if isinstance(e, StoreError) and "not after the latest" in str(e):
                        raise
                    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    raise StoreError(
                        f"{path}: cannot commit to the run file ({reason}); the file is unchanged "
                        f"and keeps its last checkpoint. Free disk space (or copy the file "
                        f"elsewhere) and continue with: fastres train --resume {path}") from e
                os.replace(tmp, path)
                _fsync_path(path.parent, directory=True)
            finally:
                _discard(tmp)

    # ---- writers
    def update_config(self, config: dict, note: dict | None = None) -> None:
        """Replace the stored ``config`` (the file keeps its layout version, so ``config`` must
        be in that version's form) in one atomic commit, appending ``note`` (e.g. what a resume
        changed and the command that did it) to ``meta["config_changes"]``."""
        where = str(self.path)
        config_json = _dumps(config, "config", where)
        meta = copy.deepcopy(self._meta)
        if note is not None:
            meta.setdefault("config_changes", []).append(note)
        meta_json = _dumps(meta, "meta", where)

        def fn(f: h5py.File) -> None:
            f.attrs["config"] = config_json
            f.attrs["meta"] = meta_json

        self._commit(fn, len(config_json) + len(meta_json))
        self._config = _loads(config_json, "config", where)
        self._meta = _loads(meta_json, "meta", where)

    def append_epoch(self, metrics: dict) -> None:
        """Append one metrics row (``epoch`` required) in one atomic commit.

        Names not seen before are new datasets back-filled with NaN; existing names
        missing from ``metrics`` get NaN.  Every ``/metrics/*`` dataset has the same
        length afterwards.
        """
        row = _check_metrics(metrics, f"{self.path}: append_epoch")
        def fn(f: h5py.File) -> None:
            _append_metrics(f, row)
            _seal_metrics(f)

        self._commit(fn)

    def write_checkpoint(self, epoch: int, params: dict, optimizer: dict, rng_state,
                         extra: dict | None = None, metrics: dict | None = None,
                         extra_arrays: dict | None = None) -> None:
        """Store checkpoint ``epoch`` -- and optionally its metrics row and per-sample
        arrays -- in ONE atomic commit, so metrics and checkpoints never disagree.

        ``epoch`` must exceed the latest stored checkpoint.  ``rng_state`` is a dict from
        :func:`generator_state` (or a Generator).  ``extra`` is a JSON-serialisable dict
        (e.g. ``{"step": 1234}``).  If ``metrics`` has an ``epoch`` key it must equal
        ``epoch``; otherwise it is added.  ``extra_arrays`` go to ``/samples/<epoch>``.
        """
        where = f"{self.path}: write_checkpoint"
        if isinstance(epoch, (bool, np.bool_)) or not isinstance(epoch, numbers.Integral) \
                or epoch < 0:
            raise StoreError(f"{where}: epoch must be a non-negative integer, got {epoch!r}")
        epoch = int(epoch)
        params = _check_arrays(params, "params", where)
        if not params:
            raise StoreError(f"{where}: params must contain at least one array")
        optimizer = _check_arrays(optimizer, "optimizer", where)
        extra_arrays = _check_arrays(extra_arrays, "extra_arrays", where)
        rng = _rng_state_dict(rng_state, where)
        extra = {} if extra is None else extra
        if not isinstance(extra, dict):
            raise StoreError(f"{where}: extra must be a dict or None, got {type(extra).__name__}")
        row = None
        if metrics is not None:
            metrics = dict(metrics)
            if "epoch" in metrics and _metric_value("epoch", metrics["epoch"], where) != epoch:
                raise StoreError(f"{where}: metrics['epoch'] = {metrics['epoch']!r} differs "
                                 f"from checkpoint epoch {epoch}")
            metrics["epoch"] = epoch
            row = _check_metrics(metrics, where)
        _dumps(extra, "extra", where)

        def fn(f: h5py.File) -> None:
            latest = int(f.attrs["latest_checkpoint"])
            if epoch <= latest:
                raise StoreError(f"{where}: epoch {epoch} is not after the latest stored "
                                 f"checkpoint {latest} (checkpoints are append-only)")
            _write_checkpoint_group(f, epoch, params, optimizer, rng, extra, where)
            if extra_arrays:
                g = f["samples"].create_group(f"{epoch:06d}", track_order=True)
                g.attrs["epoch"] = epoch
                _write_arrays(g, extra_arrays)
            if row is not None:
                _append_metrics(f, row)
                _seal_metrics(f)
            f.attrs["latest_checkpoint"] = epoch

        added = sum(a.nbytes for d in (params, optimizer, extra_arrays) for a in d.values())
        self._commit(fn, added + 64 * 1024)

    # ---- readers
    @property
    def config(self) -> dict:
        """The run configuration (deep copy)."""
        return copy.deepcopy(self._config)

    @property
    def meta(self) -> dict:
        """Provenance metadata (deep copy)."""
        return copy.deepcopy(self._meta)

    def metrics(self) -> dict[str, np.ndarray]:
        """``{name: 1-D array}``, all of one length; ``epoch`` (int64) first."""
        with self._read() as f:
            return _read_metrics(f)

    def checkpoints(self) -> list[int]:
        """Sorted epochs of the stored checkpoints (0 = initial parameters)."""
        with self._read() as f:
            return _list_checkpoints(f)

    @property
    def latest_checkpoint(self) -> int:
        with self._read() as f:
            return int(f.attrs["latest_checkpoint"])

    def snapshot(self) -> Snapshot:
        """Metrics, checkpoint list and latest checkpoint from ONE version of the file."""
        with self._read() as f:
            return Snapshot(_read_metrics(f), _list_checkpoints(f),
                            int(f.attrs["latest_checkpoint"]))

    def load_checkpoint(self, epoch: int | None = None) -> Checkpoint:
        """Checkpoint ``epoch`` (None = latest)."""
        with self._read() as f:
            if epoch is None:
                epoch = int(f.attrs["latest_checkpoint"])
            key = f"{int(epoch):06d}"
            g = f["checkpoints"].get(key)
            if not isinstance(g, h5py.Group):
                raise StoreError(f"{self.path}: no checkpoint for epoch {epoch} "
                                 f"(stored: {_list_checkpoints(f)})")
            where = f"{self.path}: /checkpoints/{key}"
            return Checkpoint(
                epoch=int(g.attrs["epoch"]),
                params=_read_arrays(g["params"]),
                optimizer=_read_arrays(g["optimizer"]),
                rng_state=_loads(g.attrs["rng_state"], "rng_state", where),
                extra=_loads(g.attrs["extra"], "extra", where),
                time=str(g.attrs["time"]),
            )

    def samples(self, epoch: int) -> dict[str, np.ndarray]:
        """The per-sample arrays stored with checkpoint ``epoch``."""
        with self._read() as f:
            g = f["samples"].get(f"{int(epoch):06d}")
            if not isinstance(g, h5py.Group):
                stored = sorted(int(k) for k in f["samples"].keys())
                raise StoreError(f"{self.path}: no samples stored for epoch {epoch} "
                                 f"(epochs with samples: {stored})")
            return _read_arrays(g)


def _write_checkpoint_group(f: h5py.File, epoch: int, params, optimizer, rng_state,
                            extra, where: str) -> None:
    key = f"{epoch:06d}"
    if key in f["checkpoints"]:
        raise StoreError(f"{where}: checkpoint '/checkpoints/{key}' already exists")
    g = f["checkpoints"].create_group(key)
    g.attrs["epoch"] = epoch
    g.attrs["time"] = _utc_now()
    g.attrs["rng_state"] = _dumps(rng_state, "rng_state", where)
    g.attrs["extra"] = _dumps(extra, "extra", where)
    _write_arrays(g.create_group("params", track_order=True), params)
    _write_arrays(g.create_group("optimizer", track_order=True), optimizer)
