"""Image-file sources: `imagefolder` (a folder per class) and `caffe_list` (the articles' `path label` lists).

They list and check files and return `ImageFiles` per split; the builder decodes them once (through the disk
cache) or streams them, so both sources share one decoder, one cache and one set of error messages.
"""

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ablate.errors import ConfigError

# torchvision's ImageFolder extensions, compared lower-case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Below this many images a process pool costs more than it saves.
MIN_IMAGES_FOR_POOL = 256


@dataclass(frozen=True)
class ImageFiles:
    """The image files of one split, with labels and the side at which they are stored."""

    paths: list[str]
    labels: torch.Tensor  # int64 [N]
    image_size: int  # side of the stored square image
    exact_size: bool  # data.resize=null: every image must already be image_size x image_size
    root: str  # data.root, for error messages

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: torch.Tensor) -> "ImageFiles":
        return ImageFiles(
            [self.paths[i] for i in indices.tolist()], self.labels[indices], self.image_size, self.exact_size, self.root
        )


def imagefolder(
    *,
    root: str | None,
    test_fraction: float = 0.2,
    test_split_seed: int = 0,
    image_size: int | None = None,
    cache_dir: str | None = None,
) -> dict:
    """A folder per class: `root/{train,test|val}/<class>/<image>` or `root/<class>/<image>`.

    With train/ and test/, an extra val/ is the val split; with train/ and only val/, val/ is the test split
    and the builder holds val out of train; with no train/, a stratified `test_fraction` of each class is the
    test split (seeded by `test_split_seed`). `cache_dir` is unused: the builder caches decoded images.
    """
    root_dir = _require_root(root)
    if (root_dir / "train").is_dir():
        classes, train_paths, train_labels = _scan_classes(root_dir / "train", root_dir)
        first_path = train_paths[0]
        test_dir = next((root_dir / name for name in ("test", "val") if (root_dir / name).is_dir()), None)
        if test_dir is None:
            raise ConfigError(
                f"data.root={root}: has train/ but no test/ or val/ folder; add one, or put the "
                f"class folders directly under data.root to split them by data.test_fraction"
            )
        _, test_paths, test_labels = _scan_classes(test_dir, root_dir, classes)
        val = None
        if test_dir.name == "test" and (root_dir / "val").is_dir():
            _, val_paths, val_labels = _scan_classes(root_dir / "val", root_dir, classes)
            val = (val_paths, val_labels)
    else:
        classes, paths, labels = _scan_classes(root_dir, root_dir)
        first_path = paths[0]  # before the split: the native size does not depend on the split seed
        if not 0 < test_fraction < 1:
            raise ConfigError(f"data.test_fraction={test_fraction}: must be between 0 and 1; use e.g. 0.2")
        kept, held = stratified_split(torch.tensor(labels), test_fraction, test_split_seed)
        train_paths, train_labels = [paths[i] for i in kept], [labels[i] for i in kept]
        test_paths, test_labels = [paths[i] for i in held], [labels[i] for i in held]
        val = None
    size, exact = _stored_size(image_size, first_path, root)

    def files(paths: list[str], labels: list[int]) -> ImageFiles:
        return ImageFiles(paths, torch.tensor(labels, dtype=torch.int64), size, exact, str(root))

    return {
        "train": files(train_paths, train_labels),
        "val": None if val is None else files(*val),
        "test": files(test_paths, test_labels),
        "classes": classes,
    }


def caffe_list(
    *,
    root: str | None,
    train_list: str | None,
    val_list: str | None = None,
    test_list: str | None = None,
    label_names: str | None = None,
    image_size: int | None = None,
    cache_dir: str | None = None,
) -> dict:
    """Caffe `ImageData` list files, one `<image path> <integer label>` per line, paths relative to `root`.

    The articles had one held-out list, their "val": with `test_list` null, `val_list` becomes the test split
    and the builder holds val out of train. `label_names`: one class name per line, optionally followed by its
    index (Places365's categories file). `cache_dir` is unused: the builder caches decoded images.
    """
    root_dir = _require_root(root)
    if train_list is None:
        raise ConfigError(
            "data.train_list=null: caffe_list needs a training list; "
            "pass data.train_list=<file of 'path label' lines, relative to data.root>"
        )
    if val_list is None and test_list is None:
        raise ConfigError(
            "data.val_list=null: caffe_list needs a held-out list (data.val_list or "
            "data.test_list); pass data.val_list=<file relative to data.root>"
        )
    classes = None if label_names is None else _read_label_names(label_names, root_dir)
    class_count = None if classes is None else len(classes)
    train = _read_list("data.train_list", train_list, root_dir, class_count)
    if test_list is None:
        val, test = None, _read_list("data.val_list", val_list, root_dir, class_count)
    else:
        val = None if val_list is None else _read_list("data.val_list", val_list, root_dir, class_count)
        test = _read_list("data.test_list", test_list, root_dir, class_count)
    if classes is None:
        max_label = max(max(split[1]) for split in (train, val, test) if split is not None)
        classes = [str(label) for label in range(max_label + 1)]
    size, exact = _stored_size(image_size, train[0][0], root)

    def files(split: tuple | None) -> ImageFiles | None:
        if split is None:
            return None
        return ImageFiles(split[0], torch.tensor(split[1], dtype=torch.int64), size, exact, str(root))

    return {"train": files(train), "val": files(val), "test": files(test), "classes": classes}


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) sorted indices: round(fraction * n) random images of each class are held out."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
        members = (labels == label).nonzero().flatten()
        held_count = int(len(members) * fraction + 0.5)
        held.append(members[torch.randperm(len(members), generator=generator)[:held_count]])
    is_held = torch.zeros(len(labels), dtype=torch.bool)
    is_held[torch.cat(held)] = True
    return (~is_held).nonzero().flatten(), is_held.nonzero().flatten()


