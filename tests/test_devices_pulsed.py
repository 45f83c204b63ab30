"""Pulsed device models (fastres.pulsed, kernels/pulses.py) against their numpy twin pulse by
pulse, their formulas, the statistics of their noise, and bit-identical runs with noise on."""
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import naive
from fastres.config import DeviceConfig, TrainConfig
from fastres.errors import FastresError
from fastres.kernels import pulses as kp
from fastres.pulsed import PulsedDevices, load_table
from fastres.store import RunStore
from fastres.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
LO, HI = 1e-7, 1e-4
CODES = {"linear": kp.MODEL_LINEAR, "soft-bounds": kp.MODEL_SOFT, "exponential": kp.MODEL_EXP,
         "table": kp.MODEL_TABLE}


def _table(tmp_path, m=40):
    """A measured-looking curve: potentiation saturating, depression steeper at first."""
    P = np.arange(m + 1)
    up = LO + (HI - LO) * (1 - np.exp(-P / 15)) / (1 - np.exp(-m / 15))
    down = HI - (HI - LO) * (1 - np.exp(-P / 8)) / (1 - np.exp(-m / 8))
    path = tmp_path / "curve.csv"
    np.savetxt(path, np.c_[P, up, down], delimiter=",", header="pulse,g_up,g_down")
    return path


def _run_kernel(model, g, n, s, a_up, a_down, p_max, tab_up=None, tab_down=None, up_down=0.0):
    """Apply exactly ``n`` pulses (deterministic rounding, no noise, no clipping in range)."""
    N = g.size
    step = (HI - LO) / p_max
    g = g.astype(np.float64).copy()
    d = n * step
    tab_up = np.zeros(2) if tab_up is None else tab_up
    tab_down = np.zeros(2) if tab_down is None else tab_down
    prm = kp.pack_devices(np.full(N, LO), np.full(N, HI), s, a_up, a_down, np.zeros(N))
    kp.pulse_update(g, d, np.zeros(N), prm, np.empty(N), np.uint64(5), CODES[model], step,
                    step * (1 + up_down), step * (1 - up_down), float(p_max), tab_up, tab_down, 0, 1e9,
                    0.0, False, 2)
    return g


@pytest.mark.parametrize("model", ["linear", "soft-bounds", "exponential", "table"])
def test_pulses_match_the_pulse_by_pulse_twin(model, tmp_path):
    rng = np.random.default_rng(0)
    N = 400
    p_max = 31.0
    tab_up = tab_down = None
    if model == "table":
        tab_up, tab_down, M = load_table(_table(tmp_path), LO, HI)
        p_max = float(M)
    g = rng.uniform(LO + 0.05 * (HI - LO), HI - 0.05 * (HI - LO), N)
    n = rng.integers(-6, 7, N).astype(np.float64)
    s = rng.uniform(0.8, 1.2, N)
    a_up, a_down = rng.uniform(0.1, 1.0, N), rng.uniform(0.1, 1.0, N)
    up_down = 0.2 if model in ("linear", "soft-bounds") else 0.0
    got = _run_kernel(model, g, n, s, a_up, a_down, p_max, tab_up, tab_down, up_down)
    step = (HI - LO) / p_max
    want = naive.pulsed_move(model, g, n, LO, HI, s, step * (1 + up_down), step * (1 - up_down),
                             a_up, a_down, p_max, tab_up, tab_down)
    want = np.clip(want, LO, HI)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * (HI - LO))


def test_exponential_curve_reproduces_its_formula():
    """From g_min, P pulses land on G(P) = g_min + B (1 - exp(-P/A)), B = r/(1 - exp(-Pmax/A))."""
    p_max, a = 31.0, 0.25
    A = a * p_max
    B = (HI - LO) / (1 - np.exp(-p_max / A))
    for P in (1, 5, 31):
        g = _run_kernel("exponential", np.array([LO]), np.array([float(P)]), np.ones(1),
                        np.array([a]), np.array([a]), p_max)
        assert g[0] == pytest.approx(LO + B * (1 - np.exp(-P / A)), rel=1e-12)
    # depression from g_max follows the mirrored curve and reaches g_min after P_max pulses
    g = _run_kernel("exponential", np.array([HI]), np.array([-31.0]), np.ones(1), np.array([a]),
                    np.array([a]), p_max)
    assert g[0] == pytest.approx(LO, abs=1e-9 * HI)


