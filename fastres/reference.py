"""An independent plain-numpy DC solver: the reference the tests and benchmarks compare against.

:func:`reference_solve` shares nothing with the production solver except the :class:`Circuit`
data and the device parameter rows (``model.params(...)``): it builds the full nodal system
straight from the circuit's elements, evaluates the diode equations with vectorised numpy and
runs a textbook batched Newton iteration (dense ``np.linalg.solve`` of the full free-node
Jacobian, Armijo backtracking on the circuit's co-content). Clarity comes before speed.

Equations (units: V, A, S). With ``x`` the free-node voltages and ``u`` all node voltages
(ground = 0), the KCL residual of every free node (current leaving the node) is::

    r(x) = G_ff x + G_fx v_fix - i_inj + A i_d(v_d),     v_d = u[anode] - u[cathode]

``G`` is the resistor Laplacian, ``A`` the (free nodes x diodes) incidence matrix (+1 anode,
-1 cathode) and ``i_d`` the diode currents (anode -> cathode)::

    Shockley (params [IS_T, vte, gmin, vmax, 0]):
        v >= -3 vte : i = IS_T (exp(v / vte) - 1) + gmin v
        v <  -3 vte : i = -IS_T (1 + (3 vte / (e v))**3) + gmin v        (ngspice's cubic)
    PWL / XSPICE sidiode, epsilon = 0 (params [gon, goff, vfwd, vrev, grev]):
        v >= vfwd   : i = goff vfwd + gon (v - vfwd)
        v >  -vrev  : i = goff v
        otherwise   : i = -goff vrev + grev (v + vrev)

The Jacobian is ``J = G_ff + A diag(g_d) A^T`` with ``g_d = di_d/dv`` (S).

Above ``vmax = params[3]`` (where the current reaches the model's ``imax``, 1e6 A by default)
the exponential is continued by its tangent, so that the co-content stays finite from any start
(e.g. a 5 V source across a diode at the zero initial guess). That guard does not change any
solution it does not reach: a sample whose solution has a diode beyond ``vmax`` raises
:class:`~fastres.errors.ConvergenceError`.
"""
from __future__ import annotations

import math

import numpy as np

from .circuit import Circuit, CurrentSource, Diode, Resistor, VoltageSource
from .devices import PiecewiseLinear, Shockley
from .errors import CircuitError, ConvergenceError

__all__ = ["reference_solve"]

_ARMIJO = 1e-4
_MAX_HALVINGS = 60
# A Newton step below this (V) is taken in full without a line search: it lies deep in the
# quadratic-convergence region of every diode (vte >= ~1 mV), and the residual norm there may be
# at its round-off floor, where "sufficient decrease" cannot be measured.
_SMALL_STEP = 1e-9


def _source_values(circuit, sources):
    """Source values with overrides: ({name: (B,) array}, B)."""
    vals = {e.name: e.value for e in circuit.elements.values()
            if isinstance(e, (VoltageSource, CurrentSource))}
    for name, val in (sources or {}).items():
        key = str(name).strip().lower()
        if key not in vals:
            raise CircuitError(f"reference_solve: no voltage or current source named {name!r}")
        vals[key] = np.asarray(val, dtype=np.float64)
    sizes = {np.size(v) for v in vals.values() if np.ndim(v) == 1}
    if len(sizes) > 1:
        raise CircuitError(f"reference_solve: sources have different batch sizes {sorted(sizes)}")
    B = sizes.pop() if sizes else 1
    return {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (B,)) for k, v in vals.items()}, B


