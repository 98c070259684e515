"""The run record on disk — the truth that W&B mirrors and analysis reads — its identity, and the one atomic write
every file of ablate goes through (records, range tests, the data cache, checkpoints, figures)."""

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
    "batch.hold": ("epochs",),
    "optim.momentum_form": ("torch",),
    "optim.bias_lr_mult": (1.0,),
    "optim.bias_decay": (True,),
    "optim.bias_layers": (["conv", "fc"],),
    "optim.bn_decay": (True,),
    "model.bn_momentum": (0.1,),
    "model.bn_average": ("torch",),
    "model.pretrained": (None,),
    "data.eval_resize": ("crop",),
    "data.resize_short_side": (False,),
}

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
# Held (flock) by the one process training a record, for the whole run; its text names that process.
LOCK = ".lock"
# Hydra's own copy of the job's config, unresolved: what a lost or damaged config.yaml is rebuilt from.
HYDRA_CONFIG = Path(".hydra") / "config.yaml"
HYDRA_RUNTIME = Path(".hydra") / "hydra.yaml"
# Statuses a record ends in. `stopped` (successive halving paused it) and `interrupted` (a signal ended it; the
# checkpoint is kept) continue on the next invocation; `running` is a record whose process is still at it, or died.
STATUSES = ("completed", "stopped", "diverged", "failed", "interrupted", "running")

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


class DiskFull(OSError):
    """A write that found no space (ENOSPC, EDQUOT); its message is one line naming the file."""