def test_soft_bounds_and_levels_reproduce_their_formulas():
    p_max = 63.0
    step = (HI - LO) / p_max
    g = _run_kernel("soft-bounds", np.array([LO]), np.array([10.0]), np.ones(1), np.ones(1), np.ones(1), p_max)
    assert g[0] == pytest.approx(HI - (HI - LO) * (1 - step / (HI - LO)) ** 10, rel=1e-12)
    # levels: 64 states; 63 up pulses from g_min reach g_max exactly
    g = _run_kernel("linear", np.array([LO]), np.array([63.0]), np.ones(1), np.ones(1), np.ones(1), p_max)
    assert g[0] == pytest.approx(HI, rel=1e-12)


def test_table_model_reproduces_its_table(tmp_path):
    path = _table(tmp_path)
    raw = np.loadtxt(path, delimiter=",")
    tab_up, tab_down, M = load_table(path, LO, HI)
    for P in (1, 7, 40):
        g = _run_kernel("table", np.array([LO]), np.array([float(P)]), np.ones(1), np.ones(1), np.ones(1),
                        float(M), tab_up, tab_down)
        assert g[0] == pytest.approx(raw[P, 1], rel=1e-9)
        g = _run_kernel("table", np.array([HI]), np.array([-float(P)]), np.ones(1), np.ones(1), np.ones(1),
                        float(M), tab_up, tab_down)
        assert g[0] == pytest.approx(raw[P, 2], rel=1e-9, abs=1e-12)


def test_bad_tables_and_device_settings_are_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1e-7,1e-4\n1,5e-5,6e-5\n2,4e-5,1e-7\n")  # potentiation not monotone
    with pytest.raises(FastresError, match="monoton"):
        load_table(bad, LO, HI)
    for kw, match in ((dict(model="linear", levels=1), "levels"), (dict(model="linear"), "levels"),
                      (dict(model="linear", levels=8, write_noise=-0.1), "write_noise"),
                      (dict(model="spline", levels=8), "unknown device model"),
                      (dict(preset="fancy"), "preset"), (dict(model="table"), "table=FILE"),
                      (dict(model="linear", levels=8, stuck=1.5), "stuck")):
        with pytest.raises(FastresError, match=match):
            DeviceConfig(**kw)


def test_stochastic_rounding_and_write_noise_statistics():
    N = 200_000
    p_max = 100.0
    step = (HI - LO) / p_max
    g0 = np.full(N, 0.5 * (LO + HI))
    PRM = kp.pack_devices(np.full(N, LO), np.full(N, HI), np.ones(N), np.ones(N), np.ones(N), np.zeros(N))
    # stochastic rounding: 0.3 step wanted -> 1 pulse with probability 0.3
    g = g0.copy()
    pulses = np.empty(N)
    kp.pulse_update(g, np.full(N, 0.3 * step), np.zeros(N), PRM, pulses,
                    np.uint64(11), kp.MODEL_LINEAR, step, step, step, p_max,
                    np.zeros(2), np.zeros(2), 1, 16.0, 0.0, False, 2)
    assert set(np.unique(pulses)) == {0.0, 1.0}
    assert abs(pulses.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / N)
    # each device's draw is the twin's counter-based uniform: splitmix64's i-th output from the key
    u = np.array([((naive.device_bits(11, i) >> 11) + 0.5) * 2.0 ** -53 for i in range(2000)])
    x = (0.3 * step) / step
    np.testing.assert_array_equal(pulses[:2000], np.floor(x) + (u < x - np.floor(x)))
    # write noise: 4 pulses with sigma 1 % of the range each: spread sigma r sqrt(4)
    g = g0.copy()
    sigma = 0.01
    kp.pulse_update(g, np.full(N, 4 * step), np.zeros(N), PRM, pulses,
                    np.uint64(12), kp.MODEL_LINEAR, step, step, step, p_max,
                    np.zeros(2), np.zeros(2), 0, 16.0, sigma, False, 2)
    dev = (g - g0 - 4 * step) / (HI - LO)
    assert abs(dev.mean()) < 4 * 2 * sigma / np.sqrt(N)
    assert dev.std() == pytest.approx(2 * sigma, rel=0.02)
    # the stream depends on the key only, not on the number of chunks
    g1, g2 = g0.copy(), g0.copy()
    for g_, ch in ((g1, 1), (g2, 7)):
        kp.pulse_update(g_, np.full(N, 2.5 * step), np.zeros(N), PRM, pulses,
                        np.uint64(13), kp.MODEL_LINEAR, step, step, step, p_max,
                        np.zeros(2), np.zeros(2), 1, 16.0, sigma, False, ch)
    assert np.array_equal(g1, g2)


