"""Every LR policy against its closed form at named updates; lengths, warm-up, resuming, and bad input."""

import io
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ablate.config import load_option
from ablate.errors import ConfigError
from ablate.schedules import build_scheduler, to_updates, validate_sched

CONF = Path(__file__).resolve().parent.parent / "ablate" / "conf"
POLICIES = sorted(path.stem for path in (CONF / "sched").glob("*.yaml"))
BASE_LR = 0.01
SGD = load_option("optim", "sgd")  # with the keys conf/config.yaml gives every optimizer


def sched_cfg(name: str, **overrides):
    """conf/sched/<name>.yaml with keys replaced, as `sched=<name> sched.key=value` would; the policy alone, without
    the default warm-up epoch, unless a test asks for one."""
    return OmegaConf.merge(load_option("sched", name), {"warmup_epochs": 0}, overrides)


def make_optimizer(lr: float = BASE_LR, optimizer_class=torch.optim.SGD, **kwargs) -> torch.optim.Optimizer:
    return optimizer_class([torch.zeros(1, requires_grad=True)], lr=lr, **kwargs)


def lr_trace(cfg, *, steps_per_epoch: int = 10, total_steps: int = 1000, lr: float = BASE_LR) -> list[float]:
    """The LR of updates 0 .. total_steps - 1, then the LR after the last update, stepped as the loop does."""
    optimizer = make_optimizer(lr, momentum=0.9)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def test_every_policy_of_the_issue_has_an_option_file():
    expected = {"fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid", "cosine", "sgdr", "cyclical", "onecycle"}
    assert expected <= set(POLICIES)


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_composes_with_the_root_config(name, compose):
    cfg = compose(f"sched={name}")
    validate_sched(cfg.sched, cfg.optim, BASE_LR, steps_per_epoch=10, total_steps=1000)


def test_fixed_keeps_the_optimizer_lr():
    assert set(lr_trace(sched_cfg("fixed"))) == {BASE_LR}


def test_step_decays_by_gamma_exactly_at_each_multiple_of_stepsize():
    lrs = lr_trace(sched_cfg("step", unit="iters", stepsize=100, gamma=0.1))
    assert close(lrs[99], BASE_LR)
    assert close(lrs[100], BASE_LR * 0.1)
    assert close(lrs[199], BASE_LR * 0.1)
    assert close(lrs[200], BASE_LR * 0.01)


def test_step_default_decays_once_at_three_quarters_of_the_run():
    # Not the articles' 10% staircase: a short run with their init needs its updates at the base LR (step.yaml).
    lrs = lr_trace(sched_cfg("step"), total_steps=1000)
    assert close(lrs[749], BASE_LR) and close(lrs[750], BASE_LR * 0.1) and close(lrs[-1], BASE_LR * 0.1)


def test_step_at_stepsize_0_1_is_the_articles_10k_of_100k_as_a_fraction():
    lrs = lr_trace(sched_cfg("step", stepsize=0.1), total_steps=1000)
    assert close(lrs[99], BASE_LR) and close(lrs[100], BASE_LR * 0.1) and close(lrs[200], BASE_LR * 0.01)


def test_multistep_decays_at_each_stepvalue():
    lrs = lr_trace(sched_cfg("multistep"), total_steps=1000)  # 0.1, 0.3, 0.6 of the run, gamma 0.5
    for passed, update in enumerate([100, 300, 600]):
        assert close(lrs[update - 1], BASE_LR * 0.5**passed)
        assert close(lrs[update], BASE_LR * 0.5 ** (passed + 1))


def test_exp_in_iterations_is_caffe_per_iteration():
    lrs = lr_trace(sched_cfg("exp", unit="iters", gamma=0.9999), total_steps=5000)
    assert math.isclose(lrs[3000], BASE_LR * 0.9999**3000, rel_tol=1e-9)


def test_exp_default_ends_where_the_articles_run_ended():
    lrs = lr_trace(sched_cfg("exp"), total_steps=1000)
    # Halfway through a short run the LR is where the articles' was at iteration 50,000.
    assert math.isclose(lrs[500], BASE_LR * 0.9999**50_000, rel_tol=1e-3)
    assert math.isclose(lrs[1000], BASE_LR * 0.9999**100_000, rel_tol=1e-3)


