"""`model=torchvision` and `model=timm` (ablate/models/zoo.py): any library model keeps ablate's model contract, with
depth, parameters and MACs measured from the model, and trains like a preset."""

import json

import pytest
from conftest import CONF
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
from torch import nn

from ablate.errors import ConfigError
from ablate.models import build_model, describe
from ablate.models.zoo import total_stride, weight_layers
from ablate.train import run

# One epoch of 64 images at 32 px: enough to check the whole path, a few seconds for resnet18 on a CPU.
TINY = (
    "data.train_size=64",
    "data.val_size=32",
    "data.test_size=32",
    "batch.size=32",
    "trainer.epochs=1",
    "sched.warmup_epochs=0",  # a one-epoch run would be all warm-up
    "logger=none",
)
LIBRARIES = [
    "torchvision",
    pytest.param(
        "timm",
        marks=pytest.mark.skipif(
            __import__("importlib").util.find_spec("timm") is None, reason="the timm extra is not installed"
        ),
    ),
]


def zoo_model(library: str, arch: str, num_classes: int = 20):
    node = OmegaConf.load(CONF / "model" / f"{library}.yaml")
    node.arch = arch
    return build_model(node, num_classes=num_classes, in_channels=3)


@pytest.mark.parametrize("library", LIBRARIES)
def test_resnet18_is_measured_like_a_preset(library):
    model = zoo_model(library, "resnet18")
    assert model.name == "resnet18" and model.total_stride == 32
    # 17 convolutions on the main path, 3 on the shortcuts and the classifier.
    assert model.depth == 21
    described = describe(model, resolution=32, in_channels=3)
    assert described["params"] == 11_186_772  # 11.18M with a 20-way head (11.69M with ImageNet's 1000)
    assert described["macs"] == 37_021_696  # torchvision's 1.82 GMACs at 224 px, scaled by (32/224)^2 where exact


def test_depth_and_stride_are_counted_generically():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.Flatten(), nn.LazyLinear(4)
    )
    net(__import__("torch").zeros(1, 3, 224, 224))  # materialise the lazy layer
    assert weight_layers(net) == 3 and total_stride(net) == 224 // 55


@pytest.mark.parametrize("library", LIBRARIES)
def test_an_unknown_architecture_is_one_line_with_suggestions(library):
    with pytest.raises(ConfigError, match=rf"^model.arch=resnet19: not a {library} model; did you mean .*resnet18"):
        zoo_model(library, "resnet19")


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_library_model_trains_one_epoch_into_a_record(library, compose, tmp_path):
    cfg = compose(*TINY, f"model={library}", "model.arch=resnet18", f"paths.cache={tmp_path}", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    summary = run(cfg, tmp_path / "record")
    assert summary["status"] == "completed"
    recorded = json.loads((tmp_path / "record" / "summary.json").read_text())
    assert recorded["model"]["name"] == "resnet18" and recorded["model"]["depth"] == 21
    assert 0 <= recorded["final"]["test/acc"] <= recorded["final"]["test/top5"] <= 1  # 20 classes: top-5 too
