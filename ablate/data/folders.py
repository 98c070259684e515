"""Image-file sources: `imagefolder` (a folder per class) and `caffe_list` (the articles' `path label` lists).

They list, label and split the files and return `ImageFiles` per split; ablate.data.decoding turns them into
pixels (the builder decodes them once through the disk cache, or streams them), so both sources share one
decoder, one cache and one set of error messages.
"""

import os
from collections import Counter
from pathlib import Path

import torch

from ablate.data.decoding import ImageFiles, stored_size
from ablate.errors import ConfigError

# torchvision's ImageFolder extensions (torchvision.datasets.folder.IMG_EXTENSIONS), compared lower-case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def imagefolder(
    *,
    root: str | None,
    test_fraction: float = 0.2,
    test_split_seed: int = 0,
    image_size: int | None = None,
) -> dict:
    """A folder per class: `root/{train,test|val}/<class>/<image>` or `root/<class>/<image>`.

    With train/ and test/, an extra val/ is the val split; with train/ and only val/, val/ is the test split
    and the builder holds val out of train; with no train/, a stratified `test_fraction` of each class is the
    test split (seeded by `test_split_seed`).
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
    size, exact = stored_size(image_size, first_path, root)

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
) -> dict:
    """Caffe `ImageData` list files, one `<image path> <integer label>` per line, paths relative to `root`.

    The articles had one held-out list, their "val": with `test_list` null, `val_list` becomes the test split
    and the builder holds val out of train. `label_names`: one class name per line, optionally followed by its
    index (Places365's categories file).
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
    if classes is None:
        # Without names, the training list defines the classes: 0..its largest label, each with training images.
        # A held-out label past them would otherwise widen the classifier silently and make chance 1/(that + 1).
        classes = [str(label) for label in range(max(train[1]) + 1)]
        class_count = len(classes)
        missing = sorted(set(range(class_count)) - set(train[1]))
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise ConfigError(
                f"data.train_list={train_list}: no training image has label {shown} of 0..{class_count - 1}; "
                "labels must be 0..K-1 with images of every class (or name the classes with data.label_names)"
            )
    if test_list is None:
        val, test = None, _read_list("data.val_list", val_list, root_dir, class_count, train_list)
    else:
        val = None if val_list is None else _read_list("data.val_list", val_list, root_dir, class_count, train_list)
        test = _read_list("data.test_list", test_list, root_dir, class_count, train_list)
    size, exact = stored_size(image_size, train[0][0], root)

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


def _require_root(root: str | None) -> Path:
    if root is None:
        raise ConfigError("data.root=null: this dataset reads image files; pass data.root=/path/to/images")
    root_dir = Path(os.path.expanduser(str(root)))
    if not root_dir.is_dir():
        raise ConfigError(f"data.root={root}: no such folder; pass data.root=<an existing folder>")
    return root_dir


def _scan_classes(folder: Path, root: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    """(classes, image paths, labels) of a folder of class folders; `classes` fixes the names and labels."""
    # Not torchvision's find_classes: it counts hidden folders (.ipynb_checkpoints, .git) as classes.
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
    # torchvision's ImageFolder walk; imported here because torchvision costs seconds to import and only this
    # source needs it.
    from torchvision.datasets.folder import make_dataset

    labels_of = {name: classes.index(name) for name in found}
    samples = make_dataset(str(folder), labels_of, is_valid_file=lambda path: _is_image(path, folder), allow_empty=True)
    counts = Counter(label for _, label in samples)
    for name in found:
        if not counts[labels_of[name]]:
            raise ConfigError(
                f"data.root={root}: class folder {folder / name} has no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
            )
    return classes, [path for path, _ in samples], [label for _, label in samples]


def _is_image(path: str, folder: Path) -> bool:
    """An image by its extension, outside hidden files and folders (macOS ._name.jpg files are not images)."""
    hidden = any(part.startswith(".") for part in Path(path).relative_to(folder).parts)
    return not hidden and path.lower().endswith(IMAGE_EXTENSIONS)


def _resolve(root: Path, path: str) -> Path:
    """A path relative to root unless absolute (Caffe's root_folder)."""
    return root / os.path.expanduser(path)


def _read_list(
    key: str, list_arg: str, root: Path, class_count: int | None, classes_from: str | None = None
) -> tuple[list[str], list[int]]:
    """(image paths, labels) of one Caffe list file; labels must be below `class_count`, which data.label_names
    gives, or the training list `classes_from`."""
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
                source = "data.label_names lists" if classes_from is None else f"the training list {classes_from} has"
                raise ConfigError(
                    f"{key}={list_path}: line {line_number} has label {label} but {source} {class_count} classes "
                    f"(0..{class_count - 1}); fix the label, or name every class with data.label_names"
                )
            image_path = _resolve(root, fields[0])
            if not image_path.is_file():
                # A list written on Windows (C:\data\cat.jpg, cat\1.jpg) names no file here.
                windows = "\\" in fields[0] or (len(fields[0]) > 1 and fields[0][1] == ":")
                hint = "; it is a Windows path: write it relative to data.root with / (cat/1.jpg)" if windows else ""
                raise ConfigError(
                    f"{key}={list_path}: line {line_number} names a missing image {image_path}; "
                    f"fix the list or data.root{hint}"
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
