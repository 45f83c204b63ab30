"""Tests of fastres.baseline: the numpy backprop MLP used as the software baseline."""

import itertools
import time
from types import SimpleNamespace

import numpy as np
import pytest

from fastres.baseline import (
    ACTIVATIONS,
    MLPConfig,
    init_params,
    loss_and_grads,
    mlp_error,
    mlp_loss,
    mlp_predict,
    train_mlp,
)


# --------------------------------------------------------------------------- helpers


def _blobs(n_train=400, n_test=200, dim=6, seed=0):
    """Two Gaussian blobs in [0, 1]^dim, std 0.12 per coordinate, centred at 0.3 and
    0.7 on every axis: Bayes error < 0.1 % for dim >= 4 (separable in practice)."""
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, 2, n)
        centre = np.where(y[:, None] == 1, 0.7, 0.3)
        x = np.clip(centre + 0.12 * rng.standard_normal((n, dim)), 0.0, 1.0)
        return x, y.astype(np.int64)

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return SimpleNamespace(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)


def _numeric_grads(params, x, y, cfg, h=1e-6):
    num = {}
    for k, p in params.items():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            fp, _ = loss_and_grads(params, x, y, cfg)
            p[i] = old - h
            fm, _ = loss_and_grads(params, x, y, cfg)
            p[i] = old
            g[i] = (fp - fm) / (2 * h)
        num[k] = g
    return num


def _min_distance_to_kinks(params, x, cfg):
    """Smallest distance of any pre-activation to a kink of the activations used."""
    kinks = {"hardtanh": (-1.0, 1.0), "relu": (0.0,), "sigmoid": (), "linear": ()}
    n_layers = len(cfg.sizes) - 1
    h = np.concatenate([x, -x], axis=1) if cfg.mirrored_inputs else x
    best = np.inf
    for l in range(1, n_layers + 1):
        z = h @ params[f"W{l}"] + params[f"b{l}"]
        name = cfg.activation if l < n_layers else cfg.output_activation
        for k in kinks[name]:
            best = min(best, float(np.min(np.abs(z - k))))
        if name == "hardtanh":
            h = np.clip(z, -1, 1)
        elif name == "relu":
            h = np.maximum(z, 0)
        elif name == "sigmoid":
            h = 1 / (1 + np.exp(-z))
        else:
            h = z
    return best


GRAD_CASES = [
    (act, loss, out, mirrored)
    for act in ACTIVATIONS
    for loss, out in [("mse", "linear"), ("mse", "hardtanh"), ("mse", "sigmoid"), ("xent", "linear")]
    for mirrored in (False, True)
]


# --------------------------------------------------------------------------- gradient check


@pytest.mark.parametrize("activation,loss,output_activation,mirrored", GRAD_CASES)
def test_gradient_matches_finite_differences(activation, loss, output_activation, mirrored):
    cfg = MLPConfig(sizes=(5, 4, 3, 3), activation=activation, loss=loss,
                    output_activation=output_activation, target_scale=0.8,
                    mirrored_inputs=mirrored)
    # Find a test point where every pre-activation is away from a kink (so the
    # function is differentiable there and central differences are exact to O(h^2)).
    for seed in range(200):
        rng = np.random.default_rng(seed)
        params = init_params(cfg, rng)
        for k in params:
            params[k] = params[k] + 0.3 * rng.standard_normal(params[k].shape)
        x = rng.uniform(0.0, 1.0, (6, 5))
        y = rng.integers(0, 3, 6)
        if _min_distance_to_kinks(params, x, cfg) > 1e-3:
            break
    else:
        pytest.fail("no kink-free test point found")

    value, grads = loss_and_grads(params, x, y, cfg)
    assert np.isfinite(value)
    num = _numeric_grads(params, x, y, cfg)
    assert set(grads) == set(params)
    all_a = np.concatenate([grads[k].ravel() for k in sorted(params)])
    all_n = np.concatenate([num[k].ravel() for k in sorted(params)])
    assert np.linalg.norm(all_n) > 1e-6, "degenerate test point: zero gradient"
    rel = np.linalg.norm(all_a - all_n) / np.linalg.norm(all_n)
    assert rel < 1e-6, f"relative gradient error {rel:.2e}"
    for k in params:
        assert grads[k].shape == params[k].shape
        scale = max(np.max(np.abs(num[k])), 1e-8)
        assert np.max(np.abs(grads[k] - num[k])) / scale < 1e-6, k


