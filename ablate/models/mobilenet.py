"""MobileNet v1 of the articles' depth study: a 3x3/2 stem, depthwise-separable blocks, pooling, a classifier."""

from torch import nn

from ablate.models.allconv import check_common, initialise
from ablate.models.layers import parse_block, scaled


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int, stride: int, *, batch_norm: bool, groups: int = 1
) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]


def mobilenet(
    *,
    name: str,
    blocks: list[str],
    num_classes: int,
    in_channels: int = 3,
    stem_channels: int = 32,
    width_mult: float = 1.0,
    batch_norm: bool = True,
    dropout: float = 0.0,
    init: str = "kaiming",
) -> nn.Sequential:
    """Build a MobileNet preset; `blocks` is the article's list, e.g. [dw2p64, dw2p128, dw2p128, dw2p256]."""
    check_common(width_mult=width_mult, dropout=dropout, init=init)
    stem = scaled(stem_channels, width_mult)
    modules = conv_bn_relu(in_channels, stem, 3, 2, batch_norm=batch_norm)
    channels, total_stride = stem, 2
    for i, spec in enumerate(blocks):
        stride, out = parse_block(spec, f"model.blocks[{i}]")
        out = scaled(out, width_mult)
        modules += conv_bn_relu(channels, channels, 3, stride, batch_norm=batch_norm, groups=channels)  # depthwise
        modules += conv_bn_relu(channels, out, 1, 1, batch_norm=batch_norm)  # pointwise
        channels, total_stride = out, total_stride * stride
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        modules.append(nn.Dropout(dropout))
    modules.append(nn.Linear(channels, num_classes))
    model = nn.Sequential(*modules)
    initialise(model, init)
    # ablate.models.CONTRACT: name, depth, total_stride.
    # Depth counts every conv (stem, each depthwise, each pointwise) plus the classifier.
    model.depth = 1 + 2 * len(blocks) + 1
    model.total_stride = total_stride
    model.name = name
    return model
