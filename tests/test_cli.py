"""The ``fastres op`` command: output formats, batches, and exit status 2 on bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastres.cli import main

ROOT = Path(__file__).resolve().parents[1]
DECK = ROOT / "data" / "examples" / "clipper.cir"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_op_prints_every_node(capsys):
    code, out, _ = run(capsys, "op", DECK)
    assert code == 0
    lines = dict(line.split(" = ") for line in out.strip().splitlines())
    assert {k.strip() for k in lines} == {"v(in)", "v(rhi)", "v(rlo)", "v(a)", "v(b)", "v(c)"}
    assert float(lines["v(in) "]) == 2.5


def test_op_json_lowercase_names_and_ngspice_agreement(capsys):
    code, out, _ = run(capsys, "op", DECK, "--json")
    assert code == 0
    v = json.loads(out)
    assert set(v) == {"in", "rhi", "rlo", "a", "b", "c"}
    assert abs(v["c"] - 0.3) < 1e-3 and 0.6 < v["a"] - 0.5 < 0.7


@pytest.mark.ngspice
def test_op_json_matches_ngspice(capsys):
    from fastres import ngspice
    code, out, _ = run(capsys, "op", DECK, "--json")
    ref = ngspice.run_op(DECK.read_text(), extra_options={"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18})
    mine = json.loads(out)
    assert mine.keys() == ref.keys()
    assert max(abs(mine[k] - ref[k]) for k in mine) <= 1e-9


def test_op_sweep_and_out(capsys, tmp_path):
    vin = np.linspace(-3, 3, 7)
    np.savez(tmp_path / "s.npz", vin=vin, iin=np.full(7, 2e-5))
    code, out, _ = run(capsys, "op", DECK, "--sweep", tmp_path / "s.npz", "--out", tmp_path / "o.npz")
    assert code == 0
    with np.load(tmp_path / "o.npz") as z:
        nodes = list(z["nodes"])
        v = z["v"]
    assert v.shape == (7, len(nodes))
    np.testing.assert_array_equal(v[:, nodes.index("in")], vin)
    a = v[:, nodes.index("a")]
    assert np.all(np.diff(a) > 0) and a.max() < 1.3 and a.min() > -1.3  # clipped both ways
    # each sweep sample equals a single solve with that value
    np.savez(tmp_path / "one.npz", vin=vin[2:3], iin=[2e-5])
    code, out, _ = run(capsys, "op", DECK, "--sweep", tmp_path / "one.npz", "--json")
    assert json.loads(out)["a"] == pytest.approx(a[2], abs=1e-13)


@pytest.mark.parametrize("setup,needle", [
    (lambda d: ["op", d / "missing.cir"], "missing.cir"),
    (lambda d: ["op", _write(d / "bad.cir", "t\nR1 a 0 1k\nQ1 a b c npn\n.end\n")], "bad.cir:3"),
    (lambda d: ["op", _write(d / "nan.cir", "t\nV1 a 0 nan\nR1 a 0 1k\n.end\n")], "nan.cir:2"),
    (lambda d: ["op", _write(d / "neg.cir", "t\nV1 a 0 1\nR1 a b -1k\nR2 b 0 1k\n.end\n")], "neg.cir:3"),
    (lambda d: ["op", _write(d / "float.cir", "t\nV1 a 0 1\nR1 a 0 1k\nR2 b c 1k\nI1 0 b 1m\n.end\n")], "floating"),
    (lambda d: ["op", DECK, "--sweep", _npz(d / "u.npz", vzz=[1.0, 2.0])], "vzz"),
    (lambda d: ["op", DECK, "--sweep", _npz(d / "n.npz", vin=[1.0, np.nan])], "NaN"),
    (lambda d: ["op", DECK, "--sweep", _write(d / "junk.npz", "not an npz")], "junk.npz"),
])
def test_bad_input_exits_2_with_message(capsys, tmp_path, setup, needle):
    code, out, err = run(capsys, *setup(tmp_path))
    assert code == 2
    assert err.startswith("fastres: error:") and needle in err


def _write(path, text):
    Path(path).write_text(text)
    return path


def _npz(path, **arrays):
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("fastres")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fastres.cli"]
    r = subprocess.run(cmd + ["op", str(DECK), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)) == {"in", "rhi", "rlo", "a", "b", "c"}
    r = subprocess.run(cmd + ["op", str(tmp_path / "nope.cir")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "nope.cir" in r.stderr
