"""The data builder, its sources (image folders, Caffe lists, CIFAR), the decode cache and every bad input."""

import os
import pickle
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import ablate.data
from ablate.data import cache, decoding, folders
from ablate.errors import ConfigError
from ablate.train import interruptible

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
EXTRACTED = ROOT / ".cache" / "data" / "test-subsets"
CLASSES = ["cat", "dog", "eel"]


# ---------------------------------------------------------------- a tiny in-memory source


def tiny_source(*, image_size, class_count=3, per_class=10, with_val=False):
    """Every pixel of image i is i, so a batch says which images it holds; labels are i % class_count."""
    count = class_count * per_class

    def split(first, size):
        index = torch.arange(first, first + size)
        images = index.view(-1, 1, 1, 1).expand(-1, 3, image_size, image_size).to(torch.uint8).clone()
        return images, index % class_count

    return {
        "train": split(0, count),
        "val": split(count, class_count * 2) if with_val else None,
        "test": split(200, class_count * 3),
        "classes": [f"c{i}" for i in range(class_count)],
    }


def tiny_config(**overrides):
    config = {
        "_target_": f"{__name__}.tiny_source",
        "name": "tiny",
        "resolution": 8,
        "resize": 8,
        "pad": 2,
        "flip": True,
        "mean": [0, 0, 0],
        "std": None,
        "val_fraction": 0.1,
        "split_seed": 0,
        "in_memory": "auto",
    }
    return {**config, **overrides}


def ids(images):
    """Which tiny_source images a batch holds: the centre pixel survives any crop of pad <= 2."""
    return images[:, 0, 4, 4].long()


def build(config, cache_dir=None):
    return ablate.data.build(config, cache_dir=cache_dir, device="cpu")


