"""SPICE netlist reader/writer, and the ngspice runner."""
import math
import os

import numpy as np
import pytest

from fastres.circuit import Circuit, CurrentSource, Diode, Resistor, VoltageSource
from fastres.devices import PiecewiseLinear, Shockley
from fastres.errors import CircuitError, NetlistError
from fastres.netlist import parse_netlist, parse_number, read_netlist, write_netlist


def deck(body, title="test deck"):
    return title + "\n" + body.strip("\n") + "\n"


# ------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("tok,val", [
    ("1", 1.0), ("-2.5", -2.5), (".5", 0.5), ("1e3", 1e3), ("1E-3", 1e-3), ("+3.", 3.0),
    ("1k", 1e3), ("1K", 1e3), ("2.2kohm", 2200.0), ("1meg", 1e6), ("1MEGohm", 1e6),
    ("1m", 1e-3), ("1mA", 1e-3), ("10uA", 1e-5), ("1V", 1.0), ("3n", 3e-9), ("4p", 4e-12),
    ("5f", 5e-15), ("1g", 1e9), ("1t", 1e12), ("1mil", 25.4e-6), ("1.5e3k", 1.5e6),
    ("1ohm", 1.0), ("1a", 1.0),  # ngspice 39 has no atto suffix: 'a' is an ignored unit
    # an 'e' without exponent digits is no exponent (ngspice 39, measured): '3ek' is 3 k
    ("3ek", 3e3), ("3e", 3.0), ("3e+k", 3e3), ("3e-", 3.0), ("1e-k", 1e3), ("1.e-k", 1e3),
    ("1E", 1.0), ("1e+05k", 1e8),
])
def test_numbers(tok, val):
    assert parse_number(tok) == pytest.approx(val, rel=1e-15)


@pytest.mark.parametrize("tok", ["nan", "NaN", "inf", "abc", "1..2", "", "k1", "1e999", "1k2",
                                 "1e308k", "-2e303meg", "1.8e305k", "1e999999999k", "1" * 5000 + "k",
                                 "\u0661", "1\u212a", "\uff11"])
def test_bad_numbers(tok):
    # issue 13: '1e308k' raised OverflowError from inside the parser; a huge exponent must not
    # build a huge integer; other scripts' digits and the Kelvin sign are not SPICE numbers
    with pytest.raises(NetlistError) as info:
        parse_number(tok)
    assert len(str(info.value)) < 120


@pytest.mark.parametrize("tok,val", [("1e-999999999k", 0.0), ("1e-400", 0.0), ("1e-330f", 0.0),
                                     ("1.7976931348623157e305k", 1.7976931348623157e308),
                                     ("0.5e-320", 5e-321), ("1" * 5000 + "e-4999f", 1.1111111111111112e-15)])
def test_extreme_numbers(tok, val):
    assert parse_number(tok) == val


@pytest.mark.parametrize("tok", [None, 1.0, b"1k", ["1"]])
def test_parse_number_wrong_type(tok):
    with pytest.raises(TypeError, match="token must be a str"):
        parse_number(tok)


# ------------------------------------------------------------------------------- parsing
def test_parse_basic_syntax():
    c = parse_netlist(deck("""
* a comment line
R1 IN Mid 1kOhm ; inline comment
rLoad mid 0 r=2.2k $ another comment
R3 mid
+ OUT
+ 1meg
  * comment inside a continuation
+ ; nothing
D1 out 0 DMOD
A1 out gnd SD
V1 in 0 DC 1.5
Vneg 0 x 2
R4 x 0 1
I1 0 out 10uA
I2 out 0 1m
.MODEL dmod D(IS=2e-14 N=1.5 EG=1.2 XTI=2 TNOM=30 CJO=1p TT=1n VJ=.7 M=.4 FC=.5 RS=0)
.model SD sidiode(ron=2 roff=1e6 vfwd=0.3 vrev=5 rrev=10 epsilon=0 revepsilon=0)
.options gmin=1e-11 reltol=1e-6 abstol=1e-15 vntol=1e-9 itl1=500 klu
.option tnom=25
.temp 50
.control
  run
  print all
.endc
.op
.end
R9 this is after .end and ignored
""", title="My Fancy Title"))
    assert c.title == "My Fancy Title"
    assert (c.gmin, c.temp, c.tnom) == (1e-11, 50.0, 25.0)
    assert c.nodes == ["in", "mid", "out", "x"]
    e = c.elements
    assert set(e) == {"r1", "rload", "r3", "d1", "a1", "v1", "vneg", "r4", "i1", "i2"}
    assert e["r1"] == Resistor("r1", "in", "mid", 1e-3)
    assert e["rload"].g == 1 / 2200.0 and e["rload"].b == "0"
    assert e["r3"].g == 1e-6 and (e["r3"].a, e["r3"].b) == ("mid", "out")
    assert e["d1"].model == Shockley(IS=2e-14, N=1.5, EG=1.2, XTI=2.0, tnom=30.0)
    assert e["d1"].model_name == "dmod"
    assert e["a1"].model == PiecewiseLinear(ron=2.0, roff=1e6, vfwd=0.3, vrev=5.0, rrev=10.0)
    assert (e["a1"].anode, e["a1"].cathode) == ("out", "0")
    assert e["v1"] == VoltageSource("v1", "in", 1.5)
    assert e["vneg"] == VoltageSource("vneg", "x", -2.0)  # V(0) - V(x) = 2
    assert e["i1"] == CurrentSource("i1", "out", 1e-5)  # flows 0 -> source -> out
    assert e["i2"] == CurrentSource("i2", "out", -1e-3)


