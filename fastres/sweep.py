"""Hyper-parameter sweeps: many ordinary training runs in one directory, and one table of them.

A sweep is data (:class:`SweepSpec`: the base options, the search space, grid or random, the
early-stop rule) and one directory that holds everything it produced::

    sweep.json        the spec, the trials (number, name, settings), stopped and failed trials
    NAME.json         a trial's full config (what ``fastres train --config`` reads)
    NAME.h5           the trial's run file: an ordinary run, the record of the trial
    NAME.log          the trial's ``fastres train`` output
    results.txt/.csv  the table of every trial: final and best test error, epoch time, settings
    best.toml         the best trial's config (``fastres train --config best.toml --out RUN.h5``)
    best.png          ``fastres compare``'s plot of the best few trials

Each trial is a separate ``fastres train`` process with one Numba thread (``--threads 1``);
:func:`run_sweep` keeps ``jobs`` of them running side by side. A sweep resumes from its
directory: trials whose run file reached its epochs are not run again, interrupted ones continue
with ``fastres train --resume``. Early stop (``prune="median"``): after each epoch from
``prune_after`` on, a running trial whose best test error so far is above the median of the
other trials' best test errors up to the same epoch (once at least ``prune_min`` other trials
have reached it) is stopped; its run file keeps its last checkpoint and ``sweep.json`` says why.
With ``jobs = 1`` the trials run in order and the stops are reproducible; side by side they
depend on which trials have reached an epoch first.

Search keys are the flat option names of :class:`fastres.config.TrainConfig` (``beta_rel``,
``batch_size``, ``lr``, ``seed``, ...) and ``lr_scale``, a multiplier of the base config's
learning rates (a trial stores the resulting ``lr``). Nothing here imports the training code:
a trial is a process, and its run file is read with :mod:`fastres.analysis`.
"""
from __future__ import annotations

import csv
import difflib
import fcntl
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis import open_run
from .config import _INT_OPTIONS, OPTION_SECTION, TrainConfig, merge
from .errors import ConfigError, FastresError, UsageError
from .store import StoreError

#: search keys that are not config options: name -> what they do
SPECIAL_KEYS = {"lr_scale": "a multiplier of the base config's learning rates (every layer)"}

#: early-stop rules
PRUNE_RULES = ("median", "none")

STATE_FILE = "sweep.json"
STATE_FORMAT = "fastres-sweep"
STATE_VERSION = 1


# --------------------------------------------------------------------------- the search space

@dataclass(frozen=True)
class Choice:
    """Values to try for one key: every one of them on a grid, one drawn per random trial."""

    values: tuple


@dataclass(frozen=True)
class Range:
    """A continuous range ``[low, high]`` for random trials, uniform or log-uniform; integer
    options are rounded."""

    low: float
    high: float
    log: bool = False


def check_key(key: str) -> str:
    """``key`` if it names a config option or a :data:`SPECIAL_KEYS` entry, else a ConfigError
    naming the closest valid names."""
    if key in OPTION_SECTION or key in SPECIAL_KEYS:
        return key
    valid = sorted(set(OPTION_SECTION) | set(SPECIAL_KEYS))
    near = difflib.get_close_matches(key, valid, n=3)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise ConfigError(f"sweep key {key!r} is not a config option{hint}; valid keys: {', '.join(valid)}")


def _split_top(text: str) -> list:
    """Split at commas outside brackets, braces and quotes: ``[40,12],[60,18]`` -> 2 items."""
    out, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return [s.strip() for s in out]


