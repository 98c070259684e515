"""The recipe "add an LR policy" stays true: one function plus one conf/sched/<name>.yaml, and nothing else."""

import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ablate.errors import ConfigError
from ablate.schedules import build_scheduler

CONF = Path(__file__).resolve().parent.parent / "ablate" / "conf"
BASE_LR = 0.01
# The policy a contributor adds, in a module of its own so that nothing in ablate/ knows its name.
POLICY = '''
from torch.optim.lr_scheduler import LambdaLR


def halving(optimizer, clock, *, every: float) -> LambdaLR:
    """lr * 0.5^floor(update / every), `every` in sched.unit."""
    every_updates = clock.updates("every", every)
    return LambdaLR(optimizer, lambda update: 0.5 ** (update // every_updates))
'''
YAML = """\
    # Halve the LR every `every` (a test policy). Select: python -m ablate sched=halving
    _target_: recipe_policy.halving
    _partial_: true
    every: 0.25
    unit: fraction
    warmup_epochs: 0
    warmup_start_factor: 0.01
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    """A copy of conf/ with conf/sched/halving.yaml added, and the policy's module importable."""
    (tmp_path / "recipe_policy.py").write_text(POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "sched" / "halving.yaml").write_text(textwrap.dedent(YAML))
    return conf


def compose(conf, *overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ablate.resolvers import register_resolvers

    register_resolvers()

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def lr_after(scheduler_cfg, updates: int, total_steps: int = 100) -> float:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    scheduler = build_scheduler(scheduler_cfg, optimizer, steps_per_epoch=10, total_steps=total_steps)
    for _ in range(updates):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def test_a_new_policy_composes_builds_and_follows_its_formula(recipe):
    cfg = compose(recipe, "sched=halving")
    # every 0.25 of 100 updates = 25 updates per halving
    assert lr_after(cfg.sched, 24) == pytest.approx(BASE_LR)
    assert lr_after(cfg.sched, 25) == pytest.approx(BASE_LR / 2)
    assert lr_after(cfg.sched, 99) == pytest.approx(BASE_LR / 8)
    # The composition keys work for it as for the built-in policies: 1 epoch (10 updates) of warm-up first.
    cfg = compose(recipe, "sched=halving", "sched.warmup_epochs=1", "sched.unit=iters", "sched.every=30")
    assert lr_after(cfg.sched, 0) == pytest.approx(BASE_LR * 0.01)
    assert lr_after(cfg.sched, 10 + 29) == pytest.approx(BASE_LR)
    assert lr_after(cfg.sched, 10 + 30) == pytest.approx(BASE_LR / 2)


def test_a_new_policy_steps_once_per_update_in_the_training_loop(recipe):
    from ablate.loop import build, train_steps

    cfg = compose(
        recipe,
        "sched=halving",
        "model=allconv5",
        "data.train_size=256",
        "data.val_size=32",
        "data.test_size=32",
        "batch.size=32",
        "trainer.epochs=2",
        "trainer.device=cpu",
        "logger=none",
    )
    setup = build(cfg)
    assert setup.steps_per_epoch == 8  # 16 updates in the run: a halving every 4
    generator = torch.Generator().manual_seed(0)
    for epoch in (1, 2):
        train_steps(setup, setup.data.train_batches(setup.batch_size, generator))
        # A policy stepped once per epoch would still be at the base LR here.
        assert setup.optimizer.param_groups[0]["lr"] == pytest.approx(BASE_LR * 0.5 ** (8 * epoch // 4))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"evry": 0.25}, r"^sched\.evry=0\.25: the halving policy has no such option; use one of every, unit"),
        ({"every": None}, r"^sched\.every: missing from the halving policy's config"),
        ({"every": 2.0}, r"^sched\.every=2\.0: 200 updates is past the end of the run"),
        ({"_partial_": None}, r"^sched\._partial_: missing from the halving policy's config; add _partial_: true"),
    ],
)
def test_a_new_policy_yaml_is_checked_against_its_function(recipe, change, message):
    cfg = OmegaConf.to_container(compose(recipe, "sched=halving").sched)
    for key, value in change.items():
        if value is None:
            del cfg[key]
        else:
            cfg[key] = value
    with pytest.raises(ConfigError, match=message) as error:
        lr_after(OmegaConf.create(cfg), 0)
    assert "\n" not in str(error.value)


def test_a_policy_function_whose_keys_are_not_keyword_only_is_refused(recipe):
    (recipe.parent / "recipe_positional.py").write_text(POLICY.replace("clock, *, every", "clock, every"))
    cfg = OmegaConf.merge(compose(recipe, "sched=halving").sched, {"_target_": "recipe_positional.halving"})
    with pytest.raises(
        ConfigError, match=r"takes \(optimizer, clock, \*, <its keys>\), not \(optimizer, clock, every\)"
    ):
        lr_after(cfg, 0)


def test_every_policy_file_names_a_function_of_the_schedules_module():
    """The built-in policies follow the recipe: each conf/sched file's `_target_` is ablate.schedules.<its name>."""
    import ablate.schedules

    for path in sorted((CONF / "sched").glob("*.yaml")):
        node = OmegaConf.load(path)
        assert node._target_ == f"ablate.schedules.{path.stem}" and node._partial_ is True, path.name
        assert callable(getattr(ablate.schedules, path.stem)), path.name


def test_make_schedules_draws_a_new_policy_without_being_told(recipe, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "plot_schedules", CONF.parent.parent / "scripts" / "plot_schedules.py"
    )
    plot_schedules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_schedules)
    monkeypatch.setattr(plot_schedules, "CONF", recipe)
    monkeypatch.setattr(plot_schedules, "ITERS", 1000)
    [(title, [(_, option, overrides, base_lr)])] = [p for p in plot_schedules.panels() if "halving" in p[0]]
    assert option == "halving" and overrides == {"unit": "fraction"}
    lrs = plot_schedules.lr_curve(option, overrides, base_lr)
    assert lrs[249] == pytest.approx(BASE_LR) and lrs[250] == pytest.approx(BASE_LR / 2)
