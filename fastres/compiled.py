"""Compilation of a :class:`~fastres.circuit.Circuit` into the flat arrays the kernels use."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

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

    def source_values(self, sources=None, check=True):
        """Per-source values with overrides; returns (dict name -> float or (B,) array, B).

        ``sources`` maps a source name (any case) to a scalar or a (B,) array (V or A).
        ``check=False`` leaves the finiteness of the overrides to the caller
        (:meth:`source_rows` checks them in bulk, then looks closer only at a bad batch)."""
        values = {}
        for name in list(self.vsrc) + list(self.isrc):
            values[name] = self.circuit.elements[name].value
        for key, val in (sources or {}).items():
            name = str(key).lower()
            if name not in values:
                raise CircuitError(f"no voltage or current source named {name!r} in the circuit "
                                   f"(sources: {', '.join(values) or 'none'})")
            arr = np.asarray(val, dtype=np.float64)
            if arr.ndim > 1:
                raise CircuitError(f"source {name}: values must have shape (B,), got {arr.shape}")
            if check:
                _check_finite(name, arr)
            values[name] = arr
        B = None
        for name, val in values.items():
            if np.ndim(val) == 1:
                n = np.shape(val)[0]
                if B is not None and n != B:
                    raise CircuitError(f"source {name}: batch of {n} values, others have {B}")
                B = n
        return values, (1 if B is None else B)

    def source_rows(self, sources=None):
        """Held voltages and injected currents of a batch, in the layout that is cheapest to
        build from a dict of (B,) arrays: ``rows`` (nX, B) in V (row ``j`` the fixed column
        ``j``, row 0 ground at 0 V; one contiguous copy per source) and ``inj`` (B, nF) in A,
        or None when no current source feeds a free node. The values are checked for NaN and
        Inf in bulk (one sum over ``rows``); a bad batch raises naming its first bad source."""
        values, B = self.source_values(sources, check=False)
        rows = np.empty((len(self.fixed_nodes), B))
        rows[0] = 0.0
        for name, col in self.vsrc.items():
            rows[col] = values[name]
        inj = None
        for name, idx in self.isrc.items():
            if idx >= 0:
                if inj is None:
                    inj = np.zeros((B, self.nF))
                inj[:, idx] += values[name]
        with np.errstate(over="ignore", invalid="ignore"):
            total = rows.sum() + (0.0 if inj is None else inj.sum())
        if not np.isfinite(total) or any(self.isrc[str(k).lower()] < 0 for k in (sources or {})
                                         if str(k).lower() in self.isrc):
            for key, val in (sources or {}).items():
                _check_finite(str(key).lower(), np.asarray(val, dtype=np.float64))
        return rows, inj

    def prepare(self, sources=None):
        """Fixed voltages ``vfix`` (B, nX) in V and injected currents ``inj`` (B, nF) in A, both
        C-contiguous (see :meth:`source_rows` for the layout :class:`DCProblem` uses)."""
        rows, inj = self.source_rows(sources)
        if inj is None:
            inj = np.zeros((rows.shape[1], self.nF))
        return np.ascontiguousarray(rows.T), inj

    @property
    def source_block(self):
        """``(r0, r1, c0, c1, Pb)``: the fixed columns ``r0:r1`` and free nodes ``c0:c1`` that
        span every nonzero of :attr:`P`, and ``Pb = P[r0:r1, c0:c1]`` (S, C-contiguous), so
        the held voltages' currents are ``rows[r0:r1].T @ Pb`` into columns ``c0:c1`` (cached;
        empty ranges when no resistor joins a held node to a free one)."""
        if getattr(self, "_source_block", None) is None:
            r, c = np.nonzero(self.P)
            if r.size == 0:
                self._source_block = (0, 0, 0, 0, np.zeros((0, 0)))
            else:
                r0, r1, c0, c1 = int(r.min()), int(r.max()) + 1, int(c.min()), int(c.max()) + 1
                self._source_block = (r0, r1, c0, c1, np.ascontiguousarray(self.P[r0:r1, c0:c1]))
        return self._source_block

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
    def clipping_only(self) -> bool:
        """True when every diode joins a free node to a held one (a layered network's clipping
        diodes): the circuit is then its resistor network, whose solution is a good start,
        with diodes that only bound some node voltages (:func:`fastres.solver.linear_start`)."""
        nF = self.nF
        return bool(np.all((self.da < nF) != (self.db < nF)))

    @property
    def linear_factor(self):
        """``(L, inv_gEE)`` for :func:`fastres.solver.linear_start`: the lower Cholesky factor
        (nK, nK) of the resistor network's Schur complement ``GKK - GKE diag(1/gEE) GKE^T``
        (S) and ``1/gEE`` (nE,) in ohm; None where the resistors alone do not fix every free
        node (a node held only through diodes). Computed once, shared by every sample (cached)."""
        if getattr(self, "_linear_factor", False) is False:
            self._linear_factor = None
            if self.nF and np.all(self.gEE > 0) and np.all(np.isfinite(self.gEE)):
                inv = 1.0 / self.gEE
                S = self.GKK - (self.GKE * inv) @ self.GKE.T
                try:
                    L = np.linalg.cholesky(S) if self.nK else np.zeros((0, 0))
                except np.linalg.LinAlgError:
                    L = None
                if L is not None and np.all(np.isfinite(L)) and np.all(np.diag(L) > 0):
                    self._linear_factor = (np.ascontiguousarray(L), inv)
        return self._linear_factor

    @property
    def clipped_factor(self):
        """``(LK, ptr, idx, side, col)`` for :func:`fastres.solver.clipped_start`, or None unless
        every diode joins a node of ``E`` to a held node and :attr:`linear_factor` exists:
        ``LK`` (nK, nK) the lower Cholesky factor of ``GKK`` (S^1/2); the diodes of ``E`` node
        ``e`` are ``idx[ptr[e]:ptr[e + 1]]`` (int64), ``side`` +1 where that node is the
        anode, -1 the cathode, and ``col`` the column of ``vdfix`` holding the other end
        (see :func:`fastres.kernels.guess.clipped_start_range`). Cached."""
        if getattr(self, "_clipped_factor", False) is False:
            self._clipped_factor = None
            nK, nF = self.nK, self.nF
            da, db = self.da, self.db
            a_in_e = (da >= nK) & (da < nF)
            b_in_e = (db >= nK) & (db < nF)
            fits = (a_in_e & (db >= nF)) | (b_in_e & (da >= nF))
            if self.linear_factor is not None and da.size and np.all(fits):
                try:
                    LK = np.linalg.cholesky(self.GKK) if nK else np.zeros((0, 0))
                except np.linalg.LinAlgError:
                    LK = None
                if LK is not None and np.all(np.isfinite(LK)):
                    node = np.where(a_in_e, da, db) - nK
                    idx = np.argsort(node, kind="stable").astype(np.int64)
                    ptr = np.zeros(self.nE + 1, dtype=np.int64)
                    np.cumsum(np.bincount(node, minlength=self.nE), out=ptr[1:])
                    side = np.where(a_in_e[idx], 1, -1).astype(np.int64)
                    col = (np.where(a_in_e[idx], db[idx], da[idx]) - nF).astype(np.int64)
                    self._clipped_factor = (np.ascontiguousarray(LK), ptr, idx, side, col)
        return self._clipped_factor

    @property
    def slots(self) -> np.ndarray:
        """For each node of ``nodes``: free index (>= 0) or ``-(fixed column) - 1`` (cached)."""
        if getattr(self, "_slots", None) is None:
            self._slots = self._node_slots()
        return self._slots

    def _node_slots(self):
        free = {n: i for i, n in enumerate(self.free_nodes)}
        fixed = {n: j for j, n in enumerate(self.fixed_nodes)}
        alias = getattr(self, "_alias", None)  # set by compile_circuit
        if alias is None:
            alias = {a.out: a.inp for a in self.circuit.of_type(Amplifier)}
        base = [alias.get(n, n) for n in self.nodes]
        return np.array([free[n] if n in free else -fixed[n] - 1 for n in base], dtype=np.int64)


def _check_finite(name, arr):
    """Raise :class:`CircuitError` naming source ``name`` if ``arr`` holds NaN or Inf (one sum
    first; only a non-finite sum, which a finite overflow can also give, looks closer)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if not np.isfinite(total) and not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(np.atleast_1d(arr)))[:5]
        raise CircuitError(f"source {name}: NaN or Inf value (samples {bad.tolist()})")


