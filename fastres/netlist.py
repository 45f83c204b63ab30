"""Read and write SPICE netlists: the ngspice subset of resistors, diodes and grounded DC sources.

Supported input (case-insensitive):

* the first line of the top file is the title; ``*`` comment lines, inline ``;`` and `` $``
  comments, ``+`` continuation lines, blank lines. As in ngspice, only LF (or CR LF) ends a
  line and only space, tab, form feed and vertical tab separate fields; characters that
  Python would read as line ends or white space but ngspice does not (a stray CR, \x1c-\x1f,
  NEL, U+2028, ...), other control characters and non-ASCII text are allowed in comments and
  refused elsewhere (see "Line ends and white space" below);
* numbers with SI suffixes ``f p n u m mil k meg g t`` followed by ignored unit letters
  (``1kohm``, ``10uA``, ``1V``), exactly as ngspice reads them; values beyond the float range
  are refused;
* ``R name n1 n2 value`` (or ``r=value`` / ``resistance=value``);
* ``D name anode cathode model [1 | area=1]`` with ``.model name D(IS= N= EG= XTI= TNOM=)``
  (capacitance/transit-time/noise parameters are accepted and ignored; parameters that change
  the DC behaviour -- RS, BV, IKF, IKR, JSW, ISR, ... -- are rejected);
* ``A name anode cathode model`` with ``.model name sidiode(ron= roff= vfwd= vrev= rrev=
  epsilon=0 revepsilon=0)`` (the XSPICE simple diode, a :class:`~fastres.devices.PiecewiseLinear`);
  ``vrev >= 1e30`` means no breakdown (``inf``);
* ``V name n+ n- [DC] value`` and ``I name n+ n- [DC] value`` with one grounded terminal
  (``0`` or ``gnd``); V(n+) - V(n-) = value, and a current source drives its current from
  ``n+`` through itself to ``n-``;
* ``.model``, ``.include``/``.inc`` (relative to the including file), ``.options``/``.option``
  (gmin, temp, tnom; other solver options are ignored), ``.temp``, ``.title``, ``.op``, ``.end``,
  ``.control ... .endc`` (skipped), ``.save/.print/.plot/.probe/.width`` (ignored). As in
  ngspice, the last ``.temp`` sets the temperature wherever it stands, before or after an
  ``.options temp=``; otherwise the last ``.options temp=`` does. Temperatures at or below
  absolute zero are refused, and so is a diode model in use whose IS(T) leaves the float range
  at the circuit's temperature.

Anything else raises :class:`~fastres.errors.NetlistError` naming ``file:line``; an argument of
the wrong type (``parse_netlist(None)``) is a TypeError.

:func:`write_netlist` writes a deck that ``ngspice -b`` runs unchanged and that
:func:`parse_netlist` reads back to the same circuit, values bit for bit.
"""
from __future__ import annotations

import math
import numbers
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal
from fractions import Fraction

import numpy as np

from .circuit import Amplifier, Circuit, CurrentSource, Diode, Resistor, VoltageSource
from .devices import KELVIN, PiecewiseLinear, Shockley
from .errors import CircuitError, NetlistError

__all__ = ["read_netlist", "parse_netlist", "write_netlist", "parse_number", "VREV_INFINITE"]

#: A sidiode ``vrev`` at or above this is "no breakdown" (written for ``vrev = inf``).
VREV_INFINITE = 1e30

_SCALE = {"t": "1e12", "g": "1e9", "meg": "1e6", "k": "1e3", "mil": "25.4e-6", "m": "1e-3",
          "u": "1e-6", "n": "1e-9", "p": "1e-12", "f": "1e-15"}
# ASCII only: Python's \d and case folding would also read other scripts' digits and the Kelvin
# sign as numbers and suffixes, which ngspice does not
# An 'e' without exponent digits is an exponent of 0, as in ngspice ('3ek' is 3e3, '1e-' is 1).
_NUMBER = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+))(?:e([+-]?\d*))?(meg|mil|[tgkmunpf])?([a-z_]*)\Z",
    re.IGNORECASE | re.ASCII)
# decimal exponent of each scale's leading digit (mil = 2.54e-5)
_SCALE_EXP = {k: Decimal(v).adjusted() for k, v in _SCALE.items()}
_GROUND = ("0", "gnd")
#: the characters that separate fields (ngspice: space, tab, form feed, vertical tab)
_WS = " \t\f\v"

# .model D parameters: supported, ignored (no DC effect), or only allowed at their default.
_D_SUPPORTED = {"is": "IS", "js": "IS", "n": "N", "eg": "EG", "xti": "XTI", "tnom": "tnom",
                "tref": "tnom"}
_D_IGNORED = {"cjo", "cj0", "cj", "vj", "pb", "m", "mj", "fc", "tt", "cjp", "cjsw", "php",
              "mjsw", "fcs", "tt1", "tt2", "tm1", "tm2", "cta", "ctp", "tpb", "tphp", "kf", "af",
              "fv_max", "bv_max", "id_max", "pd_max", "te_max", "ibv", "nbv", "tbv1", "tbv2",
              "tcv", "trs", "trs1", "trs2", "ns", "nr", "keg", "xom", "xoi",
              "lm", "lp", "wm", "wp", "cth0"}