def _diode_eval(kind, p, v):
    """Diode current (A), conductance (S) and co-content (W), each (b, nD), at ``v`` (b, nD) in V.

    ``kind`` (nD,) is 0 for Shockley, 1 for PWL; ``p`` (nD, 5) the parameter rows. The
    co-content is ``phi(v) = integral_0^v i(u) du``; a convex function, since ``g >= 0``.
    """
    i = np.zeros_like(v)
    g = np.zeros_like(v)
    phi = np.zeros_like(v)
    sh = kind == 0
    if sh.any():
        vs = v[:, sh]
        IS, vte, gmin, vmax = p[sh, 0], p[sh, 1], p[sh, 2], p[sh, 3]
        fwd = vs >= -3.0 * vte
        vc = np.where(fwd, np.minimum(vs, vmax), 0.0)  # exponent argument, capped at vmax
        d = np.maximum(vs - vmax, 0.0)                  # distance beyond vmax (guard branch)
        ex = np.exp(vc / vte)
        vr = np.where(fwd, -1.0, vs)  # any negative value where the cubic is not used
        c3 = (3.0 * vte / math.e) ** 3
        i[:, sh] = np.where(fwd, IS * (ex * (1.0 + d / vte) - 1.0),
                            -IS * (1.0 + c3 / vr**3)) + gmin * vs
        g[:, sh] = np.where(fwd, IS * ex / vte, 3.0 * IS * c3 / vr**4) + gmin
        # forward: IS vte (e^(v/vte) - 1) - IS v (+ its tangent-continued form beyond vmax);
        # reverse: the integral of the cubic branch, continuous at v = -3 vte
        phi[:, sh] = np.where(
            fwd,
            IS * vte * np.expm1(vc / vte) - IS * vc + IS * (ex - 1.0) * d + 0.5 * IS * ex * d * d / vte,
            -IS * vs + 0.5 * IS * c3 / vr**2 - IS * vte * (1.0 + 0.5 * math.exp(-3.0)),
        ) + 0.5 * gmin * vs**2
    pw = ~sh
    if pw.any():
        vp = v[:, pw]
        gon, goff, vfwd, vrev, grev = (p[pw, k] for k in range(5))
        on = vp >= vfwd
        brk = vp <= -vrev
        vr = np.where(brk, vrev, 0.0)  # vrev = inf (no breakdown) never enters the arithmetic
        don = vp - vfwd
        drv = vp + vr
        i[:, pw] = np.where(on, goff * vfwd + gon * don,
                            np.where(brk, -goff * vr + grev * drv, goff * vp))
        g[:, pw] = np.where(on, gon, np.where(brk, grev, goff)) + 0.0 * vp
        phi[:, pw] = np.where(on, 0.5 * goff * vfwd**2 + goff * vfwd * don + 0.5 * gon * don**2,
                              np.where(brk, 0.5 * goff * vr**2 - goff * vr * drv + 0.5 * grev * drv**2,
                                       0.5 * goff * vp**2))
    return i, g, phi


