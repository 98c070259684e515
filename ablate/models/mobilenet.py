"""MobileNet v1 of the articles' depth study: a 3x3/2 stem, depthwise-separable blocks, pooling, a classifier."""

from torch import nn

from ablate.models.allconv import check_common
from ablate.models.layers import batch_norm as norm_layer
from ablate.models.layers import check_batch_norm, parse_block, scaled


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int,
    *,
    batch_norm: bool,
    bn_momentum: float,
    bn_average: str,
    groups: int = 1,
) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=not batch_norm)
    if not batch_norm:
        return [conv, nn.ReLU(inplace=True)]
    return [conv, norm_layer(out_channels, momentum=bn_momentum, average=bn_average), nn.ReLU(inplace=True)]


def mobilenet(
    *,
    name: str,
    blocks: list[str],
    num_classes: int,
    in_channels: int = 3,
    stem_channels: int = 32,
    width_mult: float = 1.0,
    batch_norm: bool = True,
    bn_momentum: float = 0.1,
    bn_average: str = "torch",
    dropout: float = 0.0,
    init: str = "kaiming",
) -> nn.Sequential:
    """Build a MobileNet preset; `blocks` is the article's list, e.g. [dw2p64, dw2p128, dw2p128, dw2p256]."""
    check_common(width_mult=width_mult, dropout=dropout, init=init)
    check_batch_norm(bn_momentum, bn_average)
    norm = {"batch_norm": batch_norm, "bn_momentum": bn_momentum, "bn_average": bn_average}
    stem = scaled(stem_channels, width_mult)
    modules = conv_bn_relu(in_channels, stem, 3, 2, **norm)
    channels, total_stride = stem, 2
    for i, spec in enumerate(blocks):
        stride, out = parse_block(spec, f"model.blocks[{i}]")
        out = scaled(out, width_mult)
        modules += conv_bn_relu(channels, channels, 3, stride, groups=channels, **norm)  # depthwise
        modules += conv_bn_relu(channels, out, 1, 1, **norm)  # pointwise
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


def initialise(model: nn.Module, init: str) -> None:
    """`articles`: the MobileNet prototxts' msra filler (He normal, fan_in: std sqrt(2 / fan_in), a depthwise 3x3 has
    fan_in 9) for every conv and for the classifier, which they write as a 1x1 conv; `kaiming`: the same for the
    convs, normal std 1/sqrt(fan_in) for the classifier. Biases 0, BN scale 1 and shift 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            if isinstance(module, nn.Conv2d) or init == "articles":
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
