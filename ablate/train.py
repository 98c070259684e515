"""One run, top to bottom: build (ablate.loop), write the record, train epoch by epoch (or run the LR range test)."""

import logging
import math
import sys
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ablate import record
from ablate.errors import ConfigError
from ablate.loop import Setup, build, evaluate, load_checkpoint, save_checkpoint, train_steps
from ablate.lr_range import check_lr_range, run_lr_range
from ablate.models import describe

# Hydra's job logging sends these lines to the terminal and to the job's log file (<record>/__main__.log).
log = logging.getLogger(__name__)


def run(cfg: DictConfig, record_dir: Path) -> dict:
    """Train one configuration into `record_dir` and return its summary (status completed/diverged/failed)."""
    summary = start_summary(cfg, record_dir)
    done = record.read_json(record_dir / record.SUMMARY)
    if cfg.resume and done and done.get("identity") == summary["identity"] and reached(done, cfg):
        log.info(
            "%s already %s in %s; skipped (resume=false trains again)", summary["name"], done["status"], record_dir
        )
        return {**done, "outcome": "skipped"}

    logger = None
    try:
        setup = build(cfg)
        # The range test's own settings are checked before the record and the tracker start, like the rest.
        sweep = check_lr_range(cfg.get("lr_range"), total_steps=setup.total_steps) if cfg.mode == "lr_range" else None
        summary.update(describe_setup(cfg, setup))
        record.atomic_write_text(record_dir / record.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        record.atomic_write_json(record_dir / record.SUMMARY, summary)
        logger = instantiate(cfg.logger)(run=tracker_run(cfg, summary, record_dir))
        if sweep is None:
            train(cfg, setup, summary, record_dir, logger)
        else:
            summary.update(run_lr_range(cfg, sweep, setup, record_dir, logger))
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


def reached(done: dict, cfg: DictConfig) -> bool:
    """Whether a record already holds what this invocation asks for: a completed run, or a run stopped at or past
    trainer.stop_after_epochs (successive halving asks again for the same rung when a study is rerun)."""
    if done.get("status") == "completed":
        return True
    stop = cfg.trainer.get("stop_after_epochs")
    return done.get("status") == "stopped" and stop is not None and done.get("epochs_completed", 0) >= stop


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
        "precision": summary["precision"],
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


def describe_setup(cfg: DictConfig, setup: Setup) -> dict:
    """The summary's entries that only the built run knows: model, effective LR, precision, device, data, budget."""
    return {
        "model": describe(setup.model, resolution=setup.data.resolution, in_channels=setup.data.in_channels),
        "lr": asdict(setup.lr),
        "precision": setup.precision,
        "device": str(setup.device),
        "threads": torch.get_num_threads(),
        "data": {"name": cfg.data.name, "classes": setup.data.num_classes, **setup.data.sizes},
        "steps_per_epoch": setup.steps_per_epoch,
        "total_steps": setup.total_steps,
    }


def train(cfg: DictConfig, setup: Setup, summary: dict, record_dir: Path, logger) -> None:
    """The epoch loop: an epoch of updates, then a row of metrics for the record and the tracker (val and test every
    trainer.eval_every_epochs epochs and after the last) and a checkpoint to resume from."""
    generator = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "history": []}
    checkpoint = record_dir / record.CHECKPOINT
    if cfg.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, setup, generator)
        log.info("resuming %s after epoch %d from %s", summary["name"], state["epoch"], checkpoint)
        for row in state["history"]:
            logger.log(row, step=row["epoch"])

    # Successive halving pauses a run here: evaluated, checkpointed, `stopped` until a later invocation continues it.
    stop = cfg.trainer.get("stop_after_epochs") or cfg.trainer.epochs
    first_epoch, loop_started = state["epoch"], time.perf_counter()
    while state["epoch"] < cfg.trainer.epochs:
        started = time.perf_counter()
        batches = progress_bar(setup.data.train_batches(setup.batch_size, generator), setup, state["epoch"] + 1, cfg)
        metrics = train_steps(setup, batches)
        state["epoch"] += 1
        state["step"] += setup.steps_per_epoch
        state["seconds"] += time.perf_counter() - started
        epoch = state["epoch"]
        row = {
            "epoch": epoch,
            "step": state["step"],
            **metrics,
            "seconds": round(state["seconds"], 3),
            "images_per_s": round(state["step"] * setup.batch_size / max(state["seconds"], 1e-9), 1),
        }
        diverged = not math.isfinite(metrics["train/loss"])
        if not diverged and (epoch % cfg.trainer.eval_every_epochs == 0 or epoch in (stop, cfg.trainer.epochs)):
            for split in ("val", "test"):
                row.update({f"{split}/{k}": v for k, v in evaluate(setup, split).items()})
        state["history"].append(row)
        logger.log(row, step=epoch)
        elapsed_per_epoch = (time.perf_counter() - loop_started) / (epoch - first_epoch)
        log.info(epoch_line(row, cfg.trainer.epochs, elapsed_per_epoch * (min(stop, cfg.trainer.epochs) - epoch)))
        if diverged:
            record.write_metrics(record_dir, state["history"])
            summary.update(status="diverged", error=f"train/loss became {metrics['train/loss']} in epoch {epoch}")
            log.warning("%s diverged in epoch %d (train/loss %s)", summary["name"], epoch, metrics["train/loss"])
            break
        # The checkpoint holds the history, so the metrics file can always be rebuilt from it.
        if (cfg.trainer.checkpoint or epoch == stop) and epoch < cfg.trainer.epochs:
            save_checkpoint(checkpoint, setup, generator, state)
        record.write_metrics(record_dir, state["history"])
        if epoch >= stop and epoch < cfg.trainer.epochs:
            summary["status"] = "stopped"
            log.info("%s stopped after epoch %d of %d (checkpoint kept)", summary["name"], epoch, cfg.trainer.epochs)
            break
    else:
        summary["status"] = "completed"
    finish_summary(summary, state, setup.batch_size)
    if summary["status"] != "stopped":
        checkpoint.unlink(missing_ok=True)


