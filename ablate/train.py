"""One run, top to bottom: build (ablate.loop), write the record, train epoch by epoch (or run the LR range test)."""

import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ablate import record, sweep
from ablate.errors import ConfigError
from ablate.loop import Setup, build, evaluate, read_checkpoint, restore_checkpoint, save_checkpoint, train_steps
from ablate.lr_range import check_lr_range, run_lr_range
from ablate.models import describe
from ablate.sweep import clock

# Hydra's job logging sends these lines to the terminal and to the job's log file (<record>/__main__.log).
log = logging.getLogger(__name__)


class Interrupted(BaseException):
    """SIGTERM arrived (SIGINT arrives as KeyboardInterrupt); a BaseException, so no `except Exception` eats it."""


def run(cfg: DictConfig, record_dir: Path) -> dict:
    """Train one configuration into `record_dir` and return its summary (status completed/stopped/diverged/failed/
    interrupted) with its `outcome` for the sweep, holding the record's lock throughout: a second process asking for
    the same record meanwhile is told `running elsewhere` and trains nothing."""
    summary = start_summary(cfg, record_dir)
    if sweep.interrupted_by is not None:
        # A signal ended an earlier job of this sweep: the user asked the sweep to stop. The folder Hydra made for
        # this job goes, unless another process holds it.
        discard_unstarted(record_dir)
        return {**summary, "status": "interrupted", "outcome": "not started"}
    try:
        with record.lock(record_dir):
            try:
                return run_locked(cfg, record_dir, summary)
            finally:
                if not (record_dir / record.SUMMARY).exists():  # an attempt that left no record leaves no folder
                    remove_if_empty(record_dir)
    except record.Locked as held:
        print(f"ablate: {summary['name']} is running elsewhere ({held}); skipped here")
        return {**summary, "outcome": "running elsewhere"}


