"""Optimizer options build and step; the effective LR (base x factor x batch-size rule) and its numbers; bad input."""

import io
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from ablate import caffe
from ablate.config import load_option
from ablate.errors import ConfigError
from ablate.optim import build_optimizer, effective_lr, validate_optim

CONF = Path(__file__).resolve().parent.parent / "ablate" / "conf"
OPTIMIZERS = sorted(path.stem for path in (CONF / "optim").glob("*.yaml"))


def optim_cfg(name: str, **overrides):
    """conf/optim/<name>.yaml as a run composes it (with conf/config.yaml's shared optim keys), with keys replaced as
    `optim=<name> optim.key=value` would."""
    return OmegaConf.merge(load_option("optim", name), overrides)


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 2),
    )


def test_every_optimizer_of_the_issue_has_an_option_file():
    expected = {"sgd", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "nadam"}
    assert expected <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_at_the_given_lr_and_takes_a_step(name):
    cfg = optim_cfg(name)
    model = small_net()
    optimizer = build_optimizer(cfg, model, lr=cfg.lr * 2)
    assert type(optimizer) is get_class(cfg._target_)
    assert all(group["lr"] == cfg.lr * 2 for group in optimizer.param_groups)
    before = [p.detach().clone() for p in model.parameters()]
    torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 8, 8)), torch.randint(0, 2, (8,))).backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # The loop's checkpoint must hold plain values, loadable without trusting pickled classes.
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_composes_with_the_root_config(name, compose):
    cfg = compose(f"optim={name}")
    validate_optim(cfg.optim, lr=cfg.optim.lr)


def test_the_articles_defaults():
    sgd = optim_cfg("sgd")
    assert (sgd.lr, sgd.momentum, sgd.weight_decay, sgd.nesterov) == (0.01, 0.9, 0.005, False)
    adam = optim_cfg("adam")
    assert (adam.lr, list(adam.betas)) == (0.001, [0.9, 0.999])
    rmsprop = optim_cfg("rmsprop")
    assert (rmsprop.lr, rmsprop.alpha) == (0.001, 0.9)
    assert optim_cfg("adadelta").lr == 1.0
    assert optim_cfg("nesterov").nesterov is True


def test_weight_decay_reaches_every_parameter_by_default_as_in_caffe():
    optimizer = build_optimizer(optim_cfg("sgd"), small_net(), lr=0.01)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.005]


def multipliers(optimizer) -> dict[int, tuple[float, float]]:
    """(lr, weight_decay) of every parameter, by id."""
    return {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}


def test_bn_and_bias_parameters_can_be_exempt_from_weight_decay():
    model = small_net()
    optimizer = build_optimizer(optim_cfg("sgd", bias_decay=False, bn_decay=False), model, lr=0.01)
    got = multipliers(optimizer)
    conv, bn, linear = model[0], model[1], model[4]
    assert got[id(conv.weight)] == got[id(linear.weight)] == (0.01, 0.005)
    assert got[id(conv.bias)] == got[id(bn.weight)] == got[id(bn.bias)] == got[id(linear.bias)] == (0.01, 0.0)
    assert len(got) == len(list(model.parameters()))


def test_caffes_conv_bias_multipliers_leave_the_fc_bias_and_bn_as_the_weights():
    """The prototxts: conv biases lr_mult 2, decay_mult 0; the FC bias and BN scale/shift at 1x and decayed."""
    model = small_net()
    cfg = optim_cfg("sgd", bias_lr_mult=2.0, bias_decay=False, bias_layers=["conv"])
    optimizer = build_optimizer(cfg, model, lr=0.01)
    got = multipliers(optimizer)
    conv, bn, linear = model[0], model[1], model[4]
    assert got[id(conv.bias)] == (0.02, 0.0)
    assert got[id(conv.weight)] == got[id(linear.weight)] == got[id(linear.bias)] == got[id(bn.weight)] == (0.01, 0.005)
    # The weights' group comes first: the loop logs and the schedules read param_groups[0]["lr"] as the run's LR.
    assert optimizer.param_groups[0]["lr_mult"] == 1.0 and optimizer.param_groups[0]["params"][0] is conv.weight


@pytest.mark.parametrize(("target", "expected"), [("sgd", caffe.SGD), ("nesterov", caffe.SGD), ("adam", caffe.Adam)])
def test_momentum_form_caffe_builds_caffes_solver(target, expected):
    optimizer = build_optimizer(optim_cfg(target, momentum_form="caffe"), small_net(), lr=0.01)
    assert type(optimizer) is expected
    assert optimizer.defaults.get("nesterov", False) == (target == "nesterov")


@pytest.mark.parametrize("name", ["adagrad", "adadelta", "rmsprop"])
def test_momentum_form_caffe_keeps_torchs_class_where_it_already_is_caffes_update(name):
    optimizer = build_optimizer(optim_cfg(name, momentum_form="caffe"), small_net(), lr=0.01)
    assert type(optimizer) is get_class(optim_cfg(name)._target_)


def test_caffe_form_with_a_2x_bias_is_caffes_update_of_that_bias():
    """Caffe's local_rate = rate * lr_mult and local_decay = weight_decay * decay_mult, inside the velocity."""
    model = small_net()
    cfg = optim_cfg("sgd", momentum_form="caffe", bias_lr_mult=2.0, bias_decay=False, bias_layers=["conv"])
    optimizer = build_optimizer(cfg, model, lr=0.01)
    bias, weight = model[0].bias, model[0].weight
    b0, w0 = bias.detach().clone(), weight.detach().clone()
    velocity_b, velocity_w = torch.zeros_like(b0), torch.zeros_like(w0)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 8, 8)), torch.randint(0, 2, (8,))).backward()
        velocity_b = 0.9 * velocity_b + 0.02 * bias.grad
        velocity_w = 0.9 * velocity_w + 0.01 * (weight.grad + 0.005 * weight.detach())
        b0, w0 = b0 - velocity_b, w0 - velocity_w
        optimizer.step()
    assert torch.allclose(bias, b0, atol=1e-7) and torch.allclose(weight, w0, atol=1e-7)