def one_line_error(match, function, *args, **kwargs):
    with pytest.raises(ConfigError, match=match) as error:
        function(*args, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


def epoch(data, batch_size, seed):
    return list(data.train_batches(batch_size, torch.Generator().manual_seed(seed)))


# ---------------------------------------------------------------- the builder


def test_builder_holds_out_a_stratified_val_split_and_keeps_the_test_order():
    data = build(tiny_config())
    assert (data.classes, data.num_classes, data.in_channels, data.resolution) == (["c0", "c1", "c2"], 3, 3, 8)
    assert data.sizes == {"train": 27, "val": 3, "test": 9}
    val_x, val_y = next(data.eval_batches("val", 100))
    assert sorted(val_y.tolist()) == [0, 1, 2]  # one image of each class: 10 % of 10
    assert torch.equal(ids(val_x) % 3, val_y)
    train_ids = torch.cat([ids(x) for x, _ in epoch(data, 27, seed=0)])
    assert sorted(train_ids.tolist() + ids(val_x).tolist()) == list(range(30))
    test_x, test_y = next(data.eval_batches("test", 100))
    assert ids(test_x).tolist() == list(range(200, 209)) and test_y.tolist() == [i % 3 for i in range(200, 209)]


def test_the_val_split_depends_on_split_seed_only():
    def val_ids(**overrides):
        return ids(next(build(tiny_config(**overrides)).eval_batches("val", 100))[0]).tolist()

    assert val_ids(split_seed=0) == val_ids(split_seed=0)
    assert val_ids(split_seed=0) != val_ids(split_seed=1)


def test_a_source_val_split_is_used_as_is():
    data = build(tiny_config(_target_=f"{__name__}.tiny_source", with_val=True))
    assert data.sizes == {"train": 30, "val": 6, "test": 9}
    assert ids(next(data.eval_batches("val", 100))[0]).tolist() == list(range(30, 36))


def test_train_batches_are_determined_by_the_generator_seed():
    data = build(tiny_config())
    first, again, other = epoch(data, 4, seed=1), epoch(data, 4, seed=1), epoch(data, 4, seed=2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    generator = torch.Generator().manual_seed(1)
    epoch_one = [ids(x) for x, _ in data.train_batches(4, generator)]
    epoch_two = [ids(x) for x, _ in data.train_batches(4, generator)]
    assert not all(torch.equal(a, b) for a, b in zip(epoch_one, epoch_two))


def test_train_batches_drop_the_last_partial_batch_and_keep_labels_with_images():
    data = build(tiny_config())
    assert data.steps_per_epoch(4) == 6 and data.steps_per_epoch(27) == 1
    batches = epoch(data, 4, seed=0)
    assert len(batches) == 6
    for images, labels in batches:
        assert images.shape == (4, 3, 8, 8) and images.dtype == torch.float32 and labels.dtype == torch.int64
        assert torch.equal(ids(images) % 3, labels)
    seen = torch.cat([ids(images) for images, _ in batches])
    assert len(set(seen.tolist())) == 24  # no image twice in an epoch


def test_augmentation_crops_pads_and_flips_in_training_only():
    data = build(tiny_config(resize=8, resolution=6, pad=2))
    images = torch.cat([x for x, _ in epoch(data, 27, seed=0)])
    assert images.shape[-1] == 6
    assert (images == 0).any(), "padding pixels reach some crops"
    eval_images, _ = next(data.eval_batches("test", 100))
    assert eval_images.shape == (9, 3, 6, 6) and (eval_images > 0).all()  # centre crop: no padding


def test_eval_batches_give_every_image_once_in_order():
    data = build(tiny_config())
    batches = list(data.eval_batches("test", 4))
    assert [len(labels) for _, labels in batches] == [4, 4, 1]
    assert torch.cat([ids(x) for x, _ in batches]).tolist() == list(range(200, 209))
    with pytest.raises(ValueError):
        list(data.eval_batches("train", 4))


def test_batch_size_outside_the_training_split_is_refused():
    data = build(tiny_config())
    one_line_error(r"^batch.size=0: .*27 training images", data.steps_per_epoch, 0)
    one_line_error(r"^batch.size=28: ", lambda: list(data.train_batches(28, torch.Generator())))


def test_in_memory_false_copies_batches_from_host_memory_with_the_same_batches():
    on_device, streamed = build(tiny_config(in_memory=True)), build(tiny_config(in_memory=False))
    assert not on_device.streaming and not streamed.streaming  # a tensor source has no files to stream
    for (x1, y1), (x2, y2) in zip(epoch(on_device, 5, seed=3), epoch(streamed, 5, seed=3)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("in_memory", "maybe", r"^data.in_memory=maybe: unknown value; pass data.in_memory=auto, true or false$"),
        ("in_memory", 2, r"^data.in_memory=2: "),
        (
            "resolution",
            9,
            r"^data.resolution=9: larger than the stored image size 8 \(data.resize=8\); pass "
            r"data.resolution<=8 or data.resize>=9$",
        ),
        ("resolution", 0, r"^data.resolution=0: must be an integer >= 1"),
        ("pad", -1, r"^data.pad=-1: "),
        ("val_fraction", 1.0, r"^data.val_fraction=1.0: must be between 0 and 1"),
        ("mean", [0, 0], r"^data.mean=\[0, 0\]: has 2 values but the images have 3 channels"),
        ("std", [1, 0, 1], r"^data.std=\[1, 0, 1\]: every std must be positive"),
    ],
)
def test_bad_common_keys(key, value, match):
    one_line_error(match, build, tiny_config(**{key: value}))


def test_resolution_is_checked_against_the_native_size_when_resize_is_null():
    # tiny_source has no default image_size: its native size is the resolution itself.
    assert build(tiny_config(resize=None, resolution=6, pad=0)).stored_size == 6
    one_line_error(
        r"^data.resolution=40: larger than the stored image size 32 \(data.resize=null\)",
        build,
        {**cifar_config("/nonexistent"), "resolution": 40},
    )


def test_an_empty_val_split_is_refused():
    one_line_error(
        r"^data.val_fraction=0.01: leaves the train or val split of tiny's 30 training images empty",
        build,
        tiny_config(val_fraction=0.01),
    )


def test_the_config_node_may_be_an_omegaconf_node_with_interpolations():
    node = OmegaConf.create({"data": tiny_config(resolution=8, resize="${.resolution}")})
    assert build(node.data).stored_size == 8


# ---------------------------------------------------------------- image files written by the tests


def write_image(path, size=(12, 12), seed=0, mode="RGB"):
    """A random image; PNG keeps the exact pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def write_folder(root, per_class=4, size=(12, 12), seed=0):
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            write_image(root / name / f"{i}.png", size, seed=seed * 1000 + label * 100 + i)
    return root


def pixels(path, side):
    image = Image.open(path).convert("RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


# What every folder-based loader's config holds besides its source: 12 px, no augmentation, a 25% val split.
PIPELINE = {
    "resolution": 12,
    "resize": None,
    "pad": 0,
    "flip": False,
    "mean": [0, 0, 0],
    "std": None,
    "val_fraction": 0.25,
    "split_seed": 0,
    "in_memory": "auto",
}


def folder_config(root, **overrides):
    source = {
        "_target_": "ablate.data.folders.imagefolder",
        "name": "folder",
        "root": root and str(root),
        "test_fraction": 0.25,
        "test_split_seed": 0,
    }
    return {**source, **PIPELINE, **overrides}


def list_config(root, **overrides):
    source = {
        "_target_": "ablate.data.folders.caffe_list",
        "name": "lists",
        "root": root and str(root),
        "train_list": "train.txt",
        "val_list": "val.txt",
        "test_list": None,
        "label_names": None,
    }
    return {**source, **PIPELINE, **overrides}


def all_eval_images(data, split):
    images, labels = zip(*data.eval_batches(split, 5))
    return torch.cat(images), torch.cat(labels)


def test_imagefolder_with_train_and_test_folders(tmp_path):
    write_folder(tmp_path / "train", per_class=4)
    write_folder(tmp_path / "test", per_class=2, seed=1)
    data = build(folder_config(tmp_path), tmp_path / "cache")
    assert data.classes == CLASSES and data.stored_size == 12
    assert data.sizes == {"train": 9, "val": 3, "test": 6}
    images, labels = all_eval_images(data, "test")
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    expected = [pixels(tmp_path / "test" / name / f"{i}.png", 12) for name in CLASSES for i in range(2)]
    assert torch.equal(images, torch.stack(expected).float())


def test_imagefolder_val_folder_is_the_test_split_without_a_test_folder(tmp_path):
    write_folder(tmp_path / "train", per_class=4)
    write_folder(tmp_path / "val", per_class=1, seed=2)
    data = build(folder_config(tmp_path))
    assert data.sizes == {"train": 9, "val": 3, "test": 3}
    images, _ = all_eval_images(data, "test")
    assert torch.equal(images[0], pixels(tmp_path / "val" / "cat" / "0.png", 12).float())


def test_imagefolder_with_train_val_and_test_folders_uses_all_three(tmp_path):
    write_folder(tmp_path / "train", per_class=2)
    write_folder(tmp_path / "val", per_class=1, seed=2)
    write_folder(tmp_path / "test", per_class=3, seed=3)
    assert build(folder_config(tmp_path)).sizes == {"train": 6, "val": 3, "test": 9}


def test_imagefolder_without_split_folders_makes_a_stratified_test_split(tmp_path):
    write_folder(tmp_path, per_class=8)
    data = build(folder_config(tmp_path, test_fraction=0.25, val_fraction=0.5))
    assert data.sizes == {"train": 9, "val": 9, "test": 6}
    _, test_labels = all_eval_images(data, "test")
    assert test_labels.tolist() == [0, 0, 1, 1, 2, 2]

    def test_images(seed):
        return all_eval_images(build(folder_config(tmp_path, test_split_seed=seed)), "test")[0]

    assert torch.equal(test_images(0), test_images(0)) and not torch.equal(test_images(0), test_images(1))


def test_imagefolder_yaml_test_split_seed_follows_split_seed():
    node = OmegaConf.create({"data": OmegaConf.load(ROOT / "ablate" / "conf" / "data" / "imagefolder.yaml")})
    node.data.split_seed = 7
    assert OmegaConf.to_container(node.data, resolve=True)["test_split_seed"] == 7


def test_resize_makes_every_image_square_including_portrait_and_grey_ones(tmp_path):
    write_image(tmp_path / "cat" / "portrait.jpg", size=(10, 16))
    write_image(tmp_path / "cat" / "landscape.png", size=(16, 10), seed=1)
    write_image(tmp_path / "dog" / "grey.png", size=(7, 7), seed=2, mode="L")
    write_image(tmp_path / "dog" / "palette.png", size=(9, 9), seed=3, mode="P")
    for name in ("cat", "dog"):
        for i in range(2):
            write_image(tmp_path / name / f"square{i}.png", seed=4 + i)
    data = build(folder_config(tmp_path, resize=8, resolution=8, test_fraction=0.25, val_fraction=0.34))
    images, _ = all_eval_images(data, "test")
    assert images.shape[1:] == (3, 8, 8)
    train_images, _ = all_eval_images(data, "val")
    for image in torch.cat([images, train_images]):
        candidates = [pixels(path, 8).float() for path in sorted(tmp_path.glob("*/*.*"))]
        assert any(torch.equal(image, candidate) for candidate in candidates)


def test_caffe_list_val_list_becomes_the_test_split_without_a_test_list(tmp_path):
    write_folder(tmp_path / "images", per_class=4)
    lines = [f"images/{name}/{i}.png {label}" for label, name in enumerate(CLASSES) for i in range(4)]
    (tmp_path / "train.txt").write_text("\n".join(lines[i] for i in range(12) if i % 4 != 3) + "\n\n")
    (tmp_path / "val.txt").write_text("\n".join(lines[i] for i in range(12) if i % 4 == 3))
    data = build(list_config(tmp_path, val_fraction=0.34))
    assert data.classes == ["0", "1", "2"]
    assert data.sizes == {"train": 6, "val": 3, "test": 3}
    images, labels = all_eval_images(data, "test")
    assert labels.tolist() == [0, 1, 2]
    assert torch.equal(images[1], pixels(tmp_path / "images" / "dog" / "3.png", 12).float())


def test_caffe_list_with_a_test_list_label_names_and_absolute_paths(tmp_path):
    write_folder(tmp_path / "images", per_class=3)
    lists = {
        name: [f"{tmp_path}/images/{cls}/{i}.png {label}" for label, cls in enumerate(CLASSES)]
        for i, name in enumerate(("train", "val", "test"))
    }
    for name, lines in lists.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(lines))
    (tmp_path / "names.txt").write_text("/c/cat 0\n/d/dog 1\n/e/eel 2\n")
    data = build(
        list_config(
            tmp_path / "images",
            train_list=str(tmp_path / "train.txt"),
            val_list=str(tmp_path / "val.txt"),
            test_list=str(tmp_path / "test.txt"),
            label_names=str(tmp_path / "names.txt"),
        )
    )
    assert data.classes == ["/c/cat", "/d/dog", "/e/eel"]
    assert data.sizes == {"train": 3, "val": 3, "test": 3}


def test_imagefolder_skips_hidden_files_and_folders_and_reads_nested_ones(tmp_path):
    write_folder(tmp_path, per_class=4)
    (tmp_path / "cat" / "._0.png").write_bytes(b"AppleDouble metadata, not an image")  # macOS copies leave these
    write_image(tmp_path / "cat" / ".hidden" / "x.png")
    write_image(tmp_path / ".ipynb_checkpoints" / "x.png")  # not a class
    write_image(tmp_path / "dog" / "more" / "0.png", seed=7)
    loaded = folders.imagefolder(root=str(tmp_path), test_fraction=0.25, image_size=12)
    assert loaded["classes"] == CLASSES
    paths = loaded["train"].paths + loaded["test"].paths
    assert len(paths) == 13 and str(tmp_path / "dog" / "more" / "0.png") in paths
    assert not any("/." in path for path in paths)
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert folders.IMAGE_EXTENSIONS == IMG_EXTENSIONS  # copied, not imported: torchvision is slow to import


# ---------------------------------------------------------------- the decode cache


@pytest.fixture
def decode_calls(monkeypatch):
    calls = []
    real_decode = decoding.decode

    def counting_decode(files, workers):
        calls.append(len(files))
        return real_decode(files, workers)

    monkeypatch.setattr(decoding, "decode", counting_decode)
    return calls


def every_image(data):
    """All stored images of all splits (resolution = stored size, no pad, no flip: the pixels as stored)."""
    train = torch.cat([x for x, _ in data.train_batches(data.sizes["train"], torch.Generator())])
    return torch.cat([train, all_eval_images(data, "val")[0], all_eval_images(data, "test")[0]])


def test_cache_is_hit_and_rebuilt_when_a_file_or_the_image_size_changes(tmp_path, decode_calls):
    root, cache_dir = write_folder(tmp_path / "images", per_class=4), tmp_path / "cache"
    config = folder_config(root, resize=12, test_fraction=0.5, val_fraction=0.5)
    first = every_image(build(config, cache_dir))
    assert decode_calls == [12] and len(list(cache_dir.glob("*.pt"))) == 1
    assert torch.equal(every_image(build(config, cache_dir)), first)
    assert decode_calls == [12], "the second build reads the cache"

    changed_path = root / "cat" / "1.png"
    time_ns = os.stat(changed_path).st_mtime_ns
    write_image(changed_path, seed=99)
    os.utime(changed_path, ns=(time_ns, time_ns))  # the same time: the size tells the change
    new_pixels = pixels(changed_path, 12).float()
    assert not any(torch.equal(image, new_pixels) for image in first)
    assert any(torch.equal(image, new_pixels) for image in every_image(build(config, cache_dir))), "never stale"
    assert decode_calls == [12, 12]
    touched = root / "dog" / "0.png"
    os.utime(touched, ns=(time_ns + 10**9, time_ns + 10**9))  # the same content, a later time
    build(config, cache_dir)
    assert decode_calls == [12, 12, 12]

    write_image(root / "eel" / "new.png", seed=5)  # a new file
    build(config, cache_dir)
    build({**config, "resize": 10, "resolution": 10}, cache_dir)  # new preprocessing
    assert decode_calls == [12, 12, 12, 13, 13]
    build(config, cache_dir)
    assert decode_calls == [12, 12, 12, 13, 13]
    assert not list(cache_dir.glob(".*.tmp")), "no temp files left"


def test_a_corrupt_cache_entry_is_rebuilt(tmp_path, decode_calls):
    root, cache_dir = write_folder(tmp_path / "images", per_class=4), tmp_path / "cache"
    config = folder_config(root, test_fraction=0.5, val_fraction=0.5)
    expected = every_image(build(config, cache_dir))
    [entry] = cache_dir.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:100])
    assert torch.equal(every_image(build(config, cache_dir)), expected)
    assert decode_calls == [12, 12]


def test_cache_load_or_build_compares_the_whole_key(tmp_path):
    built = []

    def make(value):
        return lambda: built.append(value) or {"x": torch.tensor([value])}

    assert cache.load_or_build(tmp_path, "k", {"a": 1}, make(1))["x"].item() == 1
    assert cache.load_or_build(tmp_path, "k", {"a": 1}, make(2))["x"].item() == 1
    path = cache.cache_path(tmp_path, "k", {"format_version": cache.FORMAT_VERSION, "a": 2})
    shutil.copy(next(tmp_path.glob("k-*.pt")), path)  # a stale entry under another key's name
    assert cache.load_or_build(tmp_path, "k", {"a": 2}, make(3))["x"].item() == 3
    assert built == [1, 3]


def test_decoding_in_a_process_pool_gives_the_same_images(tmp_path, monkeypatch):
    write_folder(tmp_path, per_class=50, size=(14, 11))
    paths = sorted(str(path) for path in tmp_path.glob("*/*.png"))
    files = decoding.ImageFiles(paths, torch.zeros(len(paths), dtype=torch.int64), 9, False, str(tmp_path))
    serial = decoding.decode(files, workers=1)
    assert torch.equal(serial[0], pixels(paths[0], 9))
    monkeypatch.setattr(decoding, "MIN_IMAGES_FOR_POOL", 0)
    assert torch.equal(decoding.decode(files, workers=2), serial)
    (tmp_path / "dog" / "3.png").write_bytes(b"not a png")
    one_line_error(
        rf"^data.root={tmp_path}: cannot read image {tmp_path}/dog/3.png \(.*\); remove or replace",
        decoding.decode,
        files,
        2,
    )


def _signals_of_this_process(chunk):
    def action(signum):
        handler = signal.getsignal(signum)
        return {signal.SIG_DFL: "default", signal.SIG_IGN: "ignored"}.get(handler, "a Python handler")

    return [(action(signal.SIGTERM), action(signal.SIGINT), frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, [])))]


def test_decoding_workers_die_on_sigterm_even_inside_a_run(tmp_path, monkeypatch):
    # A run decodes inside interruptible(), whose SIGTERM handler raises; a worker that kept it survived the pool's
    # terminate() and hung the sweep. Each worker must have the default SIGTERM, leave Ctrl-C to the parent, and
    # block neither.
    write_folder(tmp_path, per_class=2, size=(8, 8))
    paths = sorted(str(path) for path in tmp_path.glob("*/*.png"))
    files = decoding.ImageFiles(paths, torch.zeros(len(paths), dtype=torch.int64), 8, False, str(tmp_path))
    monkeypatch.setattr(decoding, "MIN_IMAGES_FOR_POOL", 0)
    with interruptible():
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)  # the run's handler
        seen = [row for rows in decoding._map_chunks(_signals_of_this_process, files, 2) for row in rows]
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # the parent blocks nothing after the fork
    assert set(seen) == {("default", "ignored", frozenset())}
    with interruptible():  # decoding in a run still ends, and its workers with it
        assert torch.equal(decoding.decode(files, workers=2), decoding.decode(files, workers=1))


# ---------------------------------------------------------------- streaming large data


def test_streaming_gives_the_same_batches_as_memory(tmp_path):
    write_folder(tmp_path, per_class=6, size=(10, 10))
    config = folder_config(
        tmp_path,
        resolution=8,
        pad=2,
        flip=True,
        test_fraction=0.34,
        val_fraction=0.25,
        mean=[100, 110, 120],
        std=[50, 60, 70],
    )
    in_memory, streamed = build({**config, "in_memory": True}), build({**config, "in_memory": False})
    assert streamed.streaming and not in_memory.streaming
    assert streamed.sizes == in_memory.sizes == {"train": 9, "val": 3, "test": 6}
    assert in_memory.steps_per_epoch(4) == streamed.steps_per_epoch(4) == 2
    for (x1, y1), (x2, y2) in zip(epoch(in_memory, 4, seed=7), epoch(streamed, 4, seed=7), strict=True):
        assert x2.shape == (4, 3, 8, 8) and x2.dtype == torch.float32
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    for split in ("val", "test"):
        for a, b in zip(all_eval_images(in_memory, split), all_eval_images(streamed, split)):
            assert torch.equal(a, b)


def test_in_memory_auto_streams_data_over_the_size_limit(tmp_path, monkeypatch, decode_calls):
    write_folder(tmp_path, per_class=4)
    monkeypatch.setattr(ablate.data, "IN_MEMORY_MAX_BYTES", 12 * 12 * 3 * 12)
    assert not build(folder_config(tmp_path)).streaming
    monkeypatch.setattr(ablate.data, "IN_MEMORY_MAX_BYTES", 12 * 12 * 3 * 12 - 1)
    assert build(folder_config(tmp_path)).streaming
    assert decode_calls == [12]


def test_streaming_checks_every_image_before_training_and_names_a_bad_one_during_it(tmp_path):
    write_folder(tmp_path, per_class=4)
    (tmp_path / "eel" / "9.png").write_bytes(b"\x89PNG broken")
    one_line_error(rf"cannot read image {tmp_path}/eel/9.png", build, folder_config(tmp_path, in_memory=False))
    (tmp_path / "eel" / "9.png").unlink()
    data = build(folder_config(tmp_path, in_memory=False))
    for path in tmp_path.glob("*/*.png"):
        path.write_bytes(path.read_bytes()[:60])  # truncated after the header
    one_line_error(r"^data.root=.*: cannot read image .*\.png", lambda: list(data.eval_batches("test", 2)))


# ---------------------------------------------------------------- bad input


def test_missing_root(tmp_path):
    one_line_error(r"^data.root=null: .*; pass data.root=/path/to/images$", build, folder_config(None))
    one_line_error(
        rf"^data.root={tmp_path}/nope: no such folder; pass data.root=", build, folder_config(tmp_path / "nope")
    )
    one_line_error(r"^data.root=null: .*pass data.root=", build, list_config(None))


def test_an_empty_class_folder_is_named(tmp_path):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "test")
    (tmp_path / "test" / "dog" / "notes.txt").parent.mkdir(exist_ok=True)
    for path in (tmp_path / "test" / "dog").iterdir():
        path.unlink()
    (tmp_path / "test" / "dog" / "notes.txt").write_text("not an image")
    one_line_error(
        rf"^data.root={tmp_path}: class folder {tmp_path}/test/dog has no images .*; add images or "
        rf"remove the folder$",
        build,
        folder_config(tmp_path),
    )


def test_no_class_folders(tmp_path):
    write_image(tmp_path / "loose.png")
    one_line_error(rf"^data.root={tmp_path}: no class folders in {tmp_path} ", build, folder_config(tmp_path))


def test_a_test_class_unknown_to_train_is_refused(tmp_path):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "test")
    write_image(tmp_path / "test" / "fox" / "0.png")
    one_line_error(
        rf"class folder {tmp_path}/test/fox is not among the training classes", build, folder_config(tmp_path)
    )


def test_a_corrupt_image_is_named(tmp_path):
    write_folder(tmp_path, per_class=4)
    (tmp_path / "dog" / "2.png").write_bytes(b"GIF89a garbage")
    one_line_error(
        rf"^data.root={tmp_path}: cannot read image {tmp_path}/dog/2.png \(.*\); remove or replace that "
        rf"file$",
        build,
        folder_config(tmp_path, resize=12),
    )


def test_resize_null_needs_square_images_of_one_size(tmp_path):
    write_folder(tmp_path, per_class=4)
    write_image(tmp_path / "cat" / "0.png", size=(12, 10))  # the first image: no native size
    one_line_error(
        rf"^data.resize=null: {tmp_path}/cat/0.png is 12x10, not square.*pass data.resize=<side>",
        build,
        folder_config(tmp_path),
    )
    write_image(tmp_path / "cat" / "0.png", size=(12, 12))
    write_image(tmp_path / "eel" / "9.png", size=(16, 16))
    one_line_error(
        rf"^data.resize=null: {tmp_path}/eel/9.png is 16x16 but the images are stored at their own "
        rf"size 12x12",
        build,
        folder_config(tmp_path),
    )
    assert build(folder_config(tmp_path, resize=12)).stored_size == 12


def write_lists(root, train_lines, val_lines=("images/cat/0.png 0",)):
    write_folder(root / "images", per_class=2)
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "val.txt").write_text("\n".join(val_lines) + "\n")


def test_a_missing_list_file(tmp_path):
    write_lists(tmp_path, ["images/cat/0.png 0"])
    one_line_error(
        rf"^data.train_list=nope.txt: no such file {tmp_path}/nope.txt; pass data.train_list=",
        build,
        list_config(tmp_path, train_list="nope.txt"),
    )
    one_line_error(r"^data.val_list=missing.txt: no such file", build, list_config(tmp_path, val_list="missing.txt"))
    one_line_error(r"^data.train_list=null: ", build, list_config(tmp_path, train_list=None))


def test_a_list_naming_a_missing_image(tmp_path):
    write_lists(tmp_path, ["images/cat/0.png 0", "", "images/dog/7.png 1"])
    one_line_error(
        rf"^data.train_list={tmp_path}/train.txt: line 3 names a missing image {tmp_path}/images/dog/7.png;"
        rf" fix the list or data.root$",
        build,
        list_config(tmp_path),
    )


@pytest.mark.parametrize(
    "bad_line", ["images/cat/0.png", "images/cat/0.png cat", "images/cat/0.png -1", "images/cat/0.png 1.5"]
)
def test_a_malformed_list_line(tmp_path, bad_line):
    write_lists(tmp_path, ["images/cat/0.png 0", "images/cat/1.png 0", bad_line])
    one_line_error(
        rf"^data.train_list={tmp_path}/train.txt: line 3 '{bad_line}' is not '<image path> <integer "
        rf"label>'; fix that line$",
        build,
        list_config(tmp_path),
    )


def test_a_label_outside_the_label_names(tmp_path):
    write_lists(tmp_path, ["images/cat/0.png 0", "images/dog/0.png 5"])
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    one_line_error(
        r"line 2 has label 5 but data.label_names lists 2 classes",
        build,
        list_config(tmp_path, label_names="names.txt"),
    )


def test_a_corrupt_image_in_a_list_is_named(tmp_path):
    write_lists(tmp_path, ["images/cat/0.png 0", "images/dog/1.png 1"] * 3)
    (tmp_path / "images" / "dog" / "1.png").write_bytes(b"")
    one_line_error(rf"cannot read image {tmp_path}/images/dog/1.png", build, list_config(tmp_path, resize=12))


# ---------------------------------------------------------------- CIFAR through torchvision's own loader


def cifar_config(root, **overrides):
    config = {
        "_target_": "ablate.data.cifar.cifar10",
        "name": "cifar10",
        "root": None if root is None else str(root),
        "download": False,
        "resolution": 32,
        "resize": None,
        "pad": 4,
        "flip": True,
        "mean": [0, 0, 0],
        "std": None,
        "val_fraction": 0.2,
        "split_seed": 0,
        "in_memory": "auto",
    }
    return {**config, **overrides}


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """CIFAR-10 and CIFAR-100 batch files in torchvision's pickle format (md5 checks off: they are fakes)."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    rng = np.random.default_rng(0)
    images = {}

    def write(path, count, label_key, class_count):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [i % class_count for i in range(count)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps({"data": data, label_key: labels}))
        images[path.name] = (data.reshape(-1, 3, 32, 32), labels)

    for i in range(1, 6):
        write(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", 10, "labels", 10)
    write(tmp_path / "cifar-10-batches-py" / "test_batch", 10, "labels", 10)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps({"label_names": CLASSES * 3 + ["x"]}))
    write(tmp_path / "cifar-100-python" / "train", 200, "fine_labels", 100)
    write(tmp_path / "cifar-100-python" / "test", 10, "fine_labels", 100)
    fine_names = {"fine_label_names": [f"f{i}" for i in range(100)]}
    (tmp_path / "cifar-100-python" / "meta").write_bytes(pickle.dumps(fine_names))
    return tmp_path, images


def test_cifar10_reads_torchvision_batches(fake_cifar):
    root, images = fake_cifar
    data = build(cifar_config(root, download=True))  # files present: nothing is downloaded
    assert data.num_classes == 10 and data.classes[:3] == CLASSES
    assert data.sizes == {"train": 40, "val": 10, "test": 10} and data.stored_size == 32
    test_images, test_labels = all_eval_images(data, "test")
    assert torch.equal(test_images, torch.from_numpy(images["test_batch"][0]).float())
    assert test_labels.tolist() == images["test_batch"][1]


def test_cifar_resize_and_cifar100(fake_cifar):
    root, images = fake_cifar
    data = build(cifar_config(root, resize=40, resolution=36))
    test_images, _ = all_eval_images(data, "test")
    first = Image.fromarray(images["test_batch"][0][0].transpose(1, 2, 0))
    first = first.resize((40, 40), Image.Resampling.BILINEAR)
    expected = torch.from_numpy(np.array(first)).permute(2, 0, 1)[:, 2:38, 2:38].float()
    assert torch.equal(test_images[0], expected)
    data = build(cifar_config(root, _target_="ablate.data.cifar.cifar100", val_fraction=0.5))
    assert data.num_classes == 100 and data.sizes["test"] == 10


def test_cifar_bad_root(tmp_path):
    one_line_error(r"^data.root=null: CIFAR-10 needs a folder .*; pass data.root=~/data$", build, cifar_config(None))
    one_line_error(
        rf"^data.root={tmp_path}: CIFAR-10 is not there .*pass data.download=true", build, cifar_config(tmp_path)
    )


@pytest.mark.parametrize("name", ["synthetic", "imagefolder", "caffe_list", "cifar10", "cifar100"])
def test_a_source_takes_exactly_its_yaml_keys_and_the_image_size(name):
    # A parameter no config can set and the builder does not pass (the old cache_dir) is dead: the disk cache
    # of decoded images belongs to the builder alone.
    import inspect

    import hydra.utils

    node = OmegaConf.load(ROOT / "ablate" / "conf" / "data" / f"{name}.yaml")
    source = hydra.utils.get_method(node._target_)
    source_keys = set(node) - set(ablate.data.COMMON_DEFAULTS) - {"_target_"}
    assert set(inspect.signature(source).parameters) == source_keys | {"image_size"}


def test_cache_dir_caches_decoded_files_only_and_sources_never_see_it(tmp_path):
    cache_dir = tmp_path / "cache"
    data = build(tiny_config(), cache_dir)  # tiny_source takes no cache_dir
    assert data.sizes == {"train": 27, "val": 3, "test": 9}
    assert not cache_dir.exists(), "tensors from a source need no decoding, so nothing is cached"
    build(folder_config(write_folder(tmp_path / "images")), cache_dir)
    assert len(list(cache_dir.glob("folder-12px-*.pt"))) == 1


# ---------------------------------------------------------------- the yaml files


@pytest.mark.parametrize("name", ["imagefolder", "caffe_list", "cifar10", "cifar100"])
def test_every_data_yaml_has_the_common_keys_and_a_callable_source(name):
    node = OmegaConf.load(ROOT / "ablate" / "conf" / "data" / f"{name}.yaml")
    assert set(ablate.data.COMMON_DEFAULTS) | {"_target_", "root"} <= set(node)
    assert node.name == name and node.root is None
    import hydra.utils

    assert callable(hydra.utils.get_method(node._target_))
    one_line_error(r"^data.root=null: ", build, OmegaConf.create({"data": node}).data)


# ---------------------------------------------------------------- real images from ../shared/data


def extract_once(name, archive, *patterns, gzip):
    """A few files of a shared archive under .cache/data/test-subsets/<name>, extracted once for every run."""
    target = EXTRACTED / name
    if not target.is_dir():
        EXTRACTED.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=EXTRACTED, prefix=f".{name}."))
        subprocess.run(
            [
                "tar",
                "-xzf" if gzip else "-xf",
                str(SHARED_DATA / archive),
                "-C",
                str(scratch),
                "--wildcards",
                *patterns,
            ],
            check=True,
        )
        try:
            scratch.rename(target)  # whole or not at all, also when two test runs race
        except OSError:
            shutil.rmtree(scratch)
    return target


needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")


@pytest.fixture(scope="module")
def cifar_jpegs():
    classes = ("airplane", "cat", "ship")
    return extract_once(
        "cifar10-jpg",
        "cifar10-jpg.tar.gz",
        *(f"train/{c}/00[0-2]?.jpg" for c in classes),
        *(f"test/{c}/000?.jpg" for c in classes),
        gzip=True,
    )


@pytest.fixture(scope="module")
def ghim():
    return (
        extract_once(
            "ghim10k-subset12",
            "ghim10k-subset12.tar",
            "ghim10k-subset12/sunsets/sunsets_65[01]*.jpg",
            "ghim10k-subset12/flowers/flowers_30[0-4]*.jpg",
            "ghim10k-subset12/cars/cars_15[0-3]*.jpg",
            gzip=False,
        )
        / "ghim10k-subset12"
    )


@needs_shared_data
def test_imagefolder_on_cifar10_jpegs(cifar_jpegs, tmp_path):
    config = folder_config(cifar_jpegs, resolution=32, pad=4, flip=True, val_fraction=0.1)
    data = build(config, tmp_path / "cache")
    assert data.classes == ["airplane", "cat", "ship"] and data.stored_size == 32
    assert data.sizes == {"train": 81, "val": 9, "test": 30}
    images, labels = all_eval_images(data, "test")
    assert labels.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert torch.equal(images[10], pixels(cifar_jpegs / "test" / "cat" / "0000.jpg", 32).float())
    batches = epoch(data, 16, seed=0)
    assert len(batches) == 5 and batches[0][0].shape == (16, 3, 32, 32)
    streamed = build({**config, "in_memory": False})
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, epoch(streamed, 16, seed=0), strict=True))


