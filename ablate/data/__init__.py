"""Datasets as the training loop sees them: three splits of uint8 images, batched and augmented on the device.

`build(cfg.data, cache_dir=..., device=...)` reads the keys every conf/data/*.yaml shares (resolution, resize,
pad, flip, eval_resize, mean, std, val_fraction, split_seed, in_memory, limit), passes every other key to the source
named by `_target_` (plus `image_size`), holds val out of train when the source has none, and returns a `Data`.

A source lists its images (ablate.data.folders) or returns them already as uint8 tensors (synthetic, cifar).
Listed files that fit are decoded here (ablate.data.decoding) once, through the disk cache in `cache_dir`, into
tensors kept on the device; larger folders stream through DataLoader workers, behind the same `Data` methods.
`cache_dir` is used here only: sources never see it.
"""

import dataclasses
import inspect
import os
from collections.abc import Iterator

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf

from ablate.data import augment, cache, decoding
from ablate.data.decoding import ImageFiles
from ablate.data.folders import stratified_split
from ablate.errors import ConfigError

# in_memory=auto keeps the uint8 images on the training device up to this size, and streams larger data.
IN_MEMORY_MAX_BYTES = 4 * 2**30
# The keys read here; every other key of the node goes to the source.
COMMON_DEFAULTS = {
    "name": None,
    "resolution": None,
    "resize": None,
    "resize_short_side": False,
    "pad": 0,
    "flip": True,
    "eval_resize": "crop",
    "mean": None,
    "std": None,
    "val_fraction": 0.1,
    "split_seed": 0,
    "in_memory": "auto",
    "limit": None,
}
SPLITS = ("train", "val", "test")