def test_inv_in_iterations_is_caffe_formula():
    lrs = lr_trace(sched_cfg("inv", unit="iters", gamma=0.001, power=0.75), total_steps=4000)
    assert close(lrs[3000], BASE_LR * (1 + 0.001 * 3000) ** -0.75)


def test_inv_default_matches_the_articles_at_the_same_point_of_the_run():
    lrs = lr_trace(sched_cfg("inv"), total_steps=1000)
    assert close(lrs[500], BASE_LR * (1 + 0.001 * 50_000) ** -0.75)


def test_poly_reaches_zero_after_the_last_update():
    total = 1000
    lrs = lr_trace(sched_cfg("poly", power=2.0), total_steps=total)
    assert close(lrs[500], BASE_LR * 0.5**2)
    assert close(lrs[total - 1], BASE_LR * (1 / total) ** 2)
    assert lrs[total] == 0.0


def test_sigmoid_is_half_the_lr_at_its_midpoint():
    lrs = lr_trace(sched_cfg("sigmoid", unit="iters", gamma=-0.01, stepsize=400), total_steps=1000)
    assert close(lrs[400], BASE_LR / 2)
    assert close(lrs[600], BASE_LR / (1 + math.exp(0.01 * 200)))


def test_sigmoid_default_decays_and_caffe_positive_gamma_rises():
    decaying = lr_trace(sched_cfg("sigmoid"))
    assert decaying[0] > 0.99 * BASE_LR and decaying[-1] < 0.01 * BASE_LR
    rising = lr_trace(sched_cfg("sigmoid", gamma=50.0))
    assert rising[0] < 0.01 * BASE_LR and rising[-1] > 0.99 * BASE_LR


def test_cosine_is_halfway_at_mid_run_and_eta_min_at_the_end():
    lrs = lr_trace(sched_cfg("cosine", eta_min=0.001), total_steps=1000)
    assert math.isclose(lrs[500], 0.001 + (BASE_LR - 0.001) / 2, rel_tol=1e-9)
    assert math.isclose(lrs[1000], 0.001, rel_tol=1e-9)


def test_sgdr_restarts_at_T_0_and_at_T_0_plus_T_0_times_T_mult():
    lrs = lr_trace(sched_cfg("sgdr", unit="iters", T_0=100, T_mult=2, eta_min=0.0), total_steps=700)
    assert close(lrs[99], BASE_LR * (1 + math.cos(math.pi * 99 / 100)) / 2)
    assert close(lrs[100], BASE_LR)
    assert close(lrs[200], BASE_LR / 2)  # middle of the second cycle, 200 updates long
    assert lrs[299] < 0.001 * BASE_LR
    assert close(lrs[300], BASE_LR)


@pytest.mark.parametrize("total", [124, 1248, 1000, 97])
def test_sgdr_default_ends_its_last_cycle_on_the_last_update(total):
    """The issue: with T_0 rounded, torch restarted at update 120 of 124 (1,245 of 1,248) and ended at the full LR."""
    lrs = lr_trace(sched_cfg("sgdr"), total_steps=total)
    restarts = [u for u in range(1, total) if lrs[u] > lrs[u - 1]]
    assert len(restarts) == 3  # four cycles of 1, 2, 4 and 8 fifteenths
    last_start = restarts[-1]
    assert abs((total - last_start) / total - 8 / 15) < 2 / total
    assert lrs[total - 1] == pytest.approx(
        BASE_LR * (1 + math.cos(math.pi * (total - 1 - last_start) / (total - last_start))) / 2
    )
    assert lrs[total - 1] < 0.01 * BASE_LR and lrs[total] == pytest.approx(0.0, abs=1e-15)


