"""Fuzz test of the netlist reader (issue 13): no input ever ends in a Python traceback.

Every input -- random byte strings, random printable text, random SPICE-like lines, and
mutations of example decks (lines deleted, duplicated, swapped; characters flipped; control
characters inserted; numbers replaced by huge, tiny and malformed ones; SI suffixes changed;
unknown elements and dot-commands; extreme temperatures and model parameters) -- must either
be read, and then compile, solve and write back (or raise a :class:`FastresError` subclass),
or raise :class:`NetlistError` / :class:`CircuitError`. Any other exception is a bug.

Seeded (``numpy.random.default_rng``), a few seconds in the normal test run. A longer run by
hand::

    OPENBLAS_NUM_THREADS=1 python tests/test_netlist_fuzz.py 20000 [seed]
"""
from __future__ import annotations

import collections
import math
import os
import re
import sys
import traceback

import numpy as np
import pytest

from fastres.devices import PiecewiseLinear, Shockley
from fastres.errors import CircuitError, FastresError, NetlistError
from fastres.netlist import parse_netlist, read_netlist, write_netlist

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "data", "examples")

EXTRA_DECKS = [
    """shockley and sources
V1 in 0 DC 1.5
I1 0 out 10uA
R1 in mid 1kOhm ; inline
R2 mid out 2.2k $ comment
R3 out 0 r=4.7k
D1 out 0 dmod
D2 0 mid dmod area=1
.model dmod D(IS=2e-14 N=1.5 EG=1.2 XTI=2 TNOM=30 CJO=1p)
.options gmin=1e-12 temp=50 tnom=25
.temp 60
.op
.end
""",
    """sidiode clamp with continuation
V1 a 0 2
R1 a
+ b
+ 10k
A1 b 0 clamp
A2 %gd(0 b) clamp
.model clamp sidiode(ron=2 roff=1e6 vfwd=0.3 vrev=5 rrev=10 epsilon=0 revepsilon=0)
.control
run
.endc
.end
""",
    """amplifier as written by write_netlist
vin a 0 DC 0.3
r1 a 0 1000.0
ex1 b_q 0 a 0 2.0
vx1_s b_q b DC 0
fx1 a 0 vx1_s 2.0
r2 b 0 500.0
.op
.end
""",
]

CONTROL = ["\x00", "\x01", "\x07", "\x08", "\t", "\x0b", "\x0c", "\r", "\x1b", "\x1c", "\x1d",
           "\x1e", "\x1f", "\x7f", "\x85", "\xa0", "\u2028", "\u2029", "\u3000", "\ufeff",
           "\ufffd", "\udc80", "\n", "\r\n"]
NUMBERS = ["0", "-0", "1", "-1", "1e308", "1e309", "-1e308", "1e308k", "1.8e305k", "1e-308",
           "5e-324", "1e-320", "1e-400", "1e999999999", "1e-999999999k", "9" * 400, "0." + "0" * 400 + "1",
           "1" * 5000, "nan", "inf", "-inf", "1e", "3ek", "1e+", "1.", ".5", "1..2", "1k2", "1e1.5",
           "-273.15", "-273.16", "-300", "-270", "1e10", "1e300", "0x10", "1_0", "1f", "1mil",
           "2.2kohm", "1meg", "1MEGohm", "10uA", "\u0661", "1\u212a", "1e-15", "1e15"]
SUFFIXES = ["", "f", "p", "n", "u", "m", "k", "meg", "g", "t", "mil", "K", "MEG", "a", "ohm",
            "V", "A", "x", "e", "e-", "e+3"]
