"""data.limit: images kept per split, the same subset for every run, whatever the dataset."""

import pytest
import torch

from ablate.config import load_option
from ablate.data import build
from ablate.errors import ConfigError


def synthetic(**changes):
    cfg = load_option("data", "synthetic")
    cfg.merge_with({"train_size": 200, "val_size": 60, "test_size": 100, **changes})
    return cfg


def images(data, split: str) -> torch.Tensor:
    return data._splits[split].images


def test_a_limit_keeps_that_many_images_of_a_split_and_the_same_ones_every_time():
    data = build(synthetic(limit={"train": 50, "val": None, "test": 30}), cache_dir=None, device="cpu")
    assert data.sizes == {"train": 50, "val": 60, "test": 30}
    again = build(synthetic(limit={"train": 50, "test": 30}), cache_dir=None, device="cpu")
    assert torch.equal(images(data, "train"), images(again, "train"))
    whole = build(synthetic(), cache_dir=None, device="cpu")
    assert whole.sizes == {"train": 200, "val": 60, "test": 100}
    # Images of the split, drawn over all of it rather than its first ones.
    kept = [bytes(image.numpy()) for image in images(data, "test")]
    split = [bytes(image.numpy()) for image in images(whole, "test")]
    assert set(kept) < set(split) and kept != split[:30]


def test_a_limit_above_the_split_keeps_the_whole_split():
    data = build(synthetic(limit={"train": 10_000, "val": 60, "test": None}), cache_dir=None, device="cpu")
    assert data.sizes == {"train": 200, "val": 60, "test": 100}


@pytest.mark.parametrize("limit", [{"train": 0}, {"train": 1.5}, {"holdout": 10}])
def test_a_bad_limit_is_one_line_naming_the_key(limit):
    with pytest.raises(ConfigError, match=r"^data\.limit\.\w+=\S+: images kept of a split"):
        build(synthetic(limit=limit), cache_dir=None, device="cpu")


def test_every_data_option_has_the_limit_keys_unset():
    for name in ("synthetic", "imagefolder", "caffe_list", "cifar10", "cifar100"):
        assert load_option("data", name).limit == {"train": None, "val": None, "test": None}, name