def test_hardtanh_gradient_zero_when_saturated():
    cfg = MLPConfig(sizes=(2, 2, 2))
    params = {"W1": np.array([[10.0, 0.1], [0.0, 0.1]]), "b1": np.zeros(2),
              "W2": np.eye(2), "b2": np.zeros(2)}
    x = np.array([[1.0, 1.0]])  # hidden unit 0 at z = 10 (clipped), unit 1 at 0.2
    _, g = loss_and_grads(params, x, np.array([1]), cfg)
    assert np.all(g["W1"][:, 0] == 0.0) and g["b1"][0] == 0.0
    assert np.all(g["W1"][:, 1] != 0.0)


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("activation,loss", [("hardtanh", "mse"), ("sigmoid", "xent"),
                                             ("relu", "mse")])
def test_learns_two_blobs(activation, loss):
    data = _blobs()
    cfg = MLPConfig(sizes=(6, 8, 2), activation=activation, loss=loss, lr=0.05,
                    momentum=0.9, batch_size=16, epochs=5, seed=3)
    rows = []
    t0 = time.perf_counter()
    params, history = train_mlp(cfg, data, on_epoch=rows.append)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0
    assert len(history) == 5 and rows == history
    for i, row in enumerate(history, start=1):
        assert row["epoch"] == i
        for key in ("train_loss", "train_error", "test_loss", "test_error", "epoch_seconds"):
            assert np.isfinite(row[key]) and row[key] >= 0, key
        assert 0 <= row["train_error"] <= 1 and 0 <= row["test_error"] <= 1
    assert history[-1]["test_error"] < 0.05
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 1.5
    # the history numbers agree with the public evaluation functions
    err = mlp_error(params, data.x_test, data.y_test, activation)
    assert err == pytest.approx(history[-1]["test_error"])
    assert mlp_loss(params, data.x_test, data.y_test, cfg) == pytest.approx(history[-1]["test_loss"])
    out = mlp_predict(params, data.x_test, activation)
    assert out.shape == (data.x_test.shape[0], 2) and out.dtype == np.float64


def test_mirrored_inputs_learns_and_is_inferred():
    data = _blobs(dim=4)
    cfg = MLPConfig(sizes=(4, 6, 2), mirrored_inputs=True, lr=0.05, epochs=4, batch_size=16)
    params, history = train_mlp(cfg, data)
    assert params["W1"].shape == (8, 6)
    assert cfg.n_params() == 8 * 6 + 6 + 6 * 2 + 2
    assert history[-1]["test_error"] < 0.05
    # mirroring is inferred from W1 and equals explicit mirroring
    a = mlp_predict(params, data.x_test, "hardtanh")
    b = mlp_predict(params, np.concatenate([data.x_test, -data.x_test], 1), "hardtanh",
                    mirrored_inputs=False)
    np.testing.assert_array_equal(a, b)


def test_accepts_dict_data_and_zero_epochs():
    data = _blobs(n_train=50, n_test=20)
    d = vars(data)
    params, history = train_mlp(MLPConfig(sizes=(6, 3, 2), epochs=0), d)
    assert history == [] and set(params) == {"W1", "b1", "W2", "b2"}
    a = np.sqrt(6.0 / (6 + 3))
    assert np.all(np.abs(params["W1"]) <= a) and np.all(params["b1"] == 0)


# --------------------------------------------------------------------------- reproducibility


