"""Solver status codes, named: a sample's Newton solve ends in one of these."""
import enum


class Status(enum.IntEnum):
    """Per-sample return code of the Newton kernels (the integer the kernels write)."""

    CONVERGED = 0
    MAXITER = 1
    LINESEARCH = 2
    SINGULAR = 3
    BEYOND_IMAX = 4
    ROUNDOFF = 5

    @property
    def text(self) -> str:
        return _TEXT[self]


_TEXT = {
    Status.CONVERGED: "converged",
    Status.MAXITER: "iteration limit reached",
    Status.LINESEARCH: "line search failed (no energy decrease along the Newton step)",
    Status.SINGULAR: "singular or non-finite Jacobian/residual",
    Status.BEYOND_IMAX: "a Shockley diode carries more than its imax guard current",
    Status.ROUNDOFF: ("stopped at the round-off limit: the residual test passes but the Newton "
                      "steps stall above the step tolerance (an ill-conditioned circuit); the "
                      "answer is as close as double precision resolves, which can be far looser "
                      "than reltol, so it is not reported as converged"),
}