class _System:
    """The nodal equations of one circuit (the batch-independent parts)."""

    def __init__(self, circuit: Circuit):
        self.nodes = circuit.nodes
        held = {}
        for e in circuit.of_type(VoltageSource):
            if e.node in held:
                raise CircuitError(f"node {e.node!r} is held by two voltage sources")
            held[e.node] = e.name
        self.free = [n for n in self.nodes if n not in held]
        self.fixed = list(held)                     # nodes held by a voltage source
        self.vsrc_of_fixed = [held[n] for n in self.fixed]
        if not self.free:
            raise CircuitError("reference_solve: every node is held by a voltage source")
        nF, nX = len(self.free), len(self.fixed)
        # column of each node in the full voltage vector u = [free | fixed | ground]
        col = {n: k for k, n in enumerate(self.free)}
        col.update({n: nF + k for k, n in enumerate(self.fixed)})
        col["0"] = nF + nX
        self.col = col
        n_all = nF + nX + 1

        # resistor Laplacian on all nodes (ground included, then its row/column dropped)
        res = circuit.of_type(Resistor)
        a = np.array([col[r.a] for r in res], dtype=np.int64)
        b = np.array([col[r.b] for r in res], dtype=np.int64)
        g = np.array([r.g for r in res], dtype=np.float64)
        L = np.zeros((n_all, n_all))
        np.add.at(L, (a, a), g)
        np.add.at(L, (b, b), g)
        np.add.at(L, (a, b), -g)
        np.add.at(L, (b, a), -g)
        self.Gff = L[:nF, :nF].copy()               # (nF, nF) S
        self.Gfx = L[:nF, nF:nF + nX].copy()        # (nF, nX) S

        # diodes: full incidence D (n_all, nD), params
        dio = circuit.of_type(Diode)
        nD = len(dio)
        self.D = np.zeros((n_all, nD))
        for k, d in enumerate(dio):
            self.D[col[d.anode], k] += 1.0
            self.D[col[d.cathode], k] -= 1.0
        self.D[n_all - 1] = 0.0                     # ground voltage is zero anyway
        self.A = self.D[:nF].copy()                 # (nF, nD) free-node incidence
        self.A2 = self.A**2                         # diagonal Jacobian stamps
        self.dkind = np.array([0 if isinstance(d.model, Shockley) else 1 for d in dio], dtype=np.int64)
        for d in dio:
            if not isinstance(d.model, (Shockley, PiecewiseLinear)):
                raise CircuitError(f"reference_solve: unsupported diode model {d.model!r}")
        self.dpar = np.array([d.model.params(temp=circuit.temp, tnom=circuit.tnom, gmin=circuit.gmin)
                              for d in dio], dtype=np.float64).reshape(nD, 5)
        # diodes between two distinct free nodes give off-diagonal Jacobian stamps
        both = [(k, col[d.anode], col[d.cathode]) for k, d in enumerate(dio)
                if col[d.anode] < nF and col[d.cathode] < nF and d.anode != d.cathode]
        self.off_k = np.array([t[0] for t in both], dtype=np.int64)
        self.off_a = np.array([t[1] for t in both], dtype=np.int64)
        self.off_c = np.array([t[2] for t in both], dtype=np.int64)
        self.isrc = [(e.name, col[e.node]) for e in circuit.of_type(CurrentSource)
                     if col[e.node] < nF]

    def evaluate(self, x, bconst, vdfix):
        """At free-node voltages ``x`` (b, nF) V: the linear part ``G_ff x + b`` (A) of the
        residual, the full KCL residual (A) (b, nF), the diode conductances (S) and co-contents
        (W), (b, nD). An overflowing exponential gives inf/nan, which the line search rejects."""
        vd = x @ self.A + vdfix
        with np.errstate(over="ignore", invalid="ignore"):
            i, g, phi = _diode_eval(self.dkind, self.dpar, vd)
            rlin = x @ self.Gff.T + bconst
            r = rlin + i @ self.A.T
        return rlin, r, g, phi

    def jacobian(self, g):
        """(b, nF, nF) Jacobian ``G_ff + A diag(g) A^T`` (S)."""
        b, n = g.shape[0], self.Gff.shape[0]
        J = np.broadcast_to(self.Gff, (b, n, n)).copy()
        idx = np.arange(n)
        J[:, idx, idx] += g @ self.A2.T
        if self.off_k.size:
            gk = g[:, self.off_k]
            np.subtract.at(J, (slice(None), self.off_a, self.off_c), gk)
            np.subtract.at(J, (slice(None), self.off_c, self.off_a), gk)
        return J