def test_reproducible_from_seed():
    data = _blobs(n_train=300, n_test=100)
    cfg = MLPConfig(sizes=(6, 7, 5, 2), lr=(0.05, 0.03, 0.01), epochs=3, batch_size=13, seed=11)
    p1, h1 = train_mlp(cfg, data)
    p2, h2 = train_mlp(cfg, data)
    assert set(p1) == set(p2)
    for k in p1:
        assert p1[k].dtype == np.float64
        np.testing.assert_array_equal(p1[k], p2[k])
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in h]
    assert strip(h1) == strip(h2)

    from dataclasses import replace
    p3, _ = train_mlp(replace(cfg, seed=12), data)
    assert any(not np.array_equal(p1[k], p3[k]) for k in p1)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs,field", [
    (dict(sizes=()), "sizes"),
    (dict(sizes=(784,)), "sizes"),
    (dict(sizes=(784, 0, 10)), "sizes"),
    (dict(sizes=(784, 100.5, 10)), "sizes"),
    (dict(lr=-0.1), "lr"),
    (dict(lr=0.0), "lr"),
    (dict(lr=(0.1, -0.01)), "lr"),
    (dict(lr=(0.1, 0.1, 0.1)), "lr"),
    (dict(activation="tanhh"), "activation"),
    (dict(output_activation="softplus"), "output_activation"),
    (dict(loss="hinge"), "loss"),
    (dict(loss="xent", output_activation="sigmoid"), "output_activation"),
    (dict(momentum=1.0), "momentum"),
    (dict(batch_size=0), "batch_size"),
    (dict(epochs=-1), "epochs"),
    (dict(seed=-3), "seed"),
    (dict(target_scale=0), "target_scale"),
    (dict(init="he"), "init"),
    (dict(lr_decay=1.5), "lr_decay"),
])
def test_bad_config_raises_valueerror_naming_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MLPConfig(**kwargs)


def test_bad_data_raises_valueerror():
    data = _blobs(n_train=20, n_test=10)
    with pytest.raises(ValueError, match="x_train"):
        train_mlp(MLPConfig(sizes=(5, 3, 2)), data)
    bad = SimpleNamespace(**{**vars(data), "y_test": data.y_test + 5})
    with pytest.raises(ValueError, match="y_test"):
        train_mlp(MLPConfig(sizes=(6, 3, 2)), bad)
    with pytest.raises(ValueError, match="activation"):
        mlp_predict({"W1": np.zeros((6, 2)), "b1": np.zeros(2)}, data.x_test, "tanhh")


# --------------------------------------------------------------------------- on pulsed devices

G_MIN, G_MAX = 1e-7, 1e-4


def _devices(cfg, **device):
    from fastres.baseline import device_weight_ranges
    from fastres.config import DeviceConfig
    from fastres.pulsed import WeightDevices
    return WeightDevices(DeviceConfig(**device), device_weight_ranges(cfg), G_MIN, G_MAX, seed=3)


def test_mlp_on_a_fine_linear_device_follows_exact_training():
    """2^20 levels, deterministic rounding, no noise: the weights stay within a few device
    steps of exact backprop's (the desired changes are the momentum steps)."""
    from fastres.baseline import device_weight_ranges
    data = _blobs(n_train=200, n_test=50)
    cfg = MLPConfig(sizes=(6, 5, 2), lr=0.05, epochs=1, batch_size=20, seed=2)
    exact, _ = train_mlp(cfg, data)
    dev = _devices(cfg, model="linear", levels=2 ** 20 + 1, rounding="deterministic", max_pulses=10 ** 6)
    on_dev, hist = train_mlp(cfg, data, device=dev)
    w_max = device_weight_ranges(cfg)
    moved = 0.0
    for k in exact:
        step_w = 2 * w_max[k] / 2 ** 20
        np.testing.assert_allclose(on_dev[k], exact[k], rtol=0, atol=10 * step_w, err_msg=k)
        moved = max(moved, np.abs(exact[k] - init_params(cfg, np.random.Generator(np.random.PCG64(2)))[k]).max() / step_w)
    assert moved > 1000  # training really moved the weights by many device steps
    assert hist[0]["pulses"] > 0


