"""Model builders, named by `_target_` in conf/model/*.yaml, and what a built model reports about itself.

A model family is one builder function (allconv.py, mobilenet.py) and one YAML file per preset; zoo.py wraps the
libraries' models (model=torchvision, model=timm, with model.arch=<name>). `model.pretrained` (a local state-dict
file, any family) is read here, after the builder's own init.

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

import pickle
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
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


def build_model(
    cfg_model: DictConfig, *, num_classes: int, in_channels: int, load_pretrained: bool = True
) -> nn.Module:
    """The one place the model's partial is completed with what only the data knows; checks the CONTRACT, then
    loads `model.pretrained` unless `load_pretrained` is false (a probe build with stand-in classes)."""
    settings = OmegaConf.create(OmegaConf.to_container(cfg_model, resolve=True))
    # A path (or null) is ablate's own state-dict loading; a bool is a library builder's flag (timm's pretrained).
    pretrained = None if isinstance(settings.get("pretrained"), bool) else settings.pop("pretrained", None)
    model = instantiate(settings)(num_classes=num_classes, in_channels=in_channels)
    check_contract(model, cfg_model.get("_target_"))
    if pretrained is not None and load_pretrained:
        load_state(model, pretrained)
    return model


def load_state(model: nn.Module, path: str) -> None:
    """Copy a state dict's tensors into `model` by name, as Caffe's CopyTrainedLayersFrom copies a .caffemodel.

    A tensor whose name the model lacks is skipped (fine-tuning a shallower net from a deeper one); the model's
    tensors the file lacks keep the builder's init (a classifier for other classes: drop it from the file, as a
    Caffe user renames that layer); the same name with another shape is an error, as in Caffe."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.pretrained={path}: no such file; give a local state-dict file (torch.save)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        raise ConfigError(f"model.pretrained={path}: not a readable state dict ({type(error).__name__})") from None
    state = state.get("model", state) if isinstance(state, dict) else state  # ablate's checkpoints hold it as "model"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"model.pretrained={path}: not a state dict of tensors; save one with torch.save(model.state_dict())"
        )
    own = model.state_dict()
    shared = [key for key in state if key in own]
    if not shared:
        raise ConfigError(
            f"model.pretrained={path}: none of its {len(state)} tensors names a tensor of {model.name} "
            f"(e.g. {next(iter(own))}); save the state dict of the same family's nn.Sequential"
        )
    for key in shared:
        if state[key].shape != own[key].shape:
            raise ConfigError(
                f"model.pretrained={path}: {key} has shape {list(state[key].shape)}, {model.name} has "
                f"{list(own[key].shape)}; use the same preset and width_mult, or drop that tensor from the file"
            )
    model.load_state_dict({key: state[key] for key in shared}, strict=False)


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
