"""Issue 14: defaults that scale with the network (fastres.config.default_rates,
default_init_range, the MLP baseline's rule) and divergence detection (fastres.train)."""
from pathlib import Path

import numpy as np
import pytest

from fastres.analysis import evaluate_run
from fastres.baseline import MLPConfig, default_mlp_rates, default_mlp_target
from fastres.config import (DIVERGENCE_PINNED_FRACTION, NetworkConfig, TrainConfig, config_from_stored,
                            default_init_range, default_rates)
from fastres.errors import ConfigError
from fastres.store import RunStore
from fastres.train import Trainer, divergence, pinned_fraction, train

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(),
                           reason=f"MNIST not found at {MNIST}")


def test_rates_keep_the_tuned_reference_and_scale_with_width():
    assert default_rates("784-100-10") == [100.0, 30.0]  # the network they were tuned on
    assert default_rates("784-100-100-10") == [100.0, 30.0, 30.0]
    assert default_rates("784-16-10") == pytest.approx([16.0, 4.8])
    # above the reference width the factor is sqrt(w / 100), not w / 100
    assert default_rates("784-1024-10") == [320.0, 96.0]
    assert default_rates("784-400-10") == pytest.approx([200.0, 60.0])
    assert default_rates("784-1024-1024-10") == [320.0, 96.0, 96.0]
    # a layer into a hidden layer scales with that layer, the output layer with the last one
    assert default_rates("784-50-200-10") == pytest.approx([50.0, 30 * 2 ** 0.5, 30 * 2 ** 0.5])
    assert default_rates("784-50-16-10") == pytest.approx([50.0, 4.8, 4.8])
    assert default_rates("784-10") == [100.0]  # no hidden layer: the reference rate
    assert TrainConfig(arch="784-16-10").lr == pytest.approx([16.0, 4.8])


def test_rates_up_to_the_reference_width_are_the_former_rules_bits():
    # the default results of 784-16-10 ... 784-100-10 (and tests/data/bitident.json) rely on it
    for w in range(1, 101):
        assert default_rates(f"784-{w}-10") == [100.0 * w / 100, 30.0 * w / 100]
        assert default_rates(f"784-{w}-{w}-10")[1:] == [30.0 * w / 100] * 2
    # the factor is continuous at the reference width and grows more slowly beyond it
    below, at, above = (default_rates(f"784-{w}-10")[0] for w in (99, 100, 101))
    assert below < at < above and above - at < at - below


def test_explicit_rates_win_and_are_stored_resolved():
    assert TrainConfig(arch="784-16-10", lr=[100.0, 30.0]).lr == [100.0, 30.0]
    assert TrainConfig(arch="784-16-16-10", lr=[7.0]).lr == [7.0, 7.0, 7.0]
    r = TrainConfig(arch="784-16-10").resolved()
    assert r.optimizer.lr == pytest.approx((16.0, 4.8))
    # a stored (resolved) config keeps its values whatever the rule says for its sizes
    again = TrainConfig.from_dict(r.replace(lr=[100.0, 30.0]).to_dict())
    assert again.lr == [100.0, 30.0]
    with pytest.raises(ConfigError, match="one learning rate per layer"):
        TrainConfig(arch="784-16-10", lr=[1.0, 2.0, 3.0])


def test_old_run_file_keeps_its_stored_rates():
    store = RunStore.open(ROOT / "tests" / "data" / "layout1-784-6-6-10.h5")
    cfg = config_from_stored(store.config, store.layout_version)
    assert default_rates(cfg.sizes) != [100.0, 30.0, 30.0]  # the rule would now give others
    assert cfg.lr == [100.0, 30.0, 30.0] and cfg.resolved().lr == [100.0, 30.0, 30.0]
    assert cfg.network.init_range() == (1e-7, 5e-5)


