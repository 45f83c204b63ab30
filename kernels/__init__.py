"""Numba kernels of fastres (installed as ``fastres.kernels``).

Each module does one thing:

- :mod:`devices`  -- diode models: current, conductance, co-content (energy); one dispatcher
  per operation, the only code that tests a diode's kind.
- :mod:`stamping` -- residual (KCL) and Jacobian assembly, Schur elimination.
- :mod:`linalg`   -- small dense Cholesky factor/solve used per sample.
- :mod:`newton`   -- damped Newton iteration with an energy line search, batched.
- :mod:`adjoint`  -- linear solves with the Jacobian at converged states (exact gradients).
- :mod:`updates`  -- Equilibrium-Propagation conductance updates.
- :mod:`wires`    -- multifrontal elimination of a crossbar tile's wire network.
- :mod:`status`   -- the solver's per-sample status codes and their texts (pure Python).
- :mod:`flags`    -- the fastmath flags, defined once.
- :mod:`blocks`   -- the chunk bounds of the parallel loops, defined once.

Kernels take only contiguous float64/int64 arrays and scalars.
"""