def test_models_after_use_and_defaults():
    c = parse_netlist(deck("""
D1 a 0 d1n 1
D2 a 0 d1n area=1
A1 a 0 pwl
V1 a 0
.model d1n D
.model pwl sidiode(roff=1e9)
"""))
    assert c.elements["d1"].model == Shockley()
    assert c.elements["v1"].value == 0.0
    # ngspice 39 sidiode defaults: ron=1, vfwd=0, no breakdown, rrev=ron
    assert c.elements["a1"].model == PiecewiseLinear(ron=1.0, roff=1e9, vfwd=0.0,
                                                     vrev=math.inf, rrev=1.0)


def test_include_relative_path(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "models.lib").write_text(".model dm D(IS=3e-14)\n.include more.inc\n")
    (sub / "more.inc").write_text("* resistors\nR2 b 0 2k\n")
    top = tmp_path / "top.cir"
    top.write_text(deck("""
V1 a 0 1
R1 a b 1k
D1 b 0 dm
.include sub/models.lib
.op
.end
"""))
    old = os.getcwd()
    os.chdir("/")  # the include must resolve relative to the file, not the cwd
    try:
        c = read_netlist(str(top))
    finally:
        os.chdir(old)
    assert c.elements["d1"].model.IS == 3e-14
    assert c.elements["r2"].g == 1 / 2000.0


def test_include_recursion_guard(tmp_path):
    (tmp_path / "a.inc").write_text(".include b.inc\n")
    (tmp_path / "b.inc").write_text("R1 x 0 1\n.include a.inc\n")
    top = tmp_path / "top.cir"
    top.write_text(deck(".include a.inc\nV1 x 0 1\n"))
    with pytest.raises(NetlistError, match=r"b\.inc:2: recursive \.include"):
        read_netlist(top)


def test_missing_include_names_file_and_line(tmp_path):
    top = tmp_path / "deck.cir"
    top.write_text(deck("V1 a 0 1\n.include nothere.inc\n"))
    with pytest.raises(NetlistError, match=r"deck\.cir:3: cannot read \.include"):
        read_netlist(top)


BAD = [
    ("Q1 c b e npn", "element type 'Q'"),
    ("L1 a 0 1u", "element type 'L'"),
    (".tran 1n 1u", "dot-command '.tran'"),
    (".subckt foo a b", "dot-command '.subckt'"),
    (".param x=1", "dot-command '.param'"),
    ("R1 a 0 abc", "bad number 'abc'"),
    ("R1 a 0 nan", "bad number 'nan'"),
    ("R1 a 0 0", "must be > 0"),
    ("R1 a 0 -5", "must be > 0"),
    ("R1 a 0 1k tc1=0.1", "unsupported extra fields"),
    ("R1 a 0", "expected 'R name n1 n2 value'"),
    ("D1 a 0 nomodel", "unknown model 'nomodel'"),
    ("D1 a 0 dm 2\n.model dm D", "area 2 is not supported"),
    ("D1 a 0 dm off\n.model dm D", "bad number 'off'"),
    (".model dm D(RS=10)", "RS=10 is not supported"),
    (".model dm D(BV=5 IBV=1m)", "BV"),
    (".model dm D(IKF=1)", "IKF=1 is not supported"),
    (".model dm D(JSW=1e-15)", "JSW"),
    (".model dm D(FOO=1)", "unknown or unsupported diode parameter FOO"),
    (".model dm D(IS=-1)", "must be > 0"),
    (".model q npn(bf=100)", "model type 'NPN' is not supported"),
    (".model s sidiode(ron=1 roff=1e6 epsilon=0.1)", "epsilon=0.1 is not supported"),
    (".model s sidiode(ron=1 roff=1e6 revepsilon=1m)", "revepsilon=1m is not supported"),
    (".model s sidiode(ron=1 roff=1e6 ilimit=1)", "current limit 'ilimit'"),
    (".model s sidiode(ron=1 roff=1e6 revilimit=1)", "current limit 'revilimit'"),
    (".model s sidiode(ron=10 roff=1)", "non-convex"),
    (".model s sidiode(bogus=1)", "unknown sidiode parameter 'bogus'"),
    (".model dm D\n.model dm D", "duplicate .model 'dm'"),
    ("A1 a 0 dm\n.model dm D", "not a sidiode model"),
    ("D1 a 0 s\n.model s sidiode(roff=1e6)", "not a D model"),
    ("R1 a 0 1\nr1 b 0 2", "duplicate element name 'r1'"),
    ("V1 a b 1", "not supported: a source between two non-ground nodes"),
    ("I1 a b 1", "not supported: a source between two non-ground nodes"),
    ("V1 0 gnd 1", "both terminals are ground"),
    ("V1 a 0 SIN(0 1 1k)", "unsupported source specification"),
    ("V1 a 0 DC 1e999", "not finite"),
    ("R1 a 0 1e308k", "number '1e308k' is not finite"),
    ("R1 a 0 1e-310", "conductance inf S must be finite"),
    ("R1 a 0 4.9406564584124654e-327k", "conductance inf S must be finite"),
    (".options gmin=-1", "gmin"),
    (".options rshunt=1e9", "rshunt"),
    (".options temp", "needs a value"),
    (".temp", ".temp needs"),
    (".control\nrun", ".control block without .endc"),
]


@pytest.mark.parametrize("line,msg", BAD)
def test_errors_name_file_and_line(tmp_path, line, msg):
    text = deck("* first\nR0 z 0 1\n" + line + "\n.op\n.end\n")
    path = tmp_path / "deck.cir"
    path.write_text(text)
    with pytest.raises(NetlistError) as info:
        read_netlist(path)
    err = str(info.value)
    assert msg in err
    assert "deck.cir" in err
    if "without .endc" not in msg and "gmin" not in msg:
        # the offending statement is on line 4 or 5 (after title, comment, R0)
        assert any(f"deck.cir:{n}:" in err for n in (4, 5)), err
    with pytest.raises(NetlistError, match="<string>"):
        parse_netlist(text)