def test_accumulate_then_pulse_fires_whole_steps():
    N = 1
    step = (HI - LO) / 10
    g = np.array([0.5 * (LO + HI)])
    acc = np.zeros(1)
    pulses = np.empty(1)
    fired = []
    for _ in range(10):  # 0.25 step wanted each time: one pulse every 4 calls
        kp.pulse_update(g, np.array([0.25 * step]), acc,
                        kp.pack_devices(np.full(N, LO), np.full(N, HI), np.ones(N), np.ones(N), np.ones(N), np.zeros(N)),
                        pulses, np.uint64(1), kp.MODEL_LINEAR, step, step, step, 10.0,
                        np.zeros(2), np.zeros(2), 1, 16.0, 0.0, True, 1)
        fired.append(pulses[0])
    assert fired == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert acc[0] == pytest.approx(0.5 * step)


def test_device_spread_and_stuck_devices_follow_their_parameters():
    cfg = DeviceConfig(model="linear", levels=64, d2d_step=0.2, stuck=0.05, d2d_bounds=0.05)
    dev = PulsedDevices(cfg, [1.0, 1.0], 0.0, LO, HI, seed=3)
    params = {"W1": np.full((300, 200), 5e-5), "B1": np.full(200, 5e-5), "W2": np.full((200, 4), 5e-5),
              "B2": np.full(4, 5e-5)}
    dev.init(params)
    s = dev.dev["W1"]["s"]
    assert s.std() == pytest.approx(0.2, rel=0.03) and s.mean() == pytest.approx(1.0, abs=0.01)
    stuck = dev.dev["W1"]["stuck"] > 0
    assert stuck.mean() == pytest.approx(0.05, abs=0.005)
    W = params["W1"].ravel()
    assert np.all((W[stuck] == dev.dev["W1"]["lo"][stuck]) | (W[stuck] == dev.dev["W1"]["hi"][stuck]))
    # programmed onto the device's levels
    lo, step = dev.dev["W1"]["lo"], dev.dev["W1"]["s"] * dev.step_nominal
    k = (W[~stuck] - lo[~stuck]) / step[~stuck]
    assert np.allclose(k, np.round(k), atol=1e-6)


def _step_params(threads):
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        tr = Trainer(TrainConfig(arch="20-8-3", preset="realistic", input_volts=20.0, seed=4))
        rng = np.random.default_rng(4)
        tr.init_state(rng)
        X = rng.uniform(0, 1, (12, 20))
        y = np.arange(12) % 3
        for _ in range(3):
            tr.step(X, y, rng)
        return tr.params
    finally:
        numba.set_num_threads(old)


def test_noisy_devices_give_the_same_run_on_any_number_of_threads():
    a, b = _step_params(1), _step_params(2)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(), reason="MNIST not found")
