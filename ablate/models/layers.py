"""Layer specs as the articles write them: `c64s2` = 64-channel 3x3 conv, stride 2; `dw2p128` = MobileNet block;
and the BatchNorm whose running statistics follow Caffe's."""

import re

import torch
from torch import nn

from ablate.errors import ConfigError

_CONV = re.compile(r"^c(\d+)(?:k(\d+))?s(\d+)(?:p(\d+))?$")
_BLOCK = re.compile(r"^dw(\d+)p(\d+)$")
BN_AVERAGES = ("torch", "caffe")


def parse_conv(spec: str, key: str) -> tuple[int, int, int, int]:
    """`c64s2` -> (64 channels, kernel 3, stride 2, pad 1); `c64k5s4p1` -> (64, 5, 4, 1). The pad defaults to
    kernel // 2 (the output keeps ceil(input / stride) pixels); a prototxt's own pad is written pP."""
    match = _CONV.match(str(spec))
    if not match:
        raise ConfigError(
            f"{key}: layer {spec!r} is not a conv spec; write cCsS, cCkKsS or cCkKsSpP, e.g. c64s2 or c64k5s4p1"
        )
    channels, kernel, stride = int(match[1]), int(match[2] or 3), int(match[3])
    pad = kernel // 2 if match[4] is None else int(match[4])
    if channels <= 0 or kernel <= 0 or stride <= 0:
        raise ConfigError(f"{key}: layer {spec!r} needs positive channels, kernel and stride")
    return channels, kernel, stride, pad


def parse_block(spec: str, key: str) -> tuple[int, int]:
    """`dw2p128` -> (depthwise stride 2, pointwise to 128 channels)."""
    match = _BLOCK.match(str(spec))
    if not match:
        raise ConfigError(f"{key}: block {spec!r} is not a MobileNet block spec; write dwSpC, e.g. dw2p128")
    stride, channels = int(match[1]), int(match[2])
    if stride <= 0 or channels <= 0:
        raise ConfigError(f"{key}: block {spec!r} needs a positive stride and channel count")
    return stride, channels


def scaled(channels: int, width_mult: float) -> int:
    """Channels after the width multiplier, never below one."""
    return max(1, int(round(channels * width_mult)))


class CaffeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose running statistics are Caffe's: with f = 1 - momentum (Caffe's moving_average_fraction),
    Caffe keeps S = f*S + batch statistic and Z = f*Z + 1 and evaluates with S / Z.

    That is an exponential average without torch's pull towards the initial 0 and 1: after t batches the initial
    values keep weight 0 here and (1 - momentum)^t in torch, 29% after 1,250 updates at momentum 0.001. The estimate
    is torch's update with momentum 1/Z at each training batch; forward computes it without changing an attribute
    per step (torch.compile would recompile on every new value)."""

    def __init__(self, num_features: int, momentum: float):
        super().__init__(num_features, momentum=momentum)
        self.moving_average_fraction = 1.0 - momentum
        self.register_buffer("caffe_scale", torch.zeros(()))  # Z, saved and restored with the running statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        with torch.no_grad():
            values = x.detach().float().transpose(0, 1).flatten(1)  # [C, N*H*W]
            # Unbiased variance, as Caffe's bias_correction_factor m/(m-1) and torch's running_var.
            var, mean = torch.var_mean(values, dim=1, unbiased=True)
            self.caffe_scale.mul_(self.moving_average_fraction).add_(1.0)
            weight = self.caffe_scale.reciprocal()
            self.running_mean.lerp_(mean, weight)
            self.running_var.lerp_(var, weight)
            self.num_batches_tracked.add_(1)
        # The batch's own statistics normalise in training; the running ones were updated above.
        return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def batch_norm(channels: int, *, momentum: float, average: str) -> nn.BatchNorm2d:
    """The BatchNorm of a family's layers: torch's running average, or Caffe's (CaffeBatchNorm2d)."""
    if average == "caffe":
        return CaffeBatchNorm2d(channels, momentum=momentum)
    return nn.BatchNorm2d(channels, momentum=momentum)


def check_batch_norm(momentum, average) -> None:
    if isinstance(momentum, bool) or not isinstance(momentum, int | float) or not 0 < momentum <= 1:
        raise ConfigError(
            f"model.bn_momentum={momentum}: the newest batch's weight in the running statistics, in (0, 1]; "
            "torch's default 0.1, Caffe's moving_average_fraction 0.999 is 0.001"
        )
    if average not in BN_AVERAGES:
        raise ConfigError(f"model.bn_average={average}: unknown; use one of {', '.join(BN_AVERAGES)}")
