"""Crossbar wires (fastres.crossbar): the exact DC solve with every wire node against ngspice
and against the generic circuit solver, the ideal limit, the exact gradient with wires against
finite differences and EqProp against it, settings and the command line.

The ngspice tests are skipped without ngspice and mandatory with ``CI=true`` (conftest)."""
import json

import numpy as np
import pytest

from fastres import DCProblem, solve
from fastres.cli import main
from fastres.config import ConfigError, TrainConfig, WiresConfig
from fastres.crossbar import (EqProp, Tile, TileFactor, TilePattern, WiredNetwork, dissection_order,
                              make_network, tile_matrices, tiles_of, wired_gradient, wired_loss)
from fastres.netlist import read_netlist, write_netlist
from fastres.network import LayeredNetwork
from fastres.solver import Newton

OPTIONS = {"reltol": 1e-12, "vntol": 1e-15, "abstol": 1e-18, "gmin": 1e-12}
TOL = 1e-9


def wired(arch="64-16-10", diode="pwl", wire_ohms=2.5, tile=16, seed=0, B=2, **kw):
    cfg = TrainConfig(arch=arch, diode=diode, wire_ohms=wire_ohms, tile=tile, **kw)
    net = make_network(cfg)
    rng = np.random.default_rng(seed)
    p = net.init_params(rng)
    X = rng.uniform(0, 1, (B, net.spec.sizes[0]))
    return cfg, net, p, X


def all_voltages(net, p, X, sample=0):
    """{name: V} of every neuron node and every wire node of sample ``sample``."""
    system = net.system(p)
    prob = net.problem(p, X, system=system)
    x = solve(prob, Newton()).x
    v = dict(zip(net.node_names(), x[sample]))
    for k, w in net.reduction_of(system).named_wire_voltages(prob.U, x).items():
        v[k] = w[sample]
    return v


def max_diff(ours, theirs):
    assert set(ours) <= set(theirs)
    return max(abs(ours[k] - theirs[k]) for k in ours)


def test_update_stack_offsets():
    """The factor's scratch: in post-order each front's block is formed above its children's
    and moved down over them; when the children are not the top of the stack, static offsets."""
    from fastres.crossbar import _update_stack
    sizes = np.array([4, 9, 1, 16, 0])
    uoff, ustk, peak = _update_stack(sizes, [[], [], [0, 1], [2], [3]])  # 0, 1 -> 2 -> 3 -> 4
    assert list(uoff) == [0, 4, 13, 1, 16] and list(ustk) == [0, 4, 0, 0, 0] and peak == 17
    uoff, ustk, peak = _update_stack(sizes, [[], [], [0], [1, 2], [3]])  # 0 lies under 1's block
    assert list(uoff) == list(ustk) == [0, 4, 13, 14, 30] and peak == 30
    pat = TilePattern(128, 100)
    assert pat.work_size < 0.1 * np.sum(np.diff(pat.uptr) ** 2)  # a stack, not static offsets


def test_tiles_cover_the_matrix_once():
    for n_r, n_c, t in ((129, 16, 16), (17, 20, 16), (5, 3, None), (10, 10, 3)):
        seen = np.zeros((n_r, n_c), dtype=int)
        for tl in tiles_of(n_r, n_c, t):
            seen[tl.r0:tl.r1, tl.c0:tl.c1] += 1
            assert t is None or max(tl.shape) <= t
        assert np.all(seen == 1)


@pytest.mark.parametrize("Tr, Tc", [(1, 1), (1, 7), (6, 1), (3, 2), (16, 16), (17, 20)])
def test_dissection_order_is_a_permutation_with_the_ends_last(Tr, Tc):
    order, fstart = dissection_order(Tr, Tc)
    n = Tr * Tc
    assert fstart[0] == 0 and fstart[-1] == 2 * n and np.all(np.diff(fstart) > 0)
    assert fstart[-2] == 2 * n - Tr - Tc  # the end nodes are the root front
    assert np.array_equal(np.sort(order), np.arange(2 * n))
    ends = np.concatenate([np.arange(Tr) * Tc, n + (Tr - 1) * Tc + np.arange(Tc)])
    assert np.array_equal(order[-(Tr + Tc):], ends)


