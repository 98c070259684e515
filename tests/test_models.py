"""Every preset builds to the articles' layer lists, runs forward and backward, and reports depth/params/MACs."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate.config import load_option
from ablate.errors import ConfigError
from ablate.models import CONTRACT, build_model, check_contract, describe

CONF = Path(__file__).resolve().parent.parent / "ablate" / "conf" / "model"
PRESETS = sorted(p.stem for p in CONF.glob("*.yaml"))
ALLCONV_DEPTH = {
    "allconv5": 5,
    "allconv6": 6,
    "allconv7_1": 7,
    "allconv7_2": 7,
    "allconv8_1": 8,
    "allconv8_2": 8,
    "allconv8_3": 8,
}
MOBILENET_DEPTH = {f"mobilenet{d}": d for d in (10, 12, 14, 16, 20, 24, 26, 28)}
WIDTHS = {  # STUDIES.md, the allconv6 width study
    "allconv6": [64, 64, 128, 128, 256],
    "allconv6_1": [16, 16, 32, 32, 64],
    "allconv6_2": [32, 32, 32, 32, 64],
    "allconv6_3": [16, 16, 64, 64, 64],
    "allconv6_4": [16, 16, 32, 32, 128],
    "allconv6_5": [32, 32, 64, 64, 128],
    "allconv6_6": [64, 64, 64, 64, 128],
    "allconv6_7": [32, 32, 128, 128, 128],
    "allconv6_8": [32, 32, 64, 64, 256],
}


def preset(name: str, **overrides):
    cfg = load_option("model", name)  # with its family's base file
    cfg.merge_with(overrides)
    return cfg


ARTICLES_DEPTH = {**ALLCONV_DEPTH, **{name: 6 for name in WIDTHS}, **MOBILENET_DEPTH}


def test_every_preset_of_the_articles_exists():
    # Other families may add presets next to them (CONTRIBUTING.md: add a model family).
    assert set(ARTICLES_DEPTH) <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_forward_backward_and_depth(name):
    cfg = preset(name)
    model = build_model(cfg, num_classes=20, in_channels=3)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 20)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    stats = describe(model, resolution=32, in_channels=3)
    assert stats["params"] == sum(p.numel() for p in model.parameters())
    assert stats["macs"] > 0
    assert stats["name"] == cfg.name  # the preset's file name; a zoo option's architecture (model=timm: resnet18)
    if name in ARTICLES_DEPTH:  # the articles' presets: their depth as the articles count it, and stride 32
        assert stats["depth"] == ARTICLES_DEPTH[name]
        assert stats["total_stride"] == 32


def test_allconv6_parameter_count_by_hand():
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)]
    by_hand = sum(cin * cout * 9 + cout for cin, cout in convs) + 256 * 20 + 20
    assert by_hand == 560_468
    model = build_model(preset("allconv6"), num_classes=20, in_channels=3)
    assert describe(model, resolution=32, in_channels=3)["params"] == by_hand


def test_allconv6_macs_by_hand_at_224():
    # 224 -> 112 -> 56 -> 28 -> 14 -> 7: output pixels x input channels x 9, plus the FC.
    convs = [(112, 3, 64), (56, 64, 64), (28, 64, 128), (14, 128, 128), (7, 128, 256)]
    by_hand = sum(side * side * cin * 9 * cout for side, cin, cout in convs) + 256 * 20
    model = build_model(preset("allconv6"), num_classes=20, in_channels=3)
    assert describe(model, resolution=224, in_channels=3)["macs"] == by_hand


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_width_presets_have_the_articles_channels(name):
    cfg = preset(name)
    model = build_model(cfg, num_classes=20, in_channels=3)
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == WIDTHS[name]


def test_allconv5_first_layer_is_the_only_5x5_stride_4():
    convs = [
        m for m in build_model(preset("allconv5"), num_classes=20, in_channels=3).modules() if isinstance(m, nn.Conv2d)
    ]
    assert [(c.kernel_size, c.stride) for c in convs] == [((5, 5), (4, 4))] + [((3, 3), (2, 2))] * 3


def test_batch_norm_switch():
    plain = build_model(preset("allconv7_1"), num_classes=20, in_channels=3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    with_bn = build_model(preset("allconv7_1", batch_norm=True), num_classes=20, in_channels=3)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 6
    # BN sits before each ReLU.
    layers = list(with_bn)
    assert all(isinstance(layers[i + 1], nn.ReLU) for i, m in enumerate(layers) if isinstance(m, nn.BatchNorm2d))


def test_dropout_sits_on_the_last_conv_map_before_pooling():
    layers = list(build_model(preset("allconv6", dropout=0.9), num_classes=20, in_channels=3))
    assert [type(m) for m in layers[-5:]] == [nn.ReLU, nn.Dropout, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    assert layers[-4].p == 0.9


def test_dropout_before_pooling_is_the_issues_noise_not_90_percent_zeros():
    """At 224 px the last map is 7x7: at ratio 0.9 a pooled feature is zero only when all 49 cells are dropped
    (0.9^49 = 0.6%), and its noise is sqrt(0.9/0.1/49) = 0.43 of its value; dropout after pooling would zero 90%
    with noise sqrt(0.9/0.1) = 3.0. The last conv's map is held at 1 so that the numbers are exact."""
    torch.manual_seed(0)
    model = build_model(preset("allconv6", dropout=0.9), num_classes=20, in_channels=3).train()
    last_relu = model[-5]
    last_relu.register_forward_hook(lambda module, inputs, output: torch.ones_like(output))
    pooled = {}
    model[-1].register_forward_hook(lambda module, inputs, output: pooled.update(x=inputs[0]))
    with torch.no_grad():
        model(torch.randn(40, 3, 224, 224))
    features = pooled["x"]  # [40, 256]; 1 without dropout
    assert (features == 0).float().mean().item() == pytest.approx(0.9**49, abs=0.003)
    assert features.std().item() == pytest.approx(math.sqrt(0.9 / 0.1 / 49), rel=0.05)
    assert features.mean().item() == pytest.approx(1.0, abs=0.02)


