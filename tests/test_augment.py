"""The batched on-device augmentation does exactly what torchvision's per-sample transforms do."""

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from ablate.data import augment

MEAN = [125.3, 123.0, 113.9]
STD = [63.0, 62.1, 66.7]


def stats(device="cpu"):
    return augment.channel_stats(MEAN, device), augment.channel_stats(STD, device)


def random_images(count, size, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


def torchvision_train(image, top, left, flip, resolution, pad, std=STD):
    """The per-sample reference: RandomCrop(padding=pad) with fixed offsets, then flip, then Normalize."""
    image = F.pad(image, [pad], fill=0) if pad else image
    image = F.crop(image, top, left, resolution, resolution)
    if flip:
        image = F.horizontal_flip(image)
    image = image.float()
    return F.normalize(image, MEAN, std) if std is not None else image - torch.tensor(MEAN).view(-1, 1, 1)


@pytest.mark.parametrize("stored_size, resolution, pad", [(32, 32, 4), (20, 16, 0), (12, 8, 3), (9, 9, 0)])
def test_train_batch_equals_torchvision_pad_crop_flip_normalize(stored_size, resolution, pad):
    max_offset = stored_size + 2 * pad - resolution
    # Both extremes of the offset range, the middle, and every flip combination.
    offsets = torch.tensor(
        [
            [0, 0],
            [max_offset, max_offset],
            [0, max_offset],
            [max_offset, 0],
            [max_offset // 2, max_offset // 3],
            [max_offset // 3, max_offset // 2],
        ]
        * 2
    )
    flips = torch.tensor([False] * 6 + [True] * 6)
    images = random_images(len(offsets), stored_size)
    mean, std = stats()
    out = augment.train_batch(images, offsets, flips, resolution=resolution, pad=pad, mean=mean, std=std)
    assert out.dtype == torch.float32 and out.shape == (len(offsets), 3, resolution, resolution)
    for i in range(len(offsets)):
        expected = torchvision_train(images[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]), resolution, pad)
        assert torch.equal(out[i], expected), f"sample {i}: offsets {offsets[i].tolist()} flip {bool(flips[i])}"


def test_padding_is_zero_before_normalisation():
    images = torch.full((1, 3, 8, 8), 200, dtype=torch.uint8)
    mean = augment.channel_stats([0, 0, 0], "cpu")
    out = augment.train_batch(
        images, torch.tensor([[0, 0]]), torch.tensor([False]), resolution=8, pad=2, mean=mean, std=None
    )
    assert out[0, :, :2].eq(0).all() and out[0, :, :, :2].eq(0).all()
    assert out[0, :, 2:, 2:].eq(200).all()


@pytest.mark.parametrize("stored_size, resolution", [(32, 32), (36, 32), (33, 32), (35, 32), (256, 224), (9, 4)])
def test_eval_batch_equals_torchvision_center_crop_normalize(stored_size, resolution):
    images = random_images(3, stored_size)
    mean, std = stats()
    out = augment.eval_batch(images, resolution=resolution, mean=mean, std=std)
    expected = torch.stack([F.normalize(F.center_crop(image, [resolution]).float(), MEAN, STD) for image in images])
    assert torch.equal(out, expected)


def test_std_null_subtracts_the_mean_only():
    images = random_images(4, 10)
    mean, _ = stats()
    out = augment.eval_batch(images, resolution=10, mean=mean, std=None)
    assert torch.equal(out, images.float() - torch.tensor(MEAN).view(1, 3, 1, 1))
    offsets, flips = torch.tensor([[1, 2]] * 4), torch.tensor([True, False, True, False])
    train = augment.train_batch(images, offsets, flips, resolution=8, pad=0, mean=mean, std=None)
    for i in range(4):
        assert torch.equal(train[i], torchvision_train(images[i], 1, 2, bool(flips[i]), 8, 0, std=None))


def test_keeps_ranges_order_and_leaves_the_input_unchanged():
    images = random_images(16, 12)
    before = images.clone()
    zero = augment.channel_stats([0, 0, 0], "cpu")
    generator = torch.Generator().manual_seed(0)
    out = augment.random_train_batch(images, generator, resolution=12, pad=0, flip=False, mean=zero, std=None)
    assert torch.equal(images, before)
    # pad 0, resolution = stored size, no flip: the identity, sample by sample, in order.
    assert torch.equal(out, images.float())
    assert out.min() >= 0 and out.max() <= 255


def test_random_train_batch_uses_the_drawn_offsets_and_flips():
    images = random_images(64, 16)
    mean, std = stats()
    settings = dict(resolution=14, pad=2, mean=mean, std=std)
    out = augment.random_train_batch(images, torch.Generator().manual_seed(5), flip=True, **settings)
    offsets, flips = augment.draw_train_params(
        64, torch.Generator().manual_seed(5), stored_size=16, resolution=14, pad=2, flip=True
    )
    assert torch.equal(out, augment.train_batch(images, offsets, flips, **settings))
    again = augment.random_train_batch(images, torch.Generator().manual_seed(5), flip=True, **settings)
    other = augment.random_train_batch(images, torch.Generator().manual_seed(6), flip=True, **settings)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_draws_cover_every_offset_and_both_flips():
    generator = torch.Generator().manual_seed(0)
    offsets, flips = augment.draw_train_params(4000, generator, stored_size=32, resolution=32, pad=4, flip=True)
    assert set(offsets.flatten().tolist()) == set(range(9))  # 0..2*pad, as RandomCrop(32, padding=4)
    assert 0.45 < flips.float().mean() < 0.55
    unflipped_offsets, no_flips = augment.draw_train_params(
        4000, torch.Generator().manual_seed(0), stored_size=32, resolution=32, pad=4, flip=False
    )
    assert not no_flips.any() and torch.equal(unflipped_offsets, offsets)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_batches_on_cpu_and_gpu():
    images = random_images(32, 32)
    outputs = []
    for device in ("cpu", "cuda"):
        mean, std = stats(device)
        generator = torch.Generator().manual_seed(3)
        train = augment.random_train_batch(
            images.to(device), generator, resolution=28, pad=4, flip=True, mean=mean, std=std
        )
        evaluation = augment.eval_batch(images.to(device), resolution=28, mean=mean, std=std)
        outputs.append((train.cpu(), evaluation.cpu()))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize("stored_size, resolution", [(256, 224), (40, 32), (32, 32)])
def test_eval_resize_whole_is_caffes_bilinear_resize_of_the_whole_image(stored_size, resolution):
    """Caffe's TEST phase (recipe=articles): the whole image at 224, bilinear without antialiasing, 8-bit; not the
    centre 224 of the 256 resize, which drops the outer 12.5% of each side."""
    images = random_images(3, stored_size)
    mean, _ = stats()
    got = augment.eval_batch(images, resolution=resolution, mean=mean, std=None, resize="whole")
    for image, out in zip(images, got):
        resized = F.resize(image, [resolution, resolution], interpolation=F.InterpolationMode.BILINEAR, antialias=False)
        # torchvision's uint8 kernel rounds in fixed point (as OpenCV's does): at most one 8-bit level apart.
        difference = (out + torch.tensor(MEAN).view(-1, 1, 1) - resized.float()).abs()
        assert difference.max() <= 1 + 1e-4 and difference.mean() < 0.5
    if stored_size != resolution:
        cropped = augment.eval_batch(images, resolution=resolution, mean=mean, std=None)
        assert not torch.equal(got, cropped)


def test_eval_resize_whole_keeps_the_borders_that_the_crop_drops():
    image = torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    image[..., :16, :] = 255  # a band in the top 16 rows, outside the centre 224 crop
    whole = augment.eval_batch(image, resolution=224, mean=torch.zeros(3, 1, 1), std=None, resize="whole")
    crop = augment.eval_batch(image, resolution=224, mean=torch.zeros(3, 1, 1), std=None, resize="crop")
    assert whole[..., :13, :].min() == 255 and crop.max() == 0
