"""Augmentation of whole uint8 batches on their own device: pad + random crop + flip for training, centre crop
(or Caffe's whole-image resize) for evaluation, then normalisation.

Pixel for pixel the same as torchvision's per-sample transforms (v2.functional pad with zeros, crop,
horizontal_flip, center_crop, normalize); the random parameters come from a CPU generator, so one seed gives
the same batches on CPU and GPU.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EVAL_RESIZES = ("crop", "whole")


def draw_train_params(
    batch_size: int, generator: torch.Generator, *, stored_size: int, resolution: int, pad: int, flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets [B, 2] (top, left in the padded image) and flip flags [B], drawn on the CPU."""
    offset_count = stored_size + 2 * pad - resolution + 1
    offsets = torch.randint(0, offset_count, (batch_size, 2), generator=generator)
    flips = torch.rand(batch_size, generator=generator) < 0.5
    if not flip:
        flips.zero_()  # drawn anyway so that flip=false leaves the same crops as flip=true
    return offsets, flips


def crop_flip(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, *, resolution: int, pad: int
) -> torch.Tensor:
    """Crop [B, C, r, r] at `offsets` of the zero-padded batch, mirrored where `flips`; uint8 in, uint8 out.

    One gather over the unpadded images: each output pixel reads (top - pad + i, left - pad + j), or
    (.., left - pad + r - 1 - j) when mirrored, and pixels that fall in the padding are set to zero.
    """
    batch_size, channels, height, width = x.shape
    if x.is_cuda and offsets.device.type == "cpu":  # pinned + non_blocking: no host-device sync per batch
        offsets = offsets.pin_memory().to(x.device, non_blocking=True)
        flips = flips.pin_memory().to(x.device, non_blocking=True)
    offsets, flips = offsets.to(x.device), flips.to(x.device)
    steps = torch.arange(resolution, device=x.device)
    rows = offsets[:, :1] - pad + steps  # [B, r]
    cols = offsets[:, 1:] - pad + torch.where(flips[:, None], resolution - 1 - steps, steps)  # [B, r]
    flat = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]  # [B, r, r]
    out = x.reshape(batch_size, channels, height * width).gather(
        2, flat.view(batch_size, 1, -1).expand(-1, channels, -1)
    )
    out = out.view(batch_size, channels, resolution, resolution)
    if pad:
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        out = out.masked_fill(~inside[:, None], 0)
    return out


def center_crop(x: torch.Tensor, *, resolution: int) -> torch.Tensor:
    """Centre crop [B, C, r, r], rounding the offset as torchvision's center_crop does."""
    height, width = x.shape[-2:]
    top = int(round((height - resolution) / 2.0))
    left = int(round((width - resolution) / 2.0))
    return x[..., top : top + resolution, left : left + resolution]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
    """(x - mean) / std as float32, mean and std on the 0-255 scale, shaped [C, 1, 1]; std None = 1."""
    out = x.float().sub_(mean)  # the same two in-place steps as torchvision's normalize: bit-identical
    return out if std is None else out.div_(std)


def train_batch(
    x: torch.Tensor,
    offsets: torch.Tensor,
    flips: torch.Tensor,
    *,
    resolution: int,
    pad: int,
    mean: torch.Tensor,
    std: torch.Tensor | None,
) -> torch.Tensor:
    """A training batch for given crop offsets and flips: uint8 [B, C, S, S] -> float32 [B, C, r, r]."""
    return normalize(crop_flip(x, offsets, flips, resolution=resolution, pad=pad), mean, std)


def random_train_batch(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    resolution: int,
    pad: int,
    flip: bool,
    mean: torch.Tensor,
    std: torch.Tensor | None,
) -> torch.Tensor:
    """A training batch with offsets and flips drawn from the loop's CPU `generator`."""
    offsets, flips = draw_train_params(
        x.shape[0], generator, stored_size=x.shape[-1], resolution=resolution, pad=pad, flip=flip
    )
    return train_batch(x, offsets, flips, resolution=resolution, pad=pad, mean=mean, std=std)


def resize_whole(x: torch.Tensor, *, resolution: int) -> torch.Tensor:
    """The whole image resized to [B, C, r, r], uint8 in and out: Caffe's TEST-phase resize (OpenCV's bilinear
    INTER_LINEAR, pixel centres aligned as torch's align_corners=False, no antialiasing, rounded to 8 bits)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    resized = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear", align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def eval_batch(
    x: torch.Tensor, *, resolution: int, mean: torch.Tensor, std: torch.Tensor | None, resize: str = "crop"
) -> torch.Tensor:
    """An evaluation batch, uint8 [B, C, S, S] -> float32 [B, C, r, r]: the centre crop (`crop`) or the whole
    stored image resized (`whole`, Caffe's TEST phase), then normalisation."""
    view = resize_whole(x, resolution=resolution) if resize == "whole" else center_crop(x, resolution=resolution)
    return normalize(view, mean, std)


def channel_stats(values: Sequence[float] | None, device: torch.device | str) -> torch.Tensor | None:
    """Per-channel mean or std as a float32 [C, 1, 1] tensor on `device` (None stays None)."""
    if values is None:
        return None
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device=device).view(-1, 1, 1)