@pytest.mark.parametrize("Tr, Tc", [(1, 1), (1, 7), (6, 1), (3, 2), (16, 16), (17, 20)])
def test_tile_factor_against_the_dense_reduction(Tr, Tc):
    """The terminal matrix from the factor's trailing block and the wire voltages against
    ``P = K_tt - K_tw K_ww^-1 K_wt`` and ``w = -K_ww^-1 K_wt t`` in dense numpy on the plain
    assembly (wire 2.5 ohm, driver 20 ohm, sense 7 ohm, devices 1e-6..1e-4 S)."""
    rng = np.random.default_rng(Tr * 100 + Tc)
    G = rng.uniform(1e-6, 1e-4, (Tr, Tc))
    g, gr, gc = 1 / 2.5, 1 / 22.5, 1 / 9.5
    K, Kwt, ktt = (m.toarray() if hasattr(m, "toarray") else m for m in tile_matrices(G, g, gr, gc))
    pat = TilePattern(Tr, Tc)
    vals = pat.values(G, g, gr, gc)
    for j in range(2 * Tr * Tc):
        rows = pat.indices[pat.indptr[j]:pat.indptr[j + 1]]
        col = np.zeros(2 * Tr * Tc)
        col[rows] = vals[pat.indptr[j]:pat.indptr[j + 1]]
        assert np.array_equal(col, K[pat.order, pat.order[j]])  # the permuted K_ww, column j
    P = np.diag(ktt) - Kwt.T @ np.linalg.solve(K, Kwt)
    f = TileFactor(Tile(1, 0, Tr, 0, Tc), G, g, gr, gc)
    assert np.abs(f.P - P).max() <= 1e-11 * np.abs(P).max()
    t = rng.uniform(-1, 1, (3, Tr + Tc))
    w = np.linalg.solve(K, -Kwt @ t.T)
    assert np.abs(f.wire_voltages(t) - w).max() <= 1e-12
    d = f.drops(t)
    assert np.abs(d - (w[:Tr * Tc] - w[Tr * Tc:]).reshape(Tr, Tc, 3)).max() <= 1e-12
    ref = np.sum(d[:, :, :2] ** 2, axis=2) - np.sum(d[:, :, 2:] ** 2, axis=2)
    assert np.abs(f.drop_square_sums(t[:2], t[2:]) - ref).max() <= 1e-12


@pytest.mark.parametrize("blas_min", [1, 10**9])  # every front by LAPACK/BLAS, every front by loops
@pytest.mark.parametrize("Tr, Tc", [(1, 1), (2, 9), (16, 16), (17, 20)])
def test_wires_kernels_against_their_naive_twin(Tr, Tc, blas_min):
    """kernels/wires.py: the root's assembled matrix is K reduced to the end nodes, the back
    substitution gives the voltages of every other node (tests/naive.reduce_to_last), and the
    devices' drop square sums (tests/naive.drop_square_sums)."""
    from fastres.kernels import wires
    from naive import drop_square_sums, reduce_to_last
    rng = np.random.default_rng(7 * Tr + Tc)
    pat = TilePattern(Tr, Tc)
    vals = pat.values(rng.uniform(1e-6, 1e-4, (Tr, Tc)), 1.0, 0.5, 0.25)
    N, k = 2 * Tr * Tc, Tr + Tc
    K = np.zeros((N, N))
    for j in range(N):
        K[pat.indices[pat.indptr[j]:pat.indptr[j + 1]], j] = vals[pat.indptr[j]:pat.indptr[j + 1]]
    work, mstore = np.empty(pat.work_size), np.empty(pat.moff[-1])
    assert wires.factor(vals, pat.indptr, pat.fstart, pat.uptr, pat.cptr, pat.cidx, pat.uoff, pat.ustk, work,
                        pat.moff, mstore, pat.vrel, pat.urel, blas_min)
    S_ref, volts = reduce_to_last(K, k)
    S = np.triu(mstore[pat.moff[-2]:pat.moff[-1]].reshape(k, k))  # the kernel fills the upper triangle
    S = S + np.triu(S, 1).T
    assert np.abs(S - S_ref).max() <= 1e-12 * np.abs(S_ref).max()
    we = rng.uniform(-1, 1, (k, 5))
    w = np.empty((N, 5))
    w[N - k:] = we
    wires.back_substitute(pat.fstart, pat.uptr, pat.uidx, pat.moff, mstore, w, blas_min)
    assert np.abs(w - volts(we)).max() <= 1e-12
    out = np.empty(Tr * Tc)
    wires.drop_square_sums(w, pat.prow, pat.pcol, 2, out)
    assert np.abs(out - drop_square_sums(w, pat.prow, pat.pcol, 2)).max() <= 1e-12
    if N == k:
        return  # a 1 x 1 tile is all end nodes: nothing to eliminate
    vals[pat.indptr[0]:pat.indptr[1]][pat.indices[pat.indptr[0]:pat.indptr[1]] == 0] = -1.0  # not SPD: refused
    assert not wires.factor(vals, pat.indptr, pat.fstart, pat.uptr, pat.cptr, pat.cidx, pat.uoff, pat.ustk,
                            work, pat.moff, mstore, pat.vrel, pat.urel, blas_min)


