"""The run record on disk — the truth that W&B mirrors and analysis reads — its identity, and the one atomic write
every file of ablate goes through (records, range tests, the data cache, checkpoints, figures)."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import BinaryIO

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Keys that decide a run's result. Everything else (paths, logger, launcher, study bookkeeping, resume) and the
# trainer keys below only change where or how fast a run computes, so a rerun under them is the same run.
IDENTITY_KEYS = ("model", "data", "optim", "sched", "batch", "trainer", "seed", "mode", "lr_range")
# trainer.amp is not among these as typed (auto means different arithmetic on different machines): the identity holds
# the precision it resolves to instead (see precision()).
# stop_after_epochs pauses a run (successive halving) without changing it: the continued run is the same run.
NOT_IDENTITY_TRAINER_KEYS = ("device", "threads", "amp", "channels_last", "compile", "checkpoint", "stop_after_epochs")
NOT_IDENTITY_DATA_KEYS = ("in_memory",)
# Keys added after records were filed, at the value that reproduces what ran before they existed: a key at this value
# is left out of the hash, so every earlier record keeps its identity (a rerun finds it) while any other value is a
# different run.
# Each key lists the values that mean "as before".
NEW_KEY_DEFAULTS = {
    "trainer.updates": (None,),
    "optim.momentum_form": ("torch",),
    "optim.bias_lr_mult": (1.0,),
    "optim.bias_decay": (True,),
    "optim.bias_layers": (["conv", "fc"],),
    "optim.bn_decay": (True,),
    "model.bn_momentum": (0.1,),
    "model.bn_average": ("torch",),
    "model.pretrained": (None,),
    "data.eval_resize": ("crop",),
}

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"

# An LR range test's record adds its curves (one row per evaluation, also its metrics.jsonl) and its suggestion:
# {base_lr, max_lr, at_edge, learned, criterion, sweep, command}; sched.bounds_from reads base_lr and max_lr.
RANGE_TEST_CURVES = "lr_range.csv"
RANGE_TEST_COLUMNS = ("step", "epoch", "lr", "train/loss", "train/acc", "val/loss", "val/acc")
RANGE_TEST_SUGGESTION = "lr_range.json"
RANGE_TEST_PLOT = "lr_range.png"


def precision(amp, device: str) -> str:
    """The arithmetic a run trains in, "bf16" (autocast) or "fp32", from trainer.amp and trainer.device.

    amp=auto is bf16 on CUDA only; device=auto is CUDA when this machine has one, as the loop picks it. The identity
    resolver calls this before any device is picked, so it answers from the config and the machine alone."""
    if amp != "auto":
        return "bf16" if amp is True else "fp32"
    device = str(device)
    if device == "auto":
        import torch  # here, not above: analysis reads records without importing torch

        return "bf16" if torch.cuda.is_available() else "fp32"
    return "bf16" if device.startswith("cuda") else "fp32"


def identity(cfg: DictConfig) -> str:
    """12 hex digits of a hash of the resolved, result-relevant part of the config."""
    relevant = {}
    for key in IDENTITY_KEYS:
        if key in cfg:
            node = cfg[key]
            if not OmegaConf.is_config(node):
                relevant[key] = node
                continue
            try:
                relevant[key] = OmegaConf.to_container(node, resolve=True)
            except OmegaConfBaseException:
                # A value that does not resolve (a typo in an interpolation) still gets a folder of its own, so Hydra
                # can set the job up and the run fails there, recorded, instead of stopping the whole sweep.
                relevant[key] = OmegaConf.to_container(node, resolve=False)
    trainer = relevant.get("trainer")
    if isinstance(trainer, dict):
        resolved = precision(trainer.get("amp", "auto"), trainer.get("device", "auto"))
        # Only a non-fp32 run names its precision, so every fp32 record keeps the identity it was filed under.
        if resolved != "fp32":
            relevant["precision"] = resolved
        for key in NOT_IDENTITY_TRAINER_KEYS:
            trainer.pop(key, None)
    for key in NOT_IDENTITY_DATA_KEYS:
        relevant.get("data", {}).pop(key, None)
    for dotted, values in NEW_KEY_DEFAULTS.items():
        *parents, leaf = dotted.split(".")
        node = relevant
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and any(node[leaf] == value for value in values):
            del node[leaf]
    optim = relevant.get("optim")
    if isinstance(optim, dict) and "decay_bn_and_bias" in optim and optim["decay_bn_and_bias"] is None:
        # Replaced by bias_decay and bn_decay (true, true: "decay everything", which it said as true): hashed as it
        # was, so the records filed before the replacement keep their identity.
        optim["decay_bn_and_bias"] = True
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write` on a temp file in the same folder, fsync it and rename it to `path`: a reader never sees half a
    file, and a killed or parallel writer never leaves one. The one atomic write of ablate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; records, caches and figures are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda file: file.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_metrics(record_dir: Path, history: list[dict]) -> None:
    """The whole metrics.jsonl at once: a resumed run rewrites it from its checkpoint, so no line is duplicated."""
    atomic_write_text(record_dir / METRICS, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))


def read_json(path: str | Path) -> dict | None:
    """A record file, or None when it is missing or unreadable (a record from a crashed writer of old)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_metrics(record_dir: str | Path) -> list[dict]:
    path = Path(record_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_range_test(record_dir: Path, rows: list[dict]) -> None:
    """A range test's curves, as lr_range.csv and as the record's metrics.jsonl; written before any suggestion."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RANGE_TEST_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(record_dir) / RANGE_TEST_CURVES, text.getvalue())
    write_metrics(record_dir, rows)


def read_range_test(record_dir: str | Path) -> tuple[list[dict], dict] | None:
    """A range test's curves (rows of RANGE_TEST_COLUMNS, as floats) and its suggestion ({} before it is written),
    or None when the folder holds no range test."""
    folder = Path(record_dir)
    if not (folder / RANGE_TEST_CURVES).is_file():
        return None
    with (folder / RANGE_TEST_CURVES).open(newline="") as file:
        rows = [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(file)]
    return rows, read_json(folder / RANGE_TEST_SUGGESTION) or {}


def select(config: dict, dotted_key: str):
    """A dotted key's value in a plain-dict config (a record's config.yaml, a W&B run's config), or None."""
    node = config
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def git_state() -> dict:
    """Commit and dirty flag of the checkout the code runs from (None outside git)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict:
    found = {"python": sys.version.split()[0]}
    for package in ("torch", "torchvision", "hydra-core", "omegaconf", "wandb"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