def run_locked(cfg: DictConfig, record_dir: Path, summary: dict) -> dict:
    # The lock is ours, so every temp file in the folder is a killed writer's.
    record.remove_stale_temps(record_dir, everything=True)
    done = record.read_json(record_dir / record.SUMMARY)
    if cfg.resume and done and done.get("identity") == summary["identity"] and finished(done, cfg):
        broken = record.metrics_damage(record_dir, done)
        if broken is None:
            if record.config_damage(record_dir, done) is not None:
                record.atomic_write_text(record_dir / record.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
                print(f"ablate: {summary['name']}: rewrote its damaged or missing {record_dir / record.CONFIG}")
            again = "retry_diverged=true" if done["status"] == "diverged" else "resume=false"
            # Said once, in the run's last line (ablate.__main__.last_line).
            return {**done, "outcome": "skipped", "skipped_because": f"already {done['status']}; {again} trains again"}
        # Runs are deterministic: training again gives back the record as it was.
        print(f"ablate: {summary['name']}: {broken}; training it again to repair the record")

    logger = None
    try:
        with interruptible():
            setup = build(cfg)
            # The range test's own settings are checked before the record and the tracker start, like the rest.
            range_test = (
                check_lr_range(cfg.get("lr_range"), total_steps=setup.total_steps) if cfg.mode == "lr_range" else None
            )
            summary.update(describe_setup(cfg, setup))
            record.atomic_write_text(record_dir / record.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
            record.atomic_write_json(record_dir / record.SUMMARY, summary)
            logger = instantiate(cfg.logger)(run=tracker_run(cfg, summary, record_dir))
            if range_test is None:
                train(cfg, setup, summary, record_dir, logger)
            else:
                summary.update(run_lr_range(cfg, range_test, setup, record_dir, logger))
    except ConfigError as error:
        summary.update(status="failed", error=str(error))
        raise
    except (Interrupted, KeyboardInterrupt, SystemExit) as error:
        interrupt(summary, error, cfg, record_dir)
        if isinstance(error, SystemExit):
            raise  # submitit's requeue on SLURM's pre-timeout signal: the job must exit, to run again
    except Exception as error:  # the record says why; the caller decides whether the sweep goes on
        summary.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        raise
    finally:
        summary["finished_at"] = now()
        if summary["status"] != "running" or (record_dir / record.SUMMARY).exists():
            try:
                record.atomic_write_json(record_dir / record.SUMMARY, summary)
            except OSError as error:  # a full disk: the line says so; the record keeps its last summary
                print(f"ablate: {summary['name']}: could not write its summary: {error}", file=sys.stderr)
        if logger is not None:
            logger.finish(summary)
    return {**summary, "outcome": summary["status"]}


def finished(done: dict, cfg: DictConfig) -> bool:
    """Whether a record holds a run not to train again: reached (below), or diverged unless retry_diverged=true
    (runs are deterministic, so it would diverge again)."""
    if done.get("status") == "diverged":
        return not cfg.get("retry_diverged", False)
    return reached(done, cfg)


@contextlib.contextmanager
def interruptible():
    """SIGTERM raises Interrupted in the block, as Ctrl-C raises KeyboardInterrupt, so a run ends recorded.

    Only in the main thread, and only for a signal that is this process's to act on:
    - SIGTERM where it has its default action, or in a job of launcher=submitit_local, where it is how the sweep
      stops its jobs (ablate/launcher.py). Elsewhere under submitit it is left to submitit, which ignores it: SLURM
      sends it around its pre-timeout signal (USR2), on which submitit requeues the job by calling sys.exit.
    - SIGINT unless this process ignores it: submitit_local's jobs do, so that a Ctrl-C at the terminal stops them
      through the sweep alone; a launcher=parallel worker, which only notes a Ctrl-C between runs, raises it here."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    handlers = {}
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL or os.environ.get("SUBMITIT_EXECUTOR") == "local":
        handlers[signal.SIGTERM] = terminate
    if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
        handlers[signal.SIGINT] = signal.default_int_handler
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupt(summary: dict, error: BaseException, cfg: DictConfig, record_dir: Path) -> None:
    """Record a run a signal ended as `interrupted` at its last finished epoch (checkpoint kept), in one line."""
    if isinstance(error, SystemExit):
        why = f"exit({error.code}) (submitit requeues on SLURM's pre-timeout signal)"
    else:
        why = "SIGINT" if isinstance(error, KeyboardInterrupt) else str(error)
        sweep.interrupted_by = why
    epoch = summary.get("epochs_completed", 0)
    checkpoint = record_dir / record.CHECKPOINT
    kept = f"checkpoint kept in {checkpoint}" if checkpoint.exists() else "no checkpoint yet"
    summary.update(status="interrupted", error=f"{why} after epoch {epoch} of {cfg.trainer.epochs}")
    print(
        f"ablate: {summary['name']} interrupted by {why} after epoch {epoch} of {cfg.trainer.epochs}; {kept}; "
        "rerun to resume",
        file=sys.stderr,
        flush=True,
    )


def discard_unstarted(record_dir: Path) -> None:
    """Remove the folder Hydra made for a job that never started (nothing but Hydra's files in it), unless another
    process holds the record."""
    with contextlib.suppress(record.Locked), record.lock(record_dir):
        remove_if_empty(record_dir)


def remove_if_empty(record_dir: Path) -> None:
    """Remove a record folder without a summary that holds nothing else of a run either: only what Hydra puts in
    every job's folder (.hydra/, its log), the lock file, and the config.yaml an attempt wrote before it failed."""
    leftovers = [record_dir / ".hydra", record_dir / record.LOCK, record_dir / record.CONFIG, *record_dir.glob("*.log")]
    if any(path not in leftovers for path in record_dir.iterdir()):
        return
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        record_dir.rmdir()


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
        try:
            payload = read_checkpoint(checkpoint, setup.device)
        except record.Damaged as error:
            # Set aside, not deleted (it may be worth a look), and never read again: the run starts over.
            aside = checkpoint.with_name(f"{checkpoint.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            checkpoint.rename(aside)
            print(f"ablate: warning: {error}; set aside as {aside}; training {summary['name']} from epoch 0")
        else:
            state = restore_checkpoint(payload, setup, generator)
            # The tracker resumes the same W&B run (its id is the record's), which already holds these epochs.
            log.info("resuming %s after epoch %d from %s", summary["name"], state["epoch"], checkpoint)

    # Successive halving pauses a run here: evaluated, checkpointed, `stopped` until a later invocation continues it.
    stop = cfg.trainer.get("stop_after_epochs") or setup.epochs
    try:
        train_epochs(cfg, setup, summary, record_dir, logger, generator, state, stop)
    finally:  # also for a run a signal or an error ends: its summary counts the epochs it finished
        finish_summary(summary, state, setup.batch_size)
    if summary["status"] != "stopped":
        checkpoint.unlink(missing_ok=True)


def train_epochs(cfg, setup: Setup, summary: dict, record_dir: Path, logger, generator, state: dict, stop: int):
    checkpoint = record_dir / record.CHECKPOINT
    epochs = setup.epochs
    first_epoch, loop_started = state["epoch"], time.perf_counter()
    while state["epoch"] < epochs:
        started = time.perf_counter()
        # trainer.updates may end the run inside its last epoch (Caffe's max_iter).
        steps = min(setup.steps_per_epoch, setup.total_steps - state["step"])
        batches = islice(setup.data.train_batches(setup.batch_size, generator), steps)
        metrics = train_steps(setup, progress_bar(batches, steps, state["epoch"] + 1, epochs))
        every = setup.clock_steps * cfg.trainer.eval_every_epochs
        evaluation_due = eval_due(state["step"], state["step"] + steps, every)
        state["epoch"] += 1
        state["step"] += steps
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
        if not diverged and (evaluation_due or epoch in (stop, epochs)):
            for split in ("val", "test"):
                row.update({f"{split}/{k}": v for k, v in evaluate(setup, split).items()})
        state["history"].append(row)
        logger.log(row, step=epoch)
        elapsed_per_epoch = (time.perf_counter() - loop_started) / (epoch - first_epoch)
        log.info(epoch_line(row, epochs, elapsed_per_epoch * (min(stop, epochs) - epoch)))
        if diverged:
            record.write_metrics(record_dir, state["history"])
            summary.update(status="diverged", error=f"train/loss became {metrics['train/loss']} in epoch {epoch}")
            log.warning("%s diverged in epoch %d (train/loss %s)", summary["name"], epoch, metrics["train/loss"])
            break
        # The checkpoint holds the history, so the metrics file can always be rebuilt from it.
        if (cfg.trainer.checkpoint or epoch == stop) and epoch < epochs:
            save_checkpoint(checkpoint, setup, generator, state)
        record.write_metrics(record_dir, state["history"])
        if epoch >= stop and epoch < epochs:
            summary["status"] = "stopped"  # its last line says after which epoch (ablate.__main__.last_line)
            break
    else:
        summary["status"] = "completed"


def eval_due(step_before: int, step_after: int, every: int) -> bool:
    """Whether a pass from step_before to step_after crossed a multiple of `every` updates (trainer.eval_every_epochs
    clock epochs): every N-th pass, or under batch.hold=updates the pass in which the N-th clock epoch ends."""
    return step_after // every > step_before // every


def progress_bar(batches, steps: int, epoch: int, epochs: int):
    """The epoch's batches behind a tqdm bar on an interactive terminal; unchanged in a sweep, a pipe or a log file,
    where the per-epoch line is the progress."""
    if not sys.stderr.isatty() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return batches
    from tqdm import tqdm  # imported here: only an interactive run draws a bar

    return tqdm(batches, total=steps, desc=f"epoch {epoch}/{epochs}", leave=False, unit="step")


def epoch_line(row: dict, epochs: int, seconds_left: float) -> str:
    """One line per epoch: `epoch 3/16  train loss 2.301 acc 12.5%  val acc 15.0%  lr 0.01  2100 img/s  ETA 0:42`."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train/loss']:.4g} acc {100 * row['train/acc']:.1f}%"]
    if "val/acc" in row:
        top5 = f" top-5 {100 * row['val/top5']:.1f}%" if "val/top5" in row else ""
        parts.append(f"val acc {100 * row['val/acc']:.1f}%{top5}")
    parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:.0f} img/s", f"ETA {clock(seconds_left)}"]
    return "  ".join(parts)


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