_D_DEFAULT_ONLY = {"rs": 0.0, "ikf": 0.0, "ik": 0.0, "ikr": 0.0, "jsw": 0.0,
                   "isr": 0.0, "level": 1.0, "tlev": 0.0, "tlevc": 0.0, "area": 1.0, "pj": 0.0,
                   "rth0": 0.0}
_D_NEVER = {"bv"}
# sidiode parameters (ngspice 39 defaults, measured: ron=1, roff=1, vfwd=0, no breakdown,
# rrev=ron, epsilon=revepsilon=0, no current limits).
_SIDIODE = {"ron", "roff", "vfwd", "vrev", "rrev", "epsilon", "revepsilon", "ilimit",
            "revilimit"}
_IGNORED_DOT = {".save", ".print", ".plot", ".probe", ".width"}


def _clip(token, limit=40):
    """``repr`` of a token for a message: non-ASCII escaped, at most ``limit`` characters."""
    text = ascii(token)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


class _Err:
    """Builds NetlistErrors that name ``file:line``."""

    def __init__(self, where):
        self.where = where

    def __call__(self, msg):
        return NetlistError(f"{self.where}: {msg}")


def parse_number(token: str, where: str = "<number>") -> float:
    """A SPICE number: ``1.5k``, ``10uA``, ``2meg``, ``1e-3``; NaN/Inf, values beyond the float
    range and garbage are :class:`NetlistError`; a ``token`` that is not a str is a TypeError."""
    if not isinstance(token, str):
        raise TypeError(f"parse_number: token must be a str, got {type(token).__name__}")
    return float(_parse_exact(token, where))


def _parse_exact(token, where):
    m = _NUMBER.match(token.strip(_WS))
    if not m:
        raise NetlistError(f"{where}: bad number {_clip(token)}")
    mant, exp, suffix, _units = m.groups()
    if exp and exp not in "+-":  # (ngspice reads a bare 'e', 'e+' or 'e-' as no exponent)
        mant = f"{mant}e{exp}"
    return _Number(mant, suffix.lower() if suffix else None, where, token)


class _Number:
    """A parsed SPICE number, kept exact so that ``1 / value`` can be rounded correctly."""

    __slots__ = ("mant", "suffix", "scale", "where", "token")

    def __init__(self, mant, suffix, where, token):
        self.mant, self.suffix, self.where, self.token = mant, suffix, where, token
        self.scale = _SCALE[suffix] if suffix else None

    def _exact(self):
        """The exact value as a Fraction (via Decimal: no limit on the digits of the mantissa);
        only called once the magnitude is known to be within the float range."""
        exact = Fraction(Decimal(self.mant))
        return exact * Fraction(self.scale) if self.scale is not None else exact

    def _magnitude(self):
        """Decimal exponent of the leading digit of the exact value (None for zero), computed
        without expanding the exponent (``1e999999999k`` must not build a huge integer)."""
        d = Decimal(self.mant)
        if not d:
            return None
        return d.adjusted() + (_SCALE_EXP[self.suffix] if self.suffix else 0)

    def __float__(self):
        if self.scale is None:
            val = float(self.mant)
        else:
            mag = self._magnitude()
            if mag is None:
                val = 0.0
            elif mag > 308:  # beyond the largest double, 1.8e308
                val = math.inf
            elif mag < -400:  # far below the smallest subnormal, 4.9e-324: rounds to zero
                val = -0.0 if self.mant.startswith("-") else 0.0
            else:
                try:
                    val = float(self._exact())
                except OverflowError:
                    val = math.inf
        if not math.isfinite(val):
            raise NetlistError(f"{self.where}: number {_clip(self.token)} is not finite (beyond the"
                               " float range, about 1.8e308)")
        return val

    def reciprocal(self):
        """``1 / value`` as a float: ``1 / float(value)`` unless the literal has more than 17
        significant digits (as :func:`write_netlist` writes when that is needed for an exact
        round trip), when the exact decimal's reciprocal is rounded once."""
        val = float(self)
        if len(self.mant) <= 17 and self.scale is None:  # fast path: at most 17 digits
            if val == 0:
                raise NetlistError(f"{self.where}: resistance {self.token!r} must be > 0 ohm")
            return 1.0 / val
        digits = re.sub(r"e.*", "", self.mant.lower()).lstrip("+-").replace(".", "").lstrip("0")
        if val == 0:
            raise NetlistError(f"{self.where}: resistance {self.token!r} must be > 0 ohm")
        if len(digits) <= 17 and self.scale is None:
            return 1.0 / val
        try:
            return float(1 / self._exact())
        except OverflowError:  # a subnormal resistance: the caller refuses the infinite conductance
            return math.inf


# -------------------------------------------------------------------------------------------
# Reading
# -------------------------------------------------------------------------------------------
@dataclass
class _Stmt:
    where: str  # "file:line"
    tokens: list  # lower-case tokens, except "raw" keeps the original text
    raw: str