def test_initial_range_follows_the_conductance_range():
    assert default_init_range(1e-7, 1e-4) == (1e-7, 5e-5)
    assert NetworkConfig().init_range() == (1e-7, 5e-5)  # the old fixed defaults, exactly
    assert NetworkConfig(g_max=1e-3).init_range() == (1e-7, 5e-4)
    assert NetworkConfig(g_max=1e-3, init_hi=2e-4).init_range() == (1e-7, 2e-4)  # explicit wins
    r = TrainConfig(g_min=1e-6, g_max=1e-3).resolved().network
    assert (r.init_lo, r.init_hi) == (1e-6, 5e-4)
    with pytest.raises(ConfigError, match="init_lo <= init_hi"):
        NetworkConfig(init_hi=2e-4)  # above g_max
    with pytest.raises(ConfigError, match="init_lo"):
        NetworkConfig(init_lo=float("nan"))


def test_mlp_rates_follow_the_fans():
    # relu: 4 / fan_in for the output layer, 0.01 * sqrt((n_l + n_{l+1}) / 110) into a hidden layer
    assert default_mlp_rates((784, 100, 10)) == pytest.approx((0.01, 0.04))
    assert default_mlp_rates((784, 16, 10)) == pytest.approx((0.01 * (26 / 110) ** 0.5, 0.25))
    assert default_mlp_rates((784, 100, 100, 10), mirrored_inputs=True) == pytest.approx(
        (0.005 * (200 / 110) ** 0.5, 0.01, 0.04))
    assert default_mlp_rates((784, 10)) == pytest.approx((4 / 784,))
    assert default_mlp_rates((784, 16, 10), activation="hardtanh") == (0.01, 0.002)  # former rates
    assert MLPConfig(sizes=(784, 32, 10), activation="relu").layer_lrs == pytest.approx(
        (0.01 * (42 / 110) ** 0.5, 4 / 32))
    assert MLPConfig(sizes=(784, 32, 10), lr=0.01).layer_lrs == (0.01, 0.01)  # explicit wins


def test_mlp_target_rule():
    # relu: the one-hot target 1.5 at every size; hardtanh and sigmoid keep 1
    assert default_mlp_target("relu") == 1.5
    assert default_mlp_target("hardtanh") == default_mlp_target("sigmoid") == 1.0
    for sizes in ((784, 16, 10), (784, 1024, 10), (784, 32, 32, 10)):
        assert MLPConfig(sizes=sizes, activation="relu").target_scale == 1.5
    assert MLPConfig(sizes=(784, 100, 10)).target_scale == 1.0  # hardtanh, the class default
    assert MLPConfig(sizes=(784, 100, 10), activation="relu", target_scale=1.0).target_scale == 1.0
    with pytest.raises(ValueError, match="target_scale"):
        MLPConfig(sizes=(784, 100, 10), activation="relu", target_scale=-1.0)


def test_divergence_flags_loss_growth_and_pinned_conductances():
    g_min, g_max = 1e-7, 1e-4
    rng = np.random.default_rng(0)
    healthy = {"W1": rng.uniform(1e-6, 9e-5, (50, 8)), "B1": rng.uniform(1e-6, 9e-5, 8)}
    d = divergence(0.05, 0.3, healthy, g_min, g_max)
    assert d["diverged"] == 0 and d["loss_growth"] == pytest.approx(0.05 / 0.3) and d["pinned_fraction"] == 0
    assert divergence(4.0, 0.3, healthy, g_min, g_max)["diverged"] == 1  # 13x its lowest
    assert divergence(float("nan"), 0.3, healthy, g_min, g_max)["diverged"] == 1
    pinned = {k: v.copy() for k, v in healthy.items()}
    pinned["W1"][:25] = g_max  # 200 of 408 at the upper bound
    assert pinned_fraction(pinned, g_min, g_max) == pytest.approx(200 / 408)
    assert divergence(0.05, 0.3, pinned, g_min, g_max)["diverged"] == 1
    pinned["W1"][:25] = g_min + 0.5 * 1e-3 * (g_max - g_min)  # within the tolerance of g_min
    assert pinned_fraction(pinned, g_min, g_max) >= DIVERGENCE_PINNED_FRACTION


