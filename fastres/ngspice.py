"""Run ngspice in batch mode and read its binary raw files (the reference fastres is checked against).

``run_op`` writes a deck to a temporary directory, runs ``ngspice -b -r out.raw deck.cir`` and
returns the operating-point node voltages by lower-case node name. Only real-valued raw files
(``Flags: real``, i.e. ``.op`` and ``.dc``) are supported.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from .errors import FastresError

__all__ = ["NgspiceError", "available", "read_raw", "run", "run_op", "run_dc_sweep"]

# Output that means the result is not a trustworthy operating point. "gmin stepping failed" and
# "source stepping failed" alone are not failures (ngspice goes on to the next homotopy), but
# ngspice 39 finally falls back to a pseudo-transient "Transient op", which it reports as a
# success even for a singular (floating-node) circuit: that is rejected unless allowed.
_FAILURE_PATTERNS = re.compile(
    r"no convergence|singular matrix|timestep too small|iteration limit reached"
    r"|simulation\(s\) aborted|fatal error|error on line|^\s*error\b"
    r"|unrecognized parameter|unknown (?:model|subckt|device)|could not find"
    r"|unable to find definition",
    re.IGNORECASE | re.MULTILINE,
)
_NOISE = re.compile(r"\s*(total dram|dram currently|maximum ngspice|current ngspice|shared ngspice"
                    r"|text \(code\)|stack =|library pages|total (analysis|elapsed) time)",
                    re.IGNORECASE)
_TRAN_OP = re.compile(r"transient op started", re.IGNORECASE)


class NgspiceError(FastresError, RuntimeError):
    """ngspice failed, did not converge, or wrote no usable raw file."""


def available() -> bool:
    """True when an ``ngspice`` executable is on the PATH."""
    return shutil.which("ngspice") is not None


def read_raw(path):
    """Read a binary (or ASCII) ngspice raw file with real data.

    Returns ``(names, data)``: the lower-case vector names (e.g. ``'v(a)'``, ``'i(v1)'``) and a
    float64 array of shape ``(points, variables)``. Only the first plot is read.
    """
    with open(path, "rb") as f:
        blob = f.read()
    pos = 0
    header = {}
    names = []
    nvars = npoints = None
    flags = "real"
    while True:
        end = blob.find(b"\n", pos)
        if end < 0:
            raise NgspiceError(f"{path}: truncated raw file header")
        line = blob[pos:end].decode("latin-1")
        pos = end + 1
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key == "variables" and nvars is not None:
            for _ in range(nvars):
                end = blob.find(b"\n", pos)
                fields = blob[pos:end].decode("latin-1").split()
                pos = end + 1
                if len(fields) < 2:
                    raise NgspiceError(f"{path}: bad variable line {fields!r}")
                names.append(fields[1].lower())
            continue
        if key in ("binary", "values"):
            binary = key == "binary"
            break
        header[key] = val.strip()
        if key == "no. variables":
            nvars = int(val)
        elif key == "no. points":
            npoints = int(val)
        elif key == "flags":
            flags = val.strip().lower()
    if nvars is None or npoints is None or len(names) != nvars:
        raise NgspiceError(f"{path}: raw file header lacks variables or points")
    if "complex" in flags:
        raise NgspiceError(f"{path}: complex raw files are not supported (flags {flags!r})")
    if binary:
        need = npoints * nvars * 8
        body = blob[pos:pos + need]
        if len(body) < need:
            # ngspice may stop early (e.g. an aborted sweep): keep the complete rows
            npoints = len(body) // (8 * nvars)
            body = body[:npoints * nvars * 8]
        data = np.frombuffer(body, dtype="<f8").reshape(npoints, nvars).copy()
    else:
        tokens = blob[pos:].decode("latin-1").split()
        data = np.empty((npoints, nvars))
        k = 0
        for p in range(npoints):
            k += 1  # point index
            for v in range(nvars):
                data[p, v] = float(tokens[k].split(",")[0])
                k += 1
    return names, data


def run(netlist_text: str, timeout: float = 600, allow_tran_op: bool = False):
    """Run a deck with ``ngspice -b -r``; return ``(names, data, stdout)`` of its raw file.

    Raises :class:`NgspiceError` (with the tail of ngspice's output) when ngspice exits with an
    error, reports a convergence failure, or writes no data. ``allow_tran_op`` accepts an
    operating point that ngspice found only by its pseudo-transient fallback.
    """
    if not available():
        raise NgspiceError("ngspice is not installed (no 'ngspice' on PATH)")
    with tempfile.TemporaryDirectory(prefix="fastres_ngspice_") as tmp:
        deck = os.path.join(tmp, "deck.cir")
        raw = os.path.join(tmp, "out.raw")
        with open(deck, "w", encoding="utf-8") as f:
            f.write(netlist_text)
        try:
            proc = subprocess.run(["ngspice", "-b", "-r", raw, deck], cwd=tmp,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise NgspiceError(f"ngspice timed out after {timeout} s") from exc
        out = (proc.stdout or "") + "\n" + (proc.stderr or "")

        def fail(why):
            lines = [ln for ln in out.splitlines() if ln.strip() and not _NOISE.match(ln)]
            tail = "\n".join(lines[-25:])
            raise NgspiceError(f"ngspice {why}; output tail:\n{tail}")

        if proc.returncode != 0:
            fail(f"exited with status {proc.returncode}")
        m = _FAILURE_PATTERNS.search(out)
        if m:
            fail(f"reported {m.group(0).strip()!r}")
        if not allow_tran_op and _TRAN_OP.search(out):
            fail("found no DC operating point by Newton, gmin or source stepping"
                 " (fell back to 'Transient op')")
        if not os.path.exists(raw) or os.path.getsize(raw) == 0:
            fail("wrote no raw file")
        names, data = read_raw(raw)
    if data.shape[0] == 0:
        fail("wrote no data points")
    return names, data, out


def _voltages(names, row):
    res = {}
    for name, val in zip(names, row):
        m = re.fullmatch(r"v\((.+)\)", name)
        if m:
            res[m.group(1)] = float(val)
        elif "(" not in name and not name.startswith("i"):
            res[name] = float(val)  # some ngspice versions write bare node names
    return res


def _with_options(netlist_text: str, extra_options):
    if not extra_options:
        return netlist_text
    opts = " ".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in extra_options.items())
    lines = netlist_text.splitlines()
    # after the title line, so that it comes after any earlier .options (later ones win)
    idx = len(lines)
    for i, line in enumerate(lines):
        if line.strip().lower().startswith(".end") and not line.strip().lower().startswith(".endc"):
            idx = i
            break
    lines.insert(max(idx, 1), f".options {opts}")
    return "\n".join(lines) + "\n"


def run_op(netlist_text: str, extra_options=None, timeout: float = 600,
           allow_tran_op: bool = False) -> dict[str, float]:
    """Operating point of a deck (which must contain ``.op``): node voltages by lower-case name.

    ``extra_options`` (a dict) is added as an ``.options`` line, e.g. ``{"reltol": 1e-12}``.
    """
    names, data, _ = run(_with_options(netlist_text, extra_options), timeout, allow_tran_op)
    return _voltages(names, data[0])


def run_dc_sweep(netlist_text: str, source: str, values, timeout: float = 600) -> tuple[list, np.ndarray]:
    """Sweep the DC source ``source`` over ``values`` (equally spaced, at least 2, increasing).

    Any analysis line in the deck is replaced by ``.dc``. Returns ``(nodes, volts)`` with
    ``volts`` of shape ``(len(values), len(nodes))``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError("run_dc_sweep: need at least two sweep values")
    step = values[1] - values[0]
    if not step > 0 or not np.allclose(np.diff(values), step, rtol=1e-9, atol=0):
        raise ValueError("run_dc_sweep: values must be equally spaced and increasing")
    keep = [ln for ln in netlist_text.splitlines()
            if not re.match(r"\s*\.(op|dc|tran|ac)\b", ln, re.IGNORECASE)]
    idx = next((i for i, ln in enumerate(keep)
                if re.match(r"\s*\.end\s*$", ln, re.IGNORECASE)), len(keep))
    start, stop, step = float(values[0]), float(values[-1] + 0.5 * step), float(step)
    keep.insert(idx, f".dc {source} {start!r} {stop!r} {step!r}")
    names, data, _ = run("\n".join(keep) + "\n", timeout)
    cols = [(i, m.group(1)) for i, n in enumerate(names)
            if (m := re.fullmatch(r"v\((.+)\)", n)) and m.group(1) != "v-sweep"]
    volts = data[: values.size, [i for i, _ in cols]]
    return [n for _, n in cols], volts
