"""Compiler flags shared by the kernels (defined once here).

``FASTMATH`` is the ``fastmath=`` set of the kernels whose inner loops are dot products
(:mod:`stamping`, :mod:`linalg`). The kernels compiled without it (:mod:`newton`,
:mod:`adjoint`, :mod:`updates`) must stay without it: adding it would change their results. The
device functions of :mod:`devices` are inlined into their callers (``inline="always"``) and so
take the caller's flags.
"""

# Re-association lets LLVM vectorise the dot products; no nnan/ninf: NaN checks must survive.
FASTMATH = {"reassoc", "contract"}
