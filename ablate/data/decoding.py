"""Image files to uint8 pixels: the one decoder (PIL, RGB, bilinear resize to a square) every file source shares.

`decode` fills a whole split's tensor in a process pool (the builder caches it on disk); `BatchReader` decodes
batch by batch in DataLoader workers for data streamed from disk; `check_readable` opens every header first, so a
bad file fails before training, not in the middle of it.
"""

import contextlib
import multiprocessing
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ablate.errors import ConfigError

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
    # data.resize_short_side: scale the short side to image_size and keep the centre square (torchvision's
    # Resize + CenterCrop) instead of stretching the whole image to a square.
    short_side: bool = False

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: torch.Tensor) -> "ImageFiles":
        return ImageFiles(
            [self.paths[i] for i in indices.tolist()],
            self.labels[indices],
            self.image_size,
            self.exact_size,
            self.root,
            self.short_side,
        )


def read_image(path: str, image_size: int, exact_size: bool, root: str, short_side: bool = False) -> np.ndarray:
    """One image as uint8 [S, S, 3] RGB, resized (bilinear) to a square of side `image_size`: stretched, or with
    `short_side` its short side scaled to S and the centre square kept."""
    try:
        with Image.open(path) as image:
            _check_size(path, image.size, image_size, exact_size)
            rgb = image.convert("RGB")  # decodes: a truncated or corrupt file fails here
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001  whatever PIL raises, the file cannot be used
        raise ConfigError(_unreadable(root, path, error)) from None
    if short_side and rgb.size[0] != rgb.size[1]:
        width, height = rgb.size
        scale = image_size / min(width, height)
        width, height = max(image_size, round(width * scale)), max(image_size, round(height * scale))
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        left, top = (width - image_size) // 2, (height - image_size) // 2
        rgb = rgb.crop((left, top, left + image_size, top + image_size))
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
                [
                    read_image(self.files.paths[i], size, self.files.exact_size, self.files.root, self.files.short_side)
                    for i in indices
                ]
            )
        except ConfigError as error:
            return torch.empty((0, 3, size, size), dtype=torch.uint8), str(error)
        return torch.from_numpy(chunk).permute(0, 3, 1, 2).contiguous(), ""


def _read_chunk(args: tuple) -> np.ndarray:
    paths, image_size, exact_size, root, short_side = args
    return np.stack([read_image(path, image_size, exact_size, root, short_side) for path in paths])


def _check_chunk(args: tuple) -> None:
    paths, image_size, exact_size, root, _ = args
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
    """function((paths, image_size, exact_size, root, short_side)) over chunks of the files, in order."""
    chunk_size = 64
    chunks = [
        (files.paths[start : start + chunk_size], files.image_size, files.exact_size, files.root, files.short_side)
        for start in range(0, len(files), chunk_size)
    ]
    if workers <= 1 or len(files) < MIN_IMAGES_FOR_POOL:
        yield from map(function, chunks)
        return
    # fork: workers need only PIL and numpy, and start in milliseconds.
    with _signals_held():
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=worker_signals)
    with pool:
        yield from pool.imap(function, chunks)


# A run decodes inside ablate.train.interruptible, whose SIGTERM handler raises instead of exiting. Forked workers
# that inherit it do not die when the pool ends (Pool.terminate sends SIGTERM): one raised while holding the pool's
# queue lock and its sibling waited for that lock forever, and the sweep with it (seen in a launcher=parallel worker).
# So each decoding worker (the pool's, and the DataLoader's of streamed data) takes the default actions back:
# SIGTERM ends it, and Ctrl-C is the parent's to handle.
# The signals stay blocked from the fork until then, so none reaches a child while it still has the run's handler.
_WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _signals_held():
    """SIGTERM and SIGINT wait (blocked, not lost) while the pool forks; they arrive here once it has."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_signals(worker_id: int | None = None) -> None:
    """A decoding worker's signals as a plain process has them (also a DataLoader's worker_init_fn)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)


def stored_size(image_size: int | None, first_path: str, root: str) -> tuple[int, bool]:
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
