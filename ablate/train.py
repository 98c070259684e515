"""One training run, top to bottom: check the config, build, train, evaluate, write the record."""

import contextlib
import ctypes
import math
import sys
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablate import record
from ablate.data import build as build_data
from ablate.errors import ConfigError
from ablate.models import build_model, describe
from ablate.optim import build_optimizer, effective_lr, validate_optim
from ablate.schedules import build_scheduler, validate_sched
from ablate.sweep import WORKER_ENVIRONMENT


def run(cfg: DictConfig, record_dir: Path) -> dict:
    """Train one configuration into `record_dir` and return its summary (status completed/diverged/failed)."""
    summary = start_summary(cfg, record_dir)
    done = record.read_json(record_dir / record.SUMMARY)
    if cfg.resume and done and done.get("status") == "completed" and done.get("identity") == summary["identity"]:
        print(f"ablate: {summary['name']} already completed in {record_dir}; skipped (resume=false trains again)")
        return {**done, "outcome": "skipped"}

    logger = None
    try:
        setup = build(cfg, summary)
        record.atomic_write_text(record_dir / record.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        record.atomic_write_json(record_dir / record.SUMMARY, summary)
        logger = instantiate(cfg.logger)(run=tracker_run(cfg, summary, record_dir))
        if cfg.mode == "lr_range":
            from ablate.lr_range import run_lr_range  # a run mode of its own, sharing the builders above

            summary.update(run_lr_range(cfg, setup, record_dir, logger))
        else:
            train(cfg, setup, summary, record_dir, logger)
    except ConfigError as error:
        summary.update(status="failed", error=str(error))
        raise
    except Exception as error:  # the record says why; the caller decides whether the sweep goes on
        summary.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        raise
    finally:
        summary["finished_at"] = now()
        record.atomic_write_json(record_dir / record.SUMMARY, summary)
        if logger is not None:
            logger.finish(summary)
    return {**summary, "outcome": summary["status"]}


def start_summary(cfg: DictConfig, record_dir: Path) -> dict:
    """The summary as it stands before training: what runs, where, with which code."""
    choices = {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra/")}
    return {
        "identity": record.identity(cfg),
        "name": run_name(cfg, choices),
        "study": cfg.study.name,
        "status": "running",
        "error": None,
        "seed": cfg.seed,
        "mode": cfg.mode,
        "choices": choices,
        # As typed: an override such as optim.lr=${oops} is text here, not an interpolation to resolve.
        "overrides": OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False),
        "record_dir": str(record_dir.resolve()),
        "git": record.git_state(),
        "versions": record.versions(),
        "started_at": now(),
        "finished_at": None,
    }


def value_of(cfg: DictConfig, choices: dict, key: str):
    """A swept key's value: the option name for a config group (model=allconv6), else the config value."""
    # An unresolvable value names the run "...None"; build() then fails it with a line naming the key.
    return choices[key] if key in choices else OmegaConf.select(cfg, key, throw_on_resolution_failure=False)


def run_name(cfg: DictConfig, choices: dict) -> str:
    """Readable W&B / log name such as depth/allconv7_1/lr0.01/s1."""
    parts = [cfg.study.name]
    for key in [*cfg.study.scientific, *cfg.study.nuisance] or ["model"]:
        value = value_of(cfg, choices, key)
        parts.append(str(value) if key in choices else f"{key.split('.')[-1]}{value}")
    return "/".join([*parts, f"s{cfg.seed}"])


def tracker_run(cfg: DictConfig, summary: dict, record_dir: Path) -> dict:
    """What the tracker needs to mirror this run; the resolved config plus derived values."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["derived"] = {
        "identity": summary["identity"],
        "lr_effective": summary["lr"]["effective"],
        "choices": summary["choices"],
        **{k: summary["model"][k] for k in ("depth", "params", "macs")},
    }
    return {
        "identity": summary["identity"],
        "name": summary["name"],
        "group": cfg.study.name,
        "job_type": "+".join(cfg.study.scientific) or "single",
        "tags": [cfg.study.name, summary["choices"].get("model", ""), summary["choices"].get("data", "")],
        "config": config,
        "record_dir": str(record_dir),
    }


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
    size = cfg.batch.size
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"batch.size={size}: must be a positive integer; e.g. batch.size=64")
    if cfg.mode not in ("train", "lr_range"):
        raise ConfigError(f"mode={cfg.mode}: unknown; use mode=train or mode=lr_range")
    for key in ("amp", "channels_last"):
        if cfg.trainer[key] not in ("auto", True, False):
            raise ConfigError(f"trainer.{key}={cfg.trainer[key]}: use auto, true or false")


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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: no CUDA device is visible here; use trainer.device=auto or cpu")
    return torch.device(name)


def check_resolves(cfg: DictConfig) -> None:
    """A value whose ${...} does not resolve (a typo on the command line) is one line naming the key."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{error.full_key}: {reason}; fix the interpolation in that value") from None


