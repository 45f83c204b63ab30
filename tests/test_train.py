"""EqProp training: update rule, gradient checks, learning, kill/resume bit-identity, bad config."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import naive
from fastres.cli import main
from fastres.datasets import Dataset
from fastres.eqprop import (EqProp, eqprop_gradient, exact_gradient, gradcheck, grads_from_terms,
                            relative_error, _drop_terms)
from fastres.kernels import updates
from fastres.network import LayeredNetwork, NetworkSpec
from fastres.store import RunStore
from fastres.config import ConfigError, TrainConfig, config_from_stored
from fastres.datasets import check_data
from fastres.solver import Newton, solve
from fastres.train import Trainer, run_epochs

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"


def solve_net(net, p, X, inj=None, x0=None, cache=None, check=True):
    """Free-node voltages (B, nF) V, iterations and statuses of a batch: ``solve`` of the
    network's problem, with currents ``inj`` (B, nF) A injected and start ``x0`` if given."""
    prob = net.problem(p, X, x0=x0, cache=cache)
    if inj is not None:
        prob = prob.nudged(inj, x0)
    sol = solve(prob, Newton(), check=check)
    return sol.x, sol.iterations, sol.status


def small_net(diode="shockley", gain=1.0, sizes=(12, 6, 3), paired=False):
    params = {} if diode == "shockley" else {"ron": 100.0, "roff": 1e8, "vfwd": 0.1}
    spec = NetworkSpec(sizes=sizes, diode=diode, diode_params=params, gain=gain, input_volts=20.0,
                       rail_lo=0.0, rail_hi=0.0, paired=paired)
    net = LayeredNetwork(spec)
    rng = np.random.default_rng(1)
    p = net.init_params(rng, 1e-6, 5e-5)
    X = rng.uniform(0, 1, (5, sizes[0]))
    y = rng.integers(0, sizes[-1], 5)
    return net, p, X, y


def test_drop_square_terms_match_naive():
    """updates.drop_square_terms: row[i] + col[j] - 2 prod[i, j] is the difference of squared
    voltage drops summed over the batch (naive.drop_square_difference)."""
    rng = np.random.default_rng(0)
    ua, ub = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    va, vb = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    row, col, prod = updates.drop_square_terms(ua, va, ub, vb)
    assert row.shape == (5,) and col.shape == (3,) and prod.shape == (5, 3)
    np.testing.assert_allclose(row[:, None] + col[None, :] - 2 * prod,
                               naive.drop_square_difference(ua, va, ub, vb), rtol=1e-12, atol=1e-12)