class TensorSplit:
    """uint8 images and int64 labels held in memory: on the training device, or on the CPU when streamed."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device, on_device: bool):
        storage = device if on_device else torch.device("cpu")
        self.images, self.labels, self.device = images.to(storage), labels.to(storage), device

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # One copy of the epoch's indices to the device, not one (synchronising) copy per batch.
        all_indices = _to_device(torch.cat(index_batches), self.images.device)
        for indices in all_indices.split([len(indices) for indices in index_batches]):
            yield _to_device(self.images[indices], self.device), _to_device(self.labels[indices], self.device)


class FileSplit:
    """Image files decoded batch by batch in DataLoader workers, for data too large to keep in memory."""

    def __init__(self, files: ImageFiles, device: torch.device, workers: int):
        self.files, self.device, self.workers = files, device, workers

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, index_batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            decoding.BatchReader(self.files),
            sampler=[indices.tolist() for indices in index_batches],
            batch_size=None,
            num_workers=self.workers,
            worker_init_fn=decoding.worker_signals,  # SIGTERM ends a worker, not raises in it (decoding.py)
            pin_memory=self.device.type == "cuda",
        )
        for (images, error), indices in zip(loader, index_batches):
            if error:
                raise ConfigError(error)
            yield _to_device(images, self.device), _to_device(self.files.labels[indices], self.device)


class Data:
    """Three splits and their augmentation; every batch is (float32 [B, C, r, r], int64 [B]) on the device."""

    def __init__(
        self,
        *,
        name: str,
        classes: list[str],
        splits: dict[str, TensorSplit | FileSplit],
        in_channels: int,
        stored_size: int,
        resolution: int,
        pad: int,
        flip: bool,
        eval_resize: str = "crop",
        mean: list[float],
        std: list[float] | None,
        device: torch.device,
    ):
        self.name, self.classes, self.num_classes = name, classes, len(classes)
        self.in_channels, self.stored_size, self.resolution = in_channels, stored_size, resolution
        self.pad, self.flip, self.eval_resize, self.device = pad, flip, eval_resize, device
        self.sizes = {split: len(splits[split]) for split in SPLITS}
        self.streaming = any(isinstance(split, FileSplit) for split in splits.values())
        self._splits = splits
        self._mean = augment.channel_stats(mean, device)
        self._std = augment.channel_stats(std, device)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Updates per epoch: the last incomplete batch is dropped."""
        if not 1 <= batch_size <= self.sizes["train"]:
            raise ConfigError(
                f"batch.size={batch_size}: must be between 1 and the {self.sizes['train']} "
                f"training images of {self.name}; pass a smaller batch.size"
            )
        return self.sizes["train"] // batch_size

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch, shuffled and augmented with draws from the loop's CPU `generator`."""
        steps = self.steps_per_epoch(batch_size)
        order = torch.randperm(self.sizes["train"], generator=generator)[: steps * batch_size]
        for images, labels in self._splits["train"].batches(list(order.view(steps, batch_size))):
            yield (
                augment.random_train_batch(
                    images,
                    generator,
                    resolution=self.resolution,
                    pad=self.pad,
                    flip=self.flip,
                    mean=self._mean,
                    std=self._std,
                ),
                labels,
            )

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image of "val" or "test" once, in order, centre-cropped or resized whole (data.eval_resize)."""
        if split not in ("val", "test"):
            raise ValueError(f"eval_batches: split must be 'val' or 'test', not {split!r}")
        for images, labels in self._splits[split].batches(list(torch.arange(self.sizes[split]).split(batch_size))):
            view = augment.eval_batch(
                images, resolution=self.resolution, mean=self._mean, std=self._std, resize=self.eval_resize
            )
            yield view, labels


def build(cfg_data: DictConfig | dict, *, cache_dir: str | os.PathLike | None, device: torch.device | str) -> Data:
    """The dataset of a `data` config node; bad values raise ConfigError before any training."""
    settings = OmegaConf.to_container(cfg_data, resolve=True) if isinstance(cfg_data, DictConfig) else dict(cfg_data)
    target = settings.pop("_target_")
    common = _common_settings({key: settings.pop(key, default) for key, default in COMMON_DEFAULTS.items()})
    resolution, resize, device = common["resolution"], common["resize"], torch.device(device)
    source = hydra.utils.get_method(target)
    name = common["name"] or source.__name__

    image_size = resize if resize is not None else _native_size(source, resolution)
    if image_size is not None:
        _check_resolution(resolution, image_size, resize)
    if isinstance(settings.get("root"), str):
        settings["root"] = os.path.expanduser(settings["root"])  # data.root=~/data, however it was written
    loaded = source(**settings, image_size=image_size)
    if common["resize_short_side"]:
        if not isinstance(loaded["train"], ImageFiles) or resize is None:
            raise ConfigError(
                f"data.resize_short_side=true: needs image files and a data.resize (data={name}, "
                f"data.resize={resize}); pass data.resize_short_side=false"
            )
        loaded = {
            split: dataclasses.replace(value, short_side=True) if isinstance(value, ImageFiles) else value
            for split, value in loaded.items()
        }
    classes = list(loaded["classes"])
    stored_size = _stored_size(loaded["train"])
    _check_resolution(resolution, stored_size, resize)
    in_channels = 3 if isinstance(loaded["train"], ImageFiles) else loaded["train"][0].shape[1]
    for key in ("mean", "std"):
        if common[key] is not None and len(common[key]) != in_channels:
            raise ConfigError(
                f"data.{key}={common[key]}: has {len(common[key])} values but the images have "
                f"{in_channels} channels; give one value per channel"
            )

    # Decode before the val hold-out, so that the cache key does not depend on how train is split.
    image_count = sum(len(_labels(loaded[split])) for split in SPLITS if loaded[split] is not None)
    keep_in_memory = common["in_memory"] is True or (
        common["in_memory"] == "auto" and image_count * in_channels * stored_size**2 <= IN_MEMORY_MAX_BYTES
    )
    file_splits = {split: loaded[split] for split in SPLITS if isinstance(loaded[split], ImageFiles)}
    workers = _worker_count()
    if file_splits and keep_in_memory:
        loaded = {**loaded, **_decode_cached(file_splits, name, cache_dir, workers)}
    elif file_splits:
        for files in file_splits.values():
            decoding.check_readable(files, workers)

    splits = {split: loaded[split] for split in SPLITS}
    if splits["val"] is None:
        kept, held = stratified_split(_labels(splits["train"]), common["val_fraction"], common["split_seed"])
        if len(held) == 0 or len(kept) == 0:
            raise ConfigError(
                f"data.val_fraction={common['val_fraction']}: leaves the train or val split of "
                f"{name}'s {len(kept) + len(held)} training images empty; pass a fraction that "
                f"holds out at least one image of a class and keeps the rest"
            )
        splits["train"], splits["val"] = _subset(splits["train"], kept), _subset(splits["train"], held)
    for split, count in (common["limit"] or {}).items():  # a budget's images per split, one subset for every run
        if count is not None and count < len(_labels(splits[split])):
            generator = torch.Generator().manual_seed(common["split_seed"])
            order = torch.randperm(len(_labels(splits[split])), generator=generator)
            splits[split] = _subset(splits[split], order[:count].sort().values)
    for split, value in splits.items():
        labels = _labels(value)
        if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= len(classes):
            raise ValueError(f"{target}: the {split} split must hold images with labels in 0..{len(classes) - 1}")
    placed = {
        split: FileSplit(value, device, workers)
        if isinstance(value, ImageFiles)
        else TensorSplit(*value, device, on_device=keep_in_memory)
        for split, value in splits.items()
    }
    return Data(
        name=name,
        classes=classes,
        splits=placed,
        in_channels=in_channels,
        stored_size=stored_size,
        resolution=resolution,
        pad=common["pad"],
        flip=common["flip"],
        eval_resize=common["eval_resize"],
        mean=common["mean"],
        std=common["std"],
        device=device,
    )


def _common_settings(common: dict) -> dict:
    """The keys every data config shares, checked."""
    _check_int("data.resolution", common["resolution"], minimum=1)
    if common["resize"] is not None:
        _check_int("data.resize", common["resize"], minimum=1)
    _check_int("data.pad", common["pad"], minimum=0)
    _check_int("data.split_seed", common["split_seed"], minimum=0)
    if not 0 < common["val_fraction"] < 1:
        raise ConfigError(f"data.val_fraction={common['val_fraction']}: must be between 0 and 1; use e.g. 0.1")
    if common["mean"] is None:
        raise ConfigError("data.mean=null: give the per-channel mean on the 0-255 scale, e.g. data.mean=[0,0,0]")
    if common["std"] is not None and any(value <= 0 for value in common["std"]):
        raise ConfigError(f"data.std={common['std']}: every std must be positive; or data.std=null (mean only)")
    for split, count in (common["limit"] or {}).items():
        if split not in SPLITS or not (count is None or (isinstance(count, int) and count >= 1)):
            raise ConfigError(f"data.limit.{split}={count}: images kept of a split (train, val, test): null or >= 1")
    if common["eval_resize"] not in augment.EVAL_RESIZES:
        raise ConfigError(
            f"data.eval_resize={common['eval_resize']}: unknown; use crop (centre crop) or whole (resize the whole "
            "image, Caffe's TEST phase)"
        )
    if not isinstance(common["resize_short_side"], bool):
        raise ConfigError(f"data.resize_short_side={common['resize_short_side']}: must be true or false")
    if not isinstance(common["flip"], bool):
        raise ConfigError(f"data.flip={common['flip']}: must be true or false")
    return {**common, "in_memory": _in_memory_mode(common["in_memory"])}


def _decode_cached(
    file_splits: dict[str, ImageFiles], name: str, cache_dir, workers: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The splits' images decoded once, through a cache keyed by what decides the pixels."""
    ordered = list(file_splits.values())
    paths = [path for files in ordered for path in files.paths]
    image_size, exact_size, short_side = ordered[0].image_size, ordered[0].exact_size, ordered[0].short_side
    key = {
        # Stretched images keep the key they always had, so existing caches stay valid.
        "decoder": "PIL RGB bilinear" + (" short side + centre crop" if short_side else ""),
        "image_size": image_size,
        "exact_size": exact_size,
        "image_count": len(paths),
        "files": cache.file_fingerprint(paths),
    }
    all_files = ImageFiles(
        paths, torch.cat([files.labels for files in ordered]), image_size, exact_size, ordered[0].root, short_side
    )
    images = cache.load_or_build(
        cache_dir, f"{name}-{image_size}px", key, lambda: {"images": decoding.decode(all_files, workers)}
    )["images"]
    parts = images.split([len(files) for files in ordered])
    return {split: (part, files.labels) for (split, files), part in zip(file_splits.items(), parts)}