def test_noisy_devices_resume_bit_identically(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    args = ["--arch", "784-10-10", "--n-train", "200", "--n-test", "50", "--device", "realistic",
            "--device-param", "accumulate=true", "--threads", "1", "--quiet", "--data", str(MNIST)]

    def cli(*a):
        r = subprocess.run([sys.executable, "-m", "fastres.cli", "train", *a], capture_output=True,
                           text=True, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr

    whole, cut = tmp_path / "w.h5", tmp_path / "c.h5"
    cli(*args, "--epochs", "2", "--out", str(whole))
    cli(*args, "--epochs", "1", "--out", str(cut))
    cli("--resume", str(cut), "--epochs", "2", "--threads", "1", "--quiet")
    a, b = RunStore.open(whole).load_checkpoint(), RunStore.open(cut).load_checkpoint()
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert RunStore.open(whole).config["device"]["preset"] == "realistic"
    m = RunStore.open(whole).metrics()
    assert np.all(m["pulses"] > 0)


def test_a_fine_linear_device_follows_ideal_sgd():
    """With 2^20 levels, deterministic rounding and no noise, one step of the device lands
    within one step size of ideal SGD's conductances (the desired changes are SGD's)."""
    X = np.random.default_rng(1).uniform(0, 1, (10, 20))
    y = np.arange(10) % 3
    out = {}
    for name, extra in (("ideal", {}), ("device", dict(model="linear", levels=2 ** 20 + 1,
                                                        rounding="deterministic", max_pulses=10 ** 6))):
        tr = Trainer(TrainConfig(arch="20-8-3", input_volts=20.0, lr=[3.0, 3.0], **extra))
        rng = np.random.default_rng(2)
        tr.init_state(rng)
        tr.step(X, y, rng)
        out[name] = tr.params
    step = (1e-4 - 1e-7) / 2 ** 20
    moved = 0.0
    for k in out["ideal"]:
        np.testing.assert_allclose(out["device"][k], out["ideal"][k], rtol=0, atol=1.5 * step, err_msg=k)
        moved = max(moved, np.abs(out["ideal"][k] - TrainConfig().network.init_range()[0]).max())
    assert moved > 100 * step  # the step really moved the conductances


def _device_arrays(rng, N, stuck_frac=0.05):
    lo = LO + (HI - LO) * rng.uniform(0, 0.05, N)
    hi = HI - (HI - LO) * rng.uniform(0, 0.05, N)
    s = rng.uniform(0.8, 1.2, N)
    stuck = (rng.random(N) < stuck_frac).astype(np.float64)
    return lo, hi, s, stuck, rng.uniform(0.1, 1.0, N), rng.uniform(0.1, 1.0, N)


@pytest.mark.parametrize("model,accumulate,momentum", [("linear", False, 0.9), ("soft-bounds", True, 0.9),
                                                       ("exponential", False, 0.0), ("linear", True, 0.0)])
@pytest.mark.parametrize("fixed", [False, True])
def test_fused_pulsed_step_matches_its_numpy_twin(model, accumulate, momentum, fixed):
    """The fused kernels (desired change and pulses in one pass) against naive SGD + pulses."""
    rng = np.random.default_rng(3)
    n_from, n_to, B = 37, 11, 5
    N = n_from * n_to
    p_max = 31.0
    step = (HI - LO) / p_max
    up_down = 0.1 if model == "linear" else 0.0
    lo, hi, s, stuck, a_up, a_down = _device_arrays(rng, N)
    W = rng.uniform(LO + 0.1 * (HI - LO), HI - 0.1 * (HI - LO), (n_from, n_to))
    vel = rng.normal(0, 1e-3, (n_from, n_to))
    acc = rng.uniform(-0.5, 0.5, N) * step
    if fixed:
        uT = rng.uniform(-1, 1, (n_from, B))
        uT[rng.random(uT.shape) < 0.5] = 0.0
        d, col = rng.normal(0, 1, (B, n_to)), rng.normal(0, 1, n_to)
        grad = 0.7 * (col[None, :] - 2.0 * uT @ d)
    else:
        row, col, prod = rng.normal(0, 1, n_from), rng.normal(0, 1, n_to), rng.normal(0, 1, (n_from, n_to))
        grad = 0.7 * (row[:, None] + col[None, :] - 2.0 * prod)
    lr = 3 * step / np.abs(grad).mean()  # a few pulses a device
    zeros = np.zeros(2)
    want_W, want_vel, want_acc, want_n = naive.pulsed_sgd_step(
        W, grad, vel, lr, momentum, acc, lo, hi, s, stuck, model, step, step * (1 + up_down),
        step * (1 - up_down), a_up, a_down, p_max, zeros, zeros, 8.0, accumulate)
    par = np.array([CODES[model], step, step * (1 + up_down), step * (1 - up_down), p_max, 0, 8.0, 0.0,
                    float(accumulate)])
    got_W, got_vel, got_acc = W.copy(), vel.copy(), acc.copy()
    dev = (got_acc, kp.pack_devices(lo, hi, s, a_up, a_down, stuck), zeros, zeros)
    if fixed:
        counts, partial, colsum = np.zeros(4), np.empty((4, n_to)), np.empty(n_to)
        kp.pulse_fixed(got_W, uT, d, col, 0.7, got_vel, lr, momentum, dev, par, np.uint64(9), counts,
                       partial, colsum)
        np.testing.assert_allclose(colsum, got_W.sum(axis=0), rtol=1e-14)
    else:
        counts = np.zeros(3)
        kp.pulse_terms(got_W, row, col, prod, 0.7, got_vel, lr, momentum, dev, par, np.uint64(9), counts)
    assert np.abs(want_n).sum() > N  # the step moved most devices by several pulses
    assert counts.sum() == np.abs(want_n).sum()
    np.testing.assert_allclose(got_vel, want_vel, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got_acc, want_acc, rtol=0, atol=1e-9 * step)
    np.testing.assert_allclose(got_W, want_W, rtol=0, atol=1e-12 * (HI - LO))
    assert np.array_equal(got_W.ravel()[stuck > 0], W.ravel()[stuck > 0])


@pytest.mark.parametrize("extra", [{}, {"momentum": 0.9}, {"accumulate": True},
                                   {"rounding": "deterministic", "read_noise": 0.0}])
def test_fused_pulsed_step_is_bit_identical_to_sgd_on_a_copy_then_pulses(extra):
    """The fused step equals the unfused path it replaced (an unclipped SGD step on a copy of
    the conductances, the differences programmed by pulses), bit for bit, noise on."""
    cfg = TrainConfig(arch="30-12-4", input_volts=20.0, preset="realistic", **extra)
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 1, (24, 30))
    y = np.arange(24) % 4
    tr = Trainer(cfg)
    tr.init_state(np.random.default_rng(5))
    net = cfg.network
    twin = PulsedDevices(cfg.device, cfg.lr, cfg.optimizer.momentum, net.g_min, net.g_max, cfg.run.seed)
    twin_params = {k: v.copy() for k, v in tr.params.items()}
    twin.load({k: np.array(v) for k, v in tr.optimizer.state().items()}, twin_params)
    seen = []
    fused_step = tr.optimizer.step
    tr.optimizer.step = lambda params, ph, f: (seen.append(ph), fused_step(params, ph, f))[1]
    for k in range(3):
        n = tr.step(X[8 * k:8 * k + 8], y[8 * k:8 * k + 8], rng).pulses
        desired = {key: v.copy() for key, v in twin_params.items()}
        twin.sgd.step(desired, seen[-1], tr.lr_factor)
        assert twin.apply(twin_params, {key: desired[key] - twin_params[key] for key in desired}) == n > 0
        for key in twin_params:
            assert np.array_equal(tr.params[key], twin_params[key]), key
            assert np.array_equal(tr.optimizer.dev[key]["acc"], twin.dev[key]["acc"]), key
            assert np.array_equal(tr.optimizer.sgd.vel[key], twin.sgd.vel[key]), key
    # the column sums the fused step wrote are those of the new W1 (the next Jacobian's)
    np.testing.assert_allclose(tr.optimizer.column_sums(tr.params), tr.params["W1"].sum(axis=0), rtol=1e-13)


def test_read_noise_matches_its_twin_and_is_normal():
    """The ziggurat read noise against its plain-Python twin (fast path, wedges and tail), and
    its statistics against the standard normal."""
    from scipy import stats
    N = 20000
    g = np.linspace(1e-6, 1e-4, N)
    out = np.empty(N)
    kp.read_noise(g, out, np.uint64(11), 0.01, np.empty(N, dtype=np.int64), 3)
    xi = (out / g - 1) / 0.01
    want = np.array([naive.normal_zig(11, i) for i in range(N)])
    np.testing.assert_allclose(xi, want, rtol=1e-9, atol=1e-9)
    assert np.sum(np.abs(want) > kp.ZIG_TAIL) >= 3  # the tail branch was exercised
    # a read never gives a conductance <= 0: 1 + sigma xi below 0 reads 1e-300 S
    kp.read_noise(np.ones(N), out, np.uint64(11), 1.0, np.empty(N, dtype=np.int64), 2)
    np.testing.assert_allclose(out, np.maximum(1.0 + want, 1e-300), rtol=1e-9, atol=1e-9)
    assert np.sum(out == 1e-300) == np.sum(want < -1.0) > 0
    big = np.empty(10 ** 6)
    kp.read_noise(np.ones(10 ** 6), big, np.uint64(12), 1e-3, np.empty(10 ** 6, dtype=np.int64), 2)
    one = np.empty(10 ** 6)  # the same draws on one chunk (threads, ranks)
    kp.read_noise(np.ones(10 ** 6), one, np.uint64(12), 1e-3, np.empty(10 ** 6, dtype=np.int64), 1)
    assert np.array_equal(big, one)
    x = (big - 1) / 1e-3
    assert abs(x.mean()) < 5e-3 and abs(x.std() - 1) < 5e-3
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(np.mean(np.abs(x) > 3.0) - 2 * stats.norm.sf(3.0)) < 4e-4


def test_read_noise_rows_gives_the_same_draws_and_numpys_column_sums():
    """The serial row-by-row read (the one a 1-thread step uses) draws what the chunked read
    draws, and its column sums are numpy's ``sum(axis=0)`` of the read, bit for bit."""
    rng = np.random.default_rng(4)
    for shape in [(1568, 100), (7, 3), (1, 10), (300, 2), (1568, 1024)]:  # (n, 1): numpy sums pairwise
        g = rng.uniform(LO, HI, shape)
        want = np.empty(g.size)
        kp.read_noise(g.reshape(-1), want, np.uint64(21), 0.05, np.empty(g.size, dtype=np.int64), 3)
        out, colsum = np.empty(shape), np.full(shape[1], np.nan)
        kp.read_noise_rows(g, out, np.uint64(21), 0.05, np.empty(shape[1], dtype=np.int64), colsum)
        assert np.array_equal(out.reshape(-1), want)
        assert np.array_equal(colsum, want.reshape(shape).sum(axis=0))
    # through the devices: the read carries W1's column sums, which the training step passes on
    cfg = TrainConfig(arch="784-30-10", diode="pwl", device=DeviceConfig(preset="realistic"))
    tr = Trainer(cfg)
    tr.init_state(np.random.default_rng(0))
    seen = tr.optimizer.apparent(tr.params)
    assert tr.params["W1"].size < kp_min()  # read serially, whatever the thread count
    assert np.array_equal(seen.w1_colsum, seen["W1"].sum(axis=0))
    a, b = tr.net.system(seen, seen.w1_colsum), tr.net.system(dict(seen))  # carried sums, numpy's
    for name in ("GKK", "GKE", "gEE", "b0"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


def kp_min():
    from fastres.pulsed import PARALLEL_MIN_DEVICES
    return PARALLEL_MIN_DEVICES


def test_vectorisable_conversions_are_the_int64_ones_bit_for_bit():
    """``unit`` (``top53``: the 2^52 trick on two bit fields), ``floor_count`` and
    ``trunc_count`` (float floor/trunc and a select) give what the int64 conversions they
    replace gave, edge cases included."""
    from numba import njit

    @njit
    def old(h, x):
        return ((np.float64(np.int64(h >> np.uint64(11))) + 0.5) * (1.0 / 9007199254740992.0),
                float(math.floor(x)), float(int(x)))

    @njit
    def new(h, x):
        return kp.unit(h), kp.floor_count(x), kp.trunc_count(x)

    import math  # noqa: F401 (used by the compiled twin)
    rng = np.random.default_rng(5)
    hs = np.concatenate([rng.integers(0, 2 ** 63, 20000, dtype=np.uint64) * np.uint64(2) + np.uint64(1),
                         np.array([0, 2 ** 64 - 1, 2 ** 63, 2 ** 11 - 1, 2 ** 11, (2 ** 53 - 1) << 11,
                                   2 ** 37 - 1, 2 ** 37, 2 ** 64 - 2 ** 37, (2 ** 26 - 1) << 11],
                                  dtype=np.uint64)])
    xs = np.concatenate([rng.normal(0, 20, 20000), [0.0, -0.0, 0.5, -0.5, 8.0, -8.0, -9.0, 1e300, -1e300,
                                                    2.0 ** 63, -(2.0 ** 63), 2.0 ** 63 - 1024, np.inf,
                                                    -np.inf, np.nan, 4.999999999999999]])
    for h, x in zip(hs, xs):
        a, b = old(h, x), new(h, x)
        assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2], (h, x, a, b)


def test_row_hashes_by_adding_gamma_are_the_devices_own_bits():
    """A row's hashes formed by adding splitmix64's gamma to ``stream_state`` are
    ``device_bits`` of each device (its index's multiple of gamma, mod 2^64), from any offset;
    the twin's bits too."""
    from numba import njit

    @njit
    def by_adding(key, f0, n):
        out = np.empty(n, dtype=np.uint64)
        z = kp.stream_state(key, f0)
        for j in range(n):
            out[j] = kp.mix64(z)
            z += kp._GAMMA
        return out

    @njit
    def by_index(key, f0, n):
        out = np.empty(n, dtype=np.uint64)
        for j in range(n):
            out[j] = kp.device_bits(key, f0 + j)
        return out

    for key in (np.uint64(0), np.uint64(2 ** 64 - 1), np.uint64(0x9E3779B97F4A7C15), np.uint64(12345)):
        for f0 in (0, 1, 99, 156_700, 2 ** 40):
            a = by_adding(key, f0, 300)
            np.testing.assert_array_equal(a, by_index(key, f0, 300))
            assert [int(v) for v in a[:3]] == [naive.device_bits(int(key), f0 + j) for j in range(3)]


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.1, 0.2, 0.6, 1.0])
def test_listing_the_firing_devices_is_numpys_nonzero(rate):
    """``list_firing`` lists the nonzero counts in order, appended after ``m``, whether few fire
    (a branch a device) or many (the branch-free compaction)."""
    from numba import njit

    @njit
    def listed(q, off, f0, n, m):
        idx = np.full(m + n, -1, dtype=np.int64)
        nl = np.zeros(m + n)
        return kp.list_firing(q, off, f0, n, idx, nl, m), idx, nl

    rng = np.random.default_rng(int(rate * 100))
    q = np.where(rng.random(500) < rate, rng.choice([-3.0, -1.0, 1.0, 2.0], 500), 0.0)
    off, f0, n, m0 = 7, 1000, 450, 5
    m, idx, nl = listed(q, off, f0, n, m0)
    nz = np.flatnonzero(q[off:off + n])
    assert m == m0 + nz.size
    np.testing.assert_array_equal(idx[m0:m], f0 + nz)
    np.testing.assert_array_equal(nl[m0:m], q[off + nz])
    assert np.all(idx[:m0] == -1)