@mnist
def test_forced_divergence_is_reported(tmp_path):
    cfg = TrainConfig(arch="784-16-10", diode="pwl", lr=[1e5, 3e4], n_train=400, n_test=100, epochs=1,
                      data=str(MNIST), store_samples=4)
    lines = []
    m = train(cfg, tmp_path / "div.h5", log=lines.append, progress=False)
    assert m["diverged"] == 1 and (m["loss_growth"] >= 10 or m["pinned_fraction"] >= 0.2)
    assert "DIVERGING" in lines[-1]
    stored = RunStore.open(tmp_path / "div.h5").metrics()
    assert stored["diverged"][-1] == 1 and stored["pinned_fraction"][-1] == pytest.approx(m["pinned_fraction"])
    ev = evaluate_run(tmp_path / "div.h5")  # what `fastres eval --json` prints
    assert ev["diverged"] == 1 and ev["pinned_fraction"] == pytest.approx(m["pinned_fraction"])


@mnist
def test_default_16_unit_network_loss_falls_in_its_first_epoch(tmp_path):
    """With the defaults only, a 784-16-10 network learns in its first epoch on a small subset
    (the old fixed rates, 6x too large for 16 hidden nodes, made its first epoch diverge)."""
    cfg = TrainConfig(arch="784-16-10", diode="pwl", n_train=1000, n_test=200, epochs=1, data=str(MNIST),
                      store_samples=4)
    from fastres.datasets import load_data
    data = load_data(cfg)
    start = Trainer(cfg.resolved())
    start.init_state(np.random.default_rng(cfg.run.seed))  # train() draws the same conductances
    loss0, err0, _, _ = start.evaluate(data.x_test, data.y_test)
    lines = []
    m = train(cfg, tmp_path / "r.h5", log=lines.append, progress=False)
    assert m["test_loss"] < 0.5 * loss0 and m["test_error"] < 0.5 * err0
    assert m["loss_growth"] < 1  # the epoch's mean loss is below the first minibatch's
    assert m["diverged"] == 0 and "DIVERGING" not in lines[-1]


def test_mlp_rates_are_an_option_stored_in_the_run_file():
    """``--mlp-lr`` (``run.mlp_lr``) sets the MLP baseline's rates instead of the rule, so the
    README rows measured with the former rates stay reproducible."""
    cfg = TrainConfig(arch="784-16-10", mlp_lr=[0.01, 0.002])
    assert cfg.run.mlp_lr == (0.01, 0.002)
    assert TrainConfig.from_dict(cfg.resolved().to_dict()).run.mlp_lr == (0.01, 0.002)
    assert TrainConfig(arch="784-16-10").run.mlp_lr is None  # the rule
    with pytest.raises(ConfigError, match="mlp_lr"):
        TrainConfig(arch="784-16-10", mlp_lr=[0.01, -0.002])


def test_mlp_target_is_an_option_stored_in_the_run_file():
    """``--mlp-target`` (``run.mlp_target``) sets the MLP baseline's one-hot target instead of
    the rule, so the rows measured with the former target 1 stay reproducible."""
    cfg = TrainConfig(arch="784-16-10", mlp_target=1)
    assert cfg.run.mlp_target == 1.0 and isinstance(cfg.run.mlp_target, float)
    assert TrainConfig.from_dict(cfg.resolved().to_dict()).run.mlp_target == 1.0
    assert TrainConfig(arch="784-16-10").run.mlp_target is None  # the rule
    for bad in (0, -1.5, float("nan"), "x"):
        with pytest.raises(ConfigError, match="mlp_target"):
            TrainConfig(arch="784-16-10", mlp_target=bad)


def _mlp_run(path, *flags):
    """A 1-epoch 784-16-10 MLP baseline on 200 samples with ``flags``: (meta, config) stored."""
    from fastres.cli import main
    code = main(["train", "--baseline", "mlp", "--arch", "784-16-10", "--epochs", "1", "--n-train", "200",
                 "--n-test", "100", *flags, "--data", str(MNIST), "--quiet", "--out", str(path)])
    assert code in (0, None)
    with RunStore.open(path) as st:
        return st.meta["mlp_config"], st.config


@mnist
def test_mlp_rates_and_target_reach_the_baseline(tmp_path):
    meta, _ = _mlp_run(tmp_path / "mlp.h5", "--mlp-lr", "0.03,0.004")
    assert "lr=(0.03, 0.004)" in meta
    assert "target_scale=1.5" in meta  # relu (default rails): the rule
    meta, config = _mlp_run(tmp_path / "mlp2.h5", "--mlp-target", "1")
    assert "target_scale=1.0" in meta and config["run"]["mlp_target"] == 1.0
