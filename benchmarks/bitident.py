"""Bit-identity check of training: the sha256 of every conductance array after a fixed set of
short runs, compared with the hashes recorded in ``tests/data/bitident.json``.

    python benchmarks/bitident.py            # run the set, print the hashes, compare
    python benchmarks/bitident.py --record   # run the set and (re)write the recorded hashes
    python benchmarks/bitident.py --only dev-realistic ...  # some cases (--record: merges them)
    python benchmarks/bitident.py --devices  # the pulsed-device cases only (issue 11)

The runs use the command line only, so the same commands are valid before and after a change
of the Python layer; a refactoring that claims to change no result must leave every hash
unchanged. Hashes depend on the machine (its CPU decides the SIMD width Numba compiles for and
OpenBLAS's kernels) and on the numpy/numba/OpenBLAS versions: they are recorded with that
fingerprint, and compared only on a machine with the same fingerprint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "tests" / "data" / "bitident.json"
MNIST = ROOT.parent / "shared" / "data" / "mnist"

SMALL = ["--n-train", "300", "--n-test", "100", "--epochs", "2", "--seed", "3", "--quiet"]

# name -> list of commands (each a list of fastres arguments; RUN is replaced by the run file)
CASES = {
    "784-100-10-pwl": [["train", "--arch", "784-100-10", "--diode", "pwl", "--threads", "1", *SMALL,
                        "--out", "RUN"]],
    "784-100-10-shockley": [["train", "--arch", "784-100-10", "--threads", "1", *SMALL, "--out", "RUN"]],
    "784-30-30-10-paired-pwl-2threads": [["train", "--arch", "784-30-30-10", "--diode", "pwl",
                                          "--threads", "2", *SMALL, "--out", "RUN"]],
    "784-30-30-10-paired-shockley-resumed": [
        ["train", "--arch", "784-30-30-10", "--threads", "1", *SMALL[:-3], "--epochs", "1", "--seed", "3",
         "--quiet", "--out", "RUN"],
        ["train", "--resume", "RUN", "--epochs", "2", "--threads", "1", "--quiet"]],
    "784-100-10-pwl-mpi2": [["MPI2", "train", "--arch", "784-100-10", "--diode", "pwl", *SMALL,
                             "--out", "RUN"]],
}


def _dev(*params, threads="1", arch="784-100-10", extra=()):
    """A short pulsed-device run: ``params`` as ``--device ...``/``--device-param K=V`` flags."""
    return [["train", "--arch", arch, "--diode", "pwl", "--threads", threads, *SMALL, *extra, *params,
             "--out", "RUN"]]


_P = "--device-param"
#: pulsed devices with noise on (issue 11): the final conductances and the whole device state
#: (momentum, accumulators, per-device parameters) must not change under a speed-up
DEVICE_CASES = {
    "dev-realistic": _dev("--device", "realistic"),
    "dev-realistic-2threads": _dev("--device", "realistic", threads="2"),
    "dev-realistic-acc": _dev("--device", "realistic", _P, "accumulate=true"),
    "dev-realistic-resumed": [
        ["train", "--arch", "784-100-10", "--diode", "pwl", "--threads", "1", *SMALL[:-3], "--epochs", "1",
         "--seed", "3", "--quiet", "--device", "realistic", "--out", "RUN"],
        ["train", "--resume", "RUN", "--epochs", "2", "--threads", "1", "--quiet"]],
    "dev-linear16": _dev(_P, "model=linear", _P, "levels=16"),
    "dev-linear16-deterministic": _dev(_P, "model=linear", _P, "levels=16", _P, "rounding=deterministic"),
    "dev-soft-updown": _dev(_P, "model=soft-bounds", _P, "levels=64", _P, "up_down=0.2"),
    "dev-exponential": _dev(_P, "model=exponential", _P, "levels=32"),
    "dev-table": _dev(_P, "model=table", _P, "table=docs/example-device.csv"),
    "dev-write-noise": _dev(_P, "model=linear", _P, "levels=256", _P, "write_noise=0.03"),
    "dev-read-noise": _dev(_P, "model=linear", _P, "levels=64", _P, "read_noise=0.03"),
    "dev-stuck": _dev(_P, "model=linear", _P, "levels=64", _P, "stuck=0.05"),
    "dev-d2d": _dev(_P, "model=exponential", _P, "levels=32", _P, "d2d_step=0.3", _P, "d2d_bounds=0.1",
                    _P, "d2d_nonlinearity=0.3"),
    "dev-realistic-deep": _dev("--device", "realistic", arch="784-30-30-10"),
    "dev-mlp-realistic": _dev("--device", "realistic", extra=("--baseline", "mlp")),
    "dev-mlp-realistic-acc": _dev("--device", "realistic", _P, "accumulate=true", extra=("--baseline", "mlp")),
}
CASES.update(DEVICE_CASES)


def fingerprint() -> dict:
    import numba
    cpu = numba.config.CPU_NAME or ""
    try:
        import llvmlite.binding as ll
        cpu = cpu or ll.get_host_cpu_name()
    except Exception:  # noqa: BLE001 - the fingerprint is best effort
        pass
    blas = ""
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg.get("Build Dependencies", {}).get("blas", {})
        blas = f"{b.get('name')} {b.get('version')}"
    except Exception:  # noqa: BLE001
        pass
    return {"cpu": cpu, "machine": platform.machine(), "numpy": np.__version__,
            "numba": numba.__version__, "blas": blas}


def _sha(a) -> str:
    a = np.asarray(a)
    a = np.ascontiguousarray(a, dtype="<f8" if a.dtype.kind == "f" else "<i8")
    return hashlib.sha256(a.tobytes()).hexdigest()


def params_hashes(path, optimizer=False) -> dict:
    """sha256 of each conductance array of the latest checkpoint of a run file; with
    ``optimizer``, also of each array of its optimiser group (keys ``optimizer/NAME``: the
    momentum and, pulsed devices, the device state and accumulators)."""
    with h5py.File(path, "r") as f:
        ep = int(f.attrs["latest_checkpoint"])
        c = f[f"checkpoints/{ep:06d}"]
        out = {k: _sha(c["params"][k][()]) for k in sorted(c["params"])}
        if optimizer and "optimizer" in c:
            out.update({f"optimizer/{k}": _sha(c["optimizer"][k][()]) for k in sorted(c["optimizer"])})
        return out


def fastres_cmd() -> list:
    exe = shutil.which("fastres", path=os.path.dirname(sys.executable)) or shutil.which("fastres")
    return [exe]


def run_case(name, cmds, workdir, data) -> dict:
    run = str(Path(workdir) / f"{name}.h5")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    for cmd in cmds:
        args = [run if a == "RUN" else a for a in cmd]
        prefix = fastres_cmd()
        if args[0] == "MPI2":
            mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or "mpirun"
            prefix = [mpirun, "-n", "2", *prefix]
            args = args[1:]
        if args[0] == "train" and "--resume" not in args:
            args += ["--data", str(data)]
        p = subprocess.run(prefix + args, env=env, capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise RuntimeError(f"{name}: {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return params_hashes(run, optimizer=name in DEVICE_CASES)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="rewrite tests/data/bitident.json")
    ap.add_argument("--data", default=str(MNIST))
    ap.add_argument("--only", nargs="*", help="case names to run")
    ap.add_argument("--devices", action="store_true", help="only the pulsed-device cases")
    args = ap.parse_args(argv)
    if args.devices:
        args.only = [*(args.only or []), *DEVICE_CASES]
    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmds in CASES.items():
            if args.only and name not in args.only:
                continue
            got[name] = run_case(name, cmds, tmp, args.data)
            print(name, json.dumps(got[name]))
    if args.record:  # with --only, the other cases keep their recorded hashes
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        hashes = {}
        if args.only and RECORD.exists():
            old = json.loads(RECORD.read_text())
            if old["fingerprint"] == fingerprint():
                hashes = {n: h for n, h in old["hashes"].items() if n in CASES}
        hashes.update(got)
        RECORD.write_text(json.dumps({"fingerprint": fingerprint(), "cases": CASES, "hashes": hashes},
                                     indent=1) + "\n")
        print(f"recorded {RECORD}")
        return 0
    rec = json.loads(RECORD.read_text())
    if rec["fingerprint"] != fingerprint():
        print(f"fingerprint differs from the recorded one: {fingerprint()} vs {rec['fingerprint']}")
        return 2
    missing = [n for n in got if n not in rec["hashes"]]
    if missing:
        print(f"no recorded hashes for {', '.join(missing)}: record them with --record --only ...")
        return 2
    bad = [n for n in got if got[n] != rec["hashes"].get(n)]
    print("bit-identical" if not bad else f"DIFFERENT: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
