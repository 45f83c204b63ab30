"""Compilation of a :class:`~fastres.circuit.Circuit` into the flat arrays the kernels use."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .elements import Amplifier, CurrentSource, Diode, Resistor, VoltageSource
from .errors import CircuitError
from .kernels.devices import NPAR
from .system import KernelSystem


@dataclass
class CompiledCircuit:
    """Kernel arrays of a checked circuit.

    Attributes (``nF = nK + nE`` free nodes, ``nX`` fixed nodes, ``nD`` diodes):

    - ``nodes``: every non-ground node name; ``free_nodes``: the free nodes in kernel order
      (``K`` block first, then the independent set ``E``); ``fixed_nodes``: ``"0"`` then the
      nodes held by voltage sources.
    - ``GKK`` (nK, nK), ``GKE`` (nK, nE), ``gEE`` (nE,): resistor Jacobian on free nodes (S).
    - ``GFX`` (nF, nX): coupling of free to fixed nodes (S, entries ``-g``).
    - ``da, db`` (nD,) int64 diode anode/cathode as indices of the kernels' extended voltage
      vector: ``< nF`` a free node, ``nF + j`` the fixed column ``dfix[j]``; ``dkind`` (nD,)
      int64, ``dpar`` (nD, 5) float64 device parameters.
    - ``vsrc``: name -> fixed column; ``isrc``: name -> free index (-1 if on a fixed node).
    """

    circuit: object  # the fastres.circuit.Circuit compiled
    nodes: list
    free_nodes: list
    fixed_nodes: list
    nK: int
    nE: int
    GKK: np.ndarray
    GKE: np.ndarray
    gEE: np.ndarray
    GFX: np.ndarray
    da: np.ndarray
    db: np.ndarray
    dfix: np.ndarray
    dkind: np.ndarray
    dpar: np.ndarray
    vsrc: dict
    isrc: dict
    scales: np.ndarray  # (n_nodes,) voltage of each node = scale * its slot (amplifier outputs)

    @property
    def nF(self) -> int:
        return self.nK + self.nE

    def source_values(self, sources=None):
        """Per-source values with overrides; returns (dict name -> (B,) array, B)."""
        sources = {str(k).lower(): v for k, v in (sources or {}).items()}
        values = {}
        for name in list(self.vsrc) + list(self.isrc):
            values[name] = self.circuit.elements[name].value
        for name, val in sources.items():
            if name not in values:
                raise CircuitError(f"no voltage or current source named {name!r} in the circuit "
                                   f"(sources: {', '.join(values) or 'none'})")
            arr = np.asarray(val, dtype=np.float64)
            if arr.ndim > 1:
                raise CircuitError(f"source {name}: values must have shape (B,), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                bad = np.flatnonzero(~np.isfinite(np.atleast_1d(arr)))[:5]
                raise CircuitError(f"source {name}: NaN or Inf value (samples {bad.tolist()})")
            values[name] = arr
        B = None
        for name, val in values.items():
            n = np.ndim(val) and np.shape(val)[0]
            if np.ndim(val) == 1:
                if B is not None and n != B:
                    raise CircuitError(f"source {name}: batch of {n} values, others have {B}")
                B = n
        return values, (1 if B is None else B)

    def prepare(self, sources=None):
        """Fixed voltages ``vfix`` (B, nX) in V and injected currents ``inj`` (B, nF) in A."""
        values, B = self.source_values(sources)
        rows = np.zeros((len(self.fixed_nodes), B))  # filled row-wise, then transposed once
        for name, col in self.vsrc.items():
            rows[col] = values[name]
        vfix = np.ascontiguousarray(rows.T)
        inj = np.zeros((self.nF, B))
        for name, idx in self.isrc.items():
            if idx >= 0:
                inj[idx] += values[name]
        return vfix, np.ascontiguousarray(inj.T)

    @property
    def system(self):
        """The :class:`~fastres.solver.KernelSystem` of this circuit (cached)."""
        if getattr(self, "_system", None) is None:
            self._system = KernelSystem(self.GKK, self.GKE, self.gEE, np.zeros(self.nF), self.da,
                                        self.db, self.dkind, self.dpar)
        return self._system

    @property
    def P(self) -> np.ndarray:
        """(nX, nF) ``-GFX^T`` (S): source currents are ``inj + vfix @ P``."""
        if getattr(self, "_P", None) is None:
            self._P = np.ascontiguousarray(-self.GFX.T)
        return self._P

    @property
    def slots(self) -> np.ndarray:
        """For each node of ``nodes``: free index (>= 0) or ``-(fixed column) - 1`` (cached)."""
        if getattr(self, "_slots", None) is None:
            self._slots = self._node_slots()
        return self._slots

    def _node_slots(self):
        free = {n: i for i, n in enumerate(self.free_nodes)}
        fixed = {n: j for j, n in enumerate(self.fixed_nodes)}
        alias = {a.out: a.inp for a in self.circuit.of_type(Amplifier)}
        base = [alias.get(n, n) for n in self.nodes]
        return np.array([free[n] if n in free else -fixed[n] - 1 for n in base], dtype=np.int64)


def _floating_nodes(nodes, fixed, edges):
    """Nodes with no DC path (resistor/diode) to ground or a voltage source."""
    parent = {n: n for n in nodes}
    parent["0"] = "0"

    def find(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    for n in fixed:
        ra, rb = find(n), find("0")
        if ra != rb:
            parent[ra] = rb
    root = find("0")
    return [n for n in nodes if find(n) != root]


def _independent_set(free, adj, forbidden):
    """Greedy maximal independent set, lowest degree first (a whole layer in a layered net)."""
    order = sorted(range(len(free)), key=lambda i: (len(adj[i]), i))
    chosen = set()
    blocked = set(forbidden)
    for i in order:
        if i in blocked:
            continue
        chosen.add(i)
        blocked.update(adj[i])
        blocked.add(i)
    return chosen


def compile_circuit(circuit, structure: str = "auto") -> CompiledCircuit:
    if structure not in ("auto", "dense"):
        raise CircuitError(f"unknown structure {structure!r}: use 'auto' or 'dense'")
    if not (np.isfinite(circuit.gmin) and circuit.gmin >= 0):
        raise CircuitError(f"gmin={circuit.gmin!r} must be a finite number >= 0 S")
    nodes = circuit.nodes
    if not nodes:
        raise CircuitError("the circuit has no nodes")
    vs = circuit.of_type(VoltageSource)
    held = {}
    for v in vs:
        if v.node in held:
            raise CircuitError(f"node {v.node!r} is held by two voltage sources ({held[v.node]}, {v.name})")
        held[v.node] = v.name
    res = circuit.of_type(Resistor)
    dio = circuit.of_type(Diode)
    amps = circuit.of_type(Amplifier)
    # amplifier outputs are aliases: V(out) = gain * V(inp)
    alias = {}
    for a in amps:
        if a.out in alias or a.out in held:
            raise CircuitError(f"amplifier {a.name}: node {a.out!r} is already driven")
        alias[a.out] = (a.inp, a.gain)
    for a in amps:
        if a.inp in alias:
            raise CircuitError(f"amplifier {a.name}: input {a.inp!r} is another amplifier's output "
                               "(chained amplifiers are not supported)")
    for d in dio:
        for n in (d.anode, d.cathode):
            if n in alias:
                raise CircuitError(f"diode {d.name}: node {n!r} is an amplifier output; only "
                                   "resistors may attach to an amplifier output")
    for i in circuit.of_type(CurrentSource):
        if i.node in alias:
            raise CircuitError(f"current source {i.name}: node {i.node!r} is an amplifier output")

    def base(n):
        return alias.get(n, (n, 1.0))

    fixed_nodes = ["0"] + [v.node for v in vs]
    fixed_col = {n: j for j, n in enumerate(fixed_nodes)}
    for r in res:
        if not (np.isfinite(r.g) and r.g > 0):
            raise CircuitError(f"resistor {r.name}: conductance {r.g!r} S must be finite and > 0")
    floating = _floating_nodes(nodes, [v.node for v in vs],
                               [(r.a, r.b) for r in res] + [(d.anode, d.cathode) for d in dio]
                               + [(a.inp, a.out) for a in amps])
    if floating:
        shown = ", ".join(floating[:10]) + (" ..." if len(floating) > 10 else "")
        raise CircuitError(f"floating node(s) with no DC path to ground or a voltage source: {shown}")
    # may be empty: every node held (or an amplifier output of a held node); the solve is then
    # trivial, the held voltages (0 iterations, converged)
    free_all = [n for n in nodes if n not in fixed_col and n not in alias]
    # resistors in terms of base nodes: (pa, sa, pb, sb, g), energy g/2 (sa V(pa) - sb V(pb))^2
    rb = []
    for r in res:
        (pa, sa), (pb, sb) = base(r.a), base(r.b)
        rb.append((pa, sa, pb, sb, r.g))
    idx0 = {n: i for i, n in enumerate(free_all)}
    adj = [set() for _ in free_all]
    forbidden = set()
    for a, b in [(x[0], x[2]) for x in rb] + [(d.anode, d.cathode) for d in dio]:
        if a in idx0 and b in idx0 and a != b:
            adj[idx0[a]].add(idx0[b])
            adj[idx0[b]].add(idx0[a])
    for d in dio:
        if d.anode in idx0 and d.cathode in idx0 and d.anode != d.cathode:
            forbidden.update((idx0[d.anode], idx0[d.cathode]))
    E = _independent_set(free_all, adj, forbidden) if structure == "auto" else set()
    Knodes = [n for i, n in enumerate(free_all) if i not in E]
    Enodes = [n for i, n in enumerate(free_all) if i in E]
    free_nodes = Knodes + Enodes
    nK, nE = len(Knodes), len(Enodes)
    if nK * max(nE, 1) > 50_000_000:
        raise CircuitError(f"circuit too large for the dense solver ({nK} x {nE} coupling)")
    fidx = {n: i for i, n in enumerate(free_nodes)}
    nF, nX = nK + nE, len(fixed_nodes)
    GKK = np.zeros((nK, nK))
    GKE = np.zeros((nK, nE))
    gEE = np.zeros(nE)
    GFX = np.zeros((nF, nX))

    def diag(i, g):
        if i < nK:
            GKK[i, i] += g
        else:
            gEE[i - nK] += g

    for pa, sa, pb, sb, g in rb:
        if pa not in fidx and pb not in fidx:
            continue  # no effect on any free node voltage
        if pa == pb:
            if sa != sb:
                diag(fidx[pa], (sa - sb) ** 2 * g)
            continue
        if pa in fidx:
            diag(fidx[pa], sa * sa * g)
        if pb in fidx:
            diag(fidx[pb], sb * sb * g)
        if pa in fidx and pb in fidx:
            i, j = sorted((fidx[pa], fidx[pb]))
            if j < nK:
                GKK[i, j] -= sa * sb * g
                GKK[j, i] -= sa * sb * g
            else:  # i in K, j in E (E is independent)
                GKE[i, j - nK] -= sa * sb * g
        elif pa in fidx:
            GFX[fidx[pa], fixed_col[pb]] -= sa * sb * g
        else:
            GFX[fidx[pb], fixed_col[pa]] -= sa * sb * g
    da, db, kinds, pars = [], [], [], []
    dfix = {}  # fixed column -> slot j (extended index nF + j)

    def ext(node):
        if node in fidx:
            return fidx[node]
        return nF + dfix.setdefault(fixed_col[node], len(dfix))

    for d in dio:
        if d.anode == d.cathode or (d.anode not in fidx and d.cathode not in fidx):
            continue
        da.append(ext(d.anode))
        db.append(ext(d.cathode))
        kinds.append(d.model.kind)
        pars.append(d.model.params(temp=circuit.temp, tnom=circuit.tnom, gmin=circuit.gmin))
    dpar = np.array(pars, dtype=np.float64).reshape(-1, NPAR)
    vsrc = {v.name: fixed_col[v.node] for v in vs}
    isrc = {i.name: fidx.get(i.node, -1) for i in circuit.of_type(CurrentSource)}
    scales = np.array([base(n)[1] for n in nodes])
    return CompiledCircuit(
        circuit=circuit, nodes=nodes, free_nodes=free_nodes, fixed_nodes=fixed_nodes, nK=nK, nE=nE,
        GKK=GKK, GKE=GKE, gEE=gEE, GFX=GFX,
        da=np.array(da, dtype=np.int64), db=np.array(db, dtype=np.int64),
        dfix=np.array(list(dfix), dtype=np.int64),
        dkind=np.array(kinds, dtype=np.int64), dpar=np.ascontiguousarray(dpar), vsrc=vsrc, isrc=isrc,
        scales=scales)