ELEMENT_LINES = [
    "Q1 c b e npn", "L1 a 0 1u", "C1 a 0 1p", "X1 a b sub", "B1 a 0 V=1", "M1 d g s b nmos",
    "E1 a 0 b 0 2", "F1 a 0 v1 2", "G1 a 0 b 0 1m", "H1 a 0 v1 1k", "K1 l1 l2 0.5",
    "V9 a b 1", "I9 a b 1m", "V9 0 gnd 1", "V9 a 0 SIN(0 1 1k)", "V9 a 0 DC=2", "I9 0 a",
    "R9 a 0", "R9 a", "R9", "D9 a 0", "D9 a 0 nomodel", "A9 a", "R9 a 0 1k tc1=0.1",
    ".subckt foo a b", ".ends", ".param x=1", ".tran 1n 1u", ".dc v1 0 1 0.1", ".ac dec 10 1 1k",
    ".include", ".include nothere.inc", ".lib x", ".global a", ".ic v(a)=1", ".nodeset v(a)=1",
    ".control", ".endc", ".end", ".title a new title", ".options", ".options temp",
    ".options gmin=-1", ".options rshunt=1e9", ".options reltol=1e-6 klu", ".temp", ".temp 1 2",
    ".temp=100", ".op 1", "+ 5", "+", "*", ";", "$ x", "(R9 a 0 1k", "R9 a( 0 1k",
    ".model", ".model dz", ".model dz D(", ".model dz D(N=)", ".model dz D(N=0.01)",
    ".model dz D(IS=0)", ".model dz D(EG=1e10 XTI=1e10)", ".model dz D(TNOM=-273.15)",
    ".model dz D(RS=1)", ".model dz D(BV=5)", ".model dz D(foo=1)", ".model dz npn",
    ".model dz sidiode(ron=0)", ".model dz sidiode(ron=10 roff=1)", ".model dz sidiode(vrev=-1)",
    ".model dz sidiode(ron=1e-320)", ".model dz sidiode(vfwd=1e300 roff=1e-300)",
    ".model dmod D(N=1e-300)", ".model dmod D(IS=1e300)",
]
KEYWORDS = ["R", "D", "A", "V", "I", "E", "F", "Q", "X", ".model", ".options", ".temp", ".op",
            ".end", ".include", ".control", ".endc", ".title", "D(", "sidiode(", "dc", "area",
            "=", "(", ")", ",", "+", "*", ";", "$", "0", "gnd", "a", "b", "in", "out", "IS", "N",
            "EG", "XTI", "TNOM", "ron", "roff", "vfwd", "vrev", "rrev", "temp", "tnom", "gmin"]


def _base_decks():
    decks = []
    for name in sorted(os.listdir(EXAMPLES)):
        if name.endswith(".cir"):
            with open(os.path.join(EXAMPLES, name), encoding="utf-8", newline="") as f:
                decks.append(f.read())
    return decks + EXTRA_DECKS


BASE_DECKS = _base_decks()


# ------------------------------------------------------------------------------- generators
def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def random_bytes(rng):
    n = int(rng.integers(0, 300))
    if rng.random() < 0.5:  # uniform bytes
        return bytes(rng.integers(0, 256, n, dtype=np.uint8))
    # mostly ASCII with line ends, a few high and control bytes
    alphabet = np.frombuffer(b"abcdefrdvia0123456789 .=()+-*;$\n\n\n\t\r\x0c\x0b\x00\x85\xc2\xe2\x80\xa8"
                             b"kmunpfgtMEGe", dtype=np.uint8)
    return bytes(alphabet[rng.integers(0, alphabet.size, n)])


def random_text(rng):
    n = int(rng.integers(0, 300))
    kind = rng.random()
    if kind < 0.4:  # printable ASCII and newlines
        chars = [chr(c) for c in rng.integers(32, 127, n)]
        for k in rng.integers(0, n + 1, int(rng.integers(0, 8))):
            chars.insert(int(k), "\n")
        return "".join(chars)
    if kind < 0.6:  # any code point below U+3000 (includes controls and separators)
        return "".join(chr(int(c)) for c in rng.integers(0, 0x3000, n))
    # SPICE-like lines from keywords, numbers and node names
    lines = ["random title"]
    for _ in range(int(rng.integers(0, 12))):
        toks = [_pick(rng, KEYWORDS) for _ in range(int(rng.integers(1, 7)))]
        for k in range(len(toks)):
            if rng.random() < 0.3:
                toks[k] = _pick(rng, NUMBERS) + _pick(rng, SUFFIXES)
        if toks and toks[0] in ("R", "D", "A", "V", "I", "E", "F", "Q", "X"):
            toks[0] += str(int(rng.integers(0, 5)))
        lines.append(_pick(rng, [" ", "", "\t", ","]).join(toks))
    return "\n".join(lines) + _pick(rng, ["\n", "", "\r\n"])


_NUM_TOKEN = re.compile(r"(?<![A-Za-z0-9_])[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d*)?[a-zA-Z]*")