# Line ends and white space, as ngspice 39 reads a deck (measured with ``ngspice -b``):
# * only LF ends a line; a CR before it (CR LF) is dropped. ngspice deletes a CR anywhere else
#   and joins the text around it, so such a CR (old Mac line ends) is refused.
# * fields are separated by space, tab, form feed and vertical tab. Python's str.splitlines() and
#   str.split() also break at \x1c-\x1e, NEL, U+2028, U+2029, no-break spaces, ...: ngspice
#   reads those as part of a name, so outside comments they are refused, as are other control
#   characters (NUL ends ngspice's line early) and, except in .title and .include, any non-ASCII
#   character (ngspice reads bytes; Python's case folding and digits would read some of them
#   differently).
# * ngspice ignores, with the warning "Unusual leading characters", a line that starts with a
#   form feed or with one of = [ ] ? ( ) & % " ! : , (fastres would read "(R1 a 0 1k" as R1);
#   a vertical tab at the start is read as part of the element name. Both are refused. A form
#   feed alone on a line (a page break) is a blank line, and "\f* ..." a comment, for both.
_CR_MSG = ("a carriage return (CR) that does not end a line: ngspice ends lines only at LF (or"
           " CR LF), deletes any other CR and joins the text around it; use LF or CR LF line ends")
_IGNORED_LEAD = frozenset('=[]?()&%"!:,')
_FREE_TEXT = (".title", ".include", ".inc")  # statements whose text may hold non-ASCII characters
_ODD_CHAR = re.compile(r"[^\t\x0b\x0c\x20-\x7e]")  # anything but printable ASCII and field separators
_SPLIT_WS = re.compile(r"[ \t\f\v]+")
_DOLLAR_COMMENT = re.compile(r"(?:^|[ \t])\$(?!;)")  # (ngspice reads ' $;' as '$' then ';')
_CONTROL_NAMES = {"\x00": "NUL", "\x1c": "FILE SEPARATOR", "\x1d": "GROUP SEPARATOR",
                  "\x1e": "RECORD SEPARATOR", "\x1f": "UNIT SEPARATOR", "\x7f": "DELETE",
                  "\x85": "NEXT LINE (NEL)", "\x0b": "VERTICAL TAB", "\x0c": "FORM FEED"}


def _describe_char(ch):
    name = unicodedata.name(ch, None) or _CONTROL_NAMES.get(ch) or "a control character"
    return f"U+{ord(ch):04X} ({name})"


def _char_problem(code, where, ascii_only):
    """None, or the message for the first character of ``code`` (a statement's text outside
    comments) that ngspice does not read as fastres would."""
    for m in _ODD_CHAR.finditer(code):
        ch = m.group()
        if ch.isprintable():  # non-ASCII letters, symbols, ...
            if not ascii_only:
                continue
            return (f"{where}: non-ASCII character {_describe_char(ch)} outside a comment: names,"
                    " numbers and keywords must be ASCII (ngspice reads bytes, and would not read"
                    " it as fastres does)")
        return (f"{where}: character {_describe_char(ch)} outside a comment: ngspice reads it"
                " neither as a line end (only LF and CR LF) nor as white space (space, tab, form"
                " feed, vertical tab); remove it or move it into a comment")
    return None


_SOURCE_FUNCTIONS = frozenset(("dc", "ac", "sin", "pulse", "pwl", "exp", "sffm", "am",
                               "trnoise", "trrandom", "distof1", "distof2"))
_GLUED_PAREN = re.compile(r"([^ \t\f\v,(]+)\(")


def _check_parentheses(line, head, err):
    """In an element line ngspice skips a '(' that starts a field and ends a field at ')' or
    ',', as fastres does, but reads a '(' after other characters as part of the name or value
    (``R1 a( 0 1k`` connects node ``a(``): refused. XSPICE port types (``%gd(a c)``) are fine."""
    for m in _GLUED_PAREN.finditer(line):
        word = m.group(1).lower()
        if head.startswith("a") and word in ("%gd", "%d", "%g"):
            continue
        if head.startswith(("v", "i")) and word in _SOURCE_FUNCTIONS:
            continue  # DC(1) reads as DC 1 in both; SIN(...) etc. are refused as unsupported
        raise err(f"'(' right after {_clip(m.group(1))}: ngspice reads such a '(' as part of the"
                  " name or value (only a '(' that starts a field is skipped); remove it or put"
                  " a space before it")


def _split(text):
    """Fields separated by ngspice's white space (not Python's: see above)."""
    return [t for t in _SPLIT_WS.split(text) if t]


def _strip_comment(line):
    """``line`` (no leading space or tab) without its ``;`` or `` $`` comment."""
    cut = line.find(";")
    m = _DOLLAR_COMMENT.search(line)  # ngspice: '$' after a space or tab (or first) starts one
    if m and (cut < 0 or m.start() < cut):
        cut = m.start()
    if cut >= 0:
        line = line[:cut]
    return line.rstrip(_WS)


def _tokenize(text):
    # parentheses, commas and '=' are separators; '=' is kept as its own token
    if not any(ch in text for ch in "(),="):
        return _split(text)
    text = re.sub(r"[(),]", " ", text)
    text = re.sub(r"[ \t\f\v]*=[ \t\f\v]*", " = ", text)
    return _split(text)