def test_width_mult_scales_every_layer():
    model = build_model(preset("mobilenet16", width_mult=0.5), num_classes=20, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 16 and convs[-1].out_channels == 256
    half = build_model(preset("allconv6", width_mult=0.5), num_classes=20, in_channels=3)
    assert [m.out_channels for m in half.modules() if isinstance(m, nn.Conv2d)] == WIDTHS["allconv6_5"]


def test_custom_layer_list():
    model = build_model(preset("allconv6", layers=["c8s2", "c16k5s2"]), num_classes=3, in_channels=1)
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)
    assert describe(model, resolution=8, in_channels=1)["depth"] == 3


def test_articles_init_and_kaiming_the_default():
    articles = build_model(preset("allconv6", init="articles"), num_classes=20, in_channels=3)
    first = articles[0].weight
    assert abs(first.std().item() - 0.01) < 0.002
    kaiming = build_model(preset("allconv6"), num_classes=20, in_channels=3)
    assert kaiming[0].weight.std().item() == pytest.approx((2 / (3 * 3 * 3)) ** 0.5, rel=0.1)  # He, fan-in 27


def test_articles_fc_is_caffes_xavier_uniform_over_fan_in():
    torch.manual_seed(0)
    fc = build_model(preset("allconv6", init="articles"), num_classes=20, in_channels=3)[-1]
    bound = math.sqrt(3 / 256)  # Caffe's xavier, FAN_IN; torch's xavier_uniform_: sqrt(6 / 276), 1.36x more
    assert bound * 0.98 < fc.weight.abs().max().item() <= bound
    assert fc.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert not fc.bias.any()


@pytest.mark.parametrize("init", ["articles", "kaiming"])
def test_mobilenet_convs_are_msra_fan_in(init):
    """The prototxts' msra filler: std sqrt(2 / fan_in), fan_in 9 for a depthwise 3x3, C_in for a pointwise."""
    torch.manual_seed(0)
    model = build_model(preset("mobilenet28", init=init), num_classes=20, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1 and c.out_channels >= 512]
    pointwise = [c for c in convs if c.kernel_size == (1, 1) and c.in_channels >= 512]
    for conv in (depthwise[0], pointwise[0]):
        fan_in = conv.weight[0].numel()
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    classifier = model[-1]
    expected = math.sqrt(2 / 1024) if init == "articles" else 1 / math.sqrt(1024)
    assert classifier.weight.std().item() == pytest.approx(expected, rel=0.05)


def test_allconv5_first_layer_has_its_prototxts_pad_1():
    model = build_model(preset("allconv5"), num_classes=20, in_channels=3)
    assert (model[0].kernel_size, model[0].stride, model[0].padding) == ((5, 5), (4, 4), (1, 1))
    assert model[:2](torch.zeros(1, 3, 224, 224)).shape[-1] == 56


@pytest.mark.parametrize("family", ["allconv6", "mobilenet10"])
def test_bn_momentum_reaches_every_batch_norm(family):
    model = build_model(preset(family, batch_norm=True, bn_momentum=0.001), num_classes=20, in_channels=3)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {0.001}


def bn_net(**overrides) -> nn.Module:
    return build_model(preset("allconv6", batch_norm=True, **overrides), num_classes=20, in_channels=3)