def parse_value(text: str):
    """One value as TOML reads it (``0.1`` a float, ``20`` an int, ``[40, 12]`` a list,
    ``true`` a bool), else the text itself (``pwl``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_axis(arg: str):
    """``KEY=V1,V2,...`` (a :class:`Choice`) or ``KEY=LOW..HIGH[:log]`` (a :class:`Range`)."""
    if "=" not in arg:
        raise UsageError(f"--grid {arg!r}: expected KEY=VALUE,VALUE,... or KEY=LOW..HIGH[:log]")
    key, text = (s.strip() for s in arg.split("=", 1))
    check_key(key)
    lo, dots, hi = text.partition("..")
    log = hi.endswith(":log")
    lo, hi = parse_value(lo.strip()), parse_value(hi.removesuffix(":log").strip())
    if dots and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        return key, make_range(key, lo, hi, log)
    values = [parse_value(s) for s in _split_top(text)]
    if not text.strip() or any(v == "" for v in values):
        raise UsageError(f"--grid {arg!r}: empty value")
    return key, Choice(tuple(values))


def make_range(key, low, high, log=False) -> Range:
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"sweep range of {key}: {v!r} is not a finite number")
    if not low < high:
        raise ConfigError(f"sweep range of {key}: need low < high, got {low}..{high}")
    if log and low <= 0:
        raise ConfigError(f"sweep range of {key}: a log range needs low > 0, got {low}")
    return Range(float(low), float(high), bool(log))


def _axis_to_json(axis):
    if isinstance(axis, Range):
        return {"low": axis.low, "high": axis.high, "log": axis.log}
    return list(axis.values)


def _axis_from_json(key, v):
    if isinstance(v, dict):
        unknown = sorted(set(v) - {"low", "high", "log"})
        if unknown or "low" not in v or "high" not in v:
            raise ConfigError(f"sweep range of {key}: expected {{low = ..., high = ..., log = true|false}}")
        return make_range(key, v["low"], v["high"], v.get("log", False))
    if not isinstance(v, list) or not v:
        raise ConfigError(f"sweep key {key}: expected a non-empty list of values or a range table, got {v!r}")
    return Choice(tuple(v))


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep tries. ``base``: the options every trial starts from (a sectioned dict, as
    :meth:`TrainConfig.to_dict`); ``space``: ``((key, Choice | Range), ...)``; ``random``: 0
    for the full grid (every combination of the choices), else that many random trials drawn
    with ``search_seed``; ``prune``: ``median`` or ``none``, after ``prune_after`` epochs once
    ``prune_min`` other trials have reached the epoch."""

    base: dict
    space: tuple
    random: int = 0
    search_seed: int = 0
    prune: str = "median"
    prune_after: int = 1
    prune_min: int = 3

    def __post_init__(self):
        if not self.space:
            raise UsageError("a sweep needs at least one key to vary (--grid KEY=V1,V2 or [grid] in --spec)")
        keys = [check_key(k) for k, _ in self.space]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ConfigError(f"sweep key(s) given twice: {', '.join(dup)}")
        if "lr" in keys and "lr_scale" in keys:
            raise ConfigError("sweep keys lr and lr_scale both set the learning rates: give one")
        for name, v, lo in (("random", self.random, 0), ("search_seed", self.search_seed, 0),
                            ("prune_after", self.prune_after, 1), ("prune_min", self.prune_min, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"sweep {name}={v!r} must be an integer >= {lo}")
        if self.prune not in PRUNE_RULES:
            raise ConfigError(f"sweep prune={self.prune!r}: use one of {', '.join(PRUNE_RULES)}")
        ranges = [k for k, a in self.space if isinstance(a, Range)]
        if ranges and not self.random:
            raise ConfigError(f"sweep range(s) for {', '.join(ranges)} need random trials (--random N); "
                              f"a grid takes lists of values")

    def to_dict(self) -> dict:
        return {"base": self.base, "space": [[k, _axis_to_json(a)] for k, a in self.space],
                "random": self.random, "search_seed": self.search_seed, "prune": self.prune,
                "prune_after": self.prune_after, "prune_min": self.prune_min}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        space = tuple((k, _axis_from_json(k, v)) for k, v in d["space"])
        return cls(base=d["base"], space=space, random=d["random"], search_seed=d["search_seed"],
                   prune=d["prune"], prune_after=d["prune_after"], prune_min=d["prune_min"])


def read_spec_file(path) -> dict:
    """A sweep TOML file: ``[grid]`` (key = [values] or {low, high, log}), optional ``random``,
    ``search_seed``, ``prune``, ``prune_after``, ``prune_min`` and ``[base]`` (options as in a
    ``--config`` file). Returns ``{"grid": [(key, axis), ...], "base": {...}, ...}``."""
    path = Path(path)
    try:
        d = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read sweep file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot parse sweep file: {exc}") from None
    known = {"grid", "base", "random", "search_seed", "prune", "prune_after", "prune_min"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown entr(ies) {', '.join(unknown)}; a sweep file has "
                          f"{', '.join(sorted(known))}")
    grid = d.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: [grid] must be a table of key = [values]")
    try:
        out = {k: v for k, v in d.items() if k not in ("grid",)}
        out["grid"] = [(check_key(k), _axis_from_json(k, v)) for k, v in grid.items()]
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return out


# --------------------------------------------------------------------------- trials

@dataclass(frozen=True)
class Trial:
    """One point of the search: its number, its settings ``{key: value}`` and its name (the
    stem of its files)."""

    index: int
    settings: dict
    name: str


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ",".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return ",".join(f"{k}:{_fmt(x)}" for k, x in v.items())
    return str(v)


def trial_name(index: int, settings: dict) -> str:
    """``t003_lr_scale=0.4_beta_rel=0.05``: the trial number and its settings, file-name safe."""
    parts = [f"t{index:03d}"] + [f"{k}={_fmt(v)}" for k, v in settings.items()]
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "-", "_".join(parts))
    return name[:150]


