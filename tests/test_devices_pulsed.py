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
    kp.pulse_update(g, d, np.zeros(N), np.full(N, LO), np.full(N, HI), s, np.zeros(N), np.empty(N),
                    np.uint64(5), CODES[model], step, step * (1 + up_down), step * (1 - up_down),
                    a_up, a_down, float(p_max), tab_up, tab_down, 0, 1e9, 0.0, False, 2)
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
    # stochastic rounding: 0.3 step wanted -> 1 pulse with probability 0.3
    g = g0.copy()
    pulses = np.empty(N)
    kp.pulse_update(g, np.full(N, 0.3 * step), np.zeros(N), np.full(N, LO), np.full(N, HI), np.ones(N),
                    np.zeros(N), pulses, np.uint64(11), kp.MODEL_LINEAR, step, step, step, np.ones(N),
                    np.ones(N), p_max, np.zeros(2), np.zeros(2), 1, 16.0, 0.0, False, 2)
    assert set(np.unique(pulses)) == {0.0, 1.0}
    assert abs(pulses.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / N)
    # write noise: 4 pulses with sigma 1 % of the range each: spread sigma r sqrt(4)
    g = g0.copy()
    sigma = 0.01
    kp.pulse_update(g, np.full(N, 4 * step), np.zeros(N), np.full(N, LO), np.full(N, HI), np.ones(N),
                    np.zeros(N), pulses, np.uint64(12), kp.MODEL_LINEAR, step, step, step, np.ones(N),
                    np.ones(N), p_max, np.zeros(2), np.zeros(2), 0, 16.0, sigma, False, 2)
    dev = (g - g0 - 4 * step) / (HI - LO)
    assert abs(dev.mean()) < 4 * 2 * sigma / np.sqrt(N)
    assert dev.std() == pytest.approx(2 * sigma, rel=0.02)
    # the stream depends on the key only, not on the number of chunks
    g1, g2 = g0.copy(), g0.copy()
    for g_, ch in ((g1, 1), (g2, 7)):
        kp.pulse_update(g_, np.full(N, 2.5 * step), np.zeros(N), np.full(N, LO), np.full(N, HI), np.ones(N),
                        np.zeros(N), pulses, np.uint64(13), kp.MODEL_LINEAR, step, step, step, np.ones(N),
                        np.ones(N), p_max, np.zeros(2), np.zeros(2), 1, 16.0, sigma, False, ch)
    assert np.array_equal(g1, g2)


def test_accumulate_then_pulse_fires_whole_steps():
    N = 1
    step = (HI - LO) / 10
    g = np.array([0.5 * (LO + HI)])
    acc = np.zeros(1)
    pulses = np.empty(1)
    fired = []
    for _ in range(10):  # 0.25 step wanted each time: one pulse every 4 calls
        kp.pulse_update(g, np.array([0.25 * step]), acc, np.full(N, LO), np.full(N, HI), np.ones(N), np.zeros(N),
                        pulses, np.uint64(1), kp.MODEL_LINEAR, step, step, step, np.ones(N), np.ones(N), 10.0,
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