def _newton(sys, bconst, vdfix, tol, maxiter):
    """Damped Newton for one chunk of samples; returns free voltages (b, nF) and converged (b,).

    The operating point minimises the co-content ``E(x) = x.G_ff.x / 2 + b.x + sum phi_d(v_d)``
    (convex; its gradient is the residual, its Hessian the Jacobian), so the Newton step is a
    descent direction and backtracking (halving ``t``) until the Armijo condition
    ``E(x + t dx) - E(x) <= 1e-4 t r.dx`` holds converges from any start. The linear part of the
    energy change is computed exactly as ``t rlin.dx + t^2/2 dx.G.dx``; the diodes' part is a
    difference of co-contents, allowed a round-off slack of 16 eps sum|phi|.
    """
    eps = np.finfo(np.float64).eps
    nb, nF = bconst.shape
    x = np.zeros((nb, nF))
    done = np.zeros(nb, dtype=bool)
    rlin, r, g, phi = sys.evaluate(x, bconst, vdfix)
    for _ in range(maxiter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        xa, ba, vfa = x[act], bconst[act], vdfix[act]
        dx = np.linalg.solve(sys.jacobian(g[act]), -r[act][..., None])[..., 0]
        step = np.max(np.abs(dx), axis=1)
        slope = np.einsum("bi,bi->b", r[act], dx)                   # dE/dt at t = 0 (W), < 0
        s1 = np.einsum("bi,bi->b", rlin[act], dx)
        s2 = np.einsum("bi,ij,bj->b", dx, sys.Gff, dx)
        phi0 = phi[act]
        t = np.ones(act.size)
        ok = np.zeros(act.size, dtype=bool)
        new = [np.empty_like(a) for a in (xa, rlin[act], r[act], g[act], phi0)]
        todo = np.arange(act.size)
        for _ in range(_MAX_HALVINGS + 1):
            xt = xa[todo] + t[todo, None] * dx[todo]
            ev = sys.evaluate(xt, ba[todo], vfa[todo])
            tt = t[todo]
            with np.errstate(over="ignore", invalid="ignore"):
                dphi = (ev[3] - phi0[todo]).sum(axis=1)
                dE = tt * s1[todo] + 0.5 * tt * tt * s2[todo] + dphi
                slack = 16.0 * eps * (np.abs(ev[3]).sum(axis=1) + np.abs(phi0[todo]).sum(axis=1))
                acc = (dE <= _ARMIJO * tt * slope[todo] + slack) & np.isfinite(ev[1]).all(axis=1)
            # a tiny step is taken in full (deep in the quadratic region; see _SMALL_STEP)
            acc |= (tt == 1.0) & (step[todo] <= _SMALL_STEP)
            for arr, val in zip(new, (xt, *ev)):
                arr[todo] = val
            ok[todo] = acc
            todo = todo[~acc]
            if todo.size == 0:
                break
            t[todo] *= 0.5
        if todo.size:
            raise ConvergenceError(
                f"reference_solve: line search failed for {todo.size} samples", samples=act[todo])
        x[act], rlin[act], r[act], g[act], phi[act] = new
        done[act] = step < tol  # the undamped Newton step (taken in full): the distance left
    return x, done


def reference_solve(circuit, sources=None, *, tol=1e-13, maxiter=200, chunk=1024):
    """DC operating point of ``circuit`` for a batch of source values, in plain numpy.

    Parameters
    ----------
    circuit : :class:`~fastres.circuit.Circuit` (a :class:`CompiledCircuit` is accepted and its
        ``.circuit`` used; none of its matrices are).
    sources : ``{source name: value}`` overrides, each a scalar or an array of shape (B,) in V
        (voltage sources) or A (current sources); sources not given keep their circuit values.
    tol : convergence threshold (V): a sample stops when its (undamped, hence taken in full)
        Newton step ``max|dx|`` is below ``tol``.
    maxiter : Newton iterations per sample.
    chunk : samples solved together (bounds the (chunk, nF, nF) Jacobian's memory).

    Returns
    -------
    (nodes, V) : ``nodes`` the non-ground node names (``circuit.nodes`` order) and ``V`` the
        node voltages, shape (B, len(nodes)), in V (held nodes included).

    Raises :class:`~fastres.errors.ConvergenceError` when a sample does not converge, or its
    solution has a Shockley diode beyond the ``imax`` guard.
    """
    if not isinstance(circuit, Circuit):
        circuit = getattr(circuit, "circuit", None)
        if not isinstance(circuit, Circuit):
            raise TypeError("reference_solve needs a Circuit (or a CompiledCircuit)")
    sys = _System(circuit)
    vals, B = _source_values(circuit, sources)
    nF, nX = len(sys.free), len(sys.fixed)
    vfix = np.zeros((B, nX))
    for k, name in enumerate(sys.vsrc_of_fixed):
        vfix[:, k] = vals[name]
    inj = np.zeros((B, nF))
    for name, c in sys.isrc:
        inj[:, c] += vals[name]
    bconst = vfix @ sys.Gfx.T - inj                           # (B, nF) A
    vdfix = vfix @ sys.D[nF:nF + nX]                          # (B, nD) V: fixed part of v_d
    x = np.empty((B, nF))
    for s in range(0, B, max(1, int(chunk))):
        sl = slice(s, min(B, s + int(chunk)))
        xs, done = _newton(sys, bconst[sl], vdfix[sl], tol, maxiter)
        if not done.all():
            bad = np.flatnonzero(~done) + s
            raise ConvergenceError(
                f"reference_solve: {bad.size} samples did not converge in {maxiter} iterations"
                f" (first: sample {int(bad[0])})", samples=bad)
        x[sl] = xs
    sh = sys.dkind == 0
    if sh.any():
        beyond = ((x @ sys.A + vdfix)[:, sh] > sys.dpar[sh, 3]).any(axis=1)
        if beyond.any():
            bad = np.flatnonzero(beyond)
            raise ConvergenceError(
                f"reference_solve: {bad.size} samples have a Shockley diode beyond its imax guard"
                f" current (first: sample {int(bad[0])})", samples=bad)
    V = np.empty((B, len(sys.nodes)))
    for j, n in enumerate(sys.nodes):
        c = sys.col[n]
        V[:, j] = x[:, c] if c < nF else vfix[:, c - nF]
    return list(sys.nodes), V