def _draw(axis, key, rng):
    if isinstance(axis, Choice):
        return axis.values[int(rng.integers(len(axis.values)))]
    if axis.log:
        v = math.exp(rng.uniform(math.log(axis.low), math.log(axis.high)))
    else:
        v = rng.uniform(axis.low, axis.high)
    if key in _INT_OPTIONS:
        return int(round(v))
    return float(f"{v:.4g}")  # 4 significant digits: readable names; the config stores this value


def make_trials(spec: SweepSpec) -> list:
    """The trials of ``spec``: every grid combination (first key slowest), or ``spec.random``
    draws from ``numpy.random.default_rng(spec.search_seed)``."""
    keys = [k for k, _ in spec.space]
    if spec.random:
        rng = np.random.default_rng(spec.search_seed)
        points = [{k: _draw(a, k, rng) for k, a in spec.space} for _ in range(spec.random)]
    else:
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(a.values for _, a in spec.space))]
    return [Trial(i, p, trial_name(i, p)) for i, p in enumerate(points)]


def trial_config(spec: SweepSpec, trial: Trial) -> TrainConfig:
    """The trial's full config (resolved, as its run file stores it): the base options with the
    trial's settings; a bad value is a ConfigError naming the trial."""
    flat = dict(trial.settings)
    scale = flat.pop("lr_scale", None)
    try:
        cfg = TrainConfig.from_dict(merge(spec.base, flat))
        if scale is not None:
            number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
            if not (number and math.isfinite(scale) and scale >= 0):
                raise ConfigError(f"lr_scale={scale!r} must be a finite number >= 0")
            cfg = cfg.replace(lr=[float(scale) * r for r in cfg.lr])
        return cfg.resolved()
    except FastresError as exc:
        raise ConfigError(f"sweep trial {trial.name}: {exc}") from None


def base_from_config(cfg: TrainConfig) -> dict:
    """The base options of a sweep from a config: sectioned, with the dataset directory and a
    device table made absolute (trials run in the sweep directory)."""
    d = cfg.to_dict()
    if d["data"].get("data"):
        d["data"]["data"] = str(Path(d["data"]["data"]).resolve())
    if d["device"].get("table"):
        d["device"]["table"] = str(Path(d["device"]["table"]).resolve())
    return d


