"""The articles' all-convolutional nets: 3x3 convs (+BN) + ReLU, dropout, global average pooling, one FC."""

import math

from torch import nn

from ablate.errors import ConfigError
from ablate.models.layers import batch_norm as norm_layer
from ablate.models.layers import check_batch_norm, parse_conv, scaled

INITS = ("articles", "kaiming")


def allconv(
    *,
    name: str,
    layers: list[str],
    num_classes: int,
    in_channels: int = 3,
    batch_norm: bool = False,
    bn_momentum: float = 0.1,
    bn_average: str = "torch",
    dropout: float = 0.0,
    width_mult: float = 1.0,
    init: str = "articles",
) -> nn.Sequential:
    """Build an allconv preset; `layers` is the article's list, e.g. [c64s2, c64s2, c128s2, c128s2, c256s2]."""
    check_common(width_mult=width_mult, dropout=dropout, init=init)
    check_batch_norm(bn_momentum, bn_average)
    if not layers:
        raise ConfigError("model.layers=[]: an allconv net needs at least one conv; e.g. model.layers=[c64s2,c128s2]")
    modules: list[nn.Module] = []
    channels = in_channels
    total_stride = 1
    for i, spec in enumerate(layers):
        out, kernel, stride, pad = parse_conv(spec, f"model.layers[{i}]")
        out = scaled(out, width_mult)
        # Caffe's convs keep a bias even before BN; BN makes it redundant, so drop it there.
        modules.append(nn.Conv2d(channels, out, kernel, stride, padding=pad, bias=not batch_norm))
        if batch_norm:
            modules.append(norm_layer(out, momentum=bn_momentum, average=bn_average))
        modules.append(nn.ReLU(inplace=True))
        channels, total_stride = out, total_stride * stride
    # The prototxts' dropout layer acts on the last conv's feature map, before pooling: averaging over the 7x7 map
    # then leaves a small noise (at 0.9: std about 0.45 of a feature), where dropout after pooling would zero 90% of
    # the FC's inputs (std 3.0).
    if dropout > 0:
        modules.append(nn.Dropout(dropout))
    # Global average pooling equals the articles' 7x7 pooling at 224 input and works at any resolution.
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    modules.append(nn.Linear(channels, num_classes))
    model = nn.Sequential(*modules)
    initialise(model, init)
    # ablate.models.CONTRACT: name, depth, total_stride.
    # The articles count depth as the convs plus the FC.
    model.depth = len(layers) + 1
    model.total_stride = total_stride
    model.name = name
    return model


def check_common(*, width_mult: float, dropout: float, init: str) -> None:
    """Checks shared by every family, one line each."""
    if not width_mult > 0:
        raise ConfigError(f"model.width_mult={width_mult}: must be > 0; e.g. model.width_mult=0.5 halves every layer")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout={dropout}: must be in [0, 1); e.g. model.dropout=0.5")
    if init not in INITS:
        raise ConfigError(
            f"model.init={init}: unknown; use model.init=articles (the prototxt's fillers for this family) or kaiming"
        )


def caffe_xavier_(weight) -> None:
    """Caffe's "xavier" filler (variance_norm FAN_IN): uniform in +-sqrt(3 / fan_in).

    torch's xavier_uniform_ uses 2 / (fan_in + fan_out) instead: for allconv6's FC (256 in, 20 out) a bound 1.36x
    Caffe's."""
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    nn.init.uniform_(weight, -bound, bound)


def initialise(model: nn.Module, init: str) -> None:
    """`articles`: the allconv prototxts' fillers, conv Gaussian std 0.01 and FC Caffe xavier, biases 0;
    `kaiming`: He normal (fan_in) for the convs, normal std 1/sqrt(fan_in) for the FC."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if init == "articles":
                nn.init.normal_(module.weight, std=0.01)
            else:
                # fan_in, as Caffe's msra filler and He et al.: keeps the forward signal's scale through ReLU layers.
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if init == "articles":
                caffe_xavier_(module.weight)
            else:
                nn.init.normal_(module.weight, std=1 / math.sqrt(module.in_features))
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
