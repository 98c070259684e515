"""Disk cache of decoded uint8 images, keyed by everything that decides their pixels, so it is never stale."""

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ablate import record

log = logging.getLogger(__name__)

# Bump when decoding changes (library, resize filter, layout): every old entry then misses.
FORMAT_VERSION = 1


def file_fingerprint(paths: Sequence[str]) -> str:
    """Hash of each file's path, size, modification and status-change times, in order.

    Any added, removed or rewritten file changes it; the status-change time also catches a rewrite whose
    modification time was restored (cp -p, tar, rsync -t), and no user can set it back.
    """
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\n".encode())
    return digest.hexdigest()


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_path(cache_dir: str | os.PathLike, name: str, key: dict) -> Path:
    return Path(cache_dir) / f"{name}-{key_hash(key)}.pt"


def load_or_build(
    cache_dir: str | os.PathLike | None, name: str, key: dict, build: Callable[[], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Tensors stored under `key` in `cache_dir`, or `build()` them and store them atomically.

    The full key is stored with the tensors and compared on load, so a hash collision or a file
    written by another version is rebuilt, never served. `cache_dir=None` disables the cache.
    """
    if cache_dir is None:
        return build()
    key = {"format_version": FORMAT_VERSION, **key}
    path = cache_path(cache_dir, name, key)
    stored_key = json.loads(json.dumps(key, default=str))  # the key as it reads back from disk
    if path.exists():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry.get("key") == stored_key:
                return entry["tensors"]
        except Exception:  # noqa: BLE001  a truncated or foreign file is rebuilt below
            pass
    # Temp files of builds killed while writing are dataset-sized: remove them before adding another.
    record.remove_stale_temps(path.parent)
    tensors = build()
    # Atomic: a killed run or a parallel run never leaves a half-written entry.
    try:
        record.atomic_write(path, lambda file: torch.save({"key": stored_key, "tensors": tensors}, file))
    except OSError as error:  # a full disk (or a read-only cache): the run goes on, decoding again next time
        log.warning(f"could not write the data cache {path} ({error}); training without it")
    return tensors