# --------------------------------------------------------------------------- TOML out

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConfigError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} {v!r} to TOML")


def config_toml(cfg: TrainConfig, header: str = "") -> str:
    """``cfg`` as a sectioned TOML file for ``fastres train --config`` (unset options left out)."""
    lines = [f"# {h}" for h in header.splitlines()]
    for sec, opts in cfg.to_dict().items():
        body = [f"{k} = {_toml_value(v)}" for k, v in opts.items() if v is not None]
        if body:
            lines += ["", f"[{sec}]"] + body
    return "\n".join(lines).lstrip("\n") + "\n"


# --------------------------------------------------------------------------- the sweep directory

def _write_atomic(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _normal(obj):
    return json.loads(json.dumps(obj))


@dataclass
class Sweep:
    """A sweep directory: the spec, its trials, and what became of them (``stopped``,
    ``failed``: trial name -> details), kept in ``sweep.json``."""

    directory: Path
    spec: SweepSpec
    trials: list
    stopped: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)

    def path(self, trial: Trial, ext: str) -> Path:
        return self.directory / f"{trial.name}.{ext}"

    def save(self):
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "spec": self.spec.to_dict(),
                 "trials": [{"index": t.index, "name": t.name, "settings": t.settings} for t in self.trials],
                 "stopped": self.stopped, "failed": self.failed}
        _write_atomic(self.directory / STATE_FILE, json.dumps(state, indent=1) + "\n")

    def status(self, trial: Trial) -> str:
        """``new`` (no run file), ``done`` (run file at its epochs), ``stopped`` (early stop),
        ``failed`` (its process exited with an error) or ``partial`` (to resume)."""
        run = self.path(trial, "h5")
        if not run.exists():
            return "failed" if trial.name in self.failed else "new"
        r = open_run(run)
        if r.snapshot().latest >= (r.configured_epochs or 0):
            return "done"
        if trial.name in self.stopped:
            return "stopped"
        return "failed" if trial.name in self.failed else "partial"


