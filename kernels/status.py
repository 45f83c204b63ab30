"""Per-sample status codes of the Newton solver, with their human-readable texts.

The kernels write these codes as plain int64 values (one per sample); :class:`Status` names
them for Python code and carries a text for messages::

    Status(st[s]).text      # e.g. "iteration limit reached"

Pure Python: importing this module does not import Numba.
"""
import enum


class Status(enum.IntEnum):
    """Outcome of one sample's Newton solve (an ``int``: compares equal to the kernel's codes).

    ``Status.X.text`` is a short human-readable description.
    """

    CONVERGED = 0, "converged"
    MAXITER = 1, "iteration limit reached"
    LINESEARCH = 2, "line search failed (no energy decrease along the Newton step)"
    SINGULAR = 3, "singular or non-finite Jacobian/residual"
    BEYOND_IMAX = 4, "a Shockley diode carries more than its imax guard current"

    def __new__(cls, value, text):
        obj = int.__new__(cls, value)
        obj._value_ = value
        obj.text = text
        return obj