def test_exponential_move_with_packed_asymptotes_is_move_bit_for_bit():
    rng = np.random.default_rng(6)
    N = 5000
    lo = LO + rng.uniform(0, 0.3, N) * (HI - LO)
    hi = HI - rng.uniform(0, 0.3, N) * (HI - LO)
    a_up, a_down = rng.uniform(1e-3, 2.0, N), rng.uniform(1e-3, 2.0, N)
    prm = kp.pack_devices(lo, hi, rng.uniform(0.5, 1.5, N), a_up, a_down, np.zeros(N))
    g = rng.uniform(LO, HI, N)
    n = rng.integers(-8, 9, N).astype(float)
    for i in range(N):
        want = kp.move(kp.MODEL_EXP, g[i], n[i], lo[i], hi[i], prm[i, 2], 0.0, 0.0, a_up[i], a_down[i],
                       31.0, np.zeros(2), np.zeros(2))
        got = kp.move_exp(g[i], n[i], lo[i], hi[i], prm[i, 2], a_up[i], a_down[i], 31.0,
                          prm[i, kp.PRM_TOP], prm[i, kp.PRM_BOT])
        assert got == want


def test_pulse_curve_follows_each_model(tmp_path):
    """The report's conductance-against-pulse-count curve: the linear ramp, the exponential
    formula, and the measured table reproduced pulse by pulse (up, then down)."""
    from fastres.pulsed import pulse_curve
    from fastres.report import device_curves_figure
    P, g = pulse_curve(DeviceConfig(model="linear", levels=32), LO, HI)
    np.testing.assert_allclose(g, np.r_[LO + (HI - LO) * np.arange(32) / 31, HI - (HI - LO) * np.arange(1, 32) / 31],
                               rtol=0, atol=1e-12 * HI)
    P, g = pulse_curve(DeviceConfig(preset="realistic"), LO, HI)
    A = 0.25 * 31
    B = (HI - LO) / (1 - np.exp(-31 / A))
    np.testing.assert_allclose(g[:32], LO + B * (1 - np.exp(-np.arange(32) / A)), rtol=1e-9)
    path = _table(tmp_path)
    P, g = pulse_curve(DeviceConfig(model="table", table=str(path)), LO, HI)
    t = np.loadtxt(path, delimiter=",")
    np.testing.assert_allclose(g, np.r_[t[:, 1], t[1:, 2]], rtol=1e-9)
    out = device_curves_figure(tmp_path / "curves.png", table=path)
    assert Path(out).stat().st_size > 10000