def open_sweep(directory, spec: SweepSpec | None = None) -> Sweep:
    """Create the sweep directory for ``spec``, or open an existing one: with ``spec`` None the
    stored spec is used, else it must equal the stored one (a UsageError says what differs).
    Every trial's config is checked before anything runs."""
    directory = Path(directory).resolve()
    state_path = directory / STATE_FILE
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text())
            if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
                raise ValueError("not a fastres sweep file of version 1")
            stored = SweepSpec.from_dict(state["spec"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{state_path}: not a readable sweep state ({exc})") from None
        if spec is not None and _normal(spec.to_dict()) != _normal(stored.to_dict()):
            new, old = _normal(spec.to_dict()), _normal(stored.to_dict())
            diff = [k for k in old if old[k] != new[k]]
            raise UsageError(f"{directory} holds a different sweep (differs in: {', '.join(diff)}); "
                             f"resume it with `fastres sweep {directory}` alone, or give a new directory")
        sweep = Sweep(directory, stored, make_trials(stored), state.get("stopped", {}), state.get("failed", {}))
    else:
        if spec is None:
            raise UsageError(f"{directory}: no sweep there ({STATE_FILE} missing); give the keys to "
                             f"vary (--grid KEY=V1,V2 or --spec FILE)")
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{directory}: exists and is not a directory")
        sweep = Sweep(directory, spec, make_trials(spec))
    for t in sweep.trials:
        trial_config(sweep.spec, t)  # every trial valid before any runs
    names = [t.name for t in sweep.trials]
    if len(set(names)) != len(names):
        raise ConfigError("sweep trial names collide (settings too long for a file name)")
    directory.mkdir(parents=True, exist_ok=True)
    if not state_path.exists():
        sweep.save()
    return sweep


# --------------------------------------------------------------------------- early stop

def behind(curve, others, epoch: int, spec: SweepSpec):
    """The median rule: None, or why the trial with test-error ``curve`` (one value per epoch)
    is clearly behind at ``epoch``: its best test error up to ``epoch`` is above the median of
    the ``others``' (their curves, counted when they reached ``epoch``)."""
    if spec.prune == "none" or epoch < spec.prune_after or len(curve) < epoch:
        return None
    vals = [float(np.nanmin(c[:epoch])) for c in others if len(c) >= epoch and np.any(np.isfinite(c[:epoch]))]
    if len(vals) < spec.prune_min:
        return None
    med = float(np.median(vals))
    mine = float(np.nanmin(curve[:epoch])) if np.any(np.isfinite(curve[:epoch])) else math.inf
    if mine > med:
        return {"epoch": int(epoch), "best_test_error": mine, "median": med, "others": len(vals)}
    return None


# --------------------------------------------------------------------------- running

def mpi_launcher(ranks: int, mpiexec: str | None = None) -> list:
    """The command prefix that starts a trial on ``ranks`` MPI ranks: ``mpiexec`` (a command
    line such as ``srun --exclusive``; default: the ``mpiexec`` next to this Python, else on
    the PATH) with ``-n ranks``."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise UsageError(f"--ranks {ranks!r}: must be an integer >= 1")
    if mpiexec:
        return shlex.split(mpiexec) + ["-n", str(ranks)]
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise UsageError("--ranks needs an MPI launcher: pip install -e '.[mpi]' (mpi4py and MPICH) or "
                         "give --mpiexec CMD")
    return [found, "-n", str(ranks)]


def trial_command(sweep: Sweep, trial: Trial, resume: bool, python=None, launcher=()) -> list:
    """The ``fastres train`` command of a trial: a new run from its config file, or
    ``--resume`` of its run file; one thread (per rank, after the ``launcher`` prefix, e.g.
    :func:`mpi_launcher`), no progress bar."""
    cmd = [*launcher, python or sys.executable, "-m", "fastres.cli", "train"]
    if resume:
        cmd += ["--resume", str(sweep.path(trial, "h5"))]
    else:
        cmd += ["--config", str(sweep.path(trial, "json")), "--out", str(sweep.path(trial, "h5"))]
    return cmd + ["--threads", "1", "--quiet"]


class _Curves:
    """Test-error curves of the trials' run files, re-read when a file changes."""

    def __init__(self, sweep):
        self.sweep = sweep
        self.cache = {}

    def get(self, trial) -> np.ndarray:
        p = self.sweep.path(trial, "h5")
        try:
            key = p.stat().st_mtime_ns
        except FileNotFoundError:
            return np.zeros(0)
        if trial.name not in self.cache or self.cache[trial.name][0] != key:
            try:
                m = open_run(p).snapshot().metrics
            except StoreError:
                return self.cache.get(trial.name, (None, np.zeros(0)))[1]  # mid-replace: keep the last
            curve = np.asarray(m.get("test_error", np.zeros(0)), dtype=np.float64)
            self.cache[trial.name] = (key, curve)
        return self.cache[trial.name][1]


def run_sweep(sweep: Sweep, jobs: int | None = None, *, log=print, poll: float = 0.5,
              retry_failed: bool = False, first_alone: bool = False, python=None, launcher=()) -> list:
    """Run the trials that are not done (new ones from their config, partial ones resumed),
    ``jobs`` at a time (default: the number of cores), stopping those behind. ``first_alone``:
    start the others only when the first trial has finished an epoch (it compiles the kernels
    into Numba's cache, which the others then load). ``launcher``: a command prefix that runs
    each trial on a group of MPI ranks (:func:`mpi_launcher`). Returns :func:`results`. An interrupt
    stops the running trials; their last checkpoints stay."""
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be >= 1")
    with _sweep_lock(sweep.directory):
        _run_trials(sweep, jobs, log, poll, retry_failed, first_alone, python, launcher)
    return results(sweep)


@contextmanager
def _sweep_lock(directory: Path):
    """One ``run_sweep`` per directory at a time (two would start the same trials twice)."""
    fd = os.open(directory / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{directory}: another fastres sweep is running there") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _run_trials(sweep, jobs, log, poll, retry_failed, first_alone, python, launcher):
    alone = first_alone
    todo = []
    for t in sweep.trials:
        st = sweep.status(t)
        if st in ("new", "partial") or (st == "failed" and retry_failed):
            todo.append((t, st))
        elif st != "done":
            log(f"{t.name}: {st}, not run again" + (" (--retry-failed runs it)" if st == "failed" else ""))
    done = sum(sweep.status(t) == "done" for t in sweep.trials)
    left = len(sweep.trials) - done - len(todo)
    log(f"sweep {sweep.directory}: {len(sweep.trials)} trials, {done} done before"
        + (f", {left} stopped or failed before" if left else "") + f", {len(todo)} to run, {jobs} at a time")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    curves = _Curves(sweep)
    running = {}  # name -> (trial, Popen, log file, epochs checked)
    try:
        while todo or running:
            while todo and len(running) < (1 if alone and running else jobs):
                t, st = todo.pop(0)
                resume = sweep.path(t, "h5").exists()
                if not resume:
                    cfg = trial_config(sweep.spec, t).to_dict()
                    _write_atomic(sweep.path(t, "json"), json.dumps(cfg, indent=1) + "\n")
                sweep.failed.pop(t.name, None)
                sweep.save()
                cmd = trial_command(sweep, t, resume, python, launcher)
                out = open(sweep.path(t, "log"), "a", encoding="utf-8")
                out.write(f"$ {' '.join(cmd)}\n")
                out.flush()
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=sweep.directory, env=env)
                running[t.name] = (t, proc, out, 0)
                log(f"{t.name}: {'resumed' if resume else 'started'} (pid {proc.pid})")
            time.sleep(poll)
            for name, (t, proc, out, checked) in list(running.items()):
                rc = proc.poll()
                curve = curves.get(t)
                if alone and (len(curve) or rc is not None):
                    alone = False  # the kernels are compiled and cached now
                why = None
                if rc is None:
                    others = [curves.get(o) for o in sweep.trials if o.name != name]
                    for e in range(checked + 1, len(curve) + 1):
                        why = behind(curve, others, e, sweep.spec)
                        if why:
                            break
                    running[name] = (t, proc, out, len(curve))
                    if why is None:
                        continue
                    proc.terminate()  # the run file keeps its last checkpoint (atomic commits)
                    proc.wait()
                if why is not None and sweep.status(t) != "done":  # it may have finished meanwhile
                    sweep.stopped[name] = why
                    log(f"{name}: stopped after epoch {why['epoch']}: best test error "
                        f"{100 * why['best_test_error']:.2f}% > median {100 * why['median']:.2f}% "
                        f"of {why['others']} other trials")
                elif rc is not None and rc != 0:
                    sweep.failed[name] = {"exit": rc, "log": str(sweep.path(t, "log"))}
                    log(f"{name}: failed (exit status {rc}); see {sweep.path(t, 'log')}")
                else:
                    curve = curves.get(t)
                    err = f"{100 * curve[-1]:.2f}%" if len(curve) else "-"
                    log(f"{name}: done, final test error {err}")
                out.close()
                del running[name]
                sweep.save()
    finally:
        for t, proc, out, _ in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait()
            out.close()


# --------------------------------------------------------------------------- results

def results(sweep: Sweep) -> list:
    """One row per trial, best first: rank, trial, status, epochs, final and best test error
    (fractions), best epoch, median epoch time (s), run file and ``settings``. Finished trials
    are ranked by final test error, then stopped ones by their best, then the rest."""
    rows = []
    for t in sweep.trials:
        st = sweep.status(t)
        row = {"trial": t.name, "status": st, "epochs": 0, "final_test_error": None,
               "best_test_error": None, "best_epoch": None, "epoch_seconds": None,
               "run": str(sweep.path(t, "h5")), "settings": dict(t.settings)}
        if st == "stopped":
            row["status"] = f"stopped at epoch {sweep.stopped[t.name]['epoch']}"
        elif st == "failed":
            row["status"] = f"failed (exit {sweep.failed[t.name]['exit']})"
        if sweep.path(t, "h5").exists():
            m = open_run(sweep.path(t, "h5")).snapshot().metrics
            te = np.asarray(m.get("test_error", []), dtype=np.float64)
            if len(te) and np.any(np.isfinite(te)):
                i = int(np.nanargmin(te))
                row.update(epochs=len(te), final_test_error=float(te[-1]), best_test_error=float(te[i]),
                           best_epoch=int(m["epoch"][i]),
                           epoch_seconds=float(np.median(m["epoch_seconds"])))
        group = {"done": 0, "stopped": 1}.get(st, 2)
        err = row["final_test_error"] if st == "done" else row["best_test_error"]
        rows.append(((group, err if err is not None and math.isfinite(err) else math.inf, t.index), row))
    rows = [row for _, row in sorted(rows, key=lambda kr: kr[0])]
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


#: the columns of the results table before the settings
COLUMNS = ["rank", "trial", "status", "epochs", "final_test_error", "best_test_error", "best_epoch",
           "epoch_seconds"]


def _cell(v, key):
    if v is None:
        return "-"
    if key.endswith("test_error"):
        return f"{100 * v:.2f} %"
    if key == "epoch_seconds":
        return f"{v:.1f}"
    return _fmt(v)


def format_table(rows: list, keys: list) -> str:
    """The results as a Markdown table (errors in %, epoch time in s)."""
    head = {"final_test_error": "final test error", "best_test_error": "best test error",
            "best_epoch": "best epoch", "epoch_seconds": "s / epoch"}
    cols = [head.get(c, c) for c in COLUMNS] + keys
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join([_cell(r[c], c) for c in COLUMNS] + [_fmt(r["settings"][k]) for k in keys])
                     + " |")
    return "\n".join(lines) + "\n"


def write_results(sweep: Sweep, rows: list, plot_best: int = 3) -> dict:
    """``results.txt`` (the table), ``results.csv``, ``best.toml`` (the best finished trial's
    config, from its run file) and ``best.png`` (test-error curves of the best ``plot_best``
    trials; skipped when 0). Returns ``{what: path}`` of the files written."""
    keys = [k for k, _ in sweep.spec.space]
    d = sweep.directory
    out = {"table": d / "results.txt", "csv": d / "results.csv"}
    _write_atomic(out["table"], format_table(rows, keys))
    cols = COLUMNS + ["run"]
    tmp = d / ".results.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols + keys)
        for r in rows:
            w.writerow(["" if r[c] is None else r[c] for c in cols] + [_fmt(r["settings"][k]) for k in keys])
    os.replace(tmp, out["csv"])
    done = [r for r in rows if r["status"] == "done" and r["final_test_error"] is not None]
    if done:
        best = done[0]
        cfg = open_run(best["run"]).train_config()
        header = (f"best trial of the sweep in {d}: {best['trial']}\n"
                  f"final test error {100 * best['final_test_error']:.2f} % after {best['epochs']} epochs "
                  f"(best {100 * best['best_test_error']:.2f} %, epoch {best['best_epoch']})\n"
                  f"use: fastres train --config best.toml --out RUN.h5")
        out["best"] = d / "best.toml"
        _write_atomic(out["best"], config_toml(cfg, header))
    plotted = [r["run"] for r in rows if r["epochs"]][:plot_best]
    if plot_best and plotted:
        from .report import compare_runs
        out["plot"] = Path(compare_runs(plotted, d / "best.png"))
    return out