def _floating_nodes(nodes, fixed, edges):
    """Nodes with no DC path (resistor/diode) to ground or a voltage source, in ``nodes`` order.

    ``edges``: (ia, ib) int arrays of node indices into ``nodes``, ``len(nodes)`` being ground;
    ``fixed``: indices of the nodes held by voltage sources. Connected components of the graph
    (scipy.sparse.csgraph), the held nodes joined to ground."""
    n = len(nodes)
    ia, ib = edges
    fixed = np.asarray(fixed, dtype=np.int64)
    rows = np.concatenate([ia, fixed])
    cols = np.concatenate([ib, np.full(fixed.size, n, dtype=np.int64)])
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n + 1, n + 1))
    _, label = connected_components(graph, directed=False)
    return [nodes[i] for i in np.flatnonzero(label[:n] != label[n])]


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


def _by_type(circuit):
    """The circuit's elements grouped by type in one pass, each list in element order."""
    out = {cls: [] for cls in (VoltageSource, Resistor, Diode, Amplifier, CurrentSource)}
    for e in circuit.elements.values():
        lst = out.get(type(e))
        if lst is None:
            lst = next((v for k, v in out.items() if isinstance(e, k)), None)
        if lst is not None:
            lst.append(e)
    return out


def _accumulate(shape, index, values):
    """A zero array of ``shape`` with ``values`` added at ``index`` in the given order (the
    order of a Python loop of ``+=``, so the sums are the same to the last bit)."""
    out = np.zeros(shape)
    np.add.at(out, index, values)
    return out


