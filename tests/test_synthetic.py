"""The embedded dataset: deterministic per seed, balanced, and its classes differ by arrangement."""

import hashlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ablate.data import synthetic
from ablate.errors import ConfigError

SMALL = dict(image_size=32, train_size=200, val_size=60, test_size=100)
YAML = Path(__file__).parents[1] / "ablate/conf/data/synthetic.yaml"
# Keys of conf/data/*.yaml read by the builder; every other key goes to the source.
COMMON_KEYS = {
    "name",
    "_target_",
    "resolution",
    "resize",
    "resize_short_side",
    "eval_resize",
    "pad",
    "flip",
    "mean",
    "std",
    "val_fraction",
    "split_seed",
    "in_memory",
    "limit",
}


def load_yaml():
    """conf/data/synthetic.yaml resolved as a single run sees it (no study shrinking its sizes)."""
    root = OmegaConf.create({"data": OmegaConf.load(YAML)})
    return OmegaConf.create(OmegaConf.to_container(root.data, resolve=True))


def source_keys() -> dict:
    """The generator's keys as conf/data/synthetic.yaml sets them."""
    cfg = OmegaConf.to_container(load_yaml())
    return {key: value for key, value in cfg.items() if key not in COMMON_KEYS}


def test_same_seed_same_images_and_another_seed_different_ones():
    first, again, other = (synthetic.load(**SMALL, seed=seed) for seed in (3, 3, 4))
    for split in ("train", "val", "test"):
        assert torch.equal(first[split][0], again[split][0])
        assert torch.equal(first[split][1], again[split][1])
        assert not torch.equal(first[split][0], other[split][0])


def test_seed_0_is_bit_identical_on_every_machine():
    # The dataset is part of every result: a change here changes every number measured on it.
    # Update the digest only on purpose, when the generator or its defaults change.
    images, labels = synthetic.load(**SMALL)["test"]
    digest = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()
    assert digest == "d3f1ece76e5af3a92e7c02f6054c94dfbe589e5aff1d2af34a608888137ea1d9"


def test_splits_have_their_own_streams():
    """Growing the training set leaves val and test untouched, so results at different sizes compare."""
    small = synthetic.load(**SMALL)
    large = synthetic.load(**{**SMALL, "train_size": 400})
    assert len(large["train"][1]) == 400
    for split in ("val", "test"):
        assert torch.equal(small[split][0], large[split][0])
    assert not torch.equal(small["val"][0], small["test"][0][:60])


def test_shapes_dtype_and_balanced_labels():
    data = synthetic.load(**{**SMALL, "image_size": 40, "num_classes": 7, "train_size": 71})
    assert data["classes"][:3] == ["disc_above_square", "square_above_disc", "disc_above_triangle"]
    assert len(data["classes"]) == 7
    for split, size in (("train", 71), ("val", 60), ("test", 100)):
        images, labels = data[split]
        assert images.shape == (size, 3, 40, 40) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64
        counts = labels.bincount(minlength=7)
        assert counts.sum() == size and counts.max() - counts.min() <= 1
    # The pixels span the range: neither blank nor saturated.
    assert data["train"][0].min() < 40 and data["train"][0].max() > 215


def test_every_class_has_its_mirror_image_class():
    """Each class shares its two shapes with exactly one other class, which stacks them the other way round."""
    names = synthetic.class_names(synthetic.MAX_CLASSES)
    assert len(set(names)) == synthetic.MAX_CLASSES
    for name in names:
        top, bottom = name.split("_above_")
        assert f"{bottom}_above_{top}" in names


def fill_ratio(mask: torch.Tensor) -> float:
    """Foreground pixels over the area of their bounding box: about 1 for a square, pi/4 for a disc."""
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return mask.sum().item() / box.item()


def test_disc_above_square_shows_a_disc_above_a_square_and_its_mirror_class_the_reverse():
    # Flat colours, a gap wide enough to split the two shapes by rows, no distractors or noise.
    data = synthetic.load(
        image_size=64,
        train_size=80,
        val_size=1,
        test_size=1,
        num_classes=2,
        shape_size=(0.3, 0.4),
        gap=(0.1, 0.14),
        texture=0,
        distractors=0,
        noise_std=0,
    )
    images, labels = data["train"]
    assert data["classes"] == ["disc_above_square", "square_above_disc"]
    for image, label in zip(images.int(), labels):
        background = image[:, 0, 0].view(3, 1, 1)
        mask = (image - background).abs().max(0).values > 40
        filled_rows = mask.any(1).nonzero().flatten()
        split = filled_rows[(filled_rows.diff() > 1).nonzero()[0, 0]] + 1  # the first empty row between them
        top, bottom = fill_ratio(mask[:split]), fill_ratio(mask[split:])
        disc_on_top = top < 0.88 < bottom
        square_on_top = bottom < 0.88 < top
        assert disc_on_top if label == 0 else square_on_top, (label.item(), top, bottom)


def test_yaml_mean_and_std_are_those_of_the_generated_train_split():
    cfg = load_yaml()
    images, _ = synthetic.load(image_size=cfg.resolution, **source_keys())["train"]
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).float()
    assert pixels.mean(1).tolist() == pytest.approx(list(cfg.mean), abs=1.0)
    assert pixels.std(1).tolist() == pytest.approx(list(cfg.std), abs=1.0)


@pytest.mark.parametrize(
    "override, key",
    [
        (dict(num_classes=1), "data.num_classes=1"),
        (dict(num_classes=synthetic.MAX_CLASSES + 1), f"data.num_classes={synthetic.MAX_CLASSES + 1}"),
        (dict(train_size=0), "data.train_size=0"),
        (dict(test_size=-5), "data.test_size=-5"),
        (dict(val_size=2.5), "data.val_size=2.5"),
        (dict(seed=-1), "data.seed=-1"),
        (dict(shape_size=(0.3, 0.6)), "data.shape_size=[0.3,0.6]"),
        (dict(shape_size=0.3), "data.shape_size=0.3"),
        (dict(gap=(0.1, 0.3)), "data.gap=[0.1,0.3]"),
        (dict(contrast=0), "data.contrast=0"),
        (dict(texture=-1), "data.texture=-1"),
        (dict(distractors=-1), "data.distractors=-1"),
        (dict(noise_std=-2), "data.noise_std=-2"),
        (dict(image_size=4), "data.resize=4"),
    ],
)
def test_bad_keys_fail_with_one_line_naming_key_and_fix(override, key):
    with pytest.raises(ConfigError) as error:
        synthetic.load(**{**SMALL, **override})
    message = str(error.value)
    assert message.startswith(key + ":") and "; e.g. " in message and "\n" not in message


def test_yaml_has_the_common_keys_and_the_defaults_of_the_issue():
    cfg = load_yaml()
    assert set(cfg) >= COMMON_KEYS
    assert cfg._target_ == "ablate.data.synthetic.load" and cfg.name == "synthetic"
    assert cfg.num_classes == 20 and cfg.resolution == 32 and cfg.resize is None and cfg.seed == 0
    # The default recipe divides by the std (recipe=articles: mean subtraction only, as Caffe).
    assert cfg.std is not None and len(cfg.std) == 3