def test_sgdr_stretches_the_cycle_nearest_the_end():
    # T_0 = 0.3 of the run, T_mult 1: ends at 0.3, 0.6, 0.9 (1.2 is farther from 1.0), so the third cycle runs to 1.0.
    lrs = lr_trace(sched_cfg("sgdr", T_0=0.3, T_mult=1), total_steps=1000)
    assert [u for u in range(1, 1000) if lrs[u] > lrs[u - 1]] == [300, 600]
    assert close(lrs[600 + 200], BASE_LR / 2)  # the middle of the 400-update last cycle


def test_exp_default_gamma_is_the_articles_0_9999_per_iteration_over_100k_exactly():
    lrs = lr_trace(sched_cfg("exp"), total_steps=1000)
    assert math.isclose(lrs[1000], BASE_LR * 0.9999**100_000, rel_tol=1e-9)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("cyclical", {"unit": "iters", "stepsize": 100, "base_lr": 0.001, "max_lr": 0.006}),
        ("cyclical", {"unit": "iters", "stepsize": 100}),
        ("onecycle", {"max_lr": 0.1}),
        ("sgdr", {"eta_min": 0.001}),
        ("step", {}),
        ("fixed", {}),
    ],
)
def test_every_policy_keeps_a_2x_bias_group_at_2x(name, overrides):
    """recipe=articles trains conv biases at lr_mult 2: every policy must scale both groups alike."""
    weight, bias = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD(
        [{"params": [weight], "lr_mult": 1.0}, {"params": [bias], "lr": 2 * BASE_LR, "lr_mult": 2.0}],
        lr=BASE_LR,
        momentum=0.9,
    )
    scheduler = build_scheduler(sched_cfg(name, **overrides), optimizer, steps_per_epoch=10, total_steps=1000)
    for _ in range(1000):
        assert optimizer.param_groups[1]["lr"] == pytest.approx(2 * optimizer.param_groups[0]["lr"], rel=1e-12)
        optimizer.step()
        scheduler.step()


def test_triangular_peaks_at_max_lr_and_returns_to_base_lr():
    lrs = lr_trace(sched_cfg("cyclical", unit="iters", stepsize=100, base_lr=0.001, max_lr=0.006))
    assert close(lrs[0], 0.001)
    assert close(lrs[50], 0.0035)
    assert close(lrs[100], 0.006)
    assert close(lrs[200], 0.001)
    assert close(lrs[300], 0.006)


def test_triangular2_halves_the_amplitude_every_cycle():
    lrs = lr_trace(sched_cfg("cyclical", mode="triangular2", unit="iters", stepsize=100, base_lr=0.001, max_lr=0.005))
    assert close(lrs[100], 0.005)
    assert close(lrs[300], 0.001 + 0.004 / 2)
    assert close(lrs[500], 0.001 + 0.004 / 4)


def test_exp_range_shrinks_the_amplitude_by_gamma_per_unit():
    lrs = lr_trace(sched_cfg("cyclical", mode="exp_range", gamma=0.5, stepsize=0.125, base_lr=0.001, max_lr=0.005))
    assert close(lrs[125], 0.001 + 0.004 * 0.5**0.125)  # gamma per run: 0.125 of the run has passed at the peak


def test_cyclical_without_bounds_uses_the_optimizer_lr_and_a_third_of_it():
    lrs = lr_trace(sched_cfg("cyclical", unit="iters", stepsize=100), lr=0.03)
    assert close(lrs[0], 0.01) and close(lrs[100], 0.03)


@pytest.mark.parametrize("point_at", ["folder", "file"])
def test_cyclical_takes_its_bounds_from_a_range_test_record(tmp_path, point_at):
    (tmp_path / "lr_range.json").write_text(json.dumps({"base_lr": 0.02, "max_lr": 0.06}))
    where = tmp_path if point_at == "folder" else tmp_path / "lr_range.json"
    lrs = lr_trace(sched_cfg("cyclical", unit="iters", stepsize=100, bounds_from=str(where)))
    assert close(lrs[0], 0.02) and close(lrs[100], 0.06)


def test_onecycle_rises_to_max_lr_then_falls_to_its_floor():
    lrs = lr_trace(sched_cfg("onecycle", max_lr=0.1, pct_start=0.3), total_steps=1000)
    assert close(lrs[0], 0.1 / 25)
    assert close(lrs[299], 0.1)  # torch ends the rise at update pct_start * total - 1
    assert close(lrs[999], 0.1 / 25 / 10_000)


