"""Model builders, named by `_target_` in conf/model/*.yaml, and what a built model reports about itself."""

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def build_model(cfg_model: DictConfig, *, num_classes: int, in_channels: int) -> nn.Module:
    """The one place the model's partial is completed with what only the data knows."""
    return instantiate(cfg_model)(num_classes=num_classes, in_channels=in_channels)


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