def batch(size: int = 64, base_size: int = 64, rule: str = "none") -> dict:
    return {"size": size, "base_size": base_size, "rule": rule}


@pytest.mark.parametrize(
    ("rule", "batch_size", "base_batch_size", "lr"),
    [
        ("none", 256, 64, 0.01),
        ("linear", 256, 64, 0.04),
        ("linear", 32, 256, 0.00125),
        ("sqrt", 256, 64, 0.02),
        ("sqrt", 16, 64, 0.005),
        ("linear", 64, 64, 0.01),
    ],
)
def test_scaling_rule(rule, batch_size, base_batch_size, lr):
    scaled = effective_lr({"lr": 0.01, "lr_factor": 1.0}, batch(batch_size, base_batch_size, rule))
    assert math.isclose(scaled.effective, lr, rel_tol=1e-11)
    assert math.isclose(scaled.batch_scale, lr / 0.01, rel_tol=1e-11)


def test_every_lr_multiplier_is_one_factor_of_the_effective_lr():
    lr = effective_lr({"lr": 0.01, "lr_factor": 3}, batch(256, 64, "linear"))
    assert (lr.base, lr.factor, lr.batch_scale) == (0.01, 3.0, 4.0)
    assert lr.effective == 0.12  # rounded to 12 digits: not 0.12000000000000001
    assert (lr.batch_size, lr.base_batch_size, lr.rule) == (256, 64, "linear")


def test_the_optimizer_studys_arms_are_optim_options_at_their_familys_lr(compose):
    # An arm of the optimizer study is an option of the declared optim group; optim.lr_factor (the study's
    # nuisance axis) multiplies each family's own LR, through effective_lr like every other multiplier.
    expected = {"sgd_momentum0": 0.03, "sgd_momentum0.99": 0.03, "nesterov": 0.03, "adadelta": 3.0, "adam": 0.003}
    for name, lr in expected.items():
        cfg = compose(f"optim={name}", "optim.lr_factor=3")
        assert effective_lr(cfg.optim, cfg.batch).effective == lr, name
    arms = {name: compose(f"optim={name}").optim for name in ("sgd", "sgd_momentum0", "sgd_momentum0.8")}
    assert [arm.momentum for arm in arms.values()] == [0.9, 0, 0.8]
    # An arm is sgd with one key changed, so sgd's other settings have one home.
    assert {k: v for k, v in arms["sgd_momentum0.8"].items() if k != "momentum"} == {
        k: v for k, v in arms["sgd"].items() if k != "momentum"
    }


@pytest.mark.parametrize(
    ("optim", "batch_settings", "key"),
    [
        ({"lr": 0.01, "lr_factor": 1}, batch(rule="cubic"), "batch.rule"),
        ({"lr": -0.01, "lr_factor": 1}, batch(rule="linear"), "optim.lr"),
        ({"lr": 0.0, "lr_factor": 1}, batch(), "optim.lr"),
        ({"lr": 0.01, "lr_factor": 0}, batch(), "optim.lr_factor"),
        ({"lr": 0.01, "lr_factor": 1}, batch(size=0, rule="linear"), "batch.size"),
        ({"lr": 0.01, "lr_factor": 1}, batch(base_size=-1, rule="linear"), "batch.base_size"),
    ],
)
def test_effective_lr_rejects_bad_input(optim, batch_settings, key):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        effective_lr(optim, batch_settings)


BAD = [
    ("sgd", {"momentum": 1.0}, "optim.momentum"),
    ("sgd", {"momentum": -0.1}, "optim.momentum"),
    ("nesterov", {"momentum": 0.0}, "optim.momentum"),
    ("sgd", {"weight_decay": -0.005}, "optim.weight_decay"),
    ("sgd", {"momentun": 0.9}, "optim.momentun"),
    ("adam", {"betas": [0.9, 1.0]}, "optim.betas"),
    ("rmsprop", {"alpha": 1.2}, "optim.alpha"),
    ("sgd", {"decay_bn_and_bias": False}, "optim.decay_bn_and_bias"),
    ("sgd", {"momentum_form": "keras"}, "optim.momentum_form"),
    ("adamw", {"momentum_form": "caffe"}, "optim.momentum_form"),
    ("sgd", {"momentum_form": "caffe", "dampening": 0.5}, "optim.dampening"),
    ("rmsprop", {"momentum_form": "caffe", "momentum": 0.9}, "optim.momentum"),
    ("sgd", {"bias_lr_mult": -2}, "optim.bias_lr_mult"),
    ("sgd", {"bias_decay": "no"}, "optim.bias_decay"),
    ("sgd", {"bn_decay": 0}, "optim.bn_decay"),
    ("sgd", {"bias_layers": ["conv", "bn"]}, "optim.bias_layers"),
]


@pytest.mark.parametrize(("name", "overrides", "key"), BAD, ids=[f"{n}-{k}" for n, _, k in BAD])
def test_bad_optimizer_input_is_one_line_naming_the_key(name, overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}=") as error:
        validate_optim(optim_cfg(name, **overrides), lr=0.01)
    assert "\n" not in str(error.value)


def test_a_negative_effective_lr_is_rejected():
    with pytest.raises(ConfigError, match=r"^optim\.lr=-0\.01"):
        build_optimizer(optim_cfg("sgd"), small_net(), lr=-0.01)