def test_stream_keys_are_numpy_seed_sequence_bit_for_bit():
    from fastres.pulsed import stream_key
    rng = np.random.default_rng(6)
    cases = [(0, 0, 0, 1), (2 ** 32 - 1, 5, 3, 2), (2 ** 40, 1, 0, 1)]  # the last: numpy's path
    cases += [tuple(int(v) for v in rng.integers(0, 2 ** 32, 4)) for _ in range(300)]
    cases += [(int(rng.integers(0, 100)), int(rng.integers(0, 10 ** 7)), int(rng.integers(0, 8)), 1) for _ in range(300)]
    for c in cases:
        want = np.random.SeedSequence(list(c)).generate_state(1, dtype=np.uint64)[0]
        assert stream_key(*c) == want and isinstance(stream_key(*c), np.uint64), c
    from fastres.pulsed import stream_keys  # a step's keys of all arrays in one call
    for seed, step, purpose in [(0, 0, 1), (3, 10 ** 6, 2), (2 ** 32 - 1, 7, 1), (2 ** 40, 1, 2)]:
        keys = stream_keys(seed, step, 5, purpose)
        assert keys.dtype == np.uint64
        assert list(keys) == [stream_key(seed, step, j, purpose) for j in range(5)]


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(), reason="MNIST not found")
def test_error_against_levels_table_and_figure_from_run_files(tmp_path):
    from fastres.report import levels_figure, levels_table
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    args = ["--arch", "784-10-10", "--n-train", "200", "--n-test", "50", "--epochs", "1", "--threads",
            "1", "--quiet", "--data", str(MNIST)]
    runs = []
    for name, extra in (("ideal", []), ("l8", ["--device-param", "model=linear", "--device-param", "levels=8"])):
        out = tmp_path / f"{name}.h5"
        r = subprocess.run([sys.executable, "-m", "fastres.cli", "train", *args, *extra, "--out", str(out)],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        runs.append(out)
    rows = levels_table(runs)
    assert [r[1] for r in rows] == [None, 8] and all(r[2] == 1 for r in rows)
    for (path, levels, epochs, test, train, pulses), run in zip(rows, runs):
        m = RunStore.open(run).metrics()
        assert test == m["test_error"][-1] and train == m["train_error"][-1]
    assert rows[0][5] == 0 and rows[1][5] > 0  # the ideal run spends no pulses
    png = levels_figure(runs, tmp_path / "levels.png")
    assert Path(png).stat().st_size > 10000
    with pytest.raises(FastresError, match="no such|not found|exist|cannot"):
        levels_table([tmp_path / "missing.h5"])


def test_weight_scale_widens_the_mlp_weight_range_and_is_checked():
    """``weight_scale`` multiplies the weights a device holds: the same devices and conductances
    read as scaled weights; the setting is stored with the config and checked."""
    from fastres.pulsed import WeightDevices
    w_max = {"W1": 0.3, "b1": 0.3}
    params = {"W1": np.full((6, 4), 0.05), "b1": np.zeros(4)}
    out = {}
    for scale in (1.0, 2.5):
        cfg = DeviceConfig(model="linear", levels=1025, rounding="deterministic", weight_scale=scale)
        wd = WeightDevices(cfg, w_max, LO, HI, seed=1)
        assert wd.w_max == {k: v * scale for k, v in w_max.items()}
        p = {k: v.copy() for k, v in params.items()}
        wd.init(p)
        out[scale] = (wd, p)
    wd1, wd2 = out[1.0][0], out[2.5][0]
    g = np.linspace(LO, HI, 7)
    np.testing.assert_allclose(wd2.to_weight("W1", g), 2.5 * wd1.to_weight("W1", g), rtol=1e-12)
    # the same weight sits 2.5x closer to the mid-range conductance
    mid = 0.5 * (LO + HI)
    np.testing.assert_allclose(wd2.g["W1"] - mid, (wd1.g["W1"] - mid) / 2.5, rtol=0, atol=2 * (HI - LO) / 1024)
    tc = TrainConfig(arch="20-8-3", model="linear", levels=64, weight_scale=2.0)
    assert tc.device.resolved_params()["weight_scale"] == 2.0
    assert TrainConfig.from_dict(tc.to_dict()).device == tc.device
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(FastresError, match="weight_scale"):
            DeviceConfig(model="linear", levels=8, weight_scale=bad)