def read_image(path: str, image_size: int, exact_size: bool, root: str) -> np.ndarray:
    """One image as uint8 [S, S, 3] RGB, resized (bilinear) to a square of side `image_size`."""
    try:
        with Image.open(path) as image:
            _check_size(path, image.size, image_size, exact_size)
            rgb = image.convert("RGB")  # decodes: a truncated or corrupt file fails here
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001  whatever PIL raises, the file cannot be used
        raise ConfigError(_unreadable(root, path, error)) from None
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode(files: ImageFiles, workers: int) -> torch.Tensor:
    """Every image of `files` as uint8 [N, 3, S, S], decoded by `workers` processes."""
    out = torch.empty((len(files), 3, files.image_size, files.image_size), dtype=torch.uint8)
    start = 0
    for chunk in _map_chunks(_read_chunk, files, workers):
        out[start : start + len(chunk)] = torch.from_numpy(chunk).permute(0, 3, 1, 2)
        start += len(chunk)
    return out


def check_readable(files: ImageFiles, workers: int) -> None:
    """Open every image's header (streamed data is decoded during training; bad files must fail before it)."""
    for _ in _map_chunks(_check_chunk, files, workers):
        pass


class BatchReader(torch.utils.data.Dataset):
    """Decodes a whole batch of indices (a DataLoader with batch_size=None hands it one index list at a time).

    Returns (uint8 [B, 3, S, S], error message or ""): a ConfigError raised in a worker would come back as a
    multi-line traceback, so the message travels as a value and the main process raises it.
    """

    def __init__(self, files: ImageFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, str]:
        size = self.files.image_size
        try:
            chunk = np.stack(
                [read_image(self.files.paths[i], size, self.files.exact_size, self.files.root) for i in indices]
            )
        except ConfigError as error:
            return torch.empty((0, 3, size, size), dtype=torch.uint8), str(error)
        return torch.from_numpy(chunk).permute(0, 3, 1, 2).contiguous(), ""


def _read_chunk(args: tuple) -> np.ndarray:
    paths, image_size, exact_size, root = args
    return np.stack([read_image(path, image_size, exact_size, root) for path in paths])


def _check_chunk(args: tuple) -> None:
    paths, image_size, exact_size, root = args
    for path in paths:
        try:
            with Image.open(path) as image:
                size = image.size
        except Exception as error:  # noqa: BLE001  whatever PIL raises, the file cannot be used
            raise ConfigError(_unreadable(root, path, error)) from None
        _check_size(path, size, image_size, exact_size)


def _check_size(path: str, size: tuple[int, int], image_size: int, exact_size: bool) -> None:
    if exact_size and size != (image_size, image_size):
        raise ConfigError(
            f"data.resize=null: {path} is {size[0]}x{size[1]} but the images are stored at their "
            f"own size {image_size}x{image_size}; pass data.resize=<side> to resize every image"
        )


def _unreadable(root: str, path: str, error: BaseException) -> str:
    reason = " ".join(str(error).split()) or type(error).__name__
    return f"data.root={root}: cannot read image {path} ({reason}); remove or replace that file"


def _map_chunks(function, files: ImageFiles, workers: int):
    """function((paths, image_size, exact_size, root)) over chunks of the files, in order."""
    chunk_size = 64
    chunks = [
        (files.paths[start : start + chunk_size], files.image_size, files.exact_size, files.root)
        for start in range(0, len(files), chunk_size)
    ]
    if workers <= 1 or len(files) < MIN_IMAGES_FOR_POOL:
        yield from map(function, chunks)
        return
    # fork: workers need only PIL and numpy, and start in milliseconds.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(function, chunks)