def compile_circuit(circuit, structure: str = "auto") -> CompiledCircuit:
    """Check ``circuit`` and build its :class:`CompiledCircuit` (see the class docstring).

    The per-resistor work is done on index arrays (one pass over the elements to read their
    nodes and conductances), so a 784-100-10 deck of 79,400 resistors compiles in a fraction
    of a second; the sums are accumulated in element order, as a loop would."""
    if structure not in ("auto", "dense"):
        raise CircuitError(f"unknown structure {structure!r}: use 'auto' or 'dense'")
    if not (np.isfinite(circuit.gmin) and circuit.gmin >= 0):
        raise CircuitError(f"gmin={circuit.gmin!r} must be a finite number >= 0 S")
    nodes = circuit.nodes
    if not nodes:
        raise CircuitError("the circuit has no nodes")
    groups = _by_type(circuit)
    vs, res, dio, amps = (groups[VoltageSource], groups[Resistor], groups[Diode],
                          groups[Amplifier])
    held = {}
    for v in vs:
        if v.node in held:
            raise CircuitError(f"node {v.node!r} is held by two voltage sources ({held[v.node]}, {v.name})")
        held[v.node] = v.name
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
    for i in groups[CurrentSource]:
        if i.node in alias:
            raise CircuitError(f"current source {i.name}: node {i.node!r} is an amplifier output")

    def base(n):
        return alias.get(n, (n, 1.0))

    fixed_nodes = ["0"] + [v.node for v in vs]
    fixed_col = {n: j for j, n in enumerate(fixed_nodes)}
    g = np.array([r.g for r in res], dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(g) & (g > 0)))
    if bad.size:
        r = res[int(bad[0])]
        raise CircuitError(f"resistor {r.name}: conductance {r.g!r} S must be finite and > 0")
    nn = len(nodes)  # node index nn is ground
    nidx = {n: i for i, n in enumerate(nodes)}
    nidx["0"] = nn
    ra = np.array([nidx[r.a] for r in res], dtype=np.int64)
    rbn = np.array([nidx[r.b] for r in res], dtype=np.int64)
    dan = np.array([nidx[d.anode] for d in dio], dtype=np.int64)
    dbn = np.array([nidx[d.cathode] for d in dio], dtype=np.int64)
    amp_in = np.array([nidx[a.inp] for a in amps], dtype=np.int64)
    amp_out = np.array([nidx[a.out] for a in amps], dtype=np.int64)
    floating = _floating_nodes(nodes, [nidx[v.node] for v in vs],
                               (np.concatenate([ra, dan, amp_in]),
                                np.concatenate([rbn, dbn, amp_out])))
    if floating:
        shown = ", ".join(floating[:10]) + (" ..." if len(floating) > 10 else "")
        raise CircuitError(f"floating node(s) with no DC path to ground or a voltage source: {shown}")
    # may be empty: every node held (or an amplifier output of a held node); the solve is then
    # trivial, the held voltages (0 iterations, converged)
    free_all = [n for n in nodes if n not in fixed_col and n not in alias]
    # resistors in terms of base nodes (node indices): energy g/2 (sa V(pa) - sb V(pb))^2
    base_of = np.arange(nn + 1, dtype=np.int64)
    scale_of = np.ones(nn + 1)
    for out, (inp, gain) in alias.items():
        base_of[nidx[out]] = nidx[inp]
        scale_of[nidx[out]] = gain
    pa, sa, pb, sb = base_of[ra], scale_of[ra], base_of[rbn], scale_of[rbn]
    pos0 = np.full(nn + 1, -1, dtype=np.int64)  # node index -> position in free_all
    pos0[[nidx[n] for n in free_all]] = np.arange(len(free_all))
    adj = [set() for _ in free_all]
    forbidden = set()
    ea, eb = np.concatenate([pa, dan]), np.concatenate([pb, dbn])
    both = (pos0[ea] >= 0) & (pos0[eb] >= 0) & (ea != eb)
    for i, j in zip(pos0[ea[both]].tolist(), pos0[eb[both]].tolist()):
        adj[i].add(j)
        adj[j].add(i)
    for d in dio:
        if d.anode in nidx and d.cathode in nidx:
            i, j = pos0[nidx[d.anode]], pos0[nidx[d.cathode]]
            if i >= 0 and j >= 0 and i != j:
                forbidden.update((int(i), int(j)))
    E = _independent_set(free_all, adj, forbidden) if structure == "auto" else set()
    Knodes = [n for i, n in enumerate(free_all) if i not in E]
    Enodes = [n for i, n in enumerate(free_all) if i in E]
    free_nodes = Knodes + Enodes
    nK, nE = len(Knodes), len(Enodes)
    if nK * max(nE, 1) > 50_000_000:
        raise CircuitError(f"circuit too large for the dense solver ({nK} x {nE} coupling)")
    fidx = {n: i for i, n in enumerate(free_nodes)}
    nF, nX = nK + nE, len(fixed_nodes)
    fpos = np.full(nn + 1, -1, dtype=np.int64)  # node index -> free index (kernel order)
    fpos[[nidx[n] for n in free_nodes]] = np.arange(nF)
    fcol = np.full(nn + 1, -1, dtype=np.int64)  # node index -> fixed column
    fcol[[nidx[n] for n in fixed_nodes]] = np.arange(nX)
    fa, fb = fpos[pa], fpos[pb]
    same = pa == pb
    # diagonal: per resistor, (sa - sb)^2 g on a node joined to itself through an amplifier,
    # else sa^2 g on pa then sb^2 g on pb (free ones), in resistor order
    r_id = np.arange(g.size)
    m_same = same & (fa >= 0) & (sa != sb)
    m_a = ~same & (fa >= 0)
    m_b = ~same & (fb >= 0)
    d_r = np.concatenate([r_id[m_same], r_id[m_a], r_id[m_b]])
    d_sub = np.concatenate([np.zeros(m_same.sum() + m_a.sum(), np.int64),
                            np.ones(m_b.sum(), np.int64)])
    d_at = np.concatenate([fa[m_same], fa[m_a], fb[m_b]])
    d_val = np.concatenate([(sa[m_same] - sb[m_same]) ** 2 * g[m_same], sa[m_a] * sa[m_a] * g[m_a],
                            sb[m_b] * sb[m_b] * g[m_b]])
    order = np.lexsort((d_sub, d_r))
    dg = _accumulate(nF, d_at[order], d_val[order])
    cpl = sa * sb * g
    # free-free coupling: GKK (both in K, symmetric) or GKE (i in K, j in E)
    m_ff = ~same & (fa >= 0) & (fb >= 0)
    i_ff, j_ff = np.minimum(fa[m_ff], fb[m_ff]), np.maximum(fa[m_ff], fb[m_ff])
    c_ff = -cpl[m_ff]
    kk = j_ff < nK
    GKK = _accumulate((nK, nK), (np.concatenate([i_ff[kk], j_ff[kk]]),
                                 np.concatenate([j_ff[kk], i_ff[kk]])),
                      np.concatenate([c_ff[kk], c_ff[kk]]))
    GKK[np.arange(nK), np.arange(nK)] = dg[:nK]
    GKE = _accumulate((nK, nE), (i_ff[~kk], j_ff[~kk] - nK), c_ff[~kk])
    gEE = dg[nK:].copy()
    # free-fixed coupling
    m_fa = ~same & (fa >= 0) & (fb < 0)
    m_fb = ~same & (fa < 0) & (fb >= 0)
    x_r = np.concatenate([r_id[m_fa], r_id[m_fb]])
    order = np.argsort(x_r, kind="stable")
    GFX = _accumulate((nF, nX), (np.concatenate([fa[m_fa], fb[m_fb]])[order],
                                 np.concatenate([fcol[pb[m_fa]], fcol[pa[m_fb]]])[order]),
                      -np.concatenate([cpl[m_fa], cpl[m_fb]])[order])
    da, db, kinds, pars = [], [], [], []
    dfix = {}  # fixed column -> slot j (extended index nF + j)
    par_of = {}  # id(model) -> its parameter row (the circuit keeps the models alive)

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
        row = par_of.get(id(d.model))
        if row is None:
            row = par_of[id(d.model)] = d.model.params(temp=circuit.temp, tnom=circuit.tnom,
                                                   gmin=circuit.gmin)
        pars.append(row)
    dpar = np.array(pars, dtype=np.float64).reshape(-1, NPAR)
    vsrc = {v.name: fixed_col[v.node] for v in vs}
    isrc = {i.name: fidx.get(i.node, -1) for i in groups[CurrentSource]}
    scales = np.array([base(n)[1] for n in nodes], dtype=np.float64)
    cc = CompiledCircuit(
        circuit=circuit, nodes=nodes, free_nodes=free_nodes, fixed_nodes=fixed_nodes, nK=nK, nE=nE,
        GKK=GKK, GKE=GKE, gEE=gEE, GFX=GFX,
        da=np.array(da, dtype=np.int64), db=np.array(db, dtype=np.int64),
        dfix=np.array(list(dfix), dtype=np.int64),
        dkind=np.array(kinds, dtype=np.int64), dpar=np.ascontiguousarray(dpar), vsrc=vsrc, isrc=isrc,
        scales=scales)
    cc._alias = {out: inp for out, (inp, _) in alias.items()}
    return cc
