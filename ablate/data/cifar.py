"""torchvision's CIFAR-10 and CIFAR-100 as uint8 tensors (their pickled batches are already decoded pixels)."""

import os

import numpy as np
import torch
import torchvision
from PIL import Image

from ablate.errors import ConfigError

NATIVE_SIZE = 32


def cifar10(*, root: str | None, download: bool = True, image_size: int = NATIVE_SIZE) -> dict:
    """CIFAR-10 from `root` (downloaded there when missing and `download`); no val split of its own."""
    return _load(torchvision.datasets.CIFAR10, "CIFAR-10", root, download, image_size)


def cifar100(*, root: str | None, download: bool = True, image_size: int = NATIVE_SIZE) -> dict:
    """CIFAR-100 (the 100 fine labels) from `root`, downloaded there when missing and `download`."""
    return _load(torchvision.datasets.CIFAR100, "CIFAR-100", root, download, image_size)


def _load(dataset_class: type, title: str, root: str | None, download: bool, image_size: int) -> dict:
    if root is None:
        raise ConfigError(
            f"data.root=null: {title} needs a folder to read it from (or download it into); pass data.root=~/data"
        )
    root_dir = os.path.expanduser(str(root))
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            dataset = dataset_class(root_dir, train=train, download=download)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
            raise ConfigError(
                f"data.root={root}: {title} is not there ({' '.join(str(error).split())}); "
                f"pass data.download=true or point data.root at the folder holding "
                f"{dataset_class.base_folder}"
            ) from None
        except OSError as error:  # the download failed (no network, disk full)
            raise ConfigError(
                f"data.root={root}: {title} is not there and downloading it failed "
                f"({' '.join(str(error).split())}); run once with internet access or copy "
                f"{dataset_class.base_folder} into data.root"
            ) from None
        images = dataset.data  # uint8 [N, 32, 32, 3]
        if image_size != NATIVE_SIZE:
            images = np.stack([_resized(image, image_size) for image in images])
        splits[split] = (
            torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous(),
            torch.tensor(dataset.targets, dtype=torch.int64),
        )
    return {"train": splits["train"], "val": None, "test": splits["test"], "classes": list(dataset.classes)}


def _resized(pixels: np.ndarray, side: int) -> np.ndarray:
    """The same bilinear PIL resize as image files get (folders.read_image)."""
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR))