@pytest.mark.ngspice
@pytest.mark.parametrize("diode", ["pwl", "shockley"])
@pytest.mark.parametrize("wire_ohms", [0.5, 2.5, 10.0])
def test_ngspice_64_16_10_every_wire_node(diode, wire_ohms):
    """64-16-10 on 16 x 16 tiles: every neuron and wire node within 1e-9 V of ngspice."""
    from fastres import ngspice
    _, net, p, X = wired(diode=diode, wire_ohms=wire_ohms)
    ours = all_voltages(net, p, X)
    deck = write_netlist(net.to_circuit(p, X[0]))
    ref = ngspice.run_op(deck, extra_options=OPTIONS)
    assert len(ours) == net.nF + 2 * (129 * 16 + 17 * 20)
    err = max_diff(ours, ref)
    assert err <= TOL, f"max |dV| = {err:.3e} V"
    assert max(abs(ours[f"r1_{i}_15"] - ref[f"xp{i}"]) for i in range(64)) > 1e-3  # real IR drops


@pytest.mark.ngspice
def test_ngspice_deep_gain_driver_sense_split_columns():
    """Two hidden layers with amplifiers (gain 2), driver and sense resistances, tiles that
    split both rows and columns (tile 3)."""
    from fastres import ngspice
    _, net, p, X = wired(arch="12-6-6-4", diode="shockley", wire_ohms=1.0, tile=3, gain=2.0,
                         driver_ohms=20.0, sense_ohms=7.0)
    ours = all_voltages(net, p, X)
    ref = ngspice.run_op(write_netlist(net.to_circuit(p, X[0])), extra_options=OPTIONS)
    err = max_diff(ours, ref)
    assert err <= TOL, f"max |dV| = {err:.3e} V"


@pytest.mark.parametrize("tile", [4, None])
def test_generic_circuit_solver_agrees(tile):
    """The exported circuit solved by fastres's generic DC solver (every wire node a node of
    its own) gives the same voltages (no ngspice needed)."""
    _, net, p, X = wired(arch="10-6-3", diode="shockley", wire_ohms=5.0, tile=tile, driver_ohms=3.0)
    ours = all_voltages(net, p, X, sample=1)
    c = net.to_circuit(p, X[1])
    sol = solve(DCProblem(c))
    theirs = {k: float(sol.voltage(k)[0]) for k in ours}
    assert max_diff(ours, theirs) <= TOL


def test_export_parses_back_with_every_segment(tmp_path):
    _, net, p, X = wired(arch="10-6-3", wire_ohms=2.0, tile=4)
    path = tmp_path / "w.cir"
    path.write_text(write_netlist(net.to_circuit(p, X[0])))
    c = read_netlist(path)
    names = [n.lower() for n in c.elements]
    cells = 21 * 6 + 7 * 6
    # per tile: Tr (Tc - 1) + (Tr - 1) Tc inner segments, Tr row ends, Tc column ends = 2 Tr Tc
    assert sum(n.startswith(("rsr", "rsc")) for n in names) == 2 * cells
    assert sum(n.startswith(("rw", "rb")) for n in names) == cells


