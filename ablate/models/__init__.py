"""Model builders, named by `_target_` in conf/model/*.yaml, and what a built model reports about itself.

A model family is one builder function (allconv.py, mobilenet.py) and one YAML file per preset; zoo.py wraps the
libraries' models (model=torchvision, model=timm, with model.arch=<name>).

The model contract. A builder is called as `builder(**the YAML's keys except _target_/_partial_, num_classes=K,
in_channels=C)` (K and C come from the data, here) and returns an `nn.Module` that maps float [B, C, r, r] images to
[B, K] logits and carries the attributes of CONTRACT. Parameters and MACs ablate measures itself (describe). The
smallest plug-in, importable from PYTHONPATH, with `conf/model/tinynet.yaml` on Hydra's search path
(hydra.searchpath=[file:///path/to/conf]):

    def tinynet(*, name: str, channels: int, num_classes: int, in_channels: int = 3) -> nn.Module:
        model = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(channels, num_classes))
        model.name, model.depth, model.total_stride = name, 2, 2
        return model

    # conf/model/tinynet.yaml
    _target_: mypackage.tinynet
    _partial_: true
    name: tinynet
    channels: 8

A library model needs no attributes by hand: ablate.models.zoo.with_contract(model, name) measures them.
"""

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ablate.errors import ConfigError

# What ablate reads from a built model besides its forward, and what each one means. The builder sets them.
CONTRACT = {
    "name": (str, "the preset's name, e.g. 'allconv6' (pass the YAML's name key through)"),
    "depth": (
        int,
        "layers as the articles count them, e.g. convs + FC (zoo models: every conv and linear layer, "
        "shortcut convs included); the depth studies' axis",
    ),
    "total_stride": (int, "input pixels per output pixel of the last feature map; data.resolution must reach it"),
}


def build_model(cfg_model: DictConfig, *, num_classes: int, in_channels: int) -> nn.Module:
    """The one place the model's partial is completed with what only the data knows; checks the CONTRACT."""
    model = instantiate(cfg_model)(num_classes=num_classes, in_channels=in_channels)
    check_contract(model, cfg_model.get("_target_"))
    return model


def check_contract(model, target) -> None:
    """One-line ConfigError when a (plugged-in) builder returns something ablate cannot describe."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model._target_={target}: returned {type(model).__name__}, not a torch.nn.Module")
    for attribute, (kind, meaning) in CONTRACT.items():
        value = getattr(model, attribute, None)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value <= 0):
            raise ConfigError(
                f"model._target_={target}: the built model has no valid .{attribute} ({kind.__name__}: {meaning}); "
                f"set model.{attribute} in the builder before returning it (see ablate/models/__init__.py)"
            )


def describe(model: nn.Module, *, resolution: int, in_channels: int) -> dict:
    """Depth (as the articles count it), parameters, and multiply-accumulates for one image."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, in_channels, resolution, resolution, device=next(model.parameters()).device))
    model.train(was_training)
    return {
        "name": model.name,
        "depth": model.depth,
        "params": sum(p.numel() for p in model.parameters()),
        # torch counts a multiply-add as two FLOPs for convolutions and matmuls.
        "macs": counter.get_total_flops() // 2,
        "total_stride": model.total_stride,
    }
