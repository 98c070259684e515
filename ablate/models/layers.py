"""Layer specs as the articles write them: `c64s2` = 64-channel 3x3 conv, stride 2; `dw2p128` = MobileNet block."""

import re

from ablate.errors import ConfigError

_CONV = re.compile(r"^c(\d+)(?:k(\d+))?s(\d+)$")
_BLOCK = re.compile(r"^dw(\d+)p(\d+)$")


def parse_conv(spec: str, key: str) -> tuple[int, int, int]:
    """`c64s2` -> (64 channels, kernel 3, stride 2); `c64k5s4` -> (64, 5, 4)."""
    match = _CONV.match(str(spec))
    if not match:
        raise ConfigError(f"{key}: layer {spec!r} is not a conv spec; write cCsS or cCkKsS, e.g. c64s2 or c64k5s4")
    channels, kernel, stride = int(match[1]), int(match[2] or 3), int(match[3])
    if channels <= 0 or kernel <= 0 or stride <= 0:
        raise ConfigError(f"{key}: layer {spec!r} needs positive channels, kernel and stride")
    return channels, kernel, stride


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
