"""Models from the libraries' zoos: `model=torchvision model.arch=resnet18`, `model=timm model.arch=resnet18`.

The builders give a library's model the attributes of ablate.models.CONTRACT, measured from the model itself:
`depth` counts its weight layers (convolutions and fully connected layers, as the articles count allconv and
MobileNet), `total_stride` is the input side over the smallest feature map a probe forward produces. Parameters and
MACs are measured for every model alike (ablate.models.describe).
"""

import difflib

import torch
from torch import nn

from ablate.errors import ConfigError

# The probe image's side for total_stride: large enough that every ImageNet model keeps a feature map > 1 pixel.
PROBE_SIDE = 224


def torchvision_model(*, name: str, arch: str, num_classes: int, in_channels: int = 3, weights=None, **kwargs):
    """torchvision.models.get_model(arch) with a num_classes-way classifier; weights=null trains from scratch."""
    import torchvision

    known = torchvision.models.list_models()
    if arch not in known:
        raise ConfigError(f"model.arch={arch}: not a torchvision model{_did_you_mean(arch, known)}")
    if in_channels != 3:
        raise ConfigError(
            f"model.arch={arch}: torchvision's models take 3-channel images, the data has {in_channels}; "
            "use model=timm (in_chans) or 3-channel data"
        )
    if weights is not None:  # pretrained weights keep their classifier: replace it after loading instead
        raise ConfigError(f"model.weights={weights}: ablate trains from scratch; pass model.weights=null")
    return with_contract(torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs), name)


def timm_model(*, name: str, arch: str, num_classes: int, in_channels: int = 3, pretrained: bool = False, **kwargs):
    """timm.create_model(arch) with a num_classes-way classifier and in_channels input channels."""
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "model=timm: the timm package is not installed; install the extra: pip install 'ablate[timm]' "
            "(or uv sync --extra timm)"
        ) from None
    known = timm.list_models()
    if arch not in known:
        raise ConfigError(f"model.arch={arch}: not a timm model{_did_you_mean(arch, known)}")
    model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **kwargs)
    return with_contract(model, name)


def with_contract(model: nn.Module, name: str) -> nn.Module:
    """The model with CONTRACT's attributes, measured: name, depth (weight layers) and total_stride."""
    model.name = name
    model.depth = weight_layers(model)
    model.total_stride = total_stride(model)
    return model


def weight_layers(model: nn.Module) -> int:
    """Convolutions and fully connected layers: the depth as the articles count their nets (allconv6 = 5 + 1)."""
    return sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) for m in model.modules())


@torch.no_grad()
def total_stride(model: nn.Module, side: int = PROBE_SIDE) -> int:
    """Input pixels per pixel of the smallest feature map a forward of a side x side image produces."""
    in_channels = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))).weight.shape[1]
    smallest = side
    hooks = []

    def note(_module, _inputs, output):
        nonlocal smallest
        # A 1x1 map is the global pooling before the classifier, not a feature map.
        if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
            smallest = min(smallest, *output.shape[-2:])

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(note))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, in_channels, side, side))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return max(1, side // max(smallest, 1))


def _did_you_mean(arch: str, known: list[str]) -> str:
    match = difflib.get_close_matches(arch, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(match)}?" if match else "; see the library's list_models()"
