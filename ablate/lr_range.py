"""The LR range test, `python -m ablate mode=lr_range`: train from scratch while the LR grows, record loss and
accuracy against the LR, and suggest bounds for sched=cyclical.

As in the articles (after Smith 2017): the upper bound is the LR with the best validation accuracy (or, with
lr_range.criterion=loss, the LR where the validation loss falls fastest) and the lower bound is a third of it.
The record folder gets the curves, a plot and the suggestion (ablate.record's RANGE_TEST_* files, which
sched.bounds_from and the analysis read).
"""

import itertools
import math
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR

from ablate import record
from ablate.analysis.figures import save
from ablate.analysis.selection import at_chance
from ablate.errors import ConfigError
from ablate.loop import Setup, evaluate, train_steps
from ablate.optim import build_optimizer

SCALES = ("exp", "linear")
CRITERIA = ("acc", "loss")
DEFAULT_POINTS = 40  # evaluations in a sweep when lr_range.eval_every is null
MIN_POINTS = 3  # the steepest descent needs neighbours on both sides
# Overrides of the range test that do not carry over to the training run it suggests: its mode and settings, its
# schedule, and the study it ran in (+sweep=lr_range would run the range test again).
NOT_CARRIED = ("mode=", "lr_range.", "sched=", "sched.", "sweep=", "study.", "hydra.")


def run_lr_range(cfg: DictConfig, sweep: dict, setup: Setup, record_dir: Path, logger) -> dict:
    """Sweep the LR (`sweep`: check_lr_range's values) over the model in `setup`; returns the summary's entries.

    Each evaluation goes to the tracker too, with the (fractional) epoch as its x-axis, like a training run's.
    """
    # A fresh optimizer at min_lr: the range test ignores cfg.sched and the batch scaling rule.
    optimizer = build_optimizer(cfg.optim, setup.model, lr=sweep["min_lr"])
    ramp = LambdaLR(optimizer, lambda update: lr_at(min(update, sweep["steps"] - 1), sweep) / sweep["min_lr"])
    sweeping = replace(setup, optimizer=optimizer, scheduler=ramp)
    generator = torch.Generator().manual_seed(cfg.seed)
    stream = endless_batches(setup.data, setup.batch_size, generator)

    rows, done, started = [], 0, time.perf_counter()
    while done < sweep["steps"]:
        chunk = min(sweep["eval_every"], sweep["steps"] - done)
        metrics = train_steps(sweeping, itertools.islice(stream, chunk))
        done += chunk
        finite = math.isfinite(metrics["train/loss"])
        val = evaluate(setup, "val") if finite else {"loss": math.nan, "acc": math.nan}
        rows.append(
            {
                "step": done,
                "epoch": round(done / setup.steps_per_epoch, 4),
                **metrics,
                "val/loss": val["loss"],
                "val/acc": val["acc"],
            }
        )
        logger.log(rows[-1], step=rows[-1]["epoch"])
        lr = metrics["lr"]
        print(
            f"ablate: lr_range {done}/{sweep['steps']} lr {lr:.3g} val/loss {val['loss']:.4g} val/acc {val['acc']:.4f}"
        )
        if diverged(rows, sweep["stop_factor"]):
            print(f"ablate: lr_range stopped at lr {lr:.3g}: the loss is diverging")
            break

    record.write_range_test(record_dir, rows)  # before any suggestion can fail
    lrs = [row["lr"] for row in rows]
    suggestion = suggest_bounds(
        lrs, acc=[row["val/acc"] for row in rows], loss=[row["val/loss"] for row in rows], criterion=sweep["criterion"]
    )
    result = {
        **suggestion,
        # Never above chance: the best LR of the sweep is noise, not a bound (report() says so).
        "learned": not at_chance([row["val/acc"] for row in rows], setup.data.num_classes),
        "criterion": sweep["criterion"],
        "sweep": {**sweep, "steps_done": done, "lr_reached": lrs[-1]},
        "command": cyclical_command(suggestion),
    }
    record.atomic_write_json(record_dir / record.RANGE_TEST_SUGGESTION, result)
    plot(rows, result, record_dir / record.RANGE_TEST_PLOT)
    report(result, record_dir)
    seconds = round(time.perf_counter() - started, 3)
    return {"status": "completed", "lr_range": result, "steps": done, "wall_seconds": seconds}