def test_fixed_from_terms_match_naive():
    """Source-driven conductances: from-voltages equal in both phases, with exact zeros
    (dark pixels) that the kernel skips."""
    rng = np.random.default_rng(2)
    u = rng.normal(size=(7, 6))
    u[rng.random(u.shape) < 0.6] = 0.0
    va, vb = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    row, col, prod = updates.fixed_from_terms(u, va, vb)
    assert np.all(row == 0.0)
    np.testing.assert_allclose(row[:, None] + col[None, :] - 2 * prod,
                               naive.drop_square_difference(u, va, u, vb), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fixed_from_step_matches_naive_and_any_row_split(momentum):
    """The fused input-layer step: naive.sgd_step on the gradient materialised by
    naive.drop_square_difference (new conductances, momentum and column sums), and
    bit-identical whichever way the rows are cut into blocks (threads, MPI ranks)."""
    rng = np.random.default_rng(3)
    u = rng.normal(size=(7, 9)) * 100
    u[rng.random(u.shape) < 0.6] = 0.0
    va, vb = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    W0 = rng.uniform(1e-6, 1e-4, (9, 4))
    W0[0, 0], W0[1, 1] = 2e-6, 8e-5  # at the bounds: the clip must hold them there
    vel0 = rng.normal(size=(9, 4)) * 1e-3
    grad = 0.3 * naive.drop_square_difference(u, va, u, vb)
    W_ref, v_ref, colsum_ref = naive.sgd_step(W0, grad, vel0, 1e-9, momentum, 2e-6, 8e-5)
    assert (W_ref == 2e-6).any() and (W_ref == 8e-5).any()  # the clip is exercised
    uT, d, col = np.ascontiguousarray(u.T), va - vb, (va ** 2 - vb ** 2).sum(0)
    first = None
    for nb in (1, 2, 4, 9, 16):  # one block, uneven blocks, one row per block, more blocks than rows
        W, vel, colsum = W0.copy(), vel0.copy(), np.empty(4)
        updates.fixed_from_step(W, uT, d, col, 0.3, vel, 1e-9, momentum, 2e-6, 8e-5, np.empty((nb, 4)), colsum)
        np.testing.assert_allclose(W, W_ref, rtol=1e-12)
        np.testing.assert_allclose(vel, v_ref, rtol=1e-12)
        np.testing.assert_allclose(colsum, colsum_ref, rtol=1e-14)
        if first is None:
            first = (W, vel, colsum)
        assert np.array_equal(W, first[0]) and np.array_equal(vel, first[1])
        again = np.empty(4)
        updates.block_column_sums(W, np.empty((nb, 4)), again)
        assert np.array_equal(colsum, again)  # what a resumed run recomputes


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fused_step_matches_naive(momentum):
    """updates.drop_square_step_rows: only rows lo..hi-1 move, as naive.sgd_step moves them."""
    rng = np.random.default_rng(0)
    W = rng.uniform(1e-6, 1e-4, (6, 4))
    row, col, prod = rng.normal(size=6), rng.normal(size=4), rng.normal(size=(6, 4))
    vel = rng.normal(size=(6, 4)) * 1e-3
    grad = 0.3 * (row[:, None] + col[None, :] - 2 * prod)
    W_ref, v_ref, _ = naive.sgd_step(W, grad, vel, 1e-5, momentum, 2e-6, 8e-5)
    assert (W_ref == 2e-6).any() and (W_ref == 8e-5).any()  # the clip is exercised
    W_k, vel_k = W.copy(), vel.copy()
    updates.drop_square_step_rows(W_k, row, col, prod, 0.3, vel_k, 1e-5, momentum, 2e-6, 8e-5, 1, 5)
    np.testing.assert_allclose(W_k[1:5], W_ref[1:5], rtol=1e-14)
    np.testing.assert_allclose(vel_k[1:5], v_ref[1:5], rtol=1e-14)
    for a, b in ((W_k, W), (vel_k, vel)):
        assert np.array_equal(a[[0, 5]], b[[0, 5]])  # rows outside lo..hi untouched


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_paired_layers_let_deeper_nodes_rectify(diode):
    """Unpaired, a second hidden layer is a weighted mean of non-negative voltages: it never
    reaches its lower diodes and is linear. Paired, its inputs have both signs: the rectifying
    half clamps at 0 V from below, the mirrored half from above, each for some samples."""
    X = np.random.default_rng(3).uniform(0, 1, (40, 784))
    for paired in (False, True):
        tr = Trainer(TrainConfig(arch="784-30-30-10", diode=diode, paired=paired))
        tr.init_state(np.random.default_rng(0))
        x, _, _ = solve_net(tr.net, tr.params, X)
        h2 = tr.net.layer(x, 2)
        if not paired:
            assert h2.min() > 0.05
            continue
        pos, neg = h2[:, :15], h2[:, 15:]
        assert pos.min() > -0.2 and neg.max() < 0.2
        for half in (pos, neg):
            clamped = np.abs(half) < 0.02
            assert clamped.any() and not clamped.all()


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_factor_cache_is_exact_and_used(diode):
    """A nudged solve that starts from the free phase's Jacobian factor (EqProp shares one cache
    between its phases) is bit-identical to one that factors afresh, and for pwl diodes, whose
    Jacobian is constant within a region, the cached factor really is the one used."""
    net, p, X, y = small_net(diode=diode, sizes=(12, 6, 5, 3))
    B = X.shape[0]
    cache = net.factor_cache(B)
    xf, _, _ = solve_net(net, p, X, cache=cache)
    assert np.array_equal(xf, solve_net(net, p, X)[0])
    assert cache[2].all()  # every sample left a valid factor behind
    inj = net.output_injection(1e-9 * np.ones((B, net.spec.sizes[-1])))
    fresh, _, _ = solve_net(net, p, X, inj, x0=xf)
    kept = tuple(a.copy() for a in cache)
    xn, _, _ = solve_net(net, p, X, inj, x0=xf, cache=cache)
    assert np.array_equal(xn, fresh) and not np.array_equal(xn, xf)
    # a factor marked invalid, or formed with other diode conductances, is never used
    for poison in ("invalid", "other-dg"):
        S, dg, valid = (a.copy() for a in kept)
        S[:] = np.nan
        if poison == "invalid":
            valid[:] = False
        else:
            dg += 1e-3
        x, _, st = solve_net(net, p, X, inj, x0=xf, check=False, cache=(S, dg, valid))
        assert np.array_equal(x, fresh) and not st.any()
    # a matching, valid (here corrupted) factor is used: proof that reuse happens
    S, dg, valid = (a.copy() for a in kept)
    S[:] = np.nan
    _, _, st = solve_net(net, p, X, inj, x0=xf, check=False, cache=(S, dg, valid))
    assert (st == (3 if diode == "pwl" else 0)).all()  # pwl: singular (NaN direction), never "converged"


@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_update_rule_is_derivative_of_cocontent_difference(gain):
    """EqProp's update for each conductance equals d/dg [E(x_a) - E(x_b)] written per element."""
    net, p, X, y = small_net(gain=gain, sizes=(12, 6, 5, 3))
    eq = EqProp(1e-6, "one-sided")
    g, xf, _, _ = eqprop_gradient(net, p, X, y, eq, 0.5)
    # recompute the nudged state, then dE/dg = (A u_i - v_j)^2 / 2 per conductance by loops
    from fastres.eqprop import loss_and_grad
    _, dC = loss_and_grad(net.outputs(xf), y, 0.5)
    xn, _, _ = solve_net(net, p, X, net.output_injection(eq.beta * dC), x0=xf)
    U = net.input_voltages(X)
    for l in range(1, net.L + 1):
        W = p[f"W{l}"]
        ref = np.zeros_like(W)
        refb = np.zeros(W.shape[1])
        for s in range(X.shape[0]):
            for state, sign in ((xn, 1.0), (xf, -1.0)):
                u = U[s] if l == 1 else net.gains[l] * net.layer(state, l - 1)[s]
                v = net.layer(state, l)[s]
                for i in range(W.shape[0]):
                    for j in range(W.shape[1]):
                        ref[i, j] += sign * 0.5 * (u[i] - v[j]) ** 2
                refb += sign * 0.5 * (net.spec.bias_volts - v) ** 2
        np.testing.assert_allclose(g[f"W{l}"], ref / (eq.beta * X.shape[0]), rtol=1e-9, atol=1e-9 * np.abs(ref).max() / eq.beta)
        np.testing.assert_allclose(g[f"B{l}"], refb / (eq.beta * X.shape[0]), rtol=1e-9, atol=1e-9 * np.abs(refb).max() / eq.beta)


@pytest.mark.parametrize("estimator", ["one-sided", "centered"])
def test_training_step_applies_the_eqprop_gradient(estimator):
    """Trainer.step (fused input-layer update, factored terms elsewhere) moves every
    conductance by -lr * g_max^2 * (the EqProp gradient of eqprop_gradient)."""
    cfg = TrainConfig(arch="12-6-5-3", lr=[1e-3, 2e-3, 3e-3], estimator=estimator, init_lo=2e-5,
                      init_hi=6e-5)
    tr = Trainer(cfg)
    rng = np.random.default_rng(4)
    tr.init_state(rng)
    X = rng.uniform(0, 1, (9, 12))
    X[X < 0.5] = 0.0  # dark pixels, skipped by the fused kernel
    y = rng.integers(0, 3, 9)
    p0 = {k: v.copy() for k, v in tr.params.items()}
    g, _, _, _ = eqprop_gradient(tr.net, p0, X, y, EqProp(tr.beta(), estimator), cfg.estimator.target_volts)
    tr.step(X, y, rng)
    g_min, g_max = cfg.network.g_min, cfg.network.g_max
    for key in p0:
        l = int(key[1:])
        want = p0[key] - cfg.lr[l - 1] * g_max ** 2 * g[key]
        assert np.all((want > g_min) & (want < g_max)), key  # no clipping in this test
        np.testing.assert_allclose(tr.params[key], want, rtol=1e-12, atol=1e-18, err_msg=key)


@pytest.mark.parametrize("diode,gain,paired", [("shockley", 1.0, False), ("shockley", 4.0, False),
                                               ("pwl", 1.0, False), ("shockley", 2.0, True)])
def test_eqprop_converges_to_exact_gradient(diode, gain, paired):
    sizes = (12, 6, 4, 3) if paired else (12, 6, 5, 3) if gain != 1.0 else (12, 6, 3)
    net, p, X, y = small_net(diode, gain, sizes=sizes, paired=paired)
    res = gradcheck(net, p, X, y, 0.5, betas=(1e-2, 1e-3, 1e-4), n_fd=4)
    one = [r["one-sided"] for r in res["eqprop"]]
    cen = [r["centered"] for r in res["eqprop"]]
    # one-sided: O(beta) -- ten times smaller per decade; centered: O(beta^2) or round-off
    assert 7 < one[0] / one[1] < 13 and 7 < one[1] / one[2] < 13
    assert all(c < 0.1 * o for c, o in zip(cen, one))
    assert cen[1] < max(2e-2 * cen[0], 1e-9)
    for r in res["finite_difference"]:
        assert r["rel_error"] < 1e-5, r


def _blobs(n, rng, d=16):
    y = rng.integers(0, 2, n)
    centers = np.stack([np.r_[np.ones(d // 2), np.zeros(d // 2)], np.r_[np.zeros(d // 2), np.ones(d // 2)]])
    X = np.clip(centers[y] * 0.8 + rng.normal(0, 0.15, (n, d)), 0, 1)
    return X, y


def test_tiny_network_learns_separable_task(tmp_path):
    rng = np.random.default_rng(0)
    Xtr, ytr = _blobs(400, rng)
    Xte, yte = _blobs(200, rng)
    data = Dataset(name="blobs", x_train=Xtr, y_train=ytr, x_test=Xte, y_test=yte, root=tmp_path,
                   checksums={})
    cfg = TrainConfig(arch="16-6-2", epochs=4, batch_size=10, lr=[3.0, 3.0], input_volts=20.0,
                      target_volts=0.5, store_samples=10)
    check_data(cfg, data)
    tr = Trainer(cfg)
    rng = np.random.default_rng(cfg.run.seed)
    tr.init_state(rng)
    store = RunStore.create(tmp_path / "r.h5", config=cfg.to_dict(), meta={"seed": 0}, params=tr.params)
    m = run_epochs(tr, store, data, rng, 1, 0, log=lambda s: None, progress=False)
    assert m["test_error"] < 0.05 and m["train_error"] < 0.1
    assert RunStore.open(tmp_path / "r.h5").metrics()["test_error"][-1] == m["test_error"]


mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(),
                           reason=f"MNIST not found at {MNIST}")

TINY = ["--arch", "784-12-10", "--n-train", "300", "--n-test", "100", "--batch-size", "20",
        "--seed", "3", "--quiet", "--data", str(MNIST)]


def _cli(*args, **kw):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "fastres.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT, **kw)


@mnist
def test_kill_and_resume_is_bit_identical(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    long = TINY + ["--n-train", "2000"]  # epochs long enough to be killed mid-way
    r = _cli("train", *long, "--epochs", "4", "--out", str(a))
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="2")
    p = subprocess.Popen([sys.executable, "-m", "fastres.cli", "train", *long, "--epochs", "4", "--out", str(b)],
                         env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once epoch 2 is checkpointed, mid-way through epoch 3
        try:
            if b.exists() and RunStore.open(b).latest_checkpoint >= 2:
                break
        except Exception:  # noqa: BLE001 - the file may not exist yet
            pass
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert RunStore.open(b).latest_checkpoint < 4
    r = _cli("train", "--resume", str(b), "--quiet")
    assert r.returncode == 0, r.stderr
    ra, rb = RunStore.open(a), RunStore.open(b)
    assert ra.checkpoints() == rb.checkpoints() == [0, 1, 2, 3, 4]
    ca, cb = ra.load_checkpoint(), rb.load_checkpoint()
    for k in ca.params:
        assert np.array_equal(ca.params[k], cb.params[k]), k
    ma, mb = ra.metrics(), rb.metrics()
    for k in ("train_loss", "train_error", "test_loss", "test_error", "free_iterations"):
        assert np.array_equal(ma[k], mb[k]), k


@mnist
def test_run_file_stores_pairing_resolved(tmp_path, capsys):
    """A run file says whether its layers are paired (never "auto"), so a later change of the
    default cannot change the circuit a run is resumed or evaluated in."""
    run = tmp_path / "r.h5"
    args = ["train", *TINY, "--arch", "784-12-12-10", "--n-train", "60", "--epochs", "1", "--out", str(run)]
    assert main(args) == 0
    assert RunStore.open(run).config["network"]["paired"] is True
    assert main(["eval", str(run), "--json", "--data", str(MNIST)]) == 0
    assert main(["train", *TINY, "--arch", "784-12-12-10", "--paired", "no", "--n-train", "60",
                 "--epochs", "1", "--out", str(run), "--overwrite"]) == 0
    assert RunStore.open(run).config["network"]["paired"] is False


@mnist
def test_eval_json_and_gradcheck_cli(tmp_path, capsys):
    run = tmp_path / "r.h5"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--data", str(MNIST)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"test_error", "train_error", "epoch", "epoch_seconds"} <= set(r)
    assert r["epoch"] == 1
    assert r["test_error"] == RunStore.open(run).metrics()["test_error"][-1]
    assert main(["gradcheck", "--run", str(run), "--samples", "3", "--json"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["eqprop"][-1]["centered"] < 1e-3
    # a fresh network on 3 test samples (which hold fewer than 10 classes), paired layers
    assert main(["gradcheck", "--arch", "784-12-12-10", "--samples", "3", "--data", str(MNIST), "--json"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["eqprop"][-1]["centered"] < 1e-3


@pytest.mark.parametrize("args,needle", [
    (["--beta-rel", "-0.1"], "beta_rel"),
    (["--arch", "784--10"], "arch"),
    (["--arch", "784-100-7"], "output size"),
    (["--dataset", "cifar"], "unknown dataset"),
    (["--lr", "0.1,x"], "--lr"),
    (["--lr", "0.1,0.1,0.1"], "one learning rate per layer"),
    (["--epochs", "0"], "epochs"),
    (["--estimator", "magic"], "unknown estimator"),
    (["--g-min", "1e-3", "--g-max", "1e-4"], "g_min"),
    (["--arch", "784-31-10", "--paired", "yes"], "even number"),
])
def test_bad_config_is_a_clear_error(tmp_path, capsys, args, needle):
    code = main(["train", "--out", str(tmp_path / "x.h5"), "--n-train", "10", "--n-test", "10",
                 "--data", str(MNIST), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fastres: error:") and needle in err
    assert not (tmp_path / "x.h5").exists()


def test_config_file_and_unknown_option(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('arch = "784-30-10"\nlr = [1.0, 2.0]\nbogus = 3\n')
    code = main(["train", "--out", str(tmp_path / "x.h5"), "--config", str(cfg)])
    assert code == 2 and "bogus" in capsys.readouterr().err
    cfg.write_text('arch = "784-30-10"\nlr = [1.0, 2.0]\nepochs = 3\n')
    from fastres.cli import build_parser
    from fastres.cli.train import config_from_args
    args = build_parser().parse_args(["train", "--config", str(cfg), "--epochs", "5"])
    c = config_from_args(args)
    assert c.network.arch == "784-30-10" and c.lr == [1.0, 2.0] and c.run.epochs == 5  # flags override the file
    # the same options in sections
    cfg.write_text('[network]\narch = "784-30-10"\n[optimizer]\nlr = [1.0, 2.0]\n[run]\nepochs = 3\n')
    c = config_from_args(build_parser().parse_args(["train", "--config", str(cfg), "--seed", "4"]))
    assert c.network.arch == "784-30-10" and c.lr == [1.0, 2.0] and c.run.epochs == 3 and c.run.seed == 4


def test_baseline_activation_follows_the_diodes():
    """Default rails leave the upper diodes out of reach (rectifying nodes): the MLP baseline
    uses relu; the paper's symmetric clipping (both rails at 0 V) maps to hardtanh."""
    assert TrainConfig().network.one_sided() and TrainConfig().baseline_activation() == "relu"
    assert TrainConfig(rail_hi=0.0).baseline_activation() == "hardtanh"
    assert TrainConfig(rail_hi=150.0, gain=2.0).baseline_activation() == "hardtanh"  # 200 V reachable
    assert TrainConfig(rail_hi=0.0, mlp_activation="relu").baseline_activation() == "relu"
    with pytest.raises(ConfigError, match="mlp_activation"):
        TrainConfig(mlp_activation="tanh")


def spec(cfg):
    return NetworkSpec.from_config(cfg.network)


def test_paired_by_default_from_two_hidden_layers():
    assert not spec(TrainConfig(arch="784-100-10")).paired
    assert spec(TrainConfig(arch="784-100-100-10")).paired
    assert not spec(TrainConfig(arch="784-100-100-10", paired=False)).paired
    assert spec(TrainConfig(arch="784-100-10", paired=True)).paired
    assert not spec(TrainConfig(arch="784-100-51-10")).paired  # auto: only even sizes pair
    with pytest.raises(ConfigError, match="even number"):
        TrainConfig(arch="784-100-51-10", paired=True)
    # a run file from before paired layers existed (layout 1, no "paired" key) was unpaired
    old = TrainConfig(arch="784-100-100-10").to_flat()
    del old["paired"]
    assert not spec(config_from_stored(old, 1)).paired
    with pytest.raises(ConfigError, match="paired"):
        TrainConfig(paired="yes")


@pytest.mark.parametrize("diode", ["pwl", "shockley"])
def test_default_lower_rail_clamps_hidden_nodes_at_zero(diode):
    """By default the lower rail sits at the diode's turn-on voltage: a hidden node driven far
    negative is held near 0 V (a rectifier at 0 V)."""
    cfg = TrainConfig(arch="4-3-2", diode=diode)
    assert cfg.network.rail_lo is None and spec(cfg).rail_lo > 0.4
    assert spec(TrainConfig(rail_lo=-1.0)).rail_lo == -1.0
    tr = Trainer(cfg)
    tr.init_state(np.random.default_rng(0))
    X = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    tr.params["W1"][:] = cfg.network.g_min
    tr.params["W1"][4:] = cfg.network.g_max  # every hidden node hangs from the -x sources: -100 V
    x, _, _ = solve_net(tr.net, tr.params, X)
    h = tr.net.layer(x, 1)[1]
    assert np.all(h < 0) and np.all(h > -0.3), h  # clamped just below 0 V, not at -0.5 V or -100 V