def test_warmup_climbs_linearly_then_the_policy_starts_at_its_own_update_zero():
    steps_per_epoch, warmup = 10, 20
    cfg = sched_cfg("step", unit="iters", stepsize=30, gamma=0.1, warmup_epochs=2, warmup_start_factor=0.01)
    lrs = lr_trace(cfg, steps_per_epoch=steps_per_epoch, total_steps=200)
    assert close(lrs[0], BASE_LR * 0.01)
    assert close(lrs[warmup - 1], BASE_LR * (0.01 + 0.99 * (warmup - 1) / warmup))
    assert close(lrs[warmup], BASE_LR)
    assert close(lrs[warmup + 29], BASE_LR)
    assert close(lrs[warmup + 30], BASE_LR * 0.1)


def test_warmup_fractions_are_of_the_run_after_warmup():
    lrs = lr_trace(sched_cfg("poly", warmup_epochs=10), steps_per_epoch=10, total_steps=1000)
    assert close(lrs[100], BASE_LR)
    assert close(lrs[550], BASE_LR * 0.5**2)
    assert lrs[1000] == 0.0


@pytest.mark.parametrize(
    ("name", "overrides", "first_lr"),
    [
        ("cyclical", {"unit": "iters", "stepsize": 100, "base_lr": 0.002, "max_lr": 0.006}, 0.002),
        ("sigmoid", {"unit": "iters", "gamma": 0.01, "stepsize": 100}, BASE_LR / (1 + math.e)),
    ],
)
def test_warmup_climbs_to_the_policys_first_lr(name, overrides, first_lr):
    lrs = lr_trace(sched_cfg(name, warmup_epochs=1, **overrides), steps_per_epoch=50)
    assert close(lrs[0], first_lr * 0.01)
    assert close(lrs[49], first_lr * (0.01 + 0.99 * 49 / 50))
    assert close(lrs[50], first_lr)


def test_a_milestone_in_epochs_lands_on_the_same_epoch_at_two_batch_sizes():
    train_images, epochs = 6400, 10
    for batch_size in (64, 128):
        steps_per_epoch = train_images // batch_size
        cfg = sched_cfg("multistep", unit="epochs", stepvalues=[3, 6], warmup_epochs=1)
        lrs = lr_trace(cfg, steps_per_epoch=steps_per_epoch, total_steps=epochs * steps_per_epoch)
        first_decay = next(update for update in range(1, len(lrs)) if lrs[update] < lrs[update - 1] * 0.9)
        assert first_decay / steps_per_epoch == 1 + 3  # after the warm-up epoch


@pytest.mark.parametrize(
    ("length", "unit", "updates"),
    [(2.5, "epochs", 250), (0.25, "fraction", 2000), (300, "iters", 300), (0.5, "iters", 1), (0.00625, "epochs", 1)],
)
def test_to_updates_converts_every_unit_and_rounds_half_up(length, unit, updates):
    assert to_updates(length, unit, steps_per_epoch=100, total_steps=8000) == updates


@pytest.mark.parametrize("name", POLICIES)
def test_a_resumed_schedule_continues_exactly(name):
    """A checkpoint taken mid-warm-up or mid-policy resumes on the same LRs (the loop restores per epoch)."""
    cfg = sched_cfg(name, warmup_epochs=1)
    steps_per_epoch, total = 20, 200
    straight = lr_trace(cfg, steps_per_epoch=steps_per_epoch, total_steps=total)
    for stop in (7, 90):
        optimizer = make_optimizer(momentum=0.9)
        scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total)
        for _ in range(stop):
            optimizer.step()
            scheduler.step()
        buffer = io.BytesIO()
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        # As the loop does it: build fresh, then load the optimizer, then the schedule.
        optimizer = make_optimizer(momentum=0.9)
        scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        resumed = []
        for _ in range(stop, total):
            resumed.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert resumed == pytest.approx(straight[stop:total], rel=1e-12, abs=1e-18)