def test_mlp_on_a_coarse_device_holds_its_levels_and_range():
    """16 levels: every weight sits on a device level within +-w_max, and the devices' state
    (conductances) maps back to the weights."""
    from fastres.baseline import device_weight_ranges
    data = _blobs(n_train=200, n_test=50)
    cfg = MLPConfig(sizes=(6, 5, 2), lr=0.05, epochs=2, batch_size=20, seed=2)
    dev = _devices(cfg, model="linear", levels=16)
    params, hist = train_mlp(cfg, data, device=dev)
    w_max = device_weight_ranges(cfg)
    for k, w in params.items():
        assert np.all(np.abs(w) <= w_max[k] * (1 + 1e-12)), k
        level = (w + w_max[k]) / (2 * w_max[k]) * 15
        np.testing.assert_allclose(level, np.round(level), atol=1e-6, err_msg=k)
        np.testing.assert_allclose(dev.to_weight(k, dev.g[k]), w, rtol=0, atol=1e-15)
        assert np.array_equal(dev.state()[f"g.{k}"], dev.g[k])
    assert all(r["pulses"] > 0 for r in hist)
    assert hist[-1]["test_error"] < 0.2  # separable blobs still learnt on 16 levels


def test_mlp_read_noise_reaches_the_forward_pass_and_runs_are_reproducible():
    cfg = MLPConfig(sizes=(6, 5, 2), lr=0.05, epochs=1, batch_size=20, seed=2)
    dev = _devices(cfg, preset="realistic")
    params = init_params(cfg, np.random.Generator(np.random.PCG64(2)))
    dev.init(params)
    seen = dev.read(params)
    for k in params:
        g_seen = dev.g_mid + seen[k] * dev.half / dev.w_max[k]
        rel = g_seen / dev.g[k] - 1
        assert np.all(rel != 0) and np.abs(rel).max() < 6 * 0.01, k  # 1 % read noise
    data = _blobs(n_train=200, n_test=50)
    runs = [train_mlp(cfg, data, device=_devices(cfg, preset="realistic")) for _ in range(2)]
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])
    assert runs[0][1][0]["pulses"] == runs[1][1][0]["pulses"] > 0


def test_cli_trains_the_mlp_on_a_device_and_stores_its_state(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fastres.store import RunStore
    root = Path(__file__).resolve().parents[1]
    mnist = root.parent / "shared" / "data" / "mnist"
    if not (mnist / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("MNIST not found")
    out = tmp_path / "mlp.h5"
    r = subprocess.run([sys.executable, "-m", "fastres.cli", "train", "--baseline", "mlp", "--arch", "784-10-10",
                        "--n-train", "300", "--n-test", "50", "--epochs", "2", "--device", "realistic",
                        "--device-param", "accumulate=true", "--data", str(mnist), "--out", str(out)],
                       capture_output=True, text=True, cwd=root, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    assert "realistic/exponential devices" in r.stdout and "pulses" in r.stdout
    store = RunStore.open(out)
    assert store.config["device"]["preset"] == "realistic" and store.meta["kind"] == "mlp"
    m = store.metrics()
    assert np.all(m["pulses"] > 0)
    ck = store.load_checkpoint()
    for k in ("W1", "b1", "W2", "b2"):  # the device state: conductances and per-device arrays
        g = ck.optimizer[f"g.{k}"]
        assert g.shape == ck.params[k].shape and np.all((g >= 1e-7) & (g <= 1e-4)), k
        assert ck.optimizer[f"{k}.acc"].size == g.size
    from fastres.report import make_report
    written = [Path(f).name for f in make_report(out, tmp_path / "report")]
    assert "device_curve.png" in written and "learning_curves.png" in written