def _native_size(source, resolution: int) -> int | None:
    """data.resize=null: the default `image_size` of the source (None: the files' own size), else `resolution`."""
    parameter = inspect.signature(source).parameters.get("image_size")
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return resolution
    return parameter.default


def _stored_size(train: ImageFiles | tuple) -> int:
    if isinstance(train, ImageFiles):
        return train.image_size
    images, labels = train
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"a data source must return uint8 [N, C, S, S] images, not {images.dtype} {list(images.shape)}"
        )
    return images.shape[-1]


def _check_resolution(resolution: int, stored_size: int, resize: int | None) -> None:
    if resolution > stored_size:
        raise ConfigError(
            f"data.resolution={resolution}: larger than the stored image size {stored_size} "
            f"(data.resize={'null' if resize is None else resize}); pass "
            f"data.resolution<={stored_size} or data.resize>={resolution}"
        )


def _in_memory_mode(value) -> bool | str:
    if isinstance(value, bool) or value == "auto":
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"data.in_memory={value}: unknown value; pass data.in_memory=auto, true or false")


def _check_int(key: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value}: must be an integer >= {minimum}; pass {key}=<integer >= {minimum}>")


def _labels(split: ImageFiles | tuple) -> torch.Tensor:
    return split.labels if isinstance(split, ImageFiles) else split[1]


def _subset(split: ImageFiles | tuple, indices: torch.Tensor) -> ImageFiles | tuple:
    return split.subset(indices) if isinstance(split, ImageFiles) else (split[0][indices], split[1][indices])


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _worker_count() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))