def check_lr_range(node: DictConfig | None, *, total_steps: int) -> dict:
    """The lr_range config as plain values, with nulls filled in; ConfigError for bad ones."""
    if node is None:
        raise ConfigError("lr_range: missing from the config; add the lr_range node of conf/config.yaml")
    min_lr, max_lr, scale = node.min_lr, node.max_lr, node.scale
    if not (isinstance(min_lr, (int, float)) and min_lr > 0):
        raise ConfigError(f"lr_range.min_lr={min_lr}: must be a positive LR; e.g. lr_range.min_lr=1e-5")
    if not (isinstance(max_lr, (int, float)) and max_lr > min_lr):
        raise ConfigError(f"lr_range.max_lr={max_lr}: must be above lr_range.min_lr={min_lr}; e.g. lr_range.max_lr=1.0")
    if scale not in SCALES:
        raise ConfigError(f"lr_range.scale={scale}: unknown; use exp (even steps in log LR) or linear")
    steps = total_steps if node.steps is None else node.steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ConfigError(f"lr_range.steps={steps}: must be a positive number of updates, or null for the run's length")
    eval_every = max(1, steps // DEFAULT_POINTS) if node.eval_every is None else node.eval_every
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every <= 0:
        raise ConfigError(f"lr_range.eval_every={eval_every}: must be a positive number of updates, or null")
    if steps // eval_every < MIN_POINTS:
        raise ConfigError(
            f"lr_range.eval_every={eval_every}: gives fewer than {MIN_POINTS} evaluations in {steps} updates; "
            f"use lr_range.eval_every<={steps // MIN_POINTS} or more lr_range.steps"
        )
    if node.criterion not in CRITERIA:
        raise ConfigError(
            f"lr_range.criterion={node.criterion}: unknown; use acc (best val/acc) or loss (steepest descent)"
        )
    stop_factor = node.stop_factor
    if stop_factor is not None and not (isinstance(stop_factor, (int, float)) and stop_factor > 1):
        raise ConfigError(f"lr_range.stop_factor={stop_factor}: must be above 1, or null to sweep to lr_range.max_lr")
    return {
        "min_lr": float(min_lr),
        "max_lr": float(max_lr),
        "scale": scale,
        "steps": steps,
        "eval_every": eval_every,
        "criterion": node.criterion,
        "stop_factor": stop_factor,
    }


def lr_at(update: int, sweep: dict) -> float:
    """The LR of update 0 .. steps - 1: min_lr to max_lr, evenly in log LR (exp) or in LR (linear)."""
    progress = update / (sweep["steps"] - 1)
    if sweep["scale"] == "exp":
        return sweep["min_lr"] * (sweep["max_lr"] / sweep["min_lr"]) ** progress
    return sweep["min_lr"] + (sweep["max_lr"] - sweep["min_lr"]) * progress


def endless_batches(data, batch_size: int, generator: torch.Generator):
    """Training batches, one shuffled epoch after another."""
    while True:
        yield from data.train_batches(batch_size, generator)


def diverged(rows: list[dict], stop_factor: float | None) -> bool:
    """True once the loss is not finite, or the val loss is `stop_factor` times its best so far."""
    last = rows[-1]
    if not (math.isfinite(last["train/loss"]) and math.isfinite(last["val/loss"])):
        return True
    return stop_factor is not None and last["val/loss"] > stop_factor * min(row["val/loss"] for row in rows)


def suggest_bounds(lrs: list[float], *, acc: list[float], loss: list[float], criterion: str) -> dict:
    """Cyclical bounds from a sweep: max_lr by the criterion, base_lr = max_lr / 3 (the articles' rule).

    acc: the LR with the best accuracy (the lowest such LR on a tie). loss: the LR where the (lightly smoothed)
    loss falls fastest against log LR. at_edge is true when that LR is the first or last finite point, so the
    sweep should be widened.
    """
    points = [(lr, a, v) for lr, a, v in zip(lrs, acc, loss) if math.isfinite(a) and math.isfinite(v)]
    if len(points) < MIN_POINTS:
        raise ConfigError(
            f"lr_range.min_lr: only {len(points)} evaluations before the loss diverged (at lr {lrs[-1]:.3g}); "
            "lower lr_range.min_lr or evaluate more often (lr_range.eval_every)"
        )
    lr_values = np.array([p[0] for p in points])
    if criterion == "acc":
        best = int(np.argmax([p[1] for p in points]))
    else:
        slopes = np.gradient(smooth([p[2] for p in points]), np.log(lr_values))
        best = int(np.argmin(slopes))
    max_lr = float(lr_values[best])
    return {"base_lr": max_lr / 3, "max_lr": max_lr, "at_edge": best in (0, len(points) - 1)}


def smooth(values: list[float], window: int = 3) -> np.ndarray:
    """Centred moving average; the ends average what they have."""
    half = window // 2
    return np.array([np.mean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))])