BAD = [
    ("step", {"stepsizee": 0.1}, "sched.stepsizee"),
    ("step", {"unit": "weeks"}, "sched.unit"),
    ("fixed", {"unit": "weeks"}, "sched.unit"),
    ("cyclical", {"mode": "triangular3"}, "sched.mode"),
    ("multistep", {"stepvalues": [0.3, 0.1]}, "sched.stepvalues"),
    ("multistep", {"stepvalues": [0.1, 0.1]}, "sched.stepvalues"),
    ("multistep", {"stepvalues": [0.1, 0.1001]}, "sched.stepvalues"),  # distinct values, same update
    ("cyclical", {"base_lr": 0.01, "max_lr": 0.001}, "sched.max_lr"),
    ("cyclical", {"base_lr": 0.01}, "sched.base_lr"),
    ("cyclical", {"bounds_from": "/nonexistent/record"}, "sched.bounds_from"),
    ("step", {"warmup_epochs": 100}, "sched.warmup_epochs"),
    ("step", {"warmup_epochs": -1}, "sched.warmup_epochs"),
    ("step", {"warmup_start_factor": 0.0}, "sched.warmup_start_factor"),
    ("step", {"gamma": -0.1}, "sched.gamma"),
    ("step", {"gamma": 1.5}, "sched.gamma"),
    ("multistep", {"gamma": 2.0}, "sched.gamma"),
    ("exp", {"gamma": 1.0001}, "sched.gamma"),
    ("inv", {"gamma": -0.001}, "sched.gamma"),
    ("inv", {"power": -1.0}, "sched.power"),
    ("poly", {"power": -2.0}, "sched.power"),
    ("step", {"stepsize": 0}, "sched.stepsize"),
    ("step", {"stepsize": -0.1}, "sched.stepsize"),
    ("sgdr", {"T_0": 0}, "sched.T_0"),
    ("sgdr", {"T_mult": 1.5}, "sched.T_mult"),
    ("cyclical", {"stepsize": -1}, "sched.stepsize"),
    ("step", {"unit": "iters", "stepsize": 10_000}, "sched.stepsize"),  # the articles' 10k on a 1000-update run
    ("step", {"unit": "iters", "stepsize": 0.2}, "sched.stepsize"),  # under one update
    ("onecycle", {"pct_start": 1.5}, "sched.pct_start"),
]


@pytest.mark.parametrize(("name", "overrides", "key"), BAD, ids=[f"{n}-{k}" for n, _, k in BAD])
def test_bad_input_is_one_line_naming_the_key_before_training(name, overrides, key):
    with pytest.raises(ConfigError) as error:
        validate_sched(sched_cfg(name, **overrides), SGD, BASE_LR, steps_per_epoch=10, total_steps=1000)
    message = str(error.value)
    assert message.startswith(f"{key}=") or message.startswith(f"{key},") or message.startswith(f"{key}:")
    assert "\n" not in message


def test_cycling_momentum_needs_an_optimizer_with_momentum():
    optimizer = make_optimizer(optimizer_class=torch.optim.Adagrad)
    with pytest.raises(ConfigError, match=r"^sched\.cycle_momentum=true: Adagrad"):
        build_scheduler(sched_cfg("onecycle", cycle_momentum=True), optimizer, steps_per_epoch=10, total_steps=100)


@pytest.mark.parametrize("name", ["cyclical", "onecycle"])
def test_the_early_check_uses_the_configured_optimizer(name):
    # A stand-in SGD has momentum to cycle; the run's AdaGrad has none, and the check must fail as the run would.
    adagrad = load_option("optim", "adagrad")
    with pytest.raises(ConfigError, match=r"^sched\.cycle_momentum=true: Adagrad has no momentum"):
        validate_sched(sched_cfg(name, cycle_momentum=True), adagrad, BASE_LR, steps_per_epoch=10, total_steps=100)
    validate_sched(sched_cfg(name, cycle_momentum=False), adagrad, BASE_LR, steps_per_epoch=10, total_steps=100)
    validate_sched(sched_cfg(name, cycle_momentum=True), SGD, BASE_LR, steps_per_epoch=10, total_steps=100)