def _require_root(root: str | None) -> Path:
    if root is None:
        raise ConfigError("data.root=null: this dataset reads image files; pass data.root=/path/to/images")
    root_dir = Path(os.path.expanduser(str(root)))
    if not root_dir.is_dir():
        raise ConfigError(f"data.root={root}: no such folder; pass data.root=<an existing folder>")
    return root_dir


def _scan_classes(folder: Path, root: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    """(classes, image paths, labels) of a folder of class folders; `classes` fixes the names and labels."""
    found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise ConfigError(
            f"data.root={root}: no class folders in {folder} (expected <class>/<image> under "
            f"data.root, or under its train/ and test/); point data.root at the dataset"
        )
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ConfigError(
            f"data.root={root}: class folder {folder / unknown[0]} is not among the training "
            f"classes; use the same class folders in train/ and {folder.name}/"
        )
    paths, labels = [], []
    for name in found:
        class_paths = _images_under(folder / name)
        if not class_paths:
            raise ConfigError(
                f"data.root={root}: class folder {folder / name} has no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
            )
        paths += class_paths
        labels += [classes.index(name)] * len(class_paths)
    return classes, paths, labels


def _images_under(folder: Path) -> list[str]:
    paths = []
    for directory, subdirectories, names in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        paths += [
            os.path.join(directory, name)
            for name in sorted(names)
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        ]
    return paths


def _resolve(root: Path, path: str) -> Path:
    """A path relative to root unless absolute (Caffe's root_folder)."""
    return root / os.path.expanduser(path)


def _read_list(key: str, list_arg: str, root: Path, class_count: int | None) -> tuple[list[str], list[int]]:
    """(image paths, labels) of one Caffe list file."""
    list_path = _resolve(root, list_arg)
    if not list_path.is_file():
        raise ConfigError(
            f"{key}={list_arg}: no such file {list_path}; pass {key}=<list file relative to data.root, or absolute>"
        )
    paths, labels = [], []
    with open(list_path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line:
                continue
            fields = line.rsplit(maxsplit=1)  # as Caffe: the label is the last field, the path may hold spaces
            if len(fields) != 2 or not (fields[1].isascii() and fields[1].isdigit()):
                raise ConfigError(
                    f"{key}={list_path}: line {line_number} {line!r} is not "
                    f"'<image path> <integer label>'; fix that line"
                )
            label = int(fields[1])
            if class_count is not None and label >= class_count:
                raise ConfigError(
                    f"{key}={list_path}: line {line_number} has label {label} but data.label_names "
                    f"lists {class_count} classes; fix the label or the names file"
                )
            image_path = _resolve(root, fields[0])
            if not image_path.is_file():
                raise ConfigError(
                    f"{key}={list_path}: line {line_number} names a missing image {image_path}; "
                    f"fix the list or data.root"
                )
            paths.append(str(image_path))
            labels.append(label)
    if not paths:
        raise ConfigError(f"{key}={list_path}: the list is empty; pass a list of '<image path> <label>' lines")
    return paths, labels


def _read_label_names(label_names: str, root: Path) -> list[str]:
    names_path = _resolve(root, label_names)
    if not names_path.is_file():
        raise ConfigError(
            f"data.label_names={label_names}: no such file {names_path}; pass a file with one "
            f"class name per line, or data.label_names=null"
        )
    by_index = {}
    with open(names_path, encoding="utf-8") as lines:
        for line in filter(None, (line.strip() for line in lines)):
            fields = line.rsplit(maxsplit=1)
            if len(fields) == 2 and fields[1].isdigit():
                by_index[int(fields[1])] = fields[0]
            else:
                by_index[len(by_index)] = line
    if sorted(by_index) != list(range(len(by_index))):
        raise ConfigError(
            f"data.label_names={names_path}: the indices are not 0..{len(by_index) - 1}; "
            f"give each class once, in label order"
        )
    return [by_index[index] for index in range(len(by_index))]


def _stored_size(image_size: int | None, first_path: str, root: str) -> tuple[int, bool]:
    """(side, exact): data.resize, or the first image's own side when it is null (then all must match)."""
    if image_size is not None:
        return int(image_size), False
    try:
        with Image.open(first_path) as image:
            width, height = image.size
    except Exception as error:  # noqa: BLE001  whatever PIL raises, the file cannot be used
        raise ConfigError(_unreadable(root, first_path, error)) from None
    if width != height:
        raise ConfigError(
            f"data.resize=null: {first_path} is {width}x{height}, not square, so the images have "
            f"no native size; pass data.resize=<side> (the articles: data.resize=256)"
        )
    return width, True
