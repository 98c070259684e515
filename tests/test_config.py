"""The config tree: every option of every group composes whole, and a family's shared keys have one home."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ablate.config import load_option

CONF = Path(__file__).resolve().parent.parent / "ablate" / "conf"
# Groups whose options are files of one node (launcher options set root and hydra keys instead).
GROUPS = ("model", "data", "optim", "sched", "logger")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "name"), OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_every_option_composes_whole_with_its_family_base_merged_in_place(group, name, compose):
    node = compose(f"{group}={name}")[group]
    assert not OmegaConf.missing_keys(node), "a base file's ??? left unset"
    assert "base" not in node and "defaults" not in node
    # load_option is the option as a run composes it, with the keys conf/config.yaml adds to its group.
    assert OmegaConf.to_container(node, resolve=True) == OmegaConf.to_container(load_option(group, name), resolve=True)


@pytest.mark.parametrize("family", ["allconv", "mobilenet"])
def test_a_model_family_shares_one_base_and_each_preset_sets_only_its_name_and_layers(family):
    presets = sorted((CONF / "model").glob(f"{family}*.yaml"))
    assert presets
    for path in presets:
        own = OmegaConf.load(path)
        assert list(own.defaults) == [f"base/{family}@_here_", "_self_"], path.name
        assert set(own) - {"defaults"} == {"name", "layers" if family == "allconv" else "blocks"}, path.name
        assert own.name == path.stem


def test_every_lr_policy_takes_its_unit_and_warm_up_from_one_base():
    for path in sorted((CONF / "sched").glob("*.yaml")):
        own = OmegaConf.load(path)
        assert list(own.defaults) == ["base/policy@_here_", "_self_"], path.name
        assert not {"unit", "warmup_epochs", "warmup_start_factor"} & set(own), path.name
        policy = load_option("sched", path.stem)
        assert (policy.unit, policy.warmup_epochs, policy.warmup_start_factor) == ("fraction", 1, 0.01)
