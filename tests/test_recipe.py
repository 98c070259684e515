"""recipe=articles: the author's Caffe semantics and solver files, one switch away, in every study; the default
recipe keeps the project's own values; the command line still wins."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ablate import caffe
from ablate.data import augment
from ablate.data import build as build_data
from ablate.errors import ConfigError
from ablate.loop import build, train_steps
from ablate.models import build_model
from ablate.models.layers import CaffeBatchNorm2d
from ablate.optim import build_optimizer, effective_lr
from ablate.schedules import build_scheduler

CONF = Path(__file__).resolve().parent.parent / "ablate" / "conf"
STUDIES = sorted(path.stem for path in (CONF / "sweep").glob("*.yaml"))

# What recipe=articles sets, as it must reach every run of every study.
ARTICLES = {
    "model.init": "articles",
    "model.bn_momentum": 0.001,
    "model.bn_average": "caffe",
    "optim.momentum_form": "caffe",
    "optim.bias_lr_mult": 2.0,
    "optim.bias_decay": False,
    "optim.bias_layers": ["conv"],
    "optim.bn_decay": True,
    "sched.warmup_epochs": 0,
    "data.resolution": 224,
    "data.resize": 256,
    "data.pad": 0,
    "data.flip": True,
    "data.std": None,
    "data.eval_resize": "whole",
}

# The author's solver files (STUDIES.md): the arm, then (optimizer, lr, its other numbers, LR policy).
SGD_BASELINE = {"_target_": "torch.optim.SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.005, "nesterov": False}
SOLVERS = {
    "sgd_momentum0": ({**SGD_BASELINE, "momentum": 0}, "step"),
    "sgd_momentum0.8": ({**SGD_BASELINE, "momentum": 0.8}, "step"),
    "sgd_momentum0.9": (SGD_BASELINE, "step"),
    "sgd_momentum0.95": ({**SGD_BASELINE, "momentum": 0.95}, "step"),
    "sgd_momentum0.99": ({**SGD_BASELINE, "momentum": 0.99}, "step"),
    "nesterov": ({**SGD_BASELINE, "nesterov": True}, "step"),
    "adagrad": ({"_target_": "torch.optim.Adagrad", "lr": 0.01, "eps": 1e-8}, "fixed"),
    "adagrad_lr0.001": ({"_target_": "torch.optim.Adagrad", "lr": 0.001, "eps": 1e-8}, "fixed"),
    "adagrad_step": ({"_target_": "torch.optim.Adagrad", "lr": 0.01, "eps": 1e-8}, "step"),
    "adadelta": ({"_target_": "torch.optim.Adadelta", "lr": 1.0, "eps": 1e-8}, "fixed"),
    "rmsprop": ({"_target_": "torch.optim.RMSprop", "lr": 0.001, "alpha": 0.9, "eps": 1e-8, "momentum": 0}, "fixed"),
    "rmsprop_decay0.99": ({"_target_": "torch.optim.RMSprop", "lr": 0.001, "alpha": 0.99}, "fixed"),
    "adam": ({"_target_": "torch.optim.Adam", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8}, "fixed"),
    "adam_beta2_0.99": ({"_target_": "torch.optim.Adam", "lr": 0.001, "betas": [0.9, 0.99]}, "fixed"),
}
# The allconv baseline's step policy: gamma 0.1 (its step length is a fraction of the run, see the README).
STEP = {"_target_": "ablate.schedules.step", "gamma": 0.1}
MOBILENET_SOLVER = {"_target_": "torch.optim.Adam", "lr": 0.001, "betas": [0.9, 0.999], "weight_decay": 0}


def select(cfg, key):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def study_job(compose, study: str, **chosen):
    """One job of `+sweep=<study> recipe=articles`, as the sweeper composes it: each axis at its first value unless
    `chosen` picks another (keys with dots written with __)."""
    params = compose("recipe=articles", f"+sweep={study}", return_hydra_config=True).hydra.sweeper.params
    picks = {key: str(values).split(",")[0] for key, values in params.items()}
    picks.update({key.replace("__", "."): str(value) for key, value in chosen.items()})
    return compose("recipe=articles", f"+sweep={study}", *[f"{key}={value}" for key, value in picks.items()])


def test_recipe_is_a_group_composed_after_the_root_values():
    defaults = [
        next(iter(item)) if isinstance(item, dict) else item
        for item in OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").defaults)
    ]
    assert defaults.index("recipe") == defaults.index("_self_") + 1
    assert sorted(path.stem for path in (CONF / "recipe").glob("*.yaml")) == ["articles", "default"]
    for path in (CONF / "recipe").glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_\n")


def test_articles_pins_caffes_semantics(compose):
    cfg = compose("recipe=articles")
    assert {key: select(cfg, key) for key in ARTICLES} == ARTICLES


def test_the_default_recipe_keeps_torchs_semantics(compose):
    cfg = compose()
    assert (cfg.optim.momentum_form, cfg.optim.bias_lr_mult, cfg.optim.bias_decay) == ("torch", 1.0, True)
    assert (cfg.model.bn_momentum, cfg.model.bn_average, cfg.data.eval_resize) == (0.1, "torch", "crop")


def test_the_command_line_beats_the_recipe(compose):
    cfg = compose("recipe=articles", "optim.momentum_form=torch", "data.eval_resize=crop", "model.bn_momentum=0.01")
    assert (cfg.optim.momentum_form, cfg.data.eval_resize, cfg.model.bn_momentum) == ("torch", "crop", 0.01)


@pytest.mark.parametrize("study", STUDIES)
def test_articles_reaches_every_job_of_every_study(study, compose):
    """The recipe's keys survive the sweep file, and the author's solver numbers reach the study's job: where the
    study tunes optim.lr, its grid holds the solver's LR and that job is the one checked."""
    solver = MOBILENET_SOLVER if study.startswith("mobilenet") else SGD_BASELINE
    grid = compose("recipe=articles", f"+sweep={study}", return_hydra_config=True).hydra.sweeper.params.get("optim.lr")
    if grid is not None:
        assert solver["lr"] in [float(value) for value in grid.split(",")]
    cfg = study_job(compose, study, **({"optim__lr": solver["lr"]} if grid else {}))
    assert {key: select(cfg, key) for key in ARTICLES} == ARTICLES
    if study == "optimizer":
        return  # every arm: test_every_solver_file_of_the_optimizer_study_reaches_its_arm
    optim, sched = OmegaConf.to_container(cfg.optim), OmegaConf.to_container(cfg.sched)
    assert {key: optim[key] for key in solver} == solver
    if study.startswith("mobilenet"):
        assert (sched["_target_"], cfg.batch.size) == ("ablate.schedules.fixed", 96)
    elif study != "lr_policy":
        assert {key: sched[key] for key in STEP} == STEP
        assert cfg.batch.size == 64 or study == "batch_size"


