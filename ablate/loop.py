"""The loop both run modes share (train.py's epochs, lr_range.py's sweep): build what a run trains with from its
config, checked before any update; train over a stream of batches; evaluate; checkpoint."""

import contextlib
import ctypes
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ablate import record
from ablate.data import Data
from ablate.data import build as build_data
from ablate.errors import ConfigError
from ablate.models import build_model
from ablate.optim import EffectiveLR, build_optimizer, effective_lr, validate_optim
from ablate.schedules import build_scheduler, validate_sched
from ablate.sweep import WORKER_ENVIRONMENT

# Top-5 accuracy is reported from this many classes on: with 10 or fewer it says little (5 of 10 is half the classes).
TOP5_MIN_CLASSES = 10


@dataclass
class Setup:
    """What a run trains with; build() makes it from the config."""

    device: torch.device
    data: Data  # or anything with train_batches, eval_batches and num_classes (the range test's tests use blobs)
    model: nn.Module  # the module whose state is saved
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its torch.compile'd form
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler  # stepped once per optimizer update
    lr: EffectiveLR  # optim.lr x optim.lr_factor x the batch-size rule, each factor kept for the record
    precision: str  # "bf16" (autocast) or "fp32"; record.precision resolves trainer.amp
    channels_last: bool
    batch_size: int
    steps_per_epoch: int  # updates in one pass over the training split
    # Updates in one epoch of the run's clock, the unit of trainer.epochs, the warm-up, the schedules' epochs and
    # trainer.eval_every_epochs: steps_per_epoch, or under batch.hold=updates the updates of a pass at batch.base_size.
    clock_steps: int
    total_steps: int  # trainer.updates, else clock_steps * trainer.epochs
    epochs: int  # passes begun: enough to hold total_steps (the last one cut short where they do not divide)


def uses_channels_last(setting, device_type: str) -> bool:
    """Whether trainer.channels_last (auto | true | false) trains in NHWC on this device type. auto: on CUDA and on
    CPU, where oneDNN's convs run faster in it too (scripts/bench.py, one thread a job: 1.15x for allconv6, 1.5x for
    MobileNet's depthwise convs); another device keeps the contiguous layout."""
    return device_type in ("cuda", "cpu") if setting == "auto" else bool(setting)


def build(cfg: DictConfig) -> Setup:
    """Everything a run needs, checked before training starts: bad input is a ConfigError from here."""
    check_resolves(cfg)
    check_trainer(cfg)
    tune_allocator()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    device = pick_device(str(cfg.trainer.device))
    lr = effective_lr(cfg.optim, cfg.batch)
    validate_optim(cfg.optim, lr.effective)

    # A cheap probe build checks the model's config, contract and stride before any data is decoded.
    probe = build_model(cfg.model, num_classes=2, in_channels=3, load_pretrained=False)
    if cfg.data.resolution < probe.total_stride:
        raise ConfigError(
            f"data.resolution={cfg.data.resolution}: {probe.name} has total stride {probe.total_stride}, "
            f"so its input must be at least {probe.total_stride} pixels; set data.resolution>={probe.total_stride}"
        )

    data = build_data(cfg.data, cache_dir=Path(cfg.paths.cache), device=device)
    if cfg.batch.size > data.sizes["train"]:
        raise ConfigError(
            f"batch.size={cfg.batch.size}: larger than the training split ({data.sizes['train']} images); "
            f"use batch.size<={data.sizes['train']}"
        )
    steps_per_epoch = data.steps_per_epoch(cfg.batch.size)
    clock_steps = clock_epoch(cfg.batch, data.sizes["train"]) or steps_per_epoch
    epochs, total_steps = run_length(cfg.trainer, steps_per_epoch, clock_steps)
    validate_sched(cfg.sched, cfg.optim, lr.effective, steps_per_epoch=clock_steps, total_steps=total_steps)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels)
    channels_last = uses_channels_last(cfg.trainer.channels_last, device.type)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = build_optimizer(cfg.optim, model, lr=lr.effective)
    return Setup(
        device=device,
        data=data,
        model=model,
        # torch.compile pays off on GPUs; the uncompiled module stays the one whose state is saved.
        forward=torch.compile(model) if cfg.trainer.compile else model,
        optimizer=optimizer,
        scheduler=build_scheduler(cfg.sched, optimizer, steps_per_epoch=clock_steps, total_steps=total_steps),
        lr=lr,
        precision=record.precision(cfg.trainer.amp, device.type),
        channels_last=channels_last,
        batch_size=cfg.batch.size,
        steps_per_epoch=steps_per_epoch,
        clock_steps=clock_steps,
        total_steps=total_steps,
        epochs=epochs,
    )