def mutate(rng, text):
    lines = text.split("\n")
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(0, 11))
        i = int(rng.integers(0, len(lines))) if lines else 0
        if not lines:
            lines = [""]
            i = 0
        line = lines[i]
        if op == 0 and len(lines) > 1:  # delete a line
            del lines[i]
        elif op == 1:  # duplicate a line
            lines.insert(i, line)
        elif op == 2 and len(lines) > 1:  # swap two lines
            j = int(rng.integers(0, len(lines)))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and line:  # flip a character
            k = int(rng.integers(0, len(line)))
            lines[i] = line[:k] + chr(int(rng.integers(0, 0x250))) + line[k + 1:]
        elif op == 4:  # insert a control or separator character
            k = int(rng.integers(0, len(line) + 1))
            lines[i] = line[:k] + _pick(rng, CONTROL) + line[k:]
        elif op == 5:  # replace a number by an extreme or malformed one
            nums = list(_NUM_TOKEN.finditer(line))
            if nums:
                m = nums[int(rng.integers(len(nums)))]
                new = _pick(rng, NUMBERS) + (_pick(rng, SUFFIXES) if rng.random() < 0.5 else "")
                lines[i] = line[:m.start()] + new + line[m.end():]
        elif op == 6:  # change or add an SI suffix
            nums = list(re.finditer(r"(\d)([a-zA-Z]*)(?=[\s)]|$)", line))
            if nums:
                m = nums[int(rng.integers(len(nums)))]
                lines[i] = line[:m.start(2)] + _pick(rng, SUFFIXES) + line[m.end(2):]
        elif op == 7:  # an unknown element, a bad or unsupported statement
            lines.insert(max(i, 1), _pick(rng, ELEMENT_LINES))
        elif op == 8:  # extreme temperatures
            key = _pick(rng, [".temp {}", ".options temp={}", ".options tnom={}",
                              ".option temp={} tnom={}"])
            lines.insert(max(i, 1), key.format(_pick(rng, NUMBERS), _pick(rng, NUMBERS)))
        elif op == 9:  # delete a random token
            toks = line.split(" ")
            if len(toks) > 1:
                del toks[int(rng.integers(len(toks)))]
                lines[i] = " ".join(toks)
        else:  # a continuation split in the middle of a line
            k = int(rng.integers(0, len(line) + 1))
            lines[i:i + 1] = [line[:k], "+" + line[k:]]
    return _pick(rng, ["\n", "\r\n"]).join(lines)


# ------------------------------------------------------------------------------- the property
_SOLVER = None


def _solver():
    global _SOLVER
    if _SOLVER is None:
        from fastres import DCProblem, Newton, solve
        _SOLVER = (DCProblem, Newton(maxiter=60), solve)
    return _SOLVER


def check_input(text, *, solve_it=True, path=None):
    """Read ``text`` (or the file ``path``); then compile, solve and write it back. Returns the
    outcome ('netlist error', 'circuit error', 'solved', ...). Raises AssertionError with the
    traceback for any exception that is not a FastresError."""
    try:
        try:
            circ = read_netlist(path) if path is not None else parse_netlist(text)
        except (NetlistError, CircuitError):
            return "refused while reading"
        # what was read writes back to a deck that reads back to the same circuit
        try:
            written = write_netlist(circ)
        except CircuitError:
            written = None  # e.g. a name that cannot be written safely
        if written is not None:
            again = parse_netlist(written)
            assert write_netlist(again) == written, \
                f"write -> read -> write is not stable\ninput: {text!r}\nwritten: {written!r}"
        for d in circ.elements.values():
            m = getattr(d, "model", None)
            if isinstance(m, Shockley):
                row = m.params(circ.temp, circ.tnom, circ.gmin)
                assert np.all(np.isfinite(row)) and row[0] > 0, row
            elif isinstance(m, PiecewiseLinear):
                assert np.all(np.isfinite(m.params()[[0, 1, 2, 4]]))
        try:
            circ.compile()
        except CircuitError:
            return "read, refused by compile"
        if not solve_it:
            return "read and compiled"
        DCProblem, alg, solve = _solver()
        try:
            solve(DCProblem(circ), alg)
        except FastresError as exc:
            return f"read, solve raised {type(exc).__name__}"
        return "read and solved"
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the property under test
        raise AssertionError(f"{type(exc).__name__}: {exc}\ninput: {text!r}\n"
                             f"{traceback.format_exc()}") from None


def generate(rng, k):
    """The k-th case: (kind, text or bytes)."""
    r = k % 10
    if r == 0:
        return "bytes", random_bytes(rng)
    if r in (1, 2):
        return "text", random_text(rng)
    return "mutated deck", mutate(rng, _pick(rng, BASE_DECKS))