def build(cfg: DictConfig, summary: dict) -> dict:
    """Everything a run needs, checked before training starts; fills the summary's model and LR entries."""
    check_resolves(cfg)
    check_trainer(cfg)
    tune_allocator()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    device = pick_device(str(cfg.trainer.device))
    lr = effective_lr(cfg.optim, cfg.batch)
    validate_optim(cfg.optim, lr.effective)

    # A cheap probe build checks the model's config and stride before any data is decoded.
    probe = build_model(cfg.model, num_classes=2, in_channels=3)
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
    total_steps = steps_per_epoch * cfg.trainer.epochs
    validate_sched(cfg.sched, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    if cfg.mode == "lr_range":
        from ablate.lr_range import check_lr_range

        check_lr_range(cfg.lr_range, total_steps=total_steps)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels)
    summary["model"] = describe(model, resolution=data.resolution, in_channels=data.in_channels)
    on_cuda = device.type == "cuda"
    channels_last = on_cuda if cfg.trainer.channels_last == "auto" else bool(cfg.trainer.channels_last)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = build_optimizer(cfg.optim, model, lr=lr.effective)
    scheduler = build_scheduler(cfg.sched, optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    amp = on_cuda if cfg.trainer.amp == "auto" else bool(cfg.trainer.amp)
    summary["lr"] = asdict(lr)
    summary.update(
        device=str(device),
        threads=torch.get_num_threads(),
        data={"name": cfg.data.name, "classes": data.num_classes, **data.sizes},
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
    return {
        "device": device,
        "data": data,
        "model": model,
        # torch.compile pays off on GPUs; the uncompiled module stays the one whose state is saved.
        "forward": torch.compile(model) if cfg.trainer.compile else model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        # bf16 needs no loss scaling; on CPU (amp=true) the same autocast runs, which keeps this path testable here.
        "autocast": (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext,
        "channels_last": channels_last,
        "steps_per_epoch": steps_per_epoch,
    }


def train(cfg: DictConfig, setup: dict, summary: dict, record_dir: Path, logger) -> None:
    """The epoch loop: one optimizer update per batch, the LR set per update, evaluation every N epochs."""
    generator = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "history": []}
    checkpoint = record_dir / record.CHECKPOINT
    if cfg.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, setup, generator)
        print(f"ablate: resuming {summary['name']} after epoch {state['epoch']} from {checkpoint}")
        for row in state["history"]:
            logger.log(row, step=row["epoch"])

    summary["status"] = "running"
    while state["epoch"] < cfg.trainer.epochs:
        started = time.perf_counter()
        train_metrics, lr = train_epoch(setup, cfg.batch.size, generator)
        state["epoch"] += 1
        state["step"] += setup["steps_per_epoch"]
        state["seconds"] += time.perf_counter() - started
        epoch = state["epoch"]
        row = {
            "epoch": epoch,
            "step": state["step"],
            "lr": lr,
            **train_metrics,
            "seconds": round(state["seconds"], 3),
            "images_per_s": round(state["step"] * cfg.batch.size / max(state["seconds"], 1e-9), 1),
        }
        diverged = not math.isfinite(train_metrics["train/loss"])
        if not diverged and (epoch % cfg.trainer.eval_every_epochs == 0 or epoch == cfg.trainer.epochs):
            for split in ("val", "test"):
                row.update({f"{split}/{k}": v for k, v in evaluate(setup, split, cfg.batch.size).items()})
            state["history"].append(row)
            logger.log(row, step=epoch)
            # The checkpoint holds the history, so the metrics file can always be rebuilt from it.
            if cfg.trainer.checkpoint and epoch < cfg.trainer.epochs:
                save_checkpoint(checkpoint, setup, generator, state)
            record.write_metrics(record_dir, state["history"])
        if diverged:
            state["history"].append(row)
            record.write_metrics(record_dir, state["history"])
            summary.update(status="diverged", error=f"train/loss became {train_metrics['train/loss']} in epoch {epoch}")
            print(f"ablate: {summary['name']} diverged in epoch {epoch} (train/loss {train_metrics['train/loss']})")
            break
    else:
        summary["status"] = "completed"
    finish_summary(summary, state, cfg.batch.size)
    if summary["status"] != "running":
        checkpoint.unlink(missing_ok=True)


def train_epoch(setup: dict, batch_size: int, generator: torch.Generator) -> tuple[dict, float]:
    """One pass over the training split; returns its mean loss and accuracy, and the last update's LR."""
    model, forward, optimizer, scheduler = setup["model"], setup["forward"], setup["optimizer"], setup["scheduler"]
    model.train()
    # Sums stay on the device: one host sync per epoch, not per step.
    loss_sum = torch.zeros((), device=setup["device"])
    correct = torch.zeros((), device=setup["device"], dtype=torch.long)
    seen = 0
    lr = optimizer.param_groups[0]["lr"]
    for x, y in setup["data"].train_batches(batch_size, generator):
        if setup["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        with setup["autocast"]():
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
    return {"train/loss": loss_sum.item() / seen, "train/acc": correct.item() / seen}, lr


@torch.no_grad()
def evaluate(setup: dict, split: str, batch_size: int) -> dict:
    """Mean loss and accuracy on a whole split, without augmentation."""
    model, forward = setup["model"], setup["forward"]
    model.eval()
    loss_sum = torch.zeros((), device=setup["device"])
    correct = torch.zeros((), device=setup["device"], dtype=torch.long)
    seen = 0
    for x, y in setup["data"].eval_batches(split, max(batch_size, 256)):
        if setup["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        with setup["autocast"]():
            logits = forward(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}


def finish_summary(summary: dict, state: dict, batch_size: int) -> None:
    """Final and best metrics, budget and throughput from the history."""
    evaluated = [row for row in state["history"] if "val/acc" in row]
    last = state["history"][-1] if state["history"] else {}
    summary["final"] = {k: v for k, v in last.items() if "/" in k} if evaluated else {}
    if evaluated:
        best = max(evaluated, key=lambda row: row["val/acc"])
        summary["best"] = {"val/acc": best["val/acc"], "test/acc": best["test/acc"], "epoch": best["epoch"]}
    else:
        summary["best"] = {}
    summary.update(
        epochs_completed=state["epoch"],
        steps=state["step"],
        wall_seconds=round(state["seconds"], 3),
        images_per_s=round(state["step"] * batch_size / max(state["seconds"], 1e-9), 1),
    )


def save_checkpoint(path: Path, setup: dict, generator: torch.Generator, state: dict) -> None:
    """Everything needed to continue bit-for-bit: weights, optimizer, schedule, and every random state."""
    payload = {
        "model": setup["model"].state_dict(),
        "optimizer": setup["optimizer"].state_dict(),
        "scheduler": setup["scheduler"].state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "state": state,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, setup: dict, generator: torch.Generator) -> dict:
    payload = torch.load(path, map_location=setup["device"], weights_only=False)
    setup["model"].load_state_dict(payload["model"])
    setup["optimizer"].load_state_dict(payload["optimizer"])
    setup["scheduler"].load_state_dict(payload["scheduler"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload["state"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