@pytest.mark.parametrize("arm", SOLVERS)
def test_every_solver_file_of_the_optimizer_study_reaches_its_arm(arm, compose):
    cfg = study_job(compose, "optimizer", optim=arm, optim__lr_factor=1)
    numbers, policy = SOLVERS[arm]
    optim = OmegaConf.to_container(cfg.optim)
    assert {key: optim[key] for key in numbers} == numbers
    assert cfg.sched._target_ == f"ablate.schedules.{policy}"
    assert cfg.optim.momentum_form == "caffe"


def test_the_optimizer_study_runs_one_arm_per_solver_file(compose):
    params = compose("+sweep=optimizer", return_hydra_config=True).hydra.sweeper.params
    assert params["optim"].split(",") == list(SOLVERS)


def small_data_overrides():
    # The articles' pipeline at a size a CPU test affords: stored 64 px, 56 px input (224/256 of it).
    return ["data.resize=64", "data.resolution=56", "data.train_size=64", "data.val_size=16", "data.test_size=16"]


def test_a_conv_bias_trains_at_2x_without_decay_through_the_schedule_under_articles(compose):
    cfg = compose("recipe=articles", "sched.unit=iters", "sched.stepsize=5")
    model = build_model(cfg.model, num_classes=20, in_channels=3)
    lr = effective_lr(cfg.optim, cfg.batch).effective
    optimizer = build_optimizer(cfg.optim, model, lr=lr)
    assert type(optimizer) is caffe.SGD
    scheduler = build_scheduler(cfg.sched, optimizer, steps_per_epoch=10, total_steps=100)
    conv, fc = model[0], model[-1]
    by_param = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for _ in range(12):  # past two decays
        optimizer.step()
        scheduler.step()
    run_lr = optimizer.param_groups[0]["lr"]
    assert run_lr == pytest.approx(0.01 * 0.1**2)
    assert by_param[id(conv.bias)]["lr"] == pytest.approx(2 * run_lr) and by_param[id(conv.bias)]["weight_decay"] == 0
    assert (
        by_param[id(conv.weight)]["lr"] == pytest.approx(run_lr) and by_param[id(conv.weight)]["weight_decay"] == 0.005
    )
    assert by_param[id(fc.bias)]["lr"] == pytest.approx(run_lr) and by_param[id(fc.bias)]["weight_decay"] == 0.005


def test_articles_bn_is_caffes_running_average(compose):
    cfg = compose("recipe=articles", "model.batch_norm=true")
    model = build_model(cfg.model, num_classes=20, in_channels=3)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(m, CaffeBatchNorm2d) and m.momentum == 0.001 for m in norms)


def test_articles_evaluates_the_whole_image_resized(compose, tmp_path):
    cfg = compose("recipe=articles", *small_data_overrides())
    data = build_data(cfg.data, cache_dir=tmp_path, device="cpu")
    stored, _ = next(data._splits["val"].batches([torch.arange(4)]))
    images, _ = next(data.eval_batches("val", 4))
    mean = augment.channel_stats(cfg.data.mean, "cpu")
    assert torch.equal(images, augment.resize_whole(stored, resolution=56).float() - mean)
    train, _ = next(data.train_batches(8, torch.Generator().manual_seed(0)))
    assert train.shape[-1] == 56  # a random 56 crop of the 64 px image, as 224 of 256


def test_an_articles_run_builds_and_trains(compose, tmp_path):
    cfg = compose(
        "recipe=articles",
        "model.batch_norm=true",
        "trainer.device=cpu",
        f"paths.cache={tmp_path}",
        *small_data_overrides(),
    )
    setup = build(cfg)
    assert type(setup.optimizer) is caffe.SGD
    metrics = train_steps(setup, setup.data.train_batches(16, torch.Generator().manual_seed(0)))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.decay_bn_and_bias=false", "optim.decay_bn_and_bias"),
        ("optim.momentum_form=caffee", "optim.momentum_form"),
        ("model.bn_average=tf", "model.bn_average"),
        ("data.eval_resize=stretch", "data.eval_resize"),
        ("model.pretrained=/nonexistent/weights.pt", "model.pretrained"),
    ],
)
def test_bad_recipe_input_is_one_line_before_training(override, key, compose, tmp_path):
    cfg = compose("recipe=articles", override, "trainer.device=cpu", f"paths.cache={tmp_path}", *small_data_overrides())
    with pytest.raises(ConfigError, match=rf"^{key}=") as error:
        build(cfg)
    assert "\n" not in str(error.value)