@needs_shared_data
def test_caffe_list_on_ghim_images_with_portraits(ghim, tmp_path):
    classes = sorted(path.name for path in ghim.iterdir())
    paths = [(path, label) for label, name in enumerate(classes) for path in sorted((ghim / name).glob("*.jpg"))]
    assert any(Image.open(path).size == (300, 400) for path, _ in paths), "the subset holds portrait images"
    lines = [f"{path.relative_to(ghim)} {label}" for path, label in paths]
    (tmp_path / "list_train_shuffle.txt").write_text("\n".join(lines[i] for i in range(len(lines)) if i % 4))
    (tmp_path / "list_val_shuffle.txt").write_text("\n".join(lines[i] for i in range(len(lines)) if not i % 4))
    config = list_config(
        ghim,
        train_list=str(tmp_path / "list_train_shuffle.txt"),
        val_list=str(tmp_path / "list_val_shuffle.txt"),
        resize=40,
        resolution=32,
        pad=0,
        flip=True,
        mean=[124, 117, 104],
        val_fraction=0.2,
    )
    data = build(config, tmp_path / "cache")
    assert data.num_classes == 3 and data.stored_size == 40
    assert data.sizes["test"] == len(lines[::4]) and sum(data.sizes.values()) == len(lines)
    images, labels = all_eval_images(data, "test")
    first_path = ghim / lines[0].rsplit(maxsplit=1)[0]
    expected = pixels(first_path, 40)[:, 4:36, 4:36].float() - torch.tensor([124.0, 117, 104]).view(3, 1, 1)
    assert torch.equal(images[0], expected) and labels[0] == 0
    x, y = next(data.train_batches(8, torch.Generator().manual_seed(0)))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)