def cyclical_command(suggestion: dict) -> str:
    """The command line that trains with these bounds, keeping the range test's other overrides (model, data...)."""
    carried = []
    if HydraConfig.initialized():
        carried = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(NOT_CARRIED)]
    bounds = f"sched.base_lr={suggestion['base_lr']:.3g} sched.max_lr={suggestion['max_lr']:.3g}"
    return " ".join(["python -m ablate", *carried, "sched=cyclical", bounds])


def plot(rows: list[dict], result: dict, path: Path) -> None:
    """Accuracy and loss against the LR (log axis), with the suggested bounds shaded."""
    lrs = [row["lr"] for row in rows]
    fig, (acc_ax, loss_ax) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True, layout="constrained")
    for split, style in (("train", "--"), ("val", "-")):
        acc_ax.plot(lrs, [row[f"{split}/acc"] for row in rows], style, marker=".", label=split)
        loss_ax.plot(lrs, [row[f"{split}/loss"] for row in rows], style, marker=".", label=split)
    for ax in (acc_ax, loss_ax):
        ax.axvspan(result["base_lr"], result["max_lr"], color="C2", alpha=0.15, label="cyclical bounds")
        ax.axvline(result["max_lr"], color="C2")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # A diverging end would flatten the descent that matters; show up to 1.5 times the starting loss.
    start_loss = max(rows[0]["train/loss"], rows[0]["val/loss"])
    if math.isfinite(start_loss):
        loss_ax.set_ylim(0, 1.5 * start_loss)
    acc_ax.set_ylabel("accuracy")
    loss_ax.set_ylabel("loss")
    loss_ax.set_xlabel("learning rate")
    by = "best val/acc" if result["criterion"] == "acc" else "steepest val/loss descent"
    acc_ax.set_title(f"LR range test: max_lr {result['max_lr']:.3g} ({by}), base_lr {result['base_lr']:.3g}")
    save(fig, path)


def report(result: dict, record_dir: Path) -> None:
    print(f"ablate: lr_range suggests sched.base_lr={result['base_lr']:.3g} sched.max_lr={result['max_lr']:.3g}")
    if not result.get("learned", True):
        print(
            "ablate: warning: val/acc never left chance during the sweep, so these bounds are noise; "
            "lengthen it (trainer.epochs or lr_range.steps) or try model.batch_norm=true"
        )
    if result["at_edge"]:
        print("ablate: warning: the chosen LR is at the edge of the sweep; widen lr_range.min_lr..lr_range.max_lr")
    print(f"ablate: train with them:\n  {result['command']}")
    print(f"ablate: or take them from this record:  sched=cyclical sched.bounds_from={record_dir}")