def progress_bar(batches, setup: Setup, epoch: int, cfg: DictConfig):
    """The epoch's batches behind a tqdm bar on an interactive terminal; unchanged in a sweep, a pipe or a log file,
    where the per-epoch line is the progress."""
    if not sys.stderr.isatty() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return batches
    from tqdm import tqdm  # imported here: only an interactive run draws a bar

    description = f"epoch {epoch}/{cfg.trainer.epochs}"
    return tqdm(batches, total=setup.steps_per_epoch, desc=description, leave=False, unit="step")


def epoch_line(row: dict, epochs: int, seconds_left: float) -> str:
    """One line per epoch: `epoch 3/16  train loss 2.301 acc 12.5%  val acc 15.0%  lr 0.01  2100 img/s  ETA 0:42`."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train/loss']:.4g} acc {100 * row['train/acc']:.1f}%"]
    if "val/acc" in row:
        top5 = f" top-5 {100 * row['val/top5']:.1f}%" if "val/top5" in row else ""
        parts.append(f"val acc {100 * row['val/acc']:.1f}%{top5}")
    parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:.0f} img/s", f"ETA {clock(seconds_left)}"]
    return "  ".join(parts)


def clock(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def finish_summary(summary: dict, state: dict, batch_size: int) -> None:
    """Final and best metrics, budget and throughput from the history."""
    evaluated = [row for row in state["history"] if "val/acc" in row]
    last = state["history"][-1] if state["history"] else {}
    summary["final"] = {k: v for k, v in last.items() if "/" in k} if evaluated else {}
    if evaluated:
        best = max(evaluated, key=lambda row: row["val/acc"])
        summary["best"] = {"val/acc": best["val/acc"], "test/acc": best["test/acc"], "epoch": best["epoch"]}
        if "test/top5" in best:
            summary["best"]["test/top5"] = best["test/top5"]
    else:
        summary["best"] = {}
    summary.update(
        epochs_completed=state["epoch"],
        steps=state["step"],
        wall_seconds=round(state["seconds"], 3),
        images_per_s=round(state["step"] * batch_size / max(state["seconds"], 1e-9), 1),
    )


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