def _logical_lines(text, source, has_title):
    """The title (or None) and a list of ``[where, text, problem, head]``, one per statement
    (continuations joined) and one (with empty text) per comment or blank line that holds a
    problem. ``problem`` is None or ``(kind, message)``: kind "cr" for a CR that does not end
    a line, "char" for a character or line start that ngspice reads differently. Problems are
    raised when the statement is reached, so that nothing after ``.end`` is checked."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]  # LF and CR LF end a line, nothing else
    out = []
    last = None  # index in out of the statement that a '+' line continues
    title = None
    start = 0
    if has_title:
        if "\r" in lines[0]:
            raise NetlistError(f"{source}:1: {_CR_MSG} (a file with CR-only line ends?)")
        title = lines[0].strip()
        start = 1
    for i in range(start, len(lines)):
        where = f"{source}:{i + 1}"
        raw = lines[i]
        problem = ("cr", f"{where}: {_CR_MSG}") if "\r" in raw else None
        s = raw.lstrip(" \t")
        code = "" if s.lstrip(_WS).startswith("*") else _strip_comment(s)
        if not code.strip(" \t\f"):  # comment or blank line (a lone form feed: a page break)
            if problem is None and "\v" in s and not s.strip(_WS):
                problem = ("char", f"{where}: a vertical tab on an otherwise blank line (ngspice 39"
                                   " crashes on it); remove it")
            if problem:
                out.append([where, "", problem, ""])
            continue
        lead = code[0]
        if lead == "+":
            if last is None:
                raise NetlistError(f"{where}: continuation line '+' with nothing to continue")
            stmt = out[last]
            body = code[1:]
            stmt[1] += " " + body
            if problem is None:
                msg = _char_problem(body, where, stmt[3] not in _FREE_TEXT)
                problem = ("char", msg) if msg else None
            if problem and not stmt[2]:
                stmt[2] = problem
            continue
        head = _split(code)[0].lower() if code.strip(_WS) else ""
        if problem is None:
            if lead in "\f\v":
                problem = (f"{where}: a {_describe_char(lead)} at the start of a line: ngspice"
                           " ignores such a line, or reads the character as part of the element"
                           " name; remove it")
            elif lead in _IGNORED_LEAD:
                problem = (f"{where}: line starts with {lead!r}: ngspice ignores such a line"
                           " (warning 'Unusual leading characters'); remove the character, or"
                           " make the line a '*' comment")
            else:
                problem = _char_problem(code, where, head not in _FREE_TEXT)
            if problem:
                problem = ("char", problem)
        out.append([where, code, problem, head])
        last = len(out) - 1
    return title, out


def _read_statements(text, source, path, stack, has_title):
    """Flatten a deck and its includes into statements; returns (title, statements)."""
    title, lines = _logical_lines(text, source, has_title)
    stmts = []
    in_control = False
    for where, line, problem, head in lines:
        # inside .control (ngspice's own commands, skipped) only a stray CR matters
        if problem and (problem[0] == "cr" or not in_control):
            raise NetlistError(problem[1])
        if not line:
            continue
        err = _Err(where)
        if in_control:
            if head == ".endc":
                in_control = False
            continue
        if head == ".control":
            in_control = True
            continue
        if head == ".endc":
            raise err(".endc without .control")
        if head == ".end":
            break
        if head in (".include", ".inc"):
            rest = _SPLIT_WS.split(line.strip(_WS), maxsplit=1)
            if len(rest) < 2 or not rest[1].strip(_WS):
                raise err(".include needs a file name")
            fname = rest[1].strip(_WS).strip("\"'")
            base = os.path.dirname(path) if path else os.getcwd()
            inc = os.path.join(base, os.path.expanduser(fname))
            real = os.path.realpath(inc)
            if real in stack:
                raise err(f"recursive .include of {fname!r}")
            try:
                with open(inc, encoding="utf-8", errors="replace", newline="") as f:
                    sub = f.read()
            except OSError as exc:
                raise err(f"cannot read .include file {fname!r}: {exc.strerror or exc}") from None
            _, sub_stmts = _read_statements(sub, inc, inc, stack | {real}, has_title=False)
            stmts.extend(sub_stmts)
            continue
        if not head.startswith("."):
            _check_parentheses(line, head, err)
        stmts.append(_Stmt(where, [t.lower() for t in _tokenize(line)], line))
    if in_control:
        raise NetlistError(f"{source}: .control block without .endc")
    return title, stmts


def _params(tokens, err, what):
    """``key = value`` pairs (lower-case keys) from a token list."""
    out = {}
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i + 1] == "=":
            if i + 2 >= len(tokens):
                raise err(f"{what}: parameter {tokens[i]!r} has no value")
            key = tokens[i]
            if key in out:
                raise err(f"{what}: parameter {key!r} given twice")
            out[key] = (tokens[i + 2], _parse_exact(tokens[i + 2], err.where))
            i += 3
        else:
            raise err(f"{what}: expected name=value, got {tokens[i]!r}")
    return out


def _parse_model(stmt):
    err = _Err(stmt.where)
    t = stmt.tokens
    if len(t) < 3:
        raise err(".model needs a name and a type")
    name, mtype = t[1], t[2]
    params = _params(t[3:], err, f"model {name}")
    if mtype == "d":
        kw = {}
        for key, (tok, num) in params.items():
            if key in _D_SUPPORTED:
                kw[_D_SUPPORTED[key]] = float(num)
            elif key in _D_IGNORED:
                float(num)
            elif key in _D_DEFAULT_ONLY:
                if float(num) != _D_DEFAULT_ONLY[key]:
                    raise err(f"model {name}: diode parameter {key.upper()}={tok} is not supported"
                              f" (only the default {_D_DEFAULT_ONLY[key]:g}; fastres models an"
                              " ideal junction)")
            elif key in _D_NEVER:
                raise err(f"model {name}: diode parameter {key.upper()} (reverse breakdown)"
                          " is not supported")
            else:
                raise err(f"model {name}: unknown or unsupported diode parameter {key.upper()}")
        try:
            return name, Shockley(**kw)
        except (CircuitError, TypeError) as exc:
            raise err(f"model {name}: {exc}") from None
    if mtype == "sidiode":
        kw = {}
        for key, (tok, num) in params.items():
            if key not in _SIDIODE:
                raise err(f"model {name}: unknown sidiode parameter {key!r}")
            val = float(num)
            if key in ("epsilon", "revepsilon"):
                if val != 0:
                    raise err(f"model {name}: sidiode {key}={tok} is not supported (must be 0:"
                              " fastres models the sharp piecewise-linear corners)")
            elif key in ("ilimit", "revilimit"):
                raise err(f"model {name}: sidiode current limit {key!r} is not supported")
            else:
                kw[key] = val
        # ngspice 39 defaults (measured): ron = roff = 1 ohm, vfwd = 0, no breakdown, rrev = ron
        kw.setdefault("ron", 1.0)
        kw.setdefault("roff", 1.0)
        kw.setdefault("vfwd", 0.0)
        kw.setdefault("rrev", kw["ron"])
        vrev = kw.get("vrev", math.inf)
        kw["vrev"] = math.inf if vrev >= VREV_INFINITE else vrev
        try:
            return name, PiecewiseLinear(**kw)
        except CircuitError as exc:
            raise err(f"model {name}: {exc}") from None
    raise err(f"model {name}: model type {mtype.upper()!r} is not supported (only D and sidiode)")


def _source_value(tokens, err, what):
    """``[DC] value`` / ``DC=value`` / nothing (0)."""
    t = list(tokens)
    if len(t) >= 2 and t[0] == "dc" and t[1] == "=":
        t = t[2:]
    elif t and t[0] == "dc":
        t = t[1:]
    if not t:
        return 0.0
    if len(t) > 1:
        raise err(f"{what}: unsupported source specification {' '.join(t[1:])!r}"
                  " (only a DC value)")
    return float(_parse_exact(t[0], err.where))


def _build(title, stmts, source):
    options = {}
    option_where = {}
    temp_line = None  # (value, where) of the last .temp: it wins over .options temp (ngspice)
    used_models = set()
    models = {}
    model_where = {}
    elements = []
    for st in stmts:
        err = _Err(st.where)
        t = st.tokens
        head = t[0]
        if head.startswith("."):
            if head == ".model":
                name, model = _parse_model(st)
                if name in models:
                    raise err(f"duplicate .model {name!r} (first defined at {model_where[name]})")
                models[name] = model
                model_where[name] = st.where
            elif head in (".options", ".option", ".opt", ".opts"):
                i = 1
                seen = set()
                while i < len(t):
                    key = t[i]
                    if i + 1 < len(t) and t[i + 1] == "=":
                        if i + 2 >= len(t):
                            raise err(f".options: {key} has no value")
                        val = t[i + 2]
                        i += 3
                    else:
                        val = None
                        i += 1
                    if key in ("gmin", "temp", "tnom"):
                        if val is None:
                            raise err(f".options: {key} needs a value")
                        if key in seen:  # ngspice takes the first, and a later line's value
                            raise err(f".options: {key} given twice on one line")
                        seen.add(key)
                        options[key] = _option_value(key, val, st.where)
                        option_where[key] = st.where
                    elif key == "rshunt":
                        raise err(".options rshunt (a resistor from every node to ground) is"
                                  " not supported")
                    # other options (reltol, abstol, vntol, itl1, method, klu, ...) only steer
                    # ngspice's numerics: accepted and ignored
            elif head == ".temp":
                if len(t) != 2:
                    raise err(".temp needs exactly one temperature")
                temp_line = (_option_value("temp", t[1], st.where, ".temp"), st.where)
            elif head == ".title":
                title = st.raw.strip(_WS)[len(".title"):].strip(_WS)
            elif head == ".op":
                if len(t) > 1:
                    raise err(f".op takes no arguments, got {_clip(' '.join(t[1:]))}")
            elif head in _IGNORED_DOT:
                pass
            else:
                raise err(f"dot-command {head!r} is not supported")
            continue
        elements.append(st)

    if temp_line is not None:
        # ngspice 39 (measured): '.temp' sets the temperature wherever it stands, before or
        # after '.options temp=' (the last '.temp' if several)
        options["temp"], option_where["temp"] = temp_line
    try:
        circ = Circuit(title=title if title is not None else "", **options)
    except CircuitError as exc:
        raise NetlistError(f"{source}: {exc}") from None

    amps, consumed = _amplifiers(elements)
    for st in elements:
        if id(st) in consumed:
            continue
        err = _Err(st.where)
        t = st.tokens
        name = t[0]
        letter = name[0]
        try:
            if id(st) in amps:
                inp, out, gain = amps[id(st)]
                circ.add_amplifier(name[1:], inp, out, gain)
                continue
            if letter in ("e", "f", "g", "h"):
                raise err(f"controlled source {name}: E/F/G/H elements are supported only as a "
                          "bidirectional amplifier: 'E<n> q 0 in 0 A', 'V<n>_s q out DC 0', "
                          "'F<n> in 0 V<n>_s A' (what write_netlist emits for an Amplifier)")
            if letter == "r":
                if len(t) < 4:
                    raise err(f"resistor {name}: expected 'R name n1 n2 value'")
                rest = t[3:]
                if len(rest) >= 3 and rest[1] == "=" and rest[0] in ("r", "resistance"):
                    rest = [rest[2]] + rest[3:]
                if len(rest) != 1:
                    raise err(f"resistor {name}: unsupported extra fields {' '.join(rest[1:])!r}"
                              " (models, tc1/tc2, m, ... are not supported)")
                num = _parse_exact(rest[0], st.where)
                r = float(num)
                if not r > 0:
                    raise err(f"resistor {name}: resistance {rest[0]!r} must be > 0 ohm")
                circ.add_resistor(name, t[1], t[2], g=num.reciprocal())
            elif letter in ("d", "a"):
                toks = t[1:]
                if letter == "a":
                    toks = [x for x in toks if x not in ("%gd", "%d", "%g")]
                if len(toks) < 3:
                    raise err(f"diode {name}: expected '{letter.upper()} name anode cathode model'")
                anode, cathode, mname = toks[:3]
                extra = toks[3:]
                if letter == "d":
                    if len(extra) == 1 or (len(extra) == 3 and extra[:2] == ["area", "="]):
                        area = float(_parse_exact(extra[-1], st.where))
                        if area != 1:
                            raise err(f"diode {name}: area {extra[-1]} is not supported (only 1)")
                    elif extra:
                        raise err(f"diode {name}: unsupported instance parameters"
                                  f" {' '.join(extra)!r}")
                elif extra:
                    raise err(f"XSPICE device {name}: unsupported extra fields {' '.join(extra)!r}")
                if mname not in models:
                    raise err(f"diode {name}: unknown model {mname!r}")
                model = models[mname]
                if letter == "d" and not isinstance(model, Shockley):
                    raise err(f"diode {name}: model {mname!r} is not a D model (use an A device"
                              " for sidiode)")
                if letter == "a" and not isinstance(model, PiecewiseLinear):
                    raise err(f"XSPICE device {name}: model {mname!r} is not a sidiode model")
                circ.add_diode(name, anode, cathode, model, mname)
                used_models.add(mname)
            elif letter in ("v", "i"):
                kind = "voltage source" if letter == "v" else "current source"
                if len(t) < 3:
                    raise err(f"{kind} {name}: expected '{letter.upper()} name n+ n- [DC] value'")
                npos, nneg = t[1], t[2]
                value = _source_value(t[3:], err, f"{kind} {name}")
                gpos, gneg = npos in _GROUND, nneg in _GROUND
                if not (gpos or gneg):
                    raise err(f"{kind} {name}: not supported: a source between two non-ground"
                              f" nodes ({npos}, {nneg})")
                if gpos and gneg:
                    raise err(f"{kind} {name}: both terminals are ground")
                if letter == "v":
                    # V(n+) - V(n-) = value
                    node, val = (npos, value) if gneg else (nneg, -value)
                    circ.add_voltage_source(name, node, val)
                else:
                    # current flows from n+ through the source to n-: injected into n-
                    node, val = (nneg, value) if gpos else (npos, -value)
                    circ.add_current_source(name, node, val)
            else:
                raise err(f"element {name!r}: element type {letter.upper()!r} is not supported"
                          " (only R, D, A (sidiode), V and I)")
        except CircuitError as exc:
            raise err(str(exc)) from None
    # the temperature dependence of every diode model in use, at this circuit's temperatures:
    # a model whose IS(T) leaves the float range is refused here, naming its line
    for mname in sorted(used_models, key=lambda n: model_where[n]):
        model = models[mname]
        if not isinstance(model, Shockley):
            continue
        try:
            model.params(circ.temp, circ.tnom, circ.gmin)
        except CircuitError as exc:
            set_at = [f"{key} set at {option_where[key]}" for key in ("temp", "tnom")
                      if key in option_where]
            note = f" ({', '.join(set_at)})" if set_at else ""
            raise NetlistError(f"{model_where[mname]}: model {mname}: {exc}{note}") from None
    return circ


def _option_value(key, token, where, what=".options"):
    """A gmin (S, >= 0) or temp / tnom (degC, above absolute zero) value."""
    val = float(_parse_exact(token, where))
    if key == "gmin" and val < 0:
        raise NetlistError(f"{where}: {what}: gmin={token} must be >= 0 S")
    if key in ("temp", "tnom") and not val + KELVIN > 0:
        name = "temperature" if what == ".temp" else key
        raise NetlistError(f"{where}: {what}: {name} {token} degC is at or below absolute zero"
                           f" (-{KELVIN} degC)")
    return val


def _amplifiers(elements):
    """Find bidirectional amplifiers written as E (VCVS) + 0 V sense source + F (CCCS).

    Returns ({id(E statement): (inp, out, gain)}, {ids of the V and F statements they use}).
    """
    by_name = {st.tokens[0]: st for st in elements}
    amps, consumed = {}, set()
    for st in elements:
        t = st.tokens
        if t[0][0] != "e" or len(t) != 6 or t[2] not in _GROUND or t[4] not in _GROUND:
            continue
        q, inp, gain_tok = t[1], t[3], t[5]
        sense = by_name.get("v" + t[0][1:] + "_s")
        ctl = by_name.get("f" + t[0][1:])
        if sense is None or ctl is None:
            continue
        vs, ft = sense.tokens, ctl.tokens
        vals = [x for x in vs[3:] if x != "dc"]
        if len(vs) < 4 or vs[1] != q or len(vals) != 1 or float(_parse_exact(vals[0], sense.where)) != 0.0:
            continue
        if len(ft) != 5 or ft[1] != inp or ft[2] not in _GROUND or ft[3] != vs[0]:
            continue
        gain = float(_parse_exact(gain_tok, st.where))
        if float(_parse_exact(ft[4], ctl.where)) != gain:
            continue
        users = [o for o in elements if o is not st and o is not sense and q in o.tokens[1:3]]
        if users:
            continue
        amps[id(st)] = (inp, vs[2], gain)
        consumed.update((id(sense), id(ctl)))
    return amps, consumed


def parse_netlist(text: str, source: str = "<string>", *, path: str | None = None) -> Circuit:
    """Parse netlist ``text`` (first line: title). ``source`` names it in error messages;
    ``path`` (the file it came from) anchors relative ``.include`` paths (default: the current
    directory). A ``text`` that is not a str (None, bytes, ...) is a TypeError."""
    if not isinstance(text, str):
        hint = (": decode the bytes first, or use read_netlist(path)"
                if isinstance(text, (bytes, bytearray)) else "")
        raise TypeError(f"parse_netlist: text must be a str (the netlist itself), got"
                        f" {type(text).__name__}{hint}")
    if not isinstance(source, str):
        raise TypeError(f"parse_netlist: source must be a str (a name for messages), got"
                        f" {type(source).__name__}")
    if path is not None:
        path = _path_arg("parse_netlist", path)
    if path is None and source != "<string>" and os.path.exists(source):
        path = source
    stack = frozenset({os.path.realpath(path)}) if path else frozenset()
    title, stmts = _read_statements(text, source, path, stack, has_title=True)
    return _build(title, stmts, source)


def read_netlist(path) -> Circuit:
    """Read a SPICE deck from ``path`` (``.include`` files relative to its directory).

    The file is decoded as UTF-8 (undecodable bytes become U+FFFD) with its line ends kept as
    they are (see "Line ends and white space" above). A ``path`` that is not a str or
    os.PathLike is a TypeError; a file that cannot be read is a :class:`NetlistError`."""
    path = _path_arg("read_netlist", path)
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            text = f.read()
    except OSError as exc:
        raise NetlistError(f"{path}: cannot read netlist: {exc.strerror or exc}") from None
    return parse_netlist(text, source=path, path=path)


def _path_arg(func, path):
    """A file system path argument as a str (TypeError for None, numbers, ...)."""
    try:
        out = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"{func}: path must be a str or os.PathLike, got"
                        f" {type(path).__name__}") from None
    if "\0" in out:
        raise NetlistError(f"{out!r}: cannot read netlist: the path contains a NUL character")
    return out


# -------------------------------------------------------------------------------------------
# Writing
# -------------------------------------------------------------------------------------------
_SAFE_NAME = re.compile(r"[a-z0-9_.:#!%&/\[\]<>|~^@?-][a-z0-9_.:#!%&/\[\]<>|~^@?+-]*\Z")


def _num(x) -> str:
    """Shortest decimal that reads back to the same float (Python's repr)."""
    x = float(x)
    if not math.isfinite(x):
        raise CircuitError(f"cannot write non-finite value {x!r} to a netlist")
    return repr(x)


def _resistance(g) -> str:
    """A resistance literal that :func:`parse_netlist` reads back to conductance ``g`` exactly."""
    r = 1.0 / g
    # the shortest repr of 1/g or of a neighbour (a few ulps away) usually round-trips
    for direction in (math.inf, 0.0):
        cand = r
        for _ in range(3):
            if 1.0 / cand == g:
                return repr(cand)
            cand = math.nextafter(cand, direction)
    # otherwise 25 significant digits of the exact 1/g: its reciprocal rounds back to g. All 25
    # are written, trailing zeros too: the reader takes the exact reciprocal only for literals
    # of more than 17 digits ('1e-5' for g = 1e5 would read back as 1 / 1e-05 = 99999.99999999999)
    return format(Context(prec=25).divide(Decimal(1), Decimal(g)), ".24e").lower()


def _check_name(kind, name):
    if not _SAFE_NAME.match(name) or name.startswith(("*", ".", "+")):
        raise CircuitError(f"cannot write {kind} name {name!r} to a SPICE netlist"
                           " (use letters, digits and _ . : - etc.)")
    return name


def _value(elem, sample):
    val = elem.value
    if isinstance(val, np.ndarray):
        if not -val.size <= sample < val.size:
            raise CircuitError(f"source {elem.name}: sample {sample} out of range for a batch of"
                               f" {val.size}")
        return float(val[sample])
    return float(val)


def write_netlist(circuit: Circuit, path=None, *, sample: int = 0, analysis: str = ".op",
                  sources: dict | None = None) -> str:
    """Write ``circuit`` as an ngspice deck; returns the text (and writes it to ``path`` if given).

    ``sample`` selects the entry written for batched (B,) source values; ``sources`` optionally
    overrides source values by element name (scalar or (B,), indexed by ``sample`` too).
    ``analysis`` is the analysis line (``.op`` by default; ``None`` or ``""`` for none).

    Values are written with ``repr`` (17 significant digits at most), so that
    :func:`parse_netlist` reads back bit-identical values; resistors are written as resistances
    chosen so that their reciprocal is exactly the stored conductance. Diode models are named
    by ``Diode.model_name``; distinct models that share a name get ``_2``, ``_3``, ... suffixes.
    Shockley ``imax`` (a numerical guard with no SPICE equivalent) is not written.
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"write_netlist: circuit must be a fastres Circuit, got"
                        f" {type(circuit).__name__}")
    if isinstance(sample, (bool, np.bool_)) or not isinstance(sample, numbers.Integral):
        raise TypeError(f"write_netlist: sample must be an integer, got {type(sample).__name__}")
    if sources is not None and not isinstance(sources, Mapping):
        raise TypeError(f"write_netlist: sources must be a dict of name -> value, got"
                        f" {type(sources).__name__}")
    sources = {str(k).lower(): v for k, v in (sources or {}).items()}
    for key in sources:
        if not isinstance(circuit.elements.get(key), (VoltageSource, CurrentSource)):
            raise CircuitError(f"write_netlist: no voltage or current source named {key!r}")
    title = " ".join(str(circuit.title).split()) or "fastres circuit"
    lines = [title]

    # model names: one per distinct model; a name reused by a different model is suffixed
    model_of = {}  # (type, model) -> written name
    used = {}  # name -> (type, model)
    for elem in circuit.elements.values():
        if not isinstance(elem, Diode):
            continue
        key = (type(elem.model), elem.model)
        if key in model_of:
            continue
        base = _check_name("model", str(elem.model_name).lower())
        name, k = base, 1
        while name in used and used[name] != key:
            k += 1
            name = f"{base}_{k}"
        used[name] = key
        model_of[key] = name

    body = []
    for elem in circuit.elements.values():
        ename = _check_name("element", elem.name)
        if isinstance(elem, Resistor):
            body.append(f"{ename} {_check_name('node', elem.a)} {_check_name('node', elem.b)}"
                        f" {_resistance(elem.g)}")
        elif isinstance(elem, Diode):
            mname = model_of[(type(elem.model), elem.model)]
            body.append(f"{ename} {_check_name('node', elem.anode)}"
                        f" {_check_name('node', elem.cathode)} {mname}")
        elif isinstance(elem, (VoltageSource, CurrentSource)):
            if elem.name in sources:
                tmp = VoltageSource(elem.name, elem.node, sources[elem.name])
                tmp.value = np.asarray(tmp.value, dtype=np.float64)
                if tmp.value.ndim == 0:
                    tmp.value = float(tmp.value)
                val = _value(tmp, sample)
            else:
                val = _value(elem, sample)
            node = _check_name("node", elem.node)
            if isinstance(elem, VoltageSource):
                body.append(f"{ename} {node} 0 DC {_num(val)}")
            else:  # injected into node: flows from ground (n+) through the source to node (n-)
                body.append(f"{ename} 0 {node} DC {_num(val)}")
        elif isinstance(elem, Amplifier):
            # V(q) = A V(inp); the 0 V source senses the current delivered into ``out``; the
            # F source draws A times that current out of ``inp``: an ideal bidirectional amplifier
            inp = _check_name("node", elem.inp)
            out = _check_name("node", elem.out)
            q = _check_name("node", f"{elem.out}_q")
            body.append(f"e{ename} {q} 0 {inp} 0 {_num(elem.gain)}")
            body.append(f"v{ename}_s {q} {out} DC 0")
            body.append(f"f{ename} {inp} 0 v{ename}_s {_num(elem.gain)}")
        else:  # pragma: no cover - Circuit only holds these kinds
            raise CircuitError(f"cannot write element {elem!r}")

    lines.append(f".options gmin={_num(circuit.gmin)} temp={_num(circuit.temp)}"
                 f" tnom={_num(circuit.tnom)}")
    for (mtype, model), name in model_of.items():
        if mtype is Shockley:
            params = (f"IS={_num(model.IS)} N={_num(model.N)} EG={_num(model.EG)}"
                      f" XTI={_num(model.XTI)}")
            if model.tnom is not None:
                params += f" TNOM={_num(model.tnom)}"
            lines.append(f".model {name} D({params})")
        else:
            vrev = VREV_INFINITE if math.isinf(model.vrev) else model.vrev
            lines.append(f".model {name} sidiode(ron={_num(model.ron)} roff={_num(model.roff)}"
                         f" vfwd={_num(model.vfwd)} vrev={_num(vrev)} rrev={_num(model.rrev)}"
                         " epsilon=0 revepsilon=0)")
    lines.extend(body)
    if analysis:
        lines.append(str(analysis).strip())
    lines.append(".end")
    text = "\n".join(lines) + "\n"
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return text
