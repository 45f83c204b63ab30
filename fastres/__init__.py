"""fastres: fast DC simulation and Equilibrium-Propagation training of analog resistor/diode networks."""
from .circuit import Circuit
from .compiled import CompiledCircuit
from .devices import PiecewiseLinear, Shockley, thermal_voltage
from .errors import CircuitError, ConvergenceError, FastresError, NetlistError
from .solve import DCProblem, DCSolution, Newton, solve
from .store import StoreError
from .analysis import open_run

__version__ = "0.1.0"

__all__ = [
    "Circuit", "CompiledCircuit", "Shockley", "PiecewiseLinear", "thermal_voltage",
    "DCProblem", "DCSolution", "Newton", "solve",
    "FastresError", "CircuitError", "ConvergenceError", "NetlistError", "StoreError", "open_run",
    "__version__",
]
