"""Exceptions raised by fastres; each message names the offending element, node, file or sample."""


class FastresError(Exception):
    """Base class of every fastres error."""


class CircuitError(FastresError, ValueError):
    """A circuit is malformed: bad value, unknown node, floating node, unsupported element."""


class NetlistError(FastresError, ValueError):
    """A SPICE netlist cannot be read; the message names the file and line."""


class ConvergenceError(FastresError, RuntimeError):
    """A DC solve did not converge for some samples (see ``.samples`` and ``.solution``)."""

    def __init__(self, message, samples=None, solution=None):
        super().__init__(message)
        self.samples = samples
        self.solution = solution


class ConfigError(FastresError, ValueError):
    """A bad configuration value (training options, solver settings); the message names the option."""


class UsageError(FastresError):
    """Bad command-line input that no other error class describes."""