def test_caffe_bn_average_is_the_normalised_running_sum():
    """Caffe: S = f*S + x_t, Z = f*Z + 1, estimate S/Z (f = 0.999); torch's 0.001 EMA keeps 0.999^t of its start."""
    torch.manual_seed(0)
    caffe, plain = bn_net(bn_momentum=0.001, bn_average="caffe"), bn_net(bn_momentum=0.001)
    plain.load_state_dict(caffe.state_dict(), strict=False)
    f, sums, scale = 0.999, 0.0, 0.0
    for t in range(5):
        x = torch.randn(8, 3, 32, 32) * (1 + t) + t
        caffe(x)
        plain(x)
        first_bn_input = caffe[0](x).detach()
        sums, scale = f * sums + first_bn_input.mean((0, 2, 3)), f * scale + 1
    assert torch.allclose(caffe[1].running_mean, sums / scale, atol=1e-6)
    # torch's estimate has moved only 0.5% of the way from its start at 0.
    assert plain[1].running_mean.abs().max() < 0.01 * caffe[1].running_mean.abs().max()
    # Training normalises with the batch's own statistics in both.
    x = torch.randn(8, 3, 32, 32)
    assert torch.allclose(caffe[1](caffe[0](x)), plain[1](plain[0](x)), atol=1e-5)


def test_caffe_bn_state_resumes():
    model = bn_net(bn_average="caffe", bn_momentum=0.001)
    model(torch.randn(4, 3, 32, 32))
    again = bn_net(bn_average="caffe", bn_momentum=0.001)
    again.load_state_dict(model.state_dict())
    assert again[1].caffe_scale == 1.0


def test_pretrained_state_dict_is_loaded_by_name_and_the_missing_classifier_keeps_its_init(tmp_path):
    source = build_model(preset("mobilenet10", init="articles"), num_classes=1000, in_channels=3)
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith(f"{len(source) - 1}.")}
    torch.save(weights, tmp_path / "imagenet.pt")
    model = build_model(preset("mobilenet10", pretrained=str(tmp_path / "imagenet.pt")), num_classes=20, in_channels=3)
    assert torch.equal(model[0].weight, source[0].weight)
    assert torch.equal(model[1].running_var, source[1].running_var)
    assert model[-1].weight.shape == (20, 256)


@pytest.mark.parametrize("problem", ["missing", "shape", "unrelated"])
def test_a_bad_pretrained_file_is_one_line_naming_the_key(problem, tmp_path):
    path = tmp_path / "weights.pt"
    if problem == "shape":
        torch.save(build_model(preset("mobilenet10", width_mult=0.5), num_classes=20, in_channels=3).state_dict(), path)
    elif problem == "unrelated":
        torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(ConfigError, match=r"^model\.pretrained=") as error:
        build_model(preset("mobilenet10", pretrained=str(path)), num_classes=20, in_channels=3)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"width_mult": 0}, "model.width_mult"),
        ({"width_mult": -1.0}, "model.width_mult"),
        ({"layers": ["c64x2"]}, "model.layers[0]"),
        ({"layers": []}, "model.layers"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"init": "xavier"}, "model.init"),
        ({"bn_momentum": 0.0}, "model.bn_momentum"),
        ({"bn_average": "keras"}, "model.bn_average"),
        ({"layers": ["c64k5s4q1"]}, "model.layers[0]"),
    ],
)
def test_bad_model_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        build_model(preset("allconv6", **overrides), num_classes=20, in_channels=3)


def contract_model(**attributes) -> nn.Module:
    model = nn.Linear(2, 2)
    for key, value in {"name": "x", "depth": 1, "total_stride": 1, **attributes}.items():
        if value is not None:
            setattr(model, key, value)
    return model


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_keeps_the_model_contract(name):
    cfg = preset(name)
    model = build_model(cfg, num_classes=20, in_channels=3)
    assert {key: type(getattr(model, key)) for key in CONTRACT} == {"name": str, "depth": int, "total_stride": int}


@pytest.mark.parametrize(
    ("attributes", "missing"),
    [
        ({"name": None}, "name"),
        ({"depth": None}, "depth"),
        ({"total_stride": None}, "total_stride"),
        ({"depth": True}, "depth"),
        ({"depth": 6.0}, "depth"),
        ({"total_stride": 0}, "total_stride"),
    ],
)
def test_a_model_without_the_contract_is_one_line_naming_the_attribute(attributes, missing):
    check_contract(contract_model(), "my.builder")
    expected = rf"^model\._target_=my\.builder: the built model has no valid \.{missing} "
    with pytest.raises(ConfigError, match=expected) as error:
        check_contract(contract_model(**attributes), "my.builder")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"returned str, not a torch\.nn\.Module"):
        check_contract("not a model", "my.builder")