def test_op_command_reads_the_deck(tmp_path, capsys):
    _, net, p, X = wired(arch="10-6-3", wire_ohms=2.0, tile=4)
    path = tmp_path / "w.cir"
    path.write_text(write_netlist(net.to_circuit(p, X[0])))
    assert main(["op", str(path), "--json"]) == 0
    theirs = json.loads(capsys.readouterr().out)
    assert max_diff(all_voltages(net, p, X), theirs) <= TOL


def test_small_wires_approach_the_ideal_network():
    """The wires' effect vanishes linearly with their resistance (first order in r_wire)."""
    cfg, _, p, X = wired(arch="20-8-4", tile=5)
    b = solve(LayeredNetwork.from_config(cfg.network).problem(p, X), Newton()).x
    d = []
    for r in (1e-3, 2e-3):
        net = make_network(cfg.replace(wire_ohms=r))
        d.append(np.abs(solve(net.problem(p, X), Newton()).x - b).max())
    assert 0 < d[0] < 1e-2 and 1.95 < d[1] / d[0] < 2.05


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_exact_gradient_matches_finite_differences(diode):
    cfg, net, p, X = wired(arch="12-6-4", diode=diode, wire_ohms=20.0, tile=4, B=3, seed=1)
    y = np.array([0, 3, 1])
    tv = cfg.estimator.target_volts
    g = wired_gradient(net, p, X, y, tv)
    rng = np.random.default_rng(2)
    for k in ("W1", "W2", "B1", "B2"):
        for _ in range(2):
            idx = tuple(int(rng.integers(n)) for n in p[k].shape)
            h = 1e-3 * p[k][idx]
            losses = []
            for s in (1, -1):
                q = {kk: v.copy() for kk, v in p.items()}
                q[k][idx] += s * h
                losses.append(wired_loss(net, q, X, y, tv))
            fd = (losses[0] - losses[1]) / (2 * h)
            assert abs(fd - g[k][idx]) <= 1e-5 * max(abs(fd), 1e-3 * np.abs(g[k]).max()), (k, idx, fd, g[k][idx])


@pytest.mark.parametrize("estimator,tol", [("centered", 1e-6), ("one-sided", 1e-3)])
def test_eqprop_matches_the_exact_gradient_with_wires(estimator, tol):
    cfg, net, p, X = wired(arch="16-8-4", wire_ohms=5.0, tile=4, B=4, seed=3)
    y = np.array([0, 1, 2, 3])
    tv = cfg.estimator.target_volts
    exact = wired_gradient(net, p, X, y, tv)
    beta = 1e-4 * float(np.mean(p["W2"].sum(axis=0) + p["B2"]))
    est = wired_gradient(net, p, X, y, tv, eq=EqProp(beta, estimator))
    num = sum(np.sum((est[k] - exact[k]) ** 2) for k in exact) ** 0.5
    den = sum(np.sum(exact[k] ** 2) for k in exact) ** 0.5
    assert num / den < tol
    ideal = LayeredNetwork.from_config(cfg.network)
    from fastres.eqprop import exact_gradient
    g0, _, _ = exact_gradient(ideal, p, X, y, tv)
    assert sum(np.sum((g0[k] - exact[k]) ** 2) for k in exact) ** 0.5 / den > 1e-3  # wires matter


@pytest.mark.parametrize("bad, msg", [({"wire_ohms": -1.0}, "must be >= 0"), ({"wire_ohms": 1.0, "tile": 0}, ">= 1"),
                                      ({"sense_ohms": 5.0}, "wire_ohms > 0"),
                                      ({"wire_ohms": float("nan")}, "finite")])
