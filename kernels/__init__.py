"""Numba kernels of fastres (installed as ``fastres.kernels``).

Each module does one thing:

- :mod:`devices`  -- diode models: current, conductance, co-content (energy).
- :mod:`stamping` -- residual (KCL) and Jacobian assembly, Schur elimination.
- :mod:`linalg`   -- small dense Cholesky factor/solve used per sample.
- :mod:`newton`   -- damped Newton iteration with an energy line search, batched.
- :mod:`updates`  -- Equilibrium-Propagation conductance updates.

Kernels take only contiguous float64/int64 arrays and scalars.
"""
