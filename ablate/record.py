"""The run record on disk — the truth that W&B mirrors and analysis reads — and the run's identity."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Keys that decide a run's result. Everything else (paths, logger, launcher, study bookkeeping, resume) and the
# trainer keys below only change where or how fast a run computes, so a rerun under them is the same run.
IDENTITY_KEYS = ("model", "data", "optim", "sched", "batch", "trainer", "seed", "mode", "lr_range")
NOT_IDENTITY_TRAINER_KEYS = ("device", "threads", "amp", "channels_last", "compile", "checkpoint")
NOT_IDENTITY_DATA_KEYS = ("in_memory",)

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"


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
    for key in NOT_IDENTITY_TRAINER_KEYS:
        relevant.get("trainer", {}).pop(key, None)
    for key in NOT_IDENTITY_DATA_KEYS:
        relevant.get("data", {}).pop(key, None)
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; records and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