# The host and pid of the writer are in every temp name, so a temp file left by a killed writer can be told from one
# being written right now (ablate/data/cache.py and train.py remove the former).
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
# A temp file of another host is taken as abandoned after this long (its pid means nothing here).
STALE_TEMP_AFTER_S = 24 * 3600


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write` on a temp file in the same folder, fsync it and rename it to `path`: a reader never sees half a
    file, and a killed or parallel writer never leaves one. The one atomic write of ablate.

    A full disk is a DiskFull naming `path`, with the temp file removed (torch.save would otherwise report it as an
    `unexpected pos` RuntimeError naming no file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{HOST}.{os.getpid()}.", suffix=".tmp")
    file = _Recording(os.fdopen(fd, "wb"))
    try:
        with file.raw:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; records, caches and figures are meant to be shared
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        full = next((e for e in (error, file.error) if isinstance(e, OSError) and e.errno in NO_SPACE), None)
        if full is not None:
            why = f"no space left to write {path} ({full.strerror}); free space there and rerun"
            raise DiskFull(full.errno, why) from None
        raise
    _fsync_folder(path.parent)  # the rename itself survives a power cut only once the folder is on disk
    return path


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class _Recording:
    """A file whose write errors are kept: torch.save turns an OSError of its writer into a RuntimeError."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.error = raw, None

    def write(self, data) -> int:
        try:
            return self.raw.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self.raw.flush()
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems (and all of Windows) cannot open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temps(folder: str | Path, everything: bool = False) -> list[Path]:
    """Remove the temp files atomic_write's killed writers left in `folder`; return them.

    A temp file of this host whose writer is gone is stale, one of another host after STALE_TEMP_AFTER_S;
    `everything`: every temp file, for a folder whose lock the caller holds (no one else writes there)."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        if everything or _abandoned(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _abandoned(path: Path) -> bool:
    match = TEMP_NAME.match(path.name)
    try:
        age_s = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if match is None or match["host"] != HOST:
        return age_s > STALE_TEMP_AFTER_S
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class Locked(Exception):
    """Another process holds the record's lock; the message says which."""


@contextlib.contextmanager
def lock(record_dir: str | Path) -> Iterator[Path]:
    """Hold `<record_dir>/.lock` (flock, exclusive) for the block, or raise Locked at once if another process holds
    it. The kernel drops the lock when its process dies, however it dies, so a killed run never blocks a rerun."""
    path = Path(record_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise Locked(f"{holder} holds {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the lock


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


class Damaged(ValueError):
    """A record file that cannot be read; the message names the file and what is wrong with it."""


def read_metrics(record_dir: str | Path) -> list[dict]:
    """The record's metrics.jsonl rows ([] without one); Damaged naming the file and line when one is cut or garbled."""
    path = Path(record_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise Damaged(f"{path}: line {number} is not a JSON object (a truncated or overwritten file)")
        rows.append(row)
    return rows


def metrics_damage(record_dir: str | Path, summary: dict) -> str | None:
    """Why a finished training record's metrics.jsonl cannot be trusted (cut, garbled, or fewer rows than the
    summary's epochs), or None when it can or there is none."""
    record_dir = Path(record_dir)
    if summary.get("mode", "train") != "train" or summary.get("status") not in ("completed", "stopped"):
        return None
    if not (record_dir / METRICS).exists():  # no curves (the report counts them), but the summary holds the result
        return None
    try:
        rows = read_metrics(record_dir)
    except Damaged as error:
        return str(error)
    epochs = summary.get("epochs_completed")
    if epochs is not None and len(rows) < epochs:
        return f"{record_dir / METRICS} has {len(rows)} rows for {epochs} epochs (a truncated file)"
    return None


# Root keys every resolved config.yaml has; a file cut short loses its last keys (and its final newline).
CONFIG_ROOT_KEYS = ("model", "optim", "trainer", "seed")


def config_damage(record_dir: str | Path, summary: dict) -> str | None:
    """Why `<record_dir>/config.yaml` cannot be the config `summary` was trained with, or None when it can.

    Not by recomputing the identity: records filed by older code carry the identity that code computed."""
    path = Path(record_dir) / CONFIG
    if not path.is_file():
        return f"{path} is missing"
    try:
        text = path.read_text()
    except OSError as error:
        return f"{path} is unreadable ({error.strerror})"
    return _config_problem(path, text, summary, Path(record_dir))


def _config_problem(path: Path, text: str, summary: dict, record_dir: Path) -> str | None:
    import yaml  # here, not above: a run reads no YAML

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return f"{path} is not valid YAML ({type(error).__name__}: a truncated file)"
    # And every root key of Hydra's copy of the job's config, where the record has it.
    required = dict.fromkeys([*CONFIG_ROOT_KEYS, *_root_keys(record_dir / HYDRA_CONFIG)])
    missing = [key for key in required if not isinstance(config, dict) or key not in config]
    if missing or not text.endswith("\n"):
        return f"{path} is cut short (no {', '.join(missing) or 'final newline'})"
    if "seed" in summary and config["seed"] != summary["seed"]:
        return f"{path} has seed {config['seed']}, its summary {summary['seed']} (another run's config)"
    return None


def _root_keys(hydra_config: Path) -> list[str]:
    try:
        return [line.split(":", 1)[0] for line in hydra_config.read_text().splitlines() if re.match(r"^\w+:", line)]
    except OSError:
        return []


def regenerate_config(record_dir: str | Path, summary: dict) -> str | None:
    """Rebuild config.yaml from Hydra's copy of the job's config (.hydra/config.yaml), resolved; return None when
    rebuilt, else why not. The resolvers of the config tree must be registered (ablate.resolvers)."""
    record_dir = Path(record_dir)
    source = record_dir / HYDRA_CONFIG
    if not source.is_file():
        return f"{source} is missing too"
    try:
        cfg = OmegaConf.load(source)
        if (record_dir / HYDRA_RUNTIME).is_file():
            # The job's own hydra node, for the resolvers that read it (the study's name is its sweep file's).
            cfg.hydra = OmegaConf.load(record_dir / HYDRA_RUNTIME).hydra
        resolved = {key: OmegaConf.select(cfg, key) for key in cfg if key != "hydra"}
        text = OmegaConf.to_yaml(
            {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in resolved.items()}
        )
    except Exception as error:  # noqa: BLE001 — whatever breaks, the copy cannot be used
        return f"{source} does not resolve ({type(error).__name__}: {str(error).splitlines()[0]})"
    problem = _config_problem(source, text, summary, record_dir)
    if problem is not None:
        return problem
    atomic_write_text(record_dir / CONFIG, text)
    return None


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