def clock_epoch(batch: DictConfig, train_images: int) -> int | None:
    """Under batch.hold=updates, the updates of one pass at batch.base_size: the epoch every batch size counts in,
    so that each makes the same updates (None under batch.hold=epochs: each counts its own passes)."""
    if batch.get("hold", "epochs") == "epochs":
        return None
    base = batch.base_size
    if not 1 <= base <= train_images:
        raise ConfigError(
            f"batch.base_size={base}: batch.hold=updates counts epochs at this batch size, which must be between 1 "
            f"and the {train_images} training images; pass a smaller batch.base_size or batch.hold=epochs"
        )
    return train_images // base


def run_length(trainer: DictConfig, steps_per_epoch: int, clock_steps: int) -> tuple[int, int]:
    """(passes, updates) of a run: trainer.epochs epochs of clock_steps updates (steps_per_epoch unless batch.hold=
    updates), or trainer.updates updates (Caffe's max_iter), in as many passes over the data as they need."""
    updates = trainer.get("updates")
    if updates is None:
        updates = clock_steps * int(trainer.epochs)
    return -(-int(updates) // steps_per_epoch), int(updates)


def train_steps(setup: Setup, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """One optimizer update per batch, the LR stepped after each; the mean train loss and accuracy over the batches
    and the LR of the last update."""
    model, forward, optimizer, scheduler = setup.model, setup.forward, setup.optimizer, setup.scheduler
    model.train()
    # Sums stay on the device: one host sync per call, not per step.
    loss_sum = torch.zeros((), device=setup.device)
    correct = torch.zeros((), device=setup.device, dtype=torch.long)
    seen = 0
    for x, y in batches:
        if setup.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(setup):
            logits = forward(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return {"train/loss": loss_sum.item() / seen, "train/acc": correct.item() / seen, "lr": lr}


@torch.no_grad()
def evaluate(setup: Setup, split: str) -> dict:
    """Mean loss and accuracy on a whole split ("val" or "test"), without augmentation; top-5 accuracy too when there
    are more than TOP5_MIN_CLASSES classes."""
    setup.model.eval()
    loss_sum = torch.zeros((), device=setup.device)
    correct = torch.zeros((), device=setup.device, dtype=torch.long)
    correct_top5 = torch.zeros((), device=setup.device, dtype=torch.long)
    seen = 0
    for x, y in setup.data.eval_batches(split, max(setup.batch_size, 256)):
        if setup.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(setup):
            logits = setup.forward(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        if logits.shape[1] > TOP5_MIN_CLASSES:
            correct_top5 += (logits.topk(5, dim=1).indices == y[:, None]).any(1).sum()
        seen += len(y)
    metrics = {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}
    if setup.data.num_classes > TOP5_MIN_CLASSES:
        metrics["top5"] = correct_top5.item() / seen
    return metrics


def autocast(setup: Setup):
    # bf16 needs no loss scaling; on CPU (amp=true) the same autocast runs, which keeps this path testable here.
    if setup.precision == "bf16":
        return torch.autocast(setup.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_checkpoint(path: Path, setup: Setup, generator: torch.Generator, state: dict) -> None:
    """Everything needed to continue bit-for-bit: weights, optimizer, schedule, and every random state."""
    payload = {
        "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "state": state,
    }
    record.atomic_write(path, lambda file: torch.save(payload, file))


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "generator", "torch_rng", "cuda_rng", "state")


def read_checkpoint(path: Path, device: torch.device) -> dict:
    """What save_checkpoint saved, or record.Damaged naming the file when it cannot be read back whole (a file cut
    short by a full disk or a copy, or overwritten)."""
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # noqa: BLE001 — torch raises RuntimeError, EOFError, UnpicklingError... for a bad file
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise record.Damaged(f"{path} is unreadable ({type(error).__name__}: {reason})") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise record.Damaged(f"{path} is not a checkpoint of ablate (no {', '.join(missing)})")
    return payload


def restore_checkpoint(payload: dict, setup: Setup, generator: torch.Generator) -> dict:
    """Put what read_checkpoint read into `setup` and `generator`; returns the saved `state`."""
    setup.model.load_state_dict(payload["model"])
    setup.optimizer.load_state_dict(payload["optimizer"])
    setup.scheduler.load_state_dict(payload["scheduler"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload["state"]


def load_checkpoint(path: Path, setup: Setup, generator: torch.Generator) -> dict:
    """Restore what save_checkpoint saved into `setup` and `generator`; returns the saved `state`."""
    return restore_checkpoint(read_checkpoint(path, setup.device), setup, generator)


def check_resolves(cfg: DictConfig) -> None:
    """A value whose ${...} does not resolve (a typo on the command line) is one line naming the key."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{error.full_key}: {reason}; fix the interpolation in that value") from None


def check_trainer(cfg: DictConfig) -> None:
    """Checks on the root keys, before anything is built."""
    epochs = cfg.trainer.epochs
    if not isinstance(epochs, int) or epochs <= 0:
        raise ConfigError(f"trainer.epochs={epochs}: must be a positive integer; e.g. trainer.epochs=10")
    every = cfg.trainer.eval_every_epochs
    if not isinstance(every, int) or every <= 0:
        raise ConfigError(f"trainer.eval_every_epochs={every}: must be a positive integer; e.g. 1")
    if cfg.trainer.device not in ("auto", "cpu", "cuda") and not str(cfg.trainer.device).startswith("cuda:"):
        raise ConfigError(f"trainer.device={cfg.trainer.device}: unknown; use auto, cpu, cuda or cuda:N")
    threads = cfg.trainer.threads
    if threads is not None and (not isinstance(threads, int) or threads <= 0):
        raise ConfigError(f"trainer.threads={threads}: must be a positive integer or null (torch's default)")
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed}: must be an integer >= 0; e.g. seed=0")
    size = cfg.batch.size
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"batch.size={size}: must be a positive integer; e.g. batch.size=64")
    hold = cfg.batch.get("hold", "epochs")
    if hold not in ("epochs", "updates"):
        raise ConfigError(f"batch.hold={hold}: unknown; use batch.hold=epochs or batch.hold=updates")
    if cfg.mode not in ("train", "lr_range"):
        raise ConfigError(f"mode={cfg.mode}: unknown; use mode=train or mode=lr_range")
    for key in ("amp", "channels_last"):
        if cfg.trainer[key] not in ("auto", True, False):
            raise ConfigError(f"trainer.{key}={cfg.trainer[key]}: use auto, true or false")
    updates = cfg.trainer.get("updates")
    if updates is not None and (isinstance(updates, bool) or not isinstance(updates, int) or updates <= 0):
        raise ConfigError(f"trainer.updates={updates}: must be a positive integer or null; e.g. trainer.updates=100000")
    stop = cfg.trainer.get("stop_after_epochs")
    if updates is not None and stop is not None:
        raise ConfigError(
            f"trainer.stop_after_epochs={stop}: pauses whole-epoch runs only; drop it, or trainer.updates=null"
        )
    if hold == "updates" and stop is not None:
        raise ConfigError(
            f"trainer.stop_after_epochs={stop}: pauses whole-epoch runs only, and batch.hold=updates cuts passes "
            "short; drop it (and study.halving), or batch.hold=epochs"
        )
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int) or not 0 < stop < epochs):
        raise ConfigError(
            f"trainer.stop_after_epochs={stop}: must be null or an integer in [1, trainer.epochs={epochs}); "
            "it pauses the run there, to continue later"
        )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: no CUDA device is visible here; use trainer.device=auto or cpu")
    return torch.device(name)


def tune_allocator() -> None:
    """Give this process the parallel workers' glibc allocator thresholds, which they get from their environment.

    glibc otherwise unmaps freed conv buffers and faults them in again a few steps later (1.1-3.5x slower for small
    convs on CPU). A process that did not start with MALLOC_* set gets the same values through mallopt."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    libc.mallopt(m_mmap_threshold, int(WORKER_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]))
    libc.mallopt(m_trim_threshold, int(WORKER_ENVIRONMENT["MALLOC_TRIM_THRESHOLD_"]))