# ------------------------------------------------------------------------------- line ends
# issue 13, item 3: Python's str.splitlines() also ends lines at FF, VT, \x1c-\x1e, NEL, U+2028
# and U+2029, so '* note<FF>R9 b 0 1k' added a resistor. ngspice ends lines only at LF.
ODD_BREAKS = ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]


@pytest.mark.parametrize("ch", ODD_BREAKS)
@pytest.mark.parametrize("comment", ["* note", "R8 b 0 1meg ; note", "R8 b 0 1meg $ note"])
def test_no_line_break_inside_comments(ch, comment):
    text = deck(f"V1 a 0 1\nR1 a b 1k\n{comment}{ch}R9 b 0 1k\nR2 b 0 1k\n")
    if ch == "\r":  # a CR that does not end a line is refused (ngspice deletes it)
        with pytest.raises(NetlistError, match=r"<string>:4: a carriage return \(CR\)"):
            parse_netlist(text)
        return
    c = parse_netlist(text)
    assert "r9" not in c.elements
    assert set(c.elements) == {"v1", "r1", "r2"} | ({"r8"} if "R8" in comment else set())


@pytest.mark.parametrize("ch", ["\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029",
                                "\xa0", "\u3000", "\x00", "\x01", "\x7f", "\ufeff"])
def test_odd_characters_outside_comments_refused(tmp_path, ch):
    # ngspice reads these as part of a name ('R3 b<FS>0 1k' connects node 'b\x1c0'): refused
    p = tmp_path / "deck.cir"
    p.write_text(deck(f"V1 a 0 1\nR1 a b 1k\nR3 b{ch}0 1k\n"), encoding="utf-8")
    with pytest.raises(NetlistError, match=rf"deck\.cir:4: character U\+{ord(ch):04X} \("):
        read_netlist(p)


@pytest.mark.parametrize("line,msg", [
    ("R3 b 0 1kΩ", r"non-ASCII character U\+03A9 \(GREEK CAPITAL LETTER OMEGA\)"),
    ("R3 b ä 1k", r"non-ASCII character U\+00E4"),
    ("\fR3 b 0 1k", r"a U\+000C \(FORM FEED\) at the start of a line"),
    ("\vR3 b 0 1k", r"a U\+000B \(VERTICAL TAB\) at the start of a line"),
    (" \vR3 b 0 1k", r"a U\+000B \(VERTICAL TAB\) at the start of a line"),
    ("\v", r"a vertical tab on an otherwise blank line"),  # (ngspice 39 crashes on it)
    ("(R3 b 0 1k", r"line starts with '\(': ngspice ignores such a line"),
    (",R3 b 0 1k", r"line starts with ','"),
    ("=R3 b 0 1k", r"line starts with '='"),
    ("R3 b( 0 1k", r"'\(' right after 'b': ngspice reads such a '\(' as part of the name"),
    ("D1 b 0 dm(\n.model dm D", r"'\(' right after 'dm'"),
    ("R3 b 0 1k $;x", r"unsupported extra fields '\$'"),  # ngspice: "unknown parameter"
    ("R3 b 0 1k\n\f+ 5", r"FORM FEED\) at the start"),
    (".op=", r"\.op takes no arguments"),
])
def test_misread_lines_refused(line, msg):
    with pytest.raises(NetlistError, match=r"<string>:\d+: .*" + msg):
        parse_netlist(deck("V1 a 0 1\nR1 a b 1k\nR2 b 0 1k\n" + line + "\n"))


def test_line_ends_and_white_space_as_ngspice():
    body = ("V1 a 0 1\r\n"  # CR LF
            "R1 a b 1k\r\r\n"  # CRs at the end of a line are dropped
            "R2\fb\v0\t1k\f\n"  # FF, VT, tab separate fields
            "\f\n"  # a page break alone on a line: blank
            " \f \n"
            "\f* a comment after a form feed\n"
            " \v* and after a vertical tab\n"
            "R3 b 0 1k $comment without a space after the '$'\n"
            "R4 b 0 1k\t$\tcomment\n"
            "R5 (b) (0) 1k\n"  # a '(' that starts a field is skipped, ')' ends one
            "R6 b,0 1k\n"
            "V2 c 0 DC(2)\nR7 c 0 1\n"
            "A1 %gd(b 0) sd\n"
            ".model sd sidiode(ron=1 roff=1e6 vfwd=0.3)\n"
            "* comment with odd characters: \x00 \x1c \x85 \u2028 ä Ω\n"
            "R8 b 0 1k ; and \x1e\u2029 here\n"
            ".end\n"
            "after .end anything goes: \x00\r\x85\n")
    c = parse_netlist("title \u2028 with ä\r\n" + body)
    assert c.title == "title \u2028 with ä"
    assert set(c.elements) == {"v1", "r1", "r2", "r3", "r4", "r5", "r6", "v2", "r7", "a1", "r8"}
    assert all((e.a, e.b) == ("b", "0") for n, e in c.elements.items() if n in ("r2", "r3", "r5"))
    assert c.elements["v2"].value == 2.0
    assert (c.elements["a1"].anode, c.elements["a1"].cathode) == ("b", "0")


def test_cr_only_line_ends_refused(tmp_path):
    p = tmp_path / "mac.cir"
    p.write_bytes(b"old mac deck\rV1 a 0 1\rR1 a 0 1k\r.end\r")
    with pytest.raises(NetlistError, match=r"mac\.cir:1: a carriage return .*CR-only line ends"):
        read_netlist(p)
    inc = tmp_path / "mac.inc"
    inc.write_bytes(b"R2 a 0 1k\rR3 a 0 1k\r")
    top = tmp_path / "top.cir"
    top.write_text(deck("V1 a 0 1\n.include mac.inc\n"))
    with pytest.raises(NetlistError, match=r"mac\.inc:1: a carriage return"):
        read_netlist(top)


