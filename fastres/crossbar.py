"""Crossbar wires: each weight matrix laid out as crossbar tiles whose lines are resistors.

Topology (docs/crossbar.md has the drawing). Layer ``l``'s conductances ``W{l}`` (n_{l-1}, n_l)
and its bias ``B{l}`` (one more row, index n_{l-1}) form a matrix of ``n_{l-1} + 1`` rows and
``n_l`` columns, cut into tiles of at most ``tile x tile`` cells (``tile`` None: one tile).
In a tile every cell ``(i, j)`` has a row-line node and a column-line node with its device
between them. Neighbouring cells along a row line are joined by a wire segment of
``wire_ohms``; the line's first cell is joined to its driver (the previous layer's node, the
amplified one with gain, the input source or the bias source) by one more segment plus the
optional ``driver_ohms``. Column lines run the same way and their last cell joins the next
layer's node through one segment plus ``sense_ohms``. Every tile has its own lines: a row of
tiles shares its drivers, a column of tiles sums into the same neuron node.

The DC solve is exact. The wire network of a tile is linear and shared by every sample of a
minibatch, so it is reduced once per set of conductances to its terminals,
``P = K_tt - K_tw K_ww^-1 K_wt``: ``K_ww`` (symmetric positive definite) is eliminated by a
multifrontal Cholesky (:mod:`fastres.kernels.wires`) in a nested-dissection order of the
tile's grid with the line end nodes last (order and symbolic analysis once per tile shape,
:class:`TilePattern`); what is left at the root is ``K_ww`` reduced to the end nodes, which
gives ``P`` without any solve (:class:`TileFactor`; docs/crossbar.md says why this and not
SuperLU or CHOLMOD). Summed over tiles this makes a dense conductance matrix on the neuron
nodes (the wires couple the nodes of a layer with one another, so the layered parity
structure is lost and every free node is in the dense block ``K``), the input map that
replaces ``W1`` in the source currents, and the bias currents; Newton with the diodes then
runs in the unchanged Numba kernels on the neuron nodes only. The wire node voltages of any
state are recovered from the terminals by one back substitution
(:meth:`Reduction.drop_square_sums`), which gives each device's own voltage drop for the
EqProp update and the exact gradient.

Why this and not an iterative solve: the iterative line relaxation contracts by about
``g R T^2`` (device conductance times line resistance), above 1 for long lines at a few ohms,
and it would run per sample and phase; the reduction is paid once per weight update and the
per-sample Newton stays as fast as a dense solve of the neuron nodes. Measured costs are in
README "Crossbar wires".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg.lapack as _lapack
import scipy.sparse as sp

from .circuit import Circuit
from .config import ConfigError, TrainConfig, WiresConfig
from .eqprop import (EqProp, Phases, eqprop_states, exact_states, gradcheck_table, loss_and_grad,
                     relative_error)
from .errors import FastresError
from .kernels import wires as _wires
from .network import LayeredNetwork, NetworkSpec
from .solver import Newton, solve, source_currents
from .system import KernelSystem


@dataclass(frozen=True)
class Tile:
    """One crossbar tile of layer ``l``: matrix rows ``r0..r1-1`` (row ``n_{l-1}`` is the bias)
    and columns ``c0..c1-1``."""

    l: int
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self):
        return self.r1 - self.r0, self.c1 - self.c0


def tiles_of(n_rows, n_cols, tile, l=1) -> list:
    """The tiles (row blocks outer, column blocks inner) of an ``n_rows x n_cols`` matrix cut
    into blocks of at most ``tile x tile`` cells (``tile`` None: one tile)."""
    t_r = n_rows if tile is None else int(tile)
    t_c = n_cols if tile is None else int(tile)
    return [Tile(l, r, min(r + t_r, n_rows), c, min(c + t_c, n_cols))
            for r in range(0, n_rows, t_r) for c in range(0, n_cols, t_c)]


def tile_matrices(G, g_seg, g_row_end, g_col_end):
    """The linear network of one tile of device conductances ``G`` (Tr, Tc) in S.

    Wire nodes: row node of cell (a, b) at ``a Tc + b``, column node at ``Tr Tc + a Tc + b``.
    Terminals: row line ``a`` at ``a`` (its driver), column line ``b`` at ``Tr + b`` (its
    sense node). ``g_seg`` (S) a wire segment; ``g_row_end``, ``g_col_end`` (S) the joins of a
    line's first (row) or last (column) cell to its terminal. Returns ``(K_ww`` (nW, nW) CSC,
    ``K_wt`` (nW, nT) CSC, ``k_tt`` (nT,)) with nW = 2 Tr Tc, nT = Tr + Tc, so that the
    currents into the terminals are ``K_tt t + K_tw w`` (A) for voltages ``t``, ``w`` (V).
    The plain assembly (the reference for :class:`TilePattern`, which the solver uses)."""
    Tr, Tc = G.shape
    n = Tr * Tc
    R = np.arange(n).reshape(Tr, Tc)
    C = R + n
    ia, ib, g = [R.ravel()], [C.ravel()], [G.ravel()]          # devices
    ia.append(R[:, :-1].ravel()); ib.append(R[:, 1:].ravel())  # row segments
    g.append(np.full(Tr * (Tc - 1), g_seg))
    ia.append(C[:-1, :].ravel()); ib.append(C[1:, :].ravel())  # column segments
    g.append(np.full((Tr - 1) * Tc, g_seg))
    ia, ib, g = np.concatenate(ia), np.concatenate(ib), np.concatenate(g)
    diag = np.zeros(2 * n)
    np.add.at(diag, ia, g)
    np.add.at(diag, ib, g)
    diag[R[:, 0]] += g_row_end
    diag[C[-1, :]] += g_col_end
    rows = np.concatenate([ia, ib, np.arange(2 * n)])
    cols = np.concatenate([ib, ia, np.arange(2 * n)])
    vals = np.concatenate([-g, -g, diag])
    Kww = sp.csc_matrix((vals, (rows, cols)), shape=(2 * n, 2 * n))
    trow = np.concatenate([R[:, 0], C[-1, :]])
    tcol = np.arange(Tr + Tc)
    tval = np.concatenate([np.full(Tr, -g_row_end), np.full(Tc, -g_col_end)])
    Kwt = sp.csc_matrix((tval, (trow, tcol)), shape=(2 * n, Tr + Tc))
    ktt = np.concatenate([np.full(Tr, g_row_end), np.full(Tc, g_col_end)])
    return Kww, Kwt, ktt


#: cells of the leaf boxes of :func:`dissection_order` (measured on a 128 x 100 tile, CPU time,
#: medians, shared machine: factor 30, 24, 22, 25 ms and 40 wire solves 17, 14, 12, 12 ms for
#: leaves of 4, 8, 16, 32 cells)
LEAF_CELLS = 16


def dissection_order(Tr, Tc, leaf=LEAF_CELLS):
    """A nested-dissection elimination order ``order`` (2 Tr Tc,) of a tile's wire nodes
    (numbering as in :func:`tile_matrices`) with the lines' end nodes last: first row node of
    each row line (rows in order), then last column node of each column line (columns in
    order); and its fronts ``fstart`` (nf + 1,): front ``f`` is ``order[fstart[f]:fstart[f +
    1]]``, a leaf box or a cut, in post-order (each cut after the two halves it separates), the
    end nodes the last front (the root).

    Contracting every device makes the tile a ``Tr x Tc`` grid, so it is cut geometrically:
    a box of cells is split across its longer side, a vertical cut by the row nodes of its
    middle column (only row lines cross it), a horizontal cut by the column nodes of its
    middle row; both halves are ordered first (recursively), the cut after them. Boxes of at
    most ``leaf`` cells are ordered as they are. With the ends last, what the elimination
    leaves at the root is the wire network reduced to its end nodes (see :class:`TileFactor`)."""
    n = Tr * Tc
    ends = np.concatenate([np.arange(Tr) * Tc, n + (Tr - 1) * Tc + np.arange(Tc)])
    taken = np.zeros(2 * n, dtype=bool)
    taken[ends] = True
    out = []

    def free(nodes):
        nodes = nodes[~taken[nodes]]
        taken[nodes] = True
        return nodes

    stack = [(0, Tr, 0, Tc, False)]  # (box, cut already emitted): iterative post-order
    while stack:
        a0, a1, b0, b1, sep = stack.pop()
        if sep is not False:
            out.append(sep)
            continue
        if (a1 - a0) * (b1 - b0) <= leaf:
            cells = (np.arange(a0, a1)[:, None] * Tc + np.arange(b0, b1)[None, :]).ravel()
            out.append(free(np.concatenate([cells, cells + n])))
            continue
        if b1 - b0 >= a1 - a0:
            m = (b0 + b1) // 2
            cut = free(np.arange(a0, a1) * Tc + m)
            halves = [(a0, a1, b0, m), (a0, a1, m, b1)]
        else:
            m = (a0 + a1) // 2
            cut = free(n + m * Tc + np.arange(b0, b1))
            halves = [(a0, m, b0, b1), (m, a1, b0, b1)]
        stack.append((0, 0, 0, 0, cut))
        stack.extend((*h, False) for h in reversed(halves))
    out.append(ends)
    out = [o for o in out if o.size]
    order = np.concatenate(out)
    assert order.size == 2 * n
    return order, np.concatenate([[0], np.cumsum([o.size for o in out])])


def _update_stack(sizes, children):
    """Offsets of the fronts' update blocks (``sizes`` numbers each, fronts in post-order,
    ``children`` their lists) in a stack: front ``f``'s block is formed on top, ``uoff[f]``,
    above its children's, then moved down over them, ``ustk[f]``. Returns ``(uoff, ustk,
    peak)``; when the children are not the top of the stack (not a post-order), static
    offsets (``uoff = ustk``, the sum of the sizes)."""
    nf = sizes.size
    uoff = np.zeros(nf, dtype=np.int64)
    ustk = np.zeros(nf, dtype=np.int64)
    stack, sp, peak = [], 0, 0
    for f in range(nf):
        k = len(children[f])
        if k and sorted(stack[-k:]) != sorted(children[f]):
            static = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            return static[:-1], static[:-1].copy(), int(static[-1])
        if k:
            del stack[-k:]
        base = sp - int(sum(sizes[c] for c in children[f]))
        uoff[f], ustk[f] = sp, base
        peak = max(peak, sp + int(sizes[f]))
        sp = base + int(sizes[f])
        stack.append(f)
    return uoff, ustk, peak


class TilePattern:
    """The symbolic analysis of a ``Tr x Tc`` tile, done once per tile shape (every tile of
    that shape shares it); :meth:`values` fills in the numbers of one set of conductances.

    ``order`` (nW,) the wire node eliminated at each position (:func:`dissection_order`),
    ``inverse`` its inverse; ``indptr``, ``indices`` the CSC pattern of the permuted ``K_ww``;
    ``ends`` the positions (the last nT) of the line end nodes; the fronts of
    :mod:`fastres.kernels.wires`: ``fstart``, each front's update set (``uptr``, ``uidx``:
    the positions after the front coupled to it once the fronts before it are eliminated,
    i.e. its own columns' neighbours and its children's update sets), its children
    (``cptr``, ``cidx``: the fronts whose update set starts inside it), where the assembly
    puts each original entry (``vrel``, per CSC entry: the column in its front, -1 above the
    diagonal) and each child's update block (``urel``, per ``uidx`` entry: the position in
    the parent front), the offsets of its
    update block in the factor's scratch stack (``uoff`` where it is formed, ``ustk`` where
    its parent reads it; ``work_size`` numbers in all) and of its rows, the
    back-substitution factors (``moff``, m_F m numbers); ``prow``, ``pcol`` (Tr Tc,) the
    positions of each cell's row and column node."""

    def __init__(self, Tr, Tc):
        n = Tr * Tc
        N = 2 * n
        self.shape = (Tr, Tc)
        self.order, fstart = dissection_order(Tr, Tc)
        self.inverse = np.empty_like(self.order)
        self.inverse[self.order] = np.arange(N)
        R = np.arange(n).reshape(Tr, Tc)
        C = R + n
        ia = np.concatenate([R.ravel(), R[:, :-1].ravel(), C[:-1, :].ravel()])  # devices, row and
        ib = np.concatenate([C.ravel(), R[:, 1:].ravel(), C[1:, :].ravel()])    # column segments
        self._n_dev = n
        diag = np.arange(N)
        rows = self.inverse[np.concatenate([ia, ib, diag])]
        cols = self.inverse[np.concatenate([ib, ia, diag])]
        # COO entry k goes to CSC slot slot[k]: the pattern's numbers are bincounts
        key = cols.astype(np.int64) * N + rows
        uniq, self._slot = np.unique(key, return_inverse=True)
        self.indices = (uniq % N).astype(np.int64)
        self.indptr = np.searchsorted(uniq // N, np.arange(N + 1)).astype(np.int64)
        self._ia, self._ib = ia, ib
        self._row_first = R[:, 0].ravel()
        self._col_last = C[-1, :].ravel()
        self.ends = np.arange(N - Tr - Tc, N)
        # symbolic multifrontal analysis (post-order: children first)
        nf = fstart.size - 1
        front_of = np.repeat(np.arange(nf), np.diff(fstart))
        updates, children = [], [[] for _ in range(nf)]
        for f in range(nf):
            s0, s1 = fstart[f], fstart[f + 1]
            parts = [self.indices[self.indptr[s0]:self.indptr[s1]]] + [updates[c] for c in children[f]]
            u = np.unique(np.concatenate(parts))
            u = u[u >= s1]
            updates.append(u)
            if u.size:
                children[front_of[u[0]]].append(f)
        if updates[-1].size or nf and fstart[-1] - fstart[-2] != Tr + Tc:
            raise FastresError("crossbar tile analysis: the end nodes are not the last front")
        self.fstart = fstart.astype(np.int64)
        sizes_u = np.array([u.size for u in updates], dtype=np.int64)
        self.uptr = np.concatenate([[0], np.cumsum(sizes_u)]).astype(np.int64)
        self.uidx = np.concatenate(updates).astype(np.int64)
        self.cptr = np.concatenate([[0], np.cumsum([len(c) for c in children])]).astype(np.int64)
        self.cidx = np.array([c for ch in children for c in ch], dtype=np.int64)
        mF = np.diff(self.fstart)
        m = mF + sizes_u
        self.uoff, self.ustk, self.work_size = _update_stack(sizes_u * sizes_u, children)
        self.moff = np.concatenate([[0], np.cumsum(mF * m)]).astype(np.int64)
        # where the assembly puts each original entry and each child's update block
        self.vrel = np.full(self.indices.size, -1, dtype=np.int64)
        self.urel = np.zeros(self.uidx.size, dtype=np.int64)
        for f in range(nf):
            pos = np.concatenate([np.arange(fstart[f], fstart[f + 1]), updates[f]])
            p0, p1 = self.indptr[fstart[f]], self.indptr[fstart[f + 1]]
            col = np.repeat(np.arange(fstart[f], fstart[f + 1]), np.diff(self.indptr[fstart[f]:fstart[f + 1] + 1]))
            lower = self.indices[p0:p1] >= col
            self.vrel[p0:p1][lower] = np.searchsorted(pos, self.indices[p0:p1][lower])
            for c in children[f]:
                self.urel[self.uptr[c]:self.uptr[c + 1]] = np.searchsorted(pos, updates[c])
        self.prow = np.ascontiguousarray(self.inverse[:n])
        self.pcol = np.ascontiguousarray(self.inverse[n:])

    def values(self, G, g_seg, g_row_end, g_col_end) -> np.ndarray:
        """CSC numbers (nnz,) in S of the permuted ``K_ww`` for device conductances ``G``
        (Tr, Tc) S and the wire conductances (S) of :func:`tile_matrices`."""
        n = self._n_dev
        g = np.empty(self._ia.size)
        g[:n] = G.ravel()
        g[n:] = g_seg
        diag = np.bincount(self._ia, g, 2 * n) + np.bincount(self._ib, g, 2 * n)
        diag[self._row_first] += g_row_end
        diag[self._col_last] += g_col_end
        return np.bincount(self._slot, np.concatenate([-g, -g, diag]), self.indices.size)


class TileFactor:
    """A tile's factored wire network and its terminal matrix ``P`` (nT, nT) in S.

    ``K_ww`` is eliminated in the nested-dissection order of :func:`dissection_order` (line
    end nodes last) by the multifrontal kernel :func:`fastres.kernels.wires.factor` on the
    shape's :class:`TilePattern`. What is left at the root is ``S_ee``, ``K_ww`` reduced to
    its end nodes, and since each terminal joins the network only at its line's end node
    through ``g_end``, ``P = diag(g_end) - diag(g_end) S_ee^-1 diag(g_end)`` exactly, without
    any right-hand side. Wire voltages come from ``S_ee^-1`` and one back substitution
    (:func:`fastres.kernels.wires.back_substitute`). ``pattern``: the :class:`TilePattern` of
    the tile's shape (made here when not given; :class:`WiredNetwork` makes one per shape);
    ``work`` (at least ``pattern.work_size``,) scratch for the factor's update blocks, which the
    tiles of one :class:`Reduction` share (made here when not given)."""

    def __init__(self, tile: Tile, G, g_seg, g_row_end, g_col_end, pattern: TilePattern = None, work=None):
        self.tile = tile
        self.shape = Tr, Tc = G.shape
        pat = self.pattern = TilePattern(Tr, Tc) if pattern is None else pattern
        if pat.shape != (Tr, Tc):
            raise FastresError(f"crossbar tile {tile}: pattern of shape {pat.shape} for a {Tr} x {Tc} tile")
        nT = Tr + Tc
        vals = pat.values(G, g_seg, g_row_end, g_col_end)
        if work is None or work.size < pat.work_size:
            work = np.empty(pat.work_size)
        self.mstore = np.empty(pat.moff[-1])
        if not _wires.factor(vals, pat.indptr, pat.fstart, pat.uptr, pat.cptr, pat.cidx, pat.uoff, pat.ustk, work,
                             pat.moff, self.mstore, pat.vrel, pat.urel):
            raise FastresError(f"crossbar tile {tile}: its wire network is not positive definite; "
                               "are the conductances finite and >= 0?")
        S = self.mstore[pat.moff[-2]:pat.moff[-1]].reshape(nT, nT)
        # K_ww reduced to the end nodes (S, upper triangle), inverted through its Cholesky factor
        U, info = _lapack.dpotrf(S, lower=0, clean=1)
        if info == 0:
            U, info = _lapack.dpotri(U, lower=0)
        if info != 0:
            raise FastresError(f"crossbar tile {tile}: its wire network reduced to the line ends is not "
                               "positive definite; are the conductances finite and >= 0?")
        self.S_inv = np.triu(U) + np.triu(U, 1).T  # 1/S
        self.gend = np.concatenate([np.full(Tr, g_row_end), np.full(Tc, g_col_end)])  # S
        P = -self.gend[:, None] * self.S_inv * self.gend[None, :]
        P[np.diag_indices(nT)] += self.gend
        self.P = P

    def _permuted_voltages(self, t) -> np.ndarray:
        """Wire node voltages (nW, B) in V, in the elimination order, for terminals ``t`` (B, nT)."""
        pat = self.pattern
        w = np.empty((pat.order.size, t.shape[0]))
        w[pat.ends] = self.S_inv @ (self.gend[:, None] * t.T)
        _wires.back_substitute(pat.fstart, pat.uptr, pat.uidx, pat.moff, self.mstore, w)
        return w

    def wire_voltages(self, t) -> np.ndarray:
        """Wire node voltages (nW, B) in V for terminal voltages ``t`` (B, nT)."""
        return self._permuted_voltages(t)[self.pattern.inverse]

    def drop_square_sums(self, ta, tb) -> np.ndarray:
        """``sum_s dV_a^2 - dV_b^2`` (Tr, Tc) in V^2 over the samples of terminal voltages ``ta``
        and ``tb`` (B, nT) (two states), each device's own drop: one back substitution for both
        states, the squares summed by :func:`fastres.kernels.wires.drop_square_sums`."""
        pat = self.pattern
        w = self._permuted_voltages(np.concatenate([ta, tb]))
        out = np.empty(self.shape[0] * self.shape[1])
        _wires.drop_square_sums(w, pat.prow, pat.pcol, ta.shape[0], out)
        return out.reshape(self.shape)

    def drops(self, t) -> np.ndarray:
        """Each device's voltage drop, row node minus column node, (Tr, Tc, B) in V."""
        w = self.wire_voltages(t)
        n = self.shape[0] * self.shape[1]
        return (w[:n] - w[n:]).reshape(self.shape[0], self.shape[1], -1)


@dataclass(frozen=True)
class WireSpec:
    """Wire resistances (ohms) and the tile size (cells per side; None: one tile per matrix)."""

    wire_ohms: float = 0.0
    tile: int | None = None
    driver_ohms: float = 0.0
    sense_ohms: float = 0.0

    @classmethod
    def from_config(cls, cfg: WiresConfig) -> "WireSpec":
        return cls(cfg.wire_ohms, cfg.tile_cells(), cfg.driver_ohms, cfg.sense_ohms)

    @property
    def active(self) -> bool:
        return self.wire_ohms > 0

    def conductances(self):
        """``(g_seg, g_row_end, g_col_end)`` in S."""
        return (1.0 / self.wire_ohms, 1.0 / (self.wire_ohms + self.driver_ohms),
                1.0 / (self.wire_ohms + self.sense_ohms))


class Reduction:
    """The wires of every layer reduced to the neuron nodes for one set of conductances:
    ``factors[l]`` the :class:`TileFactor` list, ``GFF`` (nF, nF) S, ``b0`` (nF,) A, ``E1``
    (2 n_in, n_1) S the input map (the wired counterpart of ``W1`` in the source currents)."""

    def __init__(self, net: "WiredNetwork", params):
        self.net = net
        n = net.nodes_per_layer
        spec = net.spec
        g_seg, g_re, g_ce = net.wires.conductances()
        self.factors = {}
        nF = net.nF
        GFF = np.zeros((nF, nF))
        b0 = np.zeros(nF)
        E1 = np.zeros((n[0], n[1]))
        Vb = spec.bias_volts
        work = np.empty(max(p.work_size for p in net.patterns.values()))  # the factors' scratch
        for l in range(1, net.L + 1):
            mat = np.vstack([params[f"W{l}"], params[f"B{l}"][None, :]])
            A = net.gains[l]
            fs = []
            for t in net.tiles[l]:
                f = TileFactor(t, np.ascontiguousarray(mat[t.r0:t.r1, t.c0:t.c1]), g_seg, g_re, g_ce,
                               net.patterns[t.shape], work)
                fs.append(f)
                Tr = t.r1 - t.r0
                P = f.P
                Prr, Prc, Pcc = P[:Tr, :Tr], P[:Tr, Tr:], P[Tr:, Tr:]
                cidx = net.offset[l] + np.arange(t.c0, t.c1)
                GFF[np.ix_(cidx, cidx)] += Pcc
                rows = np.arange(t.r0, t.r1)
                bias = rows == n[l - 1]
                node = ~bias
                b0[cidx] -= Vb * Prc[bias].sum(axis=0)
                if l == 1:
                    E1[rows[node], t.c0:t.c1] -= Prc[node]
                    continue
                ridx = net.offset[l - 1] + rows[node]
                GFF[np.ix_(ridx, ridx)] += A * A * Prr[np.ix_(node, node)]
                GFF[np.ix_(ridx, cidx)] += A * Prc[node]
                GFF[np.ix_(cidx, ridx)] += A * Prc[node].T
                b0[ridx] -= A * Vb * Prr[np.ix_(node, bias)].sum(axis=1)
            self.factors[l] = fs
        self.GFF = GFF
        self.b0 = b0
        self.E1 = E1

    def terminals(self, U, x, t: Tile) -> np.ndarray:
        """Terminal voltages (B, nT) in V of tile ``t``: its row drivers (inputs ``U`` (B,
        2 n_in), the amplified previous layer of state ``x`` (B, nF), or the bias source),
        then its column nodes."""
        net = self.net
        n = net.nodes_per_layer
        B = x.shape[0]
        prev = U if t.l == 1 else net.gains[t.l] * net.layer(x, t.l - 1)
        rows = np.empty((B, t.r1 - t.r0))
        hi = min(t.r1, n[t.l - 1])
        rows[:, :hi - t.r0] = prev[:, t.r0:hi]
        rows[:, hi - t.r0:] = net.spec.bias_volts
        return np.concatenate([rows, net.layer(x, t.l)[:, t.c0:t.c1]], axis=1)

    def drop_square_sums(self, U, xa, xb) -> dict:
        """``sum_s dV_a^2 - dV_b^2`` over samples for every device (V^2), as
        ``{"W{l}": (n_{l-1}, n_l), "B{l}": (n_l,)}``, each device's own drop (row node minus
        column node) in states ``xa``, ``xb`` (B, nF) with inputs ``U`` (B, 2 n_in)."""
        n = self.net.nodes_per_layer
        out = {}
        for l, fs in self.factors.items():
            D = np.zeros((n[l - 1] + 1, n[l]))
            for f in fs:
                t = f.tile
                D[t.r0:t.r1, t.c0:t.c1] = f.drop_square_sums(self.terminals(U, xa, t), self.terminals(U, xb, t))
            out[f"W{l}"] = D[:-1]
            out[f"B{l}"] = D[-1]
        return out

    def named_wire_voltages(self, U, x) -> dict:
        """``{node name: (B,) V}`` of every cell's row and column node (names as in
        :meth:`WiredNetwork.to_circuit`) in states ``x`` (B, nF) with inputs ``U``."""
        out = {}
        for l, fs in self.factors.items():
            for f in fs:
                t = f.tile
                w = f.wire_voltages(self.terminals(U, x, t))
                Tr, Tc = f.shape
                for a in range(Tr):
                    for b in range(Tc):
                        i, j = t.r0 + a, t.c0 + b
                        out[f"r{l}_{i}_{j}"] = w[a * Tc + b]
                        out[f"c{l}_{i}_{j}"] = w[Tr * Tc + a * Tc + b]
        return out

    def worst_line_drop(self, U, x) -> float:
        """The largest IR drop (V) along any line in states ``x`` (B, nF): over every row line,
        |driver voltage - a cell's row node|, and over every column line, |a cell's column node
        - the neuron node it feeds|."""
        worst = 0.0
        for fs in self.factors.values():
            for f in fs:
                t = f.tile
                term = self.terminals(U, x, t)
                w = f.wire_voltages(term)
                Tr, Tc = f.shape
                n = Tr * Tc
                r = w[:n].reshape(Tr, Tc, -1)
                c = w[n:].reshape(Tr, Tc, -1)
                worst = max(worst, float(np.max(np.abs(r - term[:, :Tr].T[:, None, :]))),
                            float(np.max(np.abs(c - term[:, Tr:].T[None, :, :]))))
        return worst


class WiredNetwork(LayeredNetwork):
    """A :class:`~fastres.network.LayeredNetwork` whose weight matrices are crossbars with
    resistive lines (see the module docstring). Same parameters, node order and outputs; its
    systems have every free node in the dense block (the wires couple a layer's nodes)."""

    wired = True

    def __init__(self, spec: NetworkSpec, wires: WireSpec):
        super().__init__(spec)
        if not wires.active:
            raise ConfigError("a wired network needs wire_ohms > 0")
        self.wires = wires
        n = self.nodes_per_layer
        self.tiles = {l: tiles_of(n[l - 1] + 1, n[l], wires.tile, l) for l in range(1, self.L + 1)}
        #: the symbolic analysis of each tile shape, shared by its tiles and every update
        self.patterns = {s: TilePattern(*s) for s in sorted({t.shape for ts in self.tiles.values() for t in ts})}
        self._reductions = []  # (GFF array, Reduction) of the last two systems (factors are large)

    def linear_path(self, linear: str = "auto") -> str:
        if linear == "cg":
            raise ConfigError("solver.linear='cg' has no wired counterpart: the wires couple the "
                              "nodes of a layer; use auto or schur with wires")
        return "schur"

    def system(self, params, w1_colsum=None, dense=None) -> KernelSystem:
        """The reduced :class:`KernelSystem` of ``params`` (all free nodes dense, no E block);
        its :class:`Reduction` is kept for :meth:`reduction_of`."""
        red = Reduction(self, params)
        ks = KernelSystem(red.GFF, np.zeros((self.nF, 0)), np.zeros(0), red.b0, self.da, self.db,
                          self.dkind, self.dpar)
        self._reductions = [(red.GFF, red)] + self._reductions[:1]
        return ks

    def reduction_of(self, system: KernelSystem) -> Reduction:
        """The :class:`Reduction` behind a system made by :meth:`system`."""
        for G, red in self._reductions:
            if G is system.GKK:
                return red
        raise FastresError("this system was not built by the wired network (or is too old)")

    def is_diagonal_only(self, system) -> bool:
        return False

    def source_currents(self, U, params, system: KernelSystem) -> np.ndarray:
        """Free-node source currents (B, nF) in A: the reduced input map and bias currents."""
        red = self.reduction_of(system)
        return source_currents(U, np.ascontiguousarray(red.E1), self.offset[1], system.b0,
                               np.zeros((1, self.nF)))

    def initial_guess(self, b, params, system: KernelSystem) -> np.ndarray:
        """Feed-forward start (B, nF) V as in :class:`LayeredNetwork`, with the reduced
        conductances: each layer's diagonal and its coupling to the layer before."""
        G = system.GKK
        x = np.zeros_like(b)
        n = self.nodes_per_layer
        d = np.diag(G)
        for l in range(1, self.L + 1):
            o = self.offset[l]
            cur = b[:, o:o + n[l]].copy()
            if l >= 2:
                p = self.offset[l - 1]
                cur -= self.layer(x, l - 1) @ G[p:p + n[l - 1], o:o + n[l]]
            v = cur / d[o:o + n[l]]
            if l < self.L or self.spec.output_diodes:
                np.clip(v, *self.clip_range(l), out=v)
            x[:, o:o + n[l]] = v
        return x

    def factor_cache(self, B):
        from .solver import factor_cache
        return factor_cache(B, self.nF, self.da.shape[0])

    # -- the crossbar as a Circuit (every wire segment; SPICE export) --------------------------
    def _add_conductances(self, c: Circuit, l, src, dst, W, Bv):
        """Layer ``l`` as crossbar tiles (see the module docstring): every device between its
        cell's row node ``r{l}_{i}_{j}`` and column node ``c{l}_{i}_{j}`` (``i`` the matrix row,
        the bias row last), every wire segment (``sr``/``sc``), and the driver and sense
        resistances (``dr``/``ds``, through nodes ``d{l}_{i}_{j}``/``s{l}_{i}_{j}``) when set."""
        w = self.wires
        full = np.vstack([W, Bv[None, :]])
        drivers = list(src) + ["bias"]
        for t in self.tiles[l]:
            for i in range(t.r0, t.r1):
                for j in range(t.c0, t.c1):
                    name = f"w{l}_{i}_{j}" if i < len(src) else f"b{l}_{j}"
                    c.add_resistor(name, f"r{l}_{i}_{j}", f"c{l}_{i}_{j}", g=float(full[i, j]))
                    if j > t.c0:
                        c.add_resistor(f"sr{l}_{i}_{j}", f"r{l}_{i}_{j - 1}", f"r{l}_{i}_{j}", r=w.wire_ohms)
                    if i > t.r0:
                        c.add_resistor(f"sc{l}_{i}_{j}", f"c{l}_{i - 1}_{j}", f"c{l}_{i}_{j}", r=w.wire_ohms)
                # the row line's first segment from its driver
                first = f"r{l}_{i}_{t.c0}"
                if w.driver_ohms > 0:
                    c.add_resistor(f"dr{l}_{i}_{t.c0}", drivers[i], f"d{l}_{i}_{t.c0}", r=w.driver_ohms)
                    c.add_resistor(f"sr{l}_{i}_{t.c0}", f"d{l}_{i}_{t.c0}", first, r=w.wire_ohms)
                else:
                    c.add_resistor(f"sr{l}_{i}_{t.c0}", drivers[i], first, r=w.wire_ohms)
            for j in range(t.c0, t.c1):  # the column line's last segment to its neuron node
                last = f"c{l}_{t.r1 - 1}_{j}"
                if w.sense_ohms > 0:
                    c.add_resistor(f"sc{l}_{t.r1}_{j}", last, f"s{l}_{t.r1}_{j}", r=w.wire_ohms)
                    c.add_resistor(f"ds{l}_{t.r1}_{j}", f"s{l}_{t.r1}_{j}", dst[j], r=w.sense_ohms)
                else:
                    c.add_resistor(f"sc{l}_{t.r1}_{j}", last, dst[j], r=w.wire_ohms)


# -- learning with wires ---------------------------------------------------------------------
#: evaluations measure the worst line IR drop on this many (the first) samples: recovering
#: every wire node costs one solve per sample and tile
DROP_SAMPLES = 1000


def make_network(cfg: TrainConfig) -> LayeredNetwork:
    """The network of a run config: a :class:`WiredNetwork` when ``cfg.wires`` has wires,
    else the ideal :class:`~fastres.network.LayeredNetwork` (physical errors as ConfigError)."""
    net = LayeredNetwork.from_config(cfg.network)
    if not cfg.wires.active:
        return net
    return WiredNetwork(net.spec, WireSpec.from_config(cfg.wires))


def with_wires(cfg: TrainConfig, wire_ohms=None, tile=None) -> TrainConfig:
    """``cfg`` deployed on other wires: ``wire_ohms`` (ohm) and ``tile`` (cells, or "whole")
    replace the stored ones where given (``eval``/``export`` ``--wire-ohms R --tile T``)."""
    w = {}
    if wire_ohms is not None:
        w["wire_ohms"] = float(wire_ohms)
    if tile is not None:
        w["tile"] = parse_tile(tile)
    if not w:
        return cfg
    d = cfg.to_dict()["wires"]
    d.update(w)
    if d["wire_ohms"] == 0:
        if tile is not None:
            raise ConfigError(f"--tile {tile} needs crossbar wires: give --wire-ohms R > 0 as well")
        d["driver_ohms"] = d["sense_ohms"] = 0.0
    return cfg.replace(wires=d)


def parse_tile(text):
    """``--tile`` value: a positive integer or ``whole`` (None: one tile per matrix)."""
    if text is None or str(text).strip().lower() == "whole":
        return None
    try:
        v = int(str(text))
    except ValueError:
        raise ConfigError(f"--tile {text!r}: expected a number of cells (>= 1) or 'whole'") from None
    if v < 1:
        raise ConfigError(f"--tile {v}: a tile needs at least 1 x 1 cells (or 'whole')")
    return v


def wired_phases(net: WiredNetwork, system: KernelSystem, U, y, st, target_volts) -> Phases:
    """The counterpart of :func:`fastres.eqprop.phases_from_states` with wires: every device's
    ``sum_s dV_a^2 - dV_b^2`` from its own terminals' voltages (wire nodes recovered from the
    reduced states), in the terms' form ``row + col - 2 prod`` (``row``, ``col`` zero) and, for
    the fused input-layer update, as its factors with the identity in place of the samples
    (``grad = scale (col - 2 uT d)`` with ``uT = -D / 2``, ``d = I``, ``col = 0``)."""
    xa = st.xa
    if not st.ok.all():
        xa = xa.copy()
        xa[~st.ok] = st.xb[~st.ok]
    D = net.reduction_of(system).drop_square_sums(U, xa, st.xb)
    terms = {}
    for k, v in D.items():
        M = v.reshape(-1, v.shape[-1])
        terms[k] = (np.zeros(M.shape[0]), np.zeros(M.shape[1]), -0.5 * M)
    n1 = D["W1"].shape[1]
    first = (np.ascontiguousarray(-0.5 * D["W1"]), np.eye(n1), np.zeros(n1))
    C, _ = loss_and_grad(net.outputs(st.free), y, target_volts)
    n_ok = int(st.ok.sum())
    return Phases(terms, st.scale / max(n_ok, 1), st.free, C, st.stats, st.scale, n_ok, first)


def wired_gradient(net: WiredNetwork, params, X, y, target_volts, alg: Newton = Newton(), eq: EqProp = None,
                   rng=None) -> dict:
    """``dC/dparams`` (V^2/S, batch mean) of the wired network: exact (adjoint over every node,
    wire nodes included) when ``eq`` is None, else the EqProp estimate ``eq``."""
    system = net.system(params)
    prob = net.problem(params, X, system=system)
    if eq is None:
        st = exact_states(prob, y, target_volts, alg)
        if not st.ok.all():
            raise FastresError("adjoint solve failed: singular Jacobian or unconverged operating point")
    else:
        st = eqprop_states(prob, y, eq, target_volts, alg, rng)
    ph = wired_phases(net, system, prob.U, y, st, target_volts)
    return {k: ph.scale * (r[:, None] + c[None, :] - 2.0 * p).reshape(params[k].shape)
            for k, (r, c, p) in ph.terms.items()}


def wired_loss(net: WiredNetwork, params, X, y, target_volts, alg: Newton = Newton()) -> float:
    """Mean loss (V^2) of the wired network's operating points."""
    sol = solve(net.problem(params, X), alg)
    C, _ = loss_and_grad(net.outputs(sol.x), y, target_volts)
    return float(C.mean())


def wired_gradcheck(net: WiredNetwork, params, X, y, target_volts, beta, estimator="centered",
                    alg: Newton = Newton()) -> float:
    """Relative error of the EqProp estimate (``beta`` S) against the exact gradient, wired."""
    exact = wired_gradient(net, params, X, y, target_volts, alg)
    g = wired_gradient(net, params, X, y, target_volts, alg, EqProp(beta, estimator))
    return relative_error(g, exact)


@dataclass
class WiredEvaluation:
    """As :class:`fastres.evaluate.Evaluation`; ``power_sum`` (W) over devices and wires,
    ``worst_drop`` (V) the largest line IR drop (:meth:`Reduction.worst_line_drop`) over the
    samples it was measured on."""

    loss_sum: float
    pred: np.ndarray
    nonconverged: int
    power_sum: float = 0.0
    worst_drop: float = 0.0


def evaluate_wired(net: WiredNetwork, params, X, y, target_volts, alg: Newton, batch=10000,
                   drop_samples=None) -> WiredEvaluation:
    """Solve every sample of ``X`` (N, n_in) on the wired crossbar and score it against ``y``
    (N,). Static power: every linear element (devices and wire segments, from the tiles'
    terminal matrices) plus the diodes. The worst line IR drop is measured on the first
    ``drop_samples`` samples (None: all)."""
    from .kernels import power as _power
    from .solver import Status
    import numba
    system = net.system(params)
    red = net.reduction_of(system)
    loss_sum, preds, bad, power, worst = 0.0, [np.zeros(0, dtype=np.int64)], 0, 0.0, 0.0
    N = X.shape[0]
    nd = N if drop_samples is None else min(N, int(drop_samples))
    for s in range(0, N, batch):
        Xb = X[s:min(s + batch, N)]
        prob = net.problem(params, Xb, system=system)
        sol = solve(prob, alg, check=False)
        out = sol.outputs()
        C, _ = loss_and_grad(out, y[s:s + Xb.shape[0]], target_volts)
        loss_sum += float(C.sum())
        preds.append(np.argmax(out, axis=1))
        bad += int(np.sum(sol.status != Status.CONVERGED))
        for l, fs in red.factors.items():
            for f in fs:
                t = red.terminals(prob.U, sol.x, f.tile)
                power += float(np.einsum("si,ij,sj->", t, f.P, t))
        pd = np.empty(Xb.shape[0])
        _power.diode_power(np.ascontiguousarray(sol.x), net.vdfix, net.da, net.db, net.dkind, net.dpar, pd,
                           max(1, min(Xb.shape[0], numba.get_num_threads())))
        power += float(pd.sum())
        k = max(0, min(nd - s, Xb.shape[0]))
        for c0 in range(0, k, 500):
            c1 = min(c0 + 500, k)
            worst = max(worst, red.worst_line_drop(prob.U[c0:c1], sol.x[c0:c1]))
    return WiredEvaluation(loss_sum, np.concatenate(preds), bad, power, worst)


def wired_gradcheck_table(net: WiredNetwork, params, X, y, target_volts, betas=(1e-3, 1e-4, 1e-5, 1e-6),
                          n_fd=6, rng=None, alg: Newton = Newton()) -> dict:
    """:func:`fastres.eqprop.gradcheck` with wires (the same table): EqProp (one-sided,
    centered) against the exact gradient for each beta (relative to the mean output-node
    conductance), and finite differences of the loss against the exact gradient."""
    rng = np.random.default_rng(0) if rng is None else rng
    exact = wired_gradient(net, params, X, y, target_volts, alg)
    return gradcheck_table(
        params, exact,
        lambda beta, est: wired_gradient(net, params, X, y, target_volts, alg, EqProp(beta, est)),
        lambda p: wired_loss(net, p, X, y, target_volts, alg),
        net.L, betas, n_fd, rng)
