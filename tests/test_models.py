"""Every preset builds to the articles' layer lists, runs forward and backward, and reports depth/params/MACs."""

from pathlib import Path

import pytest
import torch
from torch import nn

from ablate.config import load_option
from ablate.errors import ConfigError
from ablate.models import CONTRACT, build_model, check_contract, describe

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"
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
    model = build_model(preset(name), num_classes=20, in_channels=3)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 20)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    stats = describe(model, resolution=32, in_channels=3)
    assert stats["params"] == sum(p.numel() for p in model.parameters())
    assert stats["macs"] > 0
    assert stats["name"] == name
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
    model = build_model(preset(name), num_classes=20, in_channels=3)
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


def test_dropout_sits_before_the_classifier():
    layers = list(build_model(preset("allconv6", dropout=0.9), num_classes=20, in_channels=3))
    assert isinstance(layers[-2], nn.Dropout) and layers[-2].p == 0.9
    assert isinstance(layers[-1], nn.Linear)


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


def test_articles_init_and_kaiming_option():
    articles = build_model(preset("allconv6"), num_classes=20, in_channels=3)
    first = articles[0].weight
    assert abs(first.std().item() - 0.01) < 0.002
    kaiming = build_model(preset("allconv6", init="kaiming"), num_classes=20, in_channels=3)
    assert kaiming[0].weight.std().item() > 0.05


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"width_mult": 0}, "model.width_mult"),
        ({"width_mult": -1.0}, "model.width_mult"),
        ({"layers": ["c64x2"]}, "model.layers[0]"),
        ({"layers": []}, "model.layers"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"init": "xavier"}, "model.init"),
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
    model = build_model(preset(name), num_classes=20, in_channels=3)
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