def test_odd_characters_inside_control_blocks_ignored():
    c = parse_netlist(deck("V1 a 0 1\nR1 a 0 1k\n.control\necho \"ä\x1c\"\n(print all\n.endc\n"))
    assert set(c.elements) == {"v1", "r1"}
    with pytest.raises(NetlistError, match="carriage return"):
        parse_netlist(deck("V1 a 0 1\nR1 a 0 1k\n.control\necho x\rrun\n.endc\n"))


# The decks fastres now accepts with odd characters, compared with ngspice itself: ngspice on the
# original text and ngspice on what fastres read (written back) give the same node voltages.
NGSPICE_LINES = [
    "* note\fR9 b 0 1k", "* note\vR9 b 0 1k", "* note\x1cR9 b 0 1k", "* note\x85R9 b 0 1k",
    "* note\u2028R9 b 0 1k", "* note\u2029R9 b 0 1k", "R8 b 0 1meg ; c\fR9 b 0 1k",
    "R8 b 0 1meg $ c\x1eR9 b 0 1k", "R3 b\f0 1k", "R3 b\v0\t1k\f", "\f", "\f* R9 b 0 1k",
    " \v* R9 b 0 1k", "R3 b 0 1k $comment", "R3 b 0 1k\r", "R3 (b) (0) 1k", "R3 b,0 1k",
    "R3 b 0 3ek", "R3 b 0 1e-k", "R3 b 0 2e+", "I1 0 b (1m)", "V2 c 0 DC(1)\nR3 c b 1k",
    "A1 %gd(b 0) sd", "R3 b 0\n\f\n+ 1k", "R3 b\n* c\x85\n+ 0 1k",
]


@pytest.mark.ngspice
@pytest.mark.parametrize("line", NGSPICE_LINES)
def test_odd_characters_read_as_ngspice_reads_them(line):
    from fastres import ngspice
    text = deck("V1 a 0 1\nR1 a b 1k\nR2 b 0 1k\n" + line + "\n"
                ".model sd sidiode(ron=1 roff=1e6 vfwd=0.3)\n.op\n.end\n")
    theirs = ngspice.run_op(text)  # (no extra options: the text goes to ngspice byte for byte)
    ours = ngspice.run_op(write_netlist(parse_netlist(text)))
    assert set(ours) == set(theirs)
    for node, volts in theirs.items():
        assert ours[node] == pytest.approx(volts, abs=1e-12), node


# ------------------------------------------------------------------------------- temperature
TEMP_DECK = "t\nI1 0 a 1m\nD1 a 0 dm\n.model dm D(IS=1e-14)\n{}\n.op\n.end\n"
TEMP_ORDERS = [  # (lines, the temperature ngspice 39 uses: measured)
    (".temp 100\n.options temp=27", 100.0),  # issue 13: fastres used 27
    (".options temp=27\n.temp 100", 100.0),
    (".temp 100\n.temp 50", 50.0),
    (".options temp=100\n.options temp=50", 50.0),
    (".temp 100\n.options temp=27\n.temp 50", 50.0),
    (".options temp=100\n.temp 27", 27.0),
    (".option temp=80 tnom=30\n.options tnom=20", 80.0),
]


@pytest.mark.parametrize("lines,temp", TEMP_ORDERS)
def test_temp_line_wins_over_options(lines, temp):
    assert parse_netlist(TEMP_DECK.format(lines)).temp == temp


@pytest.mark.ngspice
@pytest.mark.parametrize("lines,temp", TEMP_ORDERS)
def test_temperature_as_ngspice(lines, temp):
    """ngspice on the deck, and on the deck fastres read (written with an explicit
    '.options temp= tnom='), give the same diode voltage: the same temperatures apply."""
    from fastres import ngspice
    text = TEMP_DECK.format(lines)
    theirs = ngspice.run_op(text)["a"]
    ours = ngspice.run_op(write_netlist(parse_netlist(text)))["a"]
    assert ours == pytest.approx(theirs, abs=1e-12)
    at27 = ngspice.run_op(TEMP_DECK.format(""))["a"]
    assert (theirs == pytest.approx(at27, abs=1e-9)) == (temp == 27.0)  # the deck does depend on it