def run_fuzz(n_cases, seed=0, tmp_dir=None, solve_every=1, report=None):
    """Run ``n_cases`` cases; returns ({kind: Counter of outcomes}, [failures])."""
    rng = np.random.default_rng(seed)
    stats = collections.defaultdict(collections.Counter)
    failures = []
    for k in range(n_cases):
        kind, data = generate(rng, k)
        path = None
        if isinstance(data, bytes):
            if tmp_dir is not None and k % 20 == 0:  # through read_netlist (a file on disk)
                path = os.path.join(tmp_dir, "fuzz.cir")
                with open(path, "wb") as f:
                    f.write(data)
            text = data.decode("utf-8", errors="replace")
        else:
            text = data
        try:
            out = check_input(text, solve_it=(k % solve_every == 0), path=path)
        except AssertionError as exc:
            failures.append(str(exc))
            out = "FAILED"
        stats[kind][out] += 1
        if report and (k + 1) % report == 0:
            print(f"{k + 1} cases, {len(failures)} failures", file=sys.stderr, flush=True)
    return stats, failures


# ------------------------------------------------------------------------------- tests
def test_fuzz_netlist_reader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any '.include' resolves inside the temporary directory
    stats, failures = run_fuzz(1500, seed=13, tmp_dir=str(tmp_path), solve_every=3)
    assert not failures, f"{len(failures)} inputs raised non-fastres exceptions:\n" + \
        "\n\n".join(failures[:3])
    outcomes = collections.Counter()
    for c in stats.values():
        outcomes.update(c)
    # the generators do reach every stage, not only the reader's first error
    assert outcomes["refused while reading"] > 0
    assert outcomes["read and solved"] + outcomes["read and compiled"] > 50, outcomes
    assert sum(stats["mutated deck"].values()) > 1000


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_extreme_model_parameters(seed):
    """Shockley.params raises only CircuitError for any finite inputs (issue 13, item 4)."""
    rng = np.random.default_rng(seed)
    vals = np.array([0.0, 5e-324, 2.2e-308, 1e-300, 1e-30, 1e-15, 1e-3, 0.5, 1.0, 3.0, 27.0,
                     709.0, 1e10, 1e100, 1e300, 1.7976931348623157e308, -273.15, -270.0])
    vals = np.concatenate([vals, -vals, rng.lognormal(0, 30, 20) * rng.choice([-1, 1], 20)])
    n_ok = 0
    for _ in range(3000):
        kw = dict(zip(("IS", "N", "EG", "XTI", "tnom", "imax"), rng.choice(vals, 6)))
        if rng.random() < 0.5:
            kw["tnom"] = None
        if rng.random() < 0.5:
            kw["imax"] = 1e6
        try:
            m = Shockley(**kw)
        except CircuitError:
            continue
        temp, tnom, gmin = rng.choice(vals, 3)
        try:
            row = m.params(temp, tnom, abs(gmin))
        except CircuitError:
            continue
        assert np.all(np.isfinite(row)) and row[0] > 0 and row[1] > 0 and row[3] >= 0, (kw, row)
        assert math.isfinite((m.imax + row[0]) / row[1])
        n_ok += 1
    assert n_ok > 0


BAD_DECKS = [
    "t\nV1 a 0 1\nR1 a b 1k\n* note\x0cR9 b 0 1k\nR2 b 0 1k\n.temp -273.15\n.op\n.end\n",
    "t\nI1 0 a 1m\nD1 a 0 dm\n.model dm D(N=0.01)\n.temp 150\n.op\n.end\n",
    "t\nV1 a 0 1\nR1 a 0 1e308k\n.end\n",
    "t\nV1 a 0 1\nR1 a\x1c0 1k\n.end\n",
    "t\rV1 a 0 1\rR1 a 0 1k\r.end\r",
    "t\nV1 a 0 1\nD1 a 0 dm\n.model dm D(EG=1e10)\n.options tnom=-273.15\n.end\n",
]


@pytest.mark.parametrize("text", BAD_DECKS)
def test_cli_op_bad_decks_exit_2_without_traceback(tmp_path, capsys, text):
    from fastres.cli import main
    deck = tmp_path / "deck.cir"
    deck.write_bytes(text.encode("utf-8"))
    assert main(["op", str(deck)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastres: error: ") and "deck.cir:" in err, err
    assert "Traceback" not in err


if __name__ == "__main__":  # a longer run by hand
    import tempfile
    import time

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 2024
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        stats, failures = run_fuzz(n, seed=seed, tmp_dir=tmp, report=2000)
    print(f"{n} cases (seed {seed}) in {time.time() - t0:.0f} s, {len(failures)} failures")
    for kind, c in stats.items():
        print(f"  {kind:13s} {sum(c.values()):6d}: " + ", ".join(f"{k} {v}" for k, v in c.most_common()))
    for f in failures[:5]:
        print("-" * 70)
        print(f)
    sys.exit(1 if failures else 0)
