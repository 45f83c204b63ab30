"""fastres: fast DC simulation and Equilibrium-Propagation training of analog resistor/diode networks.

The package is layered; a module imports only from its own layer or below (tested, see
README "Architecture"): kernels <- solver (circuits, netlists) <- network <- learning
(estimators, optimisers, reducers) <- training <- analysis <- command line. Importing
``fastres`` loads the solver layer only; run files (h5py) load on first use of
``open_run`` / ``StoreError``.
"""
from .circuit import Circuit
from .compiled import CompiledCircuit
from .devices import PiecewiseLinear, Shockley, thermal_voltage
from .errors import CircuitError, ConvergenceError, FastresError, NetlistError
from .kernels.status import Status
from .solver import DCProblem, DCSolution, Newton, solve
from .system import KernelSystem

from .version import __version__

__all__ = [
    "Circuit", "CompiledCircuit", "Shockley", "PiecewiseLinear", "thermal_voltage",
    "DCProblem", "DCSolution", "Newton", "solve", "Status", "KernelSystem",
    "FastresError", "CircuitError", "ConvergenceError", "NetlistError", "StoreError", "open_run",
    "__version__",
]


def __getattr__(name):  # PEP 562: the HDF5 layer loads only when asked for
    if name == "open_run":
        from .analysis import open_run
        return open_run
    if name == "StoreError":
        from .store import StoreError
        return StoreError
    raise AttributeError(f"module 'fastres' has no attribute {name!r}")