@pytest.mark.ngspice
def test_temp_reproducer_solved_as_ngspice():
    from fastres import DCProblem, ngspice, solve
    text = TEMP_DECK.format(".temp 100\n.options temp=27")
    c = parse_netlist(text)
    sol = solve(DCProblem(c))
    theirs = ngspice.run_op(text, extra_options={"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18})
    assert abs(sol.voltage("a")[0] - theirs["a"]) <= 1e-9
    assert abs(sol.voltage("a")[0] - 0.52348) <= 1e-5  # 100 degC (at 27 degC: 0.65512 V)


@pytest.mark.parametrize("line,msg", [
    (".temp -273.15", r":5: \.temp: temperature -273\.15 degC is at or below absolute zero"),
    (".temp -300", r":5: \.temp: temperature -300 degC is at or below absolute zero"),
    (".options tnom=-273.15", r":5: \.options: tnom -273\.15 degC is at or below absolute zero"),
    (".options temp=-1e3", r":5: \.options: temp -1e3 degC"),
    (".options gmin=-1", r":5: \.options: gmin=-1 must be >= 0 S"),
    (".options temp=30 temp=40", r":5: \.options: temp given twice on one line"),
    (".temp -270", r":4: model dm: Shockley diode model .* IS\(T\) = .* \(underflows to 0\).*"
                   r"\(temp set at .*:5\)"),
    (".temp 150\n.model dn D(N=0.01)\nD2 a 0 dn", r":6: model dn: .*N=0\.01.* overflows"),
    (".temp 50\n.model de D(EG=1e10)\nD2 a 0 de", r":6: model de: .*EG=10000000000\.0"),
    (".temp 50\n.model dx D(XTI=1e10)\nD2 a 0 dx", r":6: model dx: .*XTI=10000000000\.0"),
    (".model dt D(TNOM=-273.15)\nD2 a 0 dt", r":5: model dt: .*tnom=-273\.15 degC is at or below"),
])
def test_extreme_temperatures_and_parameters_name_the_line(line, msg):
    # issue 13, item 4: these raised ZeroDivisionError, OverflowError or 'math domain error'
    with pytest.raises(NetlistError, match=r"<string>" + msg):
        parse_netlist(TEMP_DECK.format(line).replace(".op\n", ""))


def test_unused_model_not_checked_at_temperature():
    c = parse_netlist(TEMP_DECK.format(".temp 150\n.model dn D(N=0.01)"))  # dn: no instance
    assert c.temp == 150.0


# ------------------------------------------------------------------------------- API types
@pytest.mark.parametrize("call,msg", [
    (lambda: parse_netlist(None), "parse_netlist: text must be a str .* got NoneType"),
    (lambda: parse_netlist(5), "got int"),
    (lambda: parse_netlist(b"t\nR1 a 0 1\n"), "got bytes: decode the bytes first"),
    (lambda: parse_netlist(["t", "R1 a 0 1"]), "got list"),
    (lambda: parse_netlist("t\n", source=None), "source must be a str"),
    (lambda: parse_netlist("t\n", path=3), "path must be a str or os.PathLike, got int"),
    (lambda: read_netlist(None), "read_netlist: path must be a str or os.PathLike, got NoneType"),
    (lambda: write_netlist(None), "write_netlist: circuit must be a fastres Circuit"),
    (lambda: write_netlist(Circuit(), sample="0"), "sample must be an integer"),
    (lambda: write_netlist(Circuit(), sources=[1.0]), "sources must be a dict"),
])
def test_wrong_types_are_clear_type_errors(call, msg):
    # issue 13, item 7: parse_netlist(None) was an AttributeError from deep inside
    with pytest.raises(TypeError, match=msg):
        call()


def test_unreadable_paths_are_netlist_errors(tmp_path):
    with pytest.raises(NetlistError, match="cannot read netlist: No such file"):
        read_netlist(tmp_path / "missing.cir")
    with pytest.raises(NetlistError, match="cannot read netlist: Is a directory"):
        read_netlist(tmp_path)
    with pytest.raises(NetlistError, match="contains a NUL"):
        read_netlist("deck\0.cir")
    (tmp_path / "b.cir").write_bytes(b"t\nV1 a 0 1\nR1 a 0 1k\n")
    assert set(read_netlist(os.fsencode(tmp_path / "b.cir")).elements) == {"v1", "r1"}


def test_error_line_of_continued_statement(tmp_path):
    p = tmp_path / "deck.cir"
    p.write_text("t\nV1 a 0 1\nR1 a\n+ 0\n+ bogus\n")
    with pytest.raises(NetlistError, match=r"deck\.cir:3: bad number 'bogus'"):
        read_netlist(p)


def test_error_is_valueerror():
    with pytest.raises(ValueError):
        parse_netlist("t\nX1 a b sub\n")


# ------------------------------------------------------------------------------- round trip
def random_circuit(rng, n_nodes=12, n_res=30, n_diodes=10):
    c = Circuit(title="random circuit", gmin=float(rng.choice([1e-12, 0.0, 3.3e-13])),
                temp=float(rng.uniform(-20, 120)), tnom=float(rng.uniform(10, 40)))
    nodes = ["0"] + [f"n{i}" for i in range(n_nodes)] + ["Out.x", "a:b_c-1"]
    shockley = [Shockley(IS=float(rng.lognormal(-32, 2)), N=float(rng.uniform(1, 2)),
                         EG=float(rng.uniform(0.6, 1.2)), XTI=float(rng.uniform(2, 4)),
                         tnom=[None, float(rng.uniform(0, 50))][i % 2]) for i in range(2)]
    pwl = [PiecewiseLinear(ron=float(rng.uniform(0.1, 10)), roff=float(rng.uniform(1e5, 1e9)),
                           vfwd=float(rng.uniform(0, 1)),
                           vrev=[math.inf, float(rng.uniform(1, 10))][i % 2],
                           rrev=float(rng.uniform(0.5, 5))) for i in range(2)]
    for k in range(n_res):
        a, b = rng.choice(len(nodes), 2, replace=False)
        if rng.random() < 0.5:
            c.add_resistor(f"r{k}", nodes[a], nodes[b], g=float(rng.lognormal(-7, 3)))
        else:
            c.add_resistor(f"x{k}", nodes[a], nodes[b], r=float(rng.uniform(1, 1e6)))
    for k in range(n_diodes):
        a, b = rng.choice(len(nodes), 2, replace=False)
        if k % 2:
            c.add_diode(f"d{k}", nodes[a], nodes[b], shockley[k % 4 // 2], f"dm{k % 4 // 2}")
        else:
            # two different models share the name "pwl": the writer must disambiguate
            c.add_diode(f"a{k}", nodes[a], nodes[b], pwl[k % 4 // 2], "pwl")
    c.add_voltage_source("vin", nodes[1], float(rng.normal()))
    c.add_voltage_source("vb", nodes[2], rng.normal(size=5))
    c.add_current_source("i1", nodes[3], float(rng.normal() * 1e-3))
    c.add_current_source("i2", nodes[4], rng.normal(size=5) * 1e-3)
    return c


def assert_same_circuit(a, b, sample=0, rename_models=False):
    assert (a.title, a.gmin, a.temp, a.tnom) == (b.title, b.gmin, b.temp, b.tnom)
    assert a.nodes == b.nodes
    assert list(a.elements) == list(b.elements)
    for name, ea in a.elements.items():
        eb = b.elements[name]
        assert type(ea) is type(eb), name
        if isinstance(ea, Resistor):
            assert (ea.a, ea.b) == (eb.a, eb.b)
            assert ea.g == eb.g, (name, ea.g, eb.g)  # bit-identical
        elif isinstance(ea, Diode):
            assert (ea.anode, ea.cathode, ea.model) == (eb.anode, eb.cathode, eb.model), name
            if not rename_models:
                assert ea.model_name == eb.model_name
        else:
            va = ea.value[sample] if isinstance(ea.value, np.ndarray) else ea.value
            assert ea.node == eb.node
            assert va == eb.value, name


@pytest.mark.parametrize("seed", range(8))
def test_round_trip_bit_identical(seed, tmp_path):
    rng = np.random.default_rng(seed)
    c = random_circuit(rng)
    for sample in (0, 3):
        text = write_netlist(c, tmp_path / "c.cir", sample=sample)
        assert (tmp_path / "c.cir").read_text() == text
        back = read_netlist(tmp_path / "c.cir")
        assert_same_circuit(c, back, sample, rename_models=True)
        names = {e.model_name for e in back.of_type(Diode) if isinstance(e.model, PiecewiseLinear)}
        assert names == {"pwl", "pwl_2"}
        # and again: writing what was read gives the same text
        assert write_netlist(back, sample=0) == write_netlist(c, sample=sample)


def test_round_trip_exact_resistances():
    # conductances whose reciprocal has no double that maps back: written with 25 digits
    rng = np.random.default_rng(1)
    c = Circuit()
    # (1e5, 1e10: 1/g is a short exact decimal, '1e-5', which must still be read exactly)
    gs = np.concatenate([rng.lognormal(0, 10, 3000), [1e-300, 1e300, 5e-324 * 2**60, 0.1, 3.0,
                                                        1e5, 1e10, 2.0**40, 1e5 * 3]])
    for k, g in enumerate(gs):
        c.add_resistor(f"{k}", "a", "0", g=float(g))
    back = parse_netlist(write_netlist(c))
    assert [e.g for e in back.of_type(Resistor)] == [float(g) for g in gs]


def test_writer_format():
    c = Circuit(title="t")
    c.add_voltage_source("1", "a", 2.0)
    c.add_current_source("2", "b", 1e-3)
    c.add_resistor("1", "a", "b", r=1000.0)
    c.add_diode("1", "b", "0", PiecewiseLinear(roff=1e6))
    text = write_netlist(c, sources={"v1": np.array([5.0, 6.0])}, sample=1)
    lines = text.splitlines()
    assert lines[0] == "t"
    assert "v1 a 0 DC 6.0" in lines
    assert "i2 0 b DC 0.001" in lines  # 1 mA injected into b: flows 0 -> source -> b
    assert any("vrev=1e+30" in ln and "epsilon=0 revepsilon=0" in ln for ln in lines)
    assert lines[-2:] == [".op", ".end"]
    back = parse_netlist(text)
    assert back.elements["a1"].model.vrev == math.inf
    assert back.elements["v1"].value == 6.0
    with pytest.raises(CircuitError):
        write_netlist(c, sample=0, sources={"r1": 1.0})
    c.add_voltage_source("3", "c", np.zeros(2))
    with pytest.raises(CircuitError, match="out of range"):
        write_netlist(c, sample=5)


def test_writer_rejects_unsafe_names():
    c = Circuit()
    c.add_resistor("1", "a;b", "0", r=1.0)
    with pytest.raises(CircuitError, match="node name"):
        write_netlist(c)


# ------------------------------------------------------------------------------- ngspice
@pytest.mark.ngspice
def test_read_raw_and_dc_sweep():
    from fastres import ngspice
    text = deck("""
V1 a 0 0
R1 a b 1k
R2 b 0 1k
.op
.end
""")
    nodes, volts = ngspice.run_dc_sweep(text, "v1", np.linspace(-1, 1, 5))
    assert volts.shape == (5, len(nodes))
    np.testing.assert_allclose(volts[:, nodes.index("b")], np.linspace(-0.5, 0.5, 5), atol=1e-12)


@pytest.mark.ngspice
def test_ngspice_reports_failures():
    from fastres import ngspice
    with pytest.raises(ngspice.NgspiceError, match="singular|Transient op"):
        ngspice.run_op(deck("V1 a 0 1\nR1 a b 1k\nR2 c d 1k\n.op\n.end\n"))
    with pytest.raises(ngspice.NgspiceError, match="output tail"):
        ngspice.run_op(deck("V1 a 0 1\nA1 a 0 nomodel\n.op\n.end\n"))


@pytest.mark.ngspice
@pytest.mark.parametrize("seed", range(3))
def test_written_decks_run_in_ngspice(seed):
    """ngspice runs the written deck unchanged, and its solution satisfies KCL of our circuit."""
    from fastres import ngspice
    rng = np.random.default_rng(100 + seed)
    c = random_circuit(rng, n_nodes=8, n_res=30, n_diodes=8)
    # make every node reach ground through a resistor, so the operating point is unique
    for n in list(c.nodes):
        c.add_resistor(f"rg_{n}", n, "0", g=float(rng.uniform(1e-4, 1e-2)))
    text = write_netlist(c, sample=2)
    v = ngspice.run_op(text, extra_options={"reltol": 1e-12, "abstol": 1e-18, "vntol": 1e-12})
    assert set(c.nodes) <= set(v)
    volt = dict(v, **{"0": 0.0})
    assert volt[c.elements["vin"].node] == pytest.approx(c.elements["vin"].value, abs=1e-12)
    assert volt[c.elements["vb"].node] == pytest.approx(c.elements["vb"].value[2], abs=1e-12)
    # KCL at every node not held by a voltage source, with the device equations
    net = {n: 0.0 for n in c.nodes}
    scale = {n: 0.0 for n in c.nodes}

    def add(a, b, i):
        for n, s in ((a, -1.0), (b, 1.0)):
            if n != "0":
                net[n] += s * i
                scale[n] += abs(i)

    for e in c.elements.values():
        if isinstance(e, Resistor):
            add(e.a, e.b, e.g * (volt[e.a] - volt[e.b]))
        elif isinstance(e, Diode):
            vd = volt[e.anode] - volt[e.cathode]
            m = e.model
            if isinstance(m, Shockley):
                is_t, vte, gmin, _, _ = m.params(c.temp, c.tnom, c.gmin)
                if vd >= -3 * vte:
                    i = is_t * math.expm1(vd / vte)
                else:  # ngspice's reverse cubic
                    arg = 3 * vte / (vd * math.e)
                    i = -is_t * (1 + arg ** 3)
                i += gmin * vd
            else:
                if vd > m.vfwd:
                    i = m.vfwd / m.roff + (vd - m.vfwd) / m.ron
                elif vd < -m.vrev:
                    i = -m.vrev / m.roff + (vd + m.vrev) / m.rrev
                else:
                    i = vd / m.roff
            add(e.anode, e.cathode, i)
        elif isinstance(e, CurrentSource):
            val = e.value[2] if isinstance(e.value, np.ndarray) else e.value
            add("0", e.node, val)
    held = {e.node for e in c.of_type(VoltageSource)}
    for n in c.nodes:
        if n not in held:
            assert abs(net[n]) <= 1e-9 * scale[n] + 1e-15, (n, net[n], scale[n])


# ------------------------------------------------------------------------------- bit identity
# Kernel parameter rows of ordinary models, recorded (as exact hex floats) before the netlist and
# device-validation hardening of issue 13: those changes must not move a single bit of them.
PINNED_ROWS = [
    (Shockley(), (27.0, 27.0, 1e-12),
     ["0x1.6849b86a12b9bp-47", "0x1.a7c5532a352cap-6", "0x1.19799812dea11p-40",
      "0x1.30ed7758d5e69p+0", "0x0.0p+0"]),
    (Shockley(IS=2e-14, N=1.5, EG=1.2, XTI=2.0, tnom=30.0), (50.0, 25.0, 1e-11),
     ["0x1.465a6a720c4b2p-43", "0x1.562ec84d7bdb2p-5", "0x1.5fd7fe1796495p-37",
      "0x1.cfd9b981e53f7p+0", "0x0.0p+0"]),
    (Shockley(IS=1e-12, N=0.01), (27.0, 27.0, 1e-12),
     ["0x1.19799812dea11p-40", "0x1.0f369ba022081p-12", "0x1.19799812dea11p-40",
      "0x1.5f46cf1ea896ep-7", "0x0.0p+0"]),
    (Shockley(IS=3.3e-9, N=2.7, EG=0.69, XTI=4.0), (-40.0, 27.0, 0.0),
     ["0x1.23d31b0b81609p-33", "0x1.bc63358820284p-5", "0x0.0p+0",
      "0x1.fbb0bfdfbe5e1p+0", "0x0.0p+0"]),
    (Shockley(IS=1e-16, N=1.02, EG=1.11, XTI=3.0), (125.0, 27.0, 1e-12),
     ["0x1.fbf606ca4a13ap-38", "0x1.1eb023742159cp-5", "0x1.19799812dea11p-40",
      "0x1.619c54e8c8deap+0", "0x0.0p+0"]),
    (Shockley(IS=5e-15, imax=10.0), (85.5, 10.0, 3.3e-13),
     ["0x1.4243aaa30f3bbp-33", "0x1.fa5d64243bb33p-6", "0x1.738c062d634f8p-42",
      "0x1.8abf36e950b5fp-1", "0x0.0p+0"]),
    (PiecewiseLinear(), (27.0, 27.0, 0.0),
     ["0x1.0000000000000p+0", "0x1.12e0be826d695p-30", "0x0.0p+0", "inf",
      "0x1.0000000000000p+0"]),
    (PiecewiseLinear(ron=2, roff=1e6, vfwd=0.3, vrev=5, rrev=10), (27.0, 27.0, 0.0),
     ["0x1.0000000000000p-1", "0x1.0c6f7a0b5ed8dp-20", "0x1.3333333333333p-2",
      "0x1.4000000000000p+2", "0x1.999999999999ap-4"]),
]


@pytest.mark.parametrize("model,args,row", PINNED_ROWS)
def test_params_rows_bit_identical(model, args, row):
    got = model.params(*args)
    assert got.dtype == np.float64 and got.shape == (5,)
    assert [float(x).hex() for x in got] == row


CLIPPER_WRITTEN = """\
Diode clipper and a piecewise-linear clamp (fastres example deck)
.options gmin=1e-12 temp=27.0 tnom=27.0
.model dsil D(IS=1e-14 N=1.0 EG=1.11 XTI=3.0)
.model ideal sidiode(ron=1.0 roff=1000000.0 vfwd=0.3 vrev=1e+30 rrev=1.0 epsilon=0 revepsilon=0)
vin in 0 DC 2.5
vhi rhi 0 DC 0.5
vlo rlo 0 DC -0.5
r1 in a 1000.0
d1 a rhi dsil
d2 rlo a dsil
r2 a b 2200.0
r3 b 0 4700.0
r4 in c 10000.0
a1 c 0 ideal
iin 0 c DC 1e-05
.op
.end
"""


def test_example_deck_reads_as_before():
    path = os.path.join(os.path.dirname(__file__), "..", "data", "examples", "clipper.cir")
    c = read_netlist(path)
    assert write_netlist(c) == CLIPPER_WRITTEN
    d = c.elements["d1"].model
    assert [float(x).hex() for x in d.params(c.temp, c.tnom, c.gmin)] == PINNED_ROWS[0][2]


# ------------------------------------------------------------------------------- device values
# issue 13, item 4: extreme numbers never raise a Python arithmetic error, only CircuitError
@pytest.mark.parametrize("model,temp,tnom,msg", [
    (Shockley(), -273.15, 27.0, r"temp=-273\.15 degC is at or below absolute zero"),
    (Shockley(), 27.0, -273.15, r"tnom=-273\.15 degC is at or below absolute zero"),
    (Shockley(), -300.0, 27.0, r"temp=-300\.0 degC is at or below absolute zero"),
    (Shockley(), -270.0, 27.0, r"IS\(T\) = .* = 0\.0 A \(underflows to 0\)"),
    (Shockley(N=0.01), 150.0, 27.0, r"IS\(T\) = IS exp\(.*\) overflows"),
    (Shockley(EG=1e10), 50.0, 27.0, r"EG=10000000000\.0.*overflows"),
    (Shockley(XTI=1e10), 50.0, 27.0, r"XTI=10000000000\.0.*overflows"),
    (Shockley(IS=1e-300), 27.0, 27.0 - 1e-9, None),  # fine: a tiny IS is representable
    (Shockley(IS=1e-300, imax=1e300), 27.0, 27.0, r"vmax .* is not finite"),
    (Shockley(N=1e-310, XTI=0.0), 27.0, 27.0, r"largest conductance .* is not finite"),
    (Shockley(N=5e-324), 27.0, 27.0, r"N vt = 0\.0 V is not a positive finite voltage"),
    (Shockley(N=1e-310), 27.0, 27.0, r"the exponent of IS\(T\), 0\.0 \+ nan, is not finite"),
    (Shockley(N=1e300), 1e300, 27.0, r"is not"),
])
def test_shockley_params_extremes(model, temp, tnom, msg):
    if msg is None:
        row = model.params(temp, tnom)
        assert np.all(np.isfinite(row)) and row[0] > 0
        return
    with pytest.raises(CircuitError, match=msg) as info:
        model.params(temp, tnom)
    assert "Shockley diode model" in str(info.value)


def test_shockley_tnom_parameter_below_absolute_zero():
    with pytest.raises(CircuitError, match=r"tnom=-273\.15 degC is at or below absolute zero"):
        Shockley(tnom=-273.15)
    with pytest.raises(CircuitError, match=r"tnom=-1000\.0 degC"):
        Shockley(tnom=-1000.0)


@pytest.mark.parametrize("kw", [dict(temp="27"), dict(gmin=None), dict(gmin=-1e-12),
                                dict(tnom=float("nan")), dict(temp=float("inf"))])
def test_shockley_params_bad_arguments(kw):
    with pytest.raises(CircuitError):
        Shockley().params(**kw)


def test_numpy_scalars_are_numbers():
    a = Shockley(IS=np.float64(1e-14), N=np.int64(1), EG=np.float32(1.5), XTI=np.int32(3),
                 tnom=np.float32(25.0), imax=np.int64(10**6))
    assert a == Shockley(IS=1e-14, N=1.0, EG=1.5, XTI=3.0, tnom=25.0)
    assert all(type(getattr(a, k)) is float for k in ("IS", "N", "EG", "XTI", "tnom", "imax"))
    # the row is computed in float64 (not float32 arithmetic)
    assert [float(x).hex() for x in Shockley(N=np.float32(1.0)).params()] == PINNED_ROWS[0][2]
    assert [float(x).hex() for x in Shockley().params(np.float32(27), np.int64(27),
                                                      np.float64(1e-12))] == PINNED_ROWS[0][2]
    p = PiecewiseLinear(ron=np.int64(2), roff=np.float32(1e6), vfwd=np.float64(0.3),
                        vrev=np.int64(5), rrev=np.int16(10))
    assert p == PiecewiseLinear(ron=2.0, roff=1e6, vfwd=0.3, vrev=5.0, rrev=10.0)
    assert [float(x).hex() for x in p.params()] == PINNED_ROWS[-1][2]


@pytest.mark.parametrize("cls,kw,msg", [
    (Shockley, dict(IS="1e-14"), "must be a real number, not str"),
    (Shockley, dict(N=None), "must be a real number, not NoneType"),
    (Shockley, dict(XTI=True), "must be a real number, not bool"),
    (Shockley, dict(EG=np.array([1.1])), "must be a real number, not ndarray"),
    (Shockley, dict(IS=10**400), "not a finite number"),
    (Shockley, dict(N=float("nan")), "not a finite number"),
    (PiecewiseLinear, dict(ron="1"), "must be a real number"),
    (PiecewiseLinear, dict(vrev=-math.inf), "not a finite number"),
    (PiecewiseLinear, dict(ron=5e-324), r"ron=5e-324 ohm is too small"),
    (PiecewiseLinear, dict(ron=1e-320, roff=1e-310, rrev=1.0), r"too small"),
])
def test_device_parameters_refused(cls, kw, msg):
    with pytest.raises(CircuitError, match=msg):
        cls(**kw)