@needs_shared_data
def test_imagefolder_on_ghim_makes_its_own_split(ghim):
    data = build(folder_config(ghim, resize=24, resolution=24, test_fraction=0.2, val_fraction=0.1))
    assert data.classes == ["cars", "flowers", "sunsets"]
    assert sum(data.sizes.values()) == sum(1 for _ in ghim.glob("*/*.jpg"))


# ---- resize follows resolution, short-side resize, list labels, ~ in data.root (issue 15) -------------------


def test_imagefolder_resize_follows_resolution_unless_given(compose):
    assert compose("data=imagefolder", "data.resolution=64").data.resize == 64
    assert compose("data=imagefolder", "data.resolution=64", "data.resize=80").data.resize == 80


def test_short_side_resize_keeps_the_aspect_ratio_and_the_centre(tmp_path):
    for name in ("cat", "dog"):
        for i in range(4):
            write_image(tmp_path / name / f"{i}.png", size=(24, 12), seed=10 * len(name) + i)
    data = build(
        folder_config(tmp_path, resize=6, resolution=6, resize_short_side=True, test_fraction=0.25, val_fraction=0.34)
    )
    images, _ = all_eval_images(data, "test")
    # torchvision's Resize(6) + CenterCrop(6): the 24x12 image becomes 12x6, and its middle 6x6 is kept.
    expected = []
    for path in sorted(tmp_path.glob("*/*.png")):
        scaled = Image.open(path).convert("RGB").resize((12, 6), Image.Resampling.BILINEAR).crop((3, 0, 9, 6))
        expected.append(torch.from_numpy(np.array(scaled)).permute(2, 0, 1).float())
    stretched = [pixels(path, 6).float() for path in sorted(tmp_path.glob("*/*.png"))]
    for image in images:
        assert any(torch.equal(image, candidate) for candidate in expected)
        assert not any(torch.equal(image, candidate) for candidate in stretched)
    needs_files = r"^data.resize_short_side=true: needs image files and a data.resize"
    one_line_error(needs_files, build, tiny_config(resize_short_side=True))


def test_a_held_out_label_outside_the_training_lists_classes_is_one_line(tmp_path):
    # Without label names the training list defines the classes; a larger label elsewhere would silently widen the
    # classifier and make chance 1/(that label + 1).
    write_lists(tmp_path, ["images/cat/0.png 0", "images/dog/0.png 1"], ["images/eel/0.png 5"])
    one_line_error(
        rf"^data.val_list={tmp_path}/val.txt: line 1 has label 5 but the training list train.txt has 2 classes "
        r"\(0..1\); fix the label, or name every class with data.label_names$",
        build,
        list_config(tmp_path),
    )
    write_lists(tmp_path, ["images/cat/0.png 0", "images/eel/0.png 2"])
    one_line_error(r"^data.train_list=train.txt: no training image has label 1 of 0..2", build, list_config(tmp_path))


def test_a_windows_path_in_a_list_gets_a_hint(tmp_path):
    write_lists(tmp_path, ["images\\cat\\0.png 0", "images/dog/0.png 1"])
    one_line_error(r"it is a Windows path: write it relative to data.root with /", build, list_config(tmp_path))


def test_data_root_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    write_folder(tmp_path / "images")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert build(folder_config("~/images", resize=12)).sizes["test"] > 0