def test_bad_settings_are_config_errors(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        WiresConfig(**bad)


def test_cg_is_refused_with_wires():
    _, net, _, _ = wired(arch="10-6-3")
    with pytest.raises(ConfigError, match="cg"):
        net.linear_path("cg")


def test_absent_section_means_ideal_wires():
    d = TrainConfig().to_dict()
    del d["wires"]
    cfg = TrainConfig.from_dict(d)
    assert not cfg.wires.active and not make_network(cfg).wired
    assert isinstance(make_network(TrainConfig(arch="10-4-3", wire_ohms=1.0)), WiredNetwork)
    assert TrainConfig(wire_ohms=1.0, tile="whole").wires.tile is None


@pytest.mark.parametrize("flags", [["--wire-ohms", "-1"], ["--wire-ohms", "1", "--tile", "0"]])
def test_cli_bad_wires_exit_2(tmp_path, capsys, flags):
    code = main(["train", "--out", str(tmp_path / "x.h5"), "--n-train", "10", "--n-test", "10", *flags])
    assert code == 2
    assert "wires." in capsys.readouterr().err


TINY = ["--arch", "784-3-10", "--n-train", "40", "--n-test", "20", "--batch-size", "20", "--diode", "pwl",
        "--quiet"]


@pytest.fixture(scope="module")
def wired_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("wires") / "w.h5"
    assert main(["train", *TINY, "--epochs", "1", "--wire-ohms", "2", "--tile", "128",
                 "--out", str(path)]) == 0
    return path


def test_run_stores_wires_and_resume_keeps_them(wired_run, capsys):
    from fastres.analysis import open_run
    assert main(["train", "--resume", str(wired_run), "--epochs", "2", "--quiet"]) == 0
    run = open_run(wired_run)
    cfg = run.train_config()
    assert cfg.wires.wire_ohms == 2.0 and cfg.wires.tile == 128
    assert np.all(run.metrics["worst_line_drop_v"] > 0) and len(run.metrics["epoch"]) == 2
    assert main(["train", "--resume", str(wired_run), "--wire-ohms", "3"]) == 2


def test_eval_deploys_on_other_wires(wired_run, capsys):
    assert main(["eval", str(wired_run), "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert main(["eval", str(wired_run), "--json", "--wire-ohms", "0"]) == 0
    ideal = json.loads(capsys.readouterr().out)
    assert main(["eval", str(wired_run), "--json", "--wire-ohms", "8", "--tile", "whole"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert own["wire_ohms"] == 2.0 and own["tile"] == 128 and own["worst_line_drop_v"] > 0
    assert ideal["wire_ohms"] == 0.0 and ideal["worst_line_drop_v"] is None
    assert other["tile"] is None and other["worst_line_drop_v"] > own["worst_line_drop_v"]
    assert main(["eval", str(wired_run), "--tile", "0"]) == 2
    assert main(["eval", str(wired_run), "--wire-ohms", "0", "--tile", "16"]) == 2


@pytest.mark.ngspice
def test_export_of_a_wired_run_agrees_with_ngspice(wired_run, tmp_path, capsys):
    from fastres import ngspice
    out = tmp_path / "w.cir"
    assert main(["export", str(wired_run), str(out), "--sample", "0"]) == 0
    text = out.read_text()
    assert text.lower().count("\nrsr1_") == 1569 * 3 and text.lower().count("\nrsc1_") == 1569 * 3
    ref = ngspice.run_op(text, extra_options=OPTIONS)
    line = [ln for ln in text.splitlines() if ln.startswith("* fastres output voltages")][0]
    outs = [float(t.split(":")[1]) for t in line.split("(V): ")[1].split()]
    theirs = [ref[f"op{k}"] - ref[f"on{k}"] for k in range(10)]
    assert max(abs(a - b) for a, b in zip(outs, theirs)) <= TOL


def test_gradcheck_command_with_wires(capsys):
    code = main(["gradcheck", "--arch", "784-3-10", "--diode", "pwl", "--samples", "2", "--wire-ohms", "1",
                 "--tile", "128", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert min(r["centered"] for r in res["eqprop"]) < 1e-5
    assert max(r["rel_error"] for r in res["finite_difference"]) < 1e-3  # h = 1e-4 g: truncation, round-off
