"""The LR range test: a real sweep on a small learnable task, the bound suggestion on known curves, bad input."""

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from ablate import record
from ablate.analysis import figures
from ablate.analysis.pipeline import analyze
from ablate.config import load_option
from ablate.errors import ConfigError
from ablate.loop import Setup
from ablate.lr_range import check_lr_range, cyclical_command, lr_at, report, run_lr_range, suggest_bounds
from ablate.schedules import build_scheduler
from ablate.sweep import summary_lines
from ablate.tracking import NullLogger

CONF = Path(__file__).resolve().parent.parent / "ablate" / "conf"


@pytest.fixture(autouse=True)
def one_thread():
    """A tiny model trains faster on one thread than on oversubscribed shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Blobs:
    """Four well-separated Gaussian blobs in 8 dimensions, with the loop's data interface (train/eval batches)."""

    num_classes = 4

    def __init__(self, train_size: int = 512, val_size: int = 256):
        generator = torch.Generator().manual_seed(0)
        centres = 3 * torch.randn(4, 8, generator=generator)

        def draw(n):
            labels = torch.arange(n) % 4
            return centres[labels] + torch.randn(n, 8, generator=generator), labels

        self.train, self.val = draw(train_size), draw(val_size)

    def train_batches(self, batch_size, generator):
        order = torch.randperm(len(self.train[1]), generator=generator)
        for index in order[: len(order) // batch_size * batch_size].view(-1, batch_size):
            yield self.train[0][index], self.train[1][index]

    def eval_batches(self, split, batch_size):
        x, y = self.val
        yield from zip(x.split(batch_size), y.split(batch_size))


def range_test(tmp_path, batch_size=32, model=None, blind=False, **lr_range):
    """The range test on Blobs; `blind` zeroes the inputs, so no model can do better than chance."""
    torch.manual_seed(0)
    model = model or torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = Blobs()
    if blind:
        data.train, data.val = [(torch.zeros_like(x), y) for x, y in (data.train, data.val)]
    # The Setup's own optimizer and schedule are the run's; the range test replaces them with its own.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    setup = Setup(
        device=torch.device("cpu"),
        data=data,
        model=model,
        forward=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: 1.0),
        lr=0.01,
        precision="fp32",
        channels_last=False,
        batch_size=batch_size,
        steps_per_epoch=len(data.train[1]) // batch_size,
        clock_steps=len(data.train[1]) // batch_size,
        total_steps=3 * (len(data.train[1]) // batch_size),
        epochs=3,
    )
    settings = dict(min_lr=1e-4, max_lr=3.0, steps=120, scale="exp", eval_every=6, criterion="acc", stop_factor=None)
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "batch": {"size": batch_size},
            "trainer": {"epochs": 3},
            "optim": load_option("optim", "sgd"),
            "lr_range": {**settings, **lr_range},
        }
    )
    sweep = check_lr_range(cfg.lr_range, total_steps=setup.total_steps)
    return run_lr_range(cfg, sweep, setup, tmp_path, NullLogger(run={})), cfg


def curves(record_dir: Path) -> list[dict]:
    rows, _ = record.read_range_test(record_dir)
    return rows


def test_a_range_test_sweeps_the_lr_up_and_suggests_bounds_inside_the_sweep(tmp_path):
    summary, cfg = range_test(tmp_path)
    rows = curves(tmp_path)
    lrs = [row["lr"] for row in rows]
    sweep = check_lr_range(cfg.lr_range, total_steps=48)
    assert len(rows) == 120 // 6
    assert all(b > a for a, b in zip(lrs, lrs[1:]))
    # Each point is the LR of the last update before its evaluation.
    assert lrs == pytest.approx([lr_at(int(row["step"]) - 1, sweep) for row in rows], rel=1e-9)
    assert lrs[0] >= 1e-4 and lrs[-1] == pytest.approx(3.0)

    suggestion = json.loads((tmp_path / record.RANGE_TEST_SUGGESTION).read_text())
    assert 1e-4 <= suggestion["base_lr"] < suggestion["max_lr"] <= 3.0
    assert suggestion["base_lr"] == pytest.approx(suggestion["max_lr"] / 3)
    best = max(rows, key=lambda row: row["val/acc"])
    assert suggestion["max_lr"] == pytest.approx(best["lr"])
    assert best["val/acc"] > 0.9  # the task is learnable, so the sweep found where it learns
    assert "sched=cyclical" in suggestion["command"]
    assert f"sched.max_lr={suggestion['max_lr']:.3g}" in suggestion["command"]
    assert summary["status"] == "completed" and summary["lr_range"]["max_lr"] == suggestion["max_lr"]
    assert suggestion["learned"] is True
    assert (tmp_path / record.RANGE_TEST_PLOT).stat().st_size > 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(rows)


def test_a_cyclical_schedule_takes_its_bounds_from_the_range_test_record(tmp_path):
    range_test(tmp_path, steps=60, eval_every=6)
    suggestion = json.loads((tmp_path / record.RANGE_TEST_SUGGESTION).read_text())
    overrides = {"bounds_from": str(tmp_path), "unit": "iters", "stepsize": 10, "warmup_epochs": 0}
    cfg = OmegaConf.merge(load_option("sched", "cyclical"), overrides)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01, momentum=0.9)
    build_scheduler(cfg, optimizer, steps_per_epoch=10, total_steps=100)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(suggestion["base_lr"])


def test_the_sweep_stops_once_the_loss_diverges(tmp_path):
    range_test(tmp_path, max_lr=1e4, stop_factor=4.0)
    lrs = [row["lr"] for row in curves(tmp_path)]
    assert lrs[-1] < 1e4 and len(lrs) < 120 // 6


def test_a_linear_sweep_is_even_in_lr():
    sweep = {"min_lr": 0.01, "max_lr": 0.1, "steps": 11, "scale": "linear"}
    assert [lr_at(i, sweep) for i in (0, 5, 10)] == pytest.approx([0.01, 0.055, 0.1])
    sweep["scale"] = "exp"
    assert [lr_at(i, sweep) for i in (0, 5, 10)] == pytest.approx([0.01, 0.1**1.5, 0.1])


LRS = list(np.logspace(-4, 0, 9))  # 1e-4 ... 1, half a decade apart


def test_suggestion_by_accuracy_is_the_best_accuracy_and_a_third_of_it():
    acc = [0.1, 0.2, 0.4, 0.6, 0.8, 0.7, 0.5, 0.3, 0.1]
    suggestion = suggest_bounds(LRS, acc=acc, loss=[1.0] * 9, criterion="acc")
    assert suggestion == {"base_lr": pytest.approx(LRS[4] / 3), "max_lr": pytest.approx(LRS[4]), "at_edge": False}


def test_suggestion_by_accuracy_takes_the_lower_lr_on_a_tie():
    acc = [0.1, 0.2, 0.8, 0.5, 0.8, 0.3, 0.1, 0.1, 0.1]
    assert suggest_bounds(LRS, acc=acc, loss=[1.0] * 9, criterion="acc")["max_lr"] == pytest.approx(LRS[2])


def test_suggestion_by_loss_is_the_steepest_descent_in_log_lr():
    # The loss falls fastest at 1e-2 (index 4) and blows up past 0.1: the steepest descent ignores the blow-up.
    loss = [2.3 - 1.0 * math.tanh(2 * (math.log10(lr) + 2)) + (5.0 if lr > 0.1 else 0.0) for lr in LRS]
    suggestion = suggest_bounds(LRS, acc=[0.5] * 9, loss=loss, criterion="loss")
    assert suggestion["max_lr"] == pytest.approx(LRS[4])


def test_points_after_divergence_are_ignored_and_the_edge_is_flagged():
    acc = [0.1, 0.3, 0.5, 0.7, math.nan, math.nan, math.nan, math.nan, math.nan]
    loss = [2.0, 1.5, 1.0, 0.8, math.inf, math.nan, math.nan, math.nan, math.nan]
    suggestion = suggest_bounds(LRS, acc=acc, loss=loss, criterion="acc")
    assert suggestion["max_lr"] == pytest.approx(LRS[3]) and suggestion["at_edge"] is True


def test_too_few_finite_points_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^lr_range\.min_lr"):
        suggest_bounds(LRS[:4], acc=[0.1, 0.2, math.nan, math.nan], loss=[1, 1, math.nan, math.nan], criterion="acc")


def test_a_sweep_that_never_leaves_chance_says_its_bounds_are_noise(tmp_path, capsys):
    # Four classes: chance is 25%. A model that cannot see its input stays there for the whole sweep, and the
    # best of its flat curve is an accident of noise, not an LR bound.
    summary, _ = range_test(tmp_path, model=torch.nn.Sequential(torch.nn.Linear(8, 4)), blind=True)
    assert summary["lr_range"]["learned"] is False
    assert "val/acc never left chance during the sweep, so these bounds are noise" in capsys.readouterr().out
    result = {"base_lr": 1e-4, "max_lr": 3e-4, "at_edge": False, "learned": False, "command": "python -m ablate"}
    report(result, Path("runs/x"))
    assert "val/acc never left chance during the sweep, so these bounds are noise" in capsys.readouterr().out


GOOD = dict(min_lr=1e-5, max_lr=1.0, steps=None, scale="exp", eval_every=None, criterion="acc", stop_factor=4.0)


def test_nulls_default_to_the_run_length_and_forty_points():
    sweep = check_lr_range(OmegaConf.create(GOOD), total_steps=800)
    assert (sweep["steps"], sweep["eval_every"]) == (800, 20)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"min_lr": -1e-5}, "lr_range.min_lr"),
        ({"max_lr": 1e-6}, "lr_range.max_lr"),
        ({"scale": "log"}, "lr_range.scale"),
        ({"steps": 0}, "lr_range.steps"),
        ({"steps": 10, "eval_every": 5}, "lr_range.eval_every"),
        ({"criterion": "f1"}, "lr_range.criterion"),
        ({"stop_factor": 0.5}, "lr_range.stop_factor"),
    ],
)
def test_bad_lr_range_input_is_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}=") as error:
        check_lr_range(OmegaConf.create({**GOOD, **overrides}), total_steps=800)
    assert "\n" not in str(error.value)


def test_the_root_config_has_the_lr_range_node(compose):
    cfg = compose("mode=lr_range")
    check_lr_range(cfg.lr_range, total_steps=1000)


def test_the_analysis_draws_a_range_tests_real_record(tmp_path, monkeypatch):
    range_test(tmp_path, steps=60, eval_every=6)
    suggestion = json.loads((tmp_path / record.RANGE_TEST_SUGGESTION).read_text())
    table, bounds = figures.read_lr_range(tmp_path)
    assert len(table) == 10 and {"lr", "train/loss", "train/acc", "val/loss", "val/acc"} <= set(table.columns)
    assert bounds == {
        "lower": suggestion["base_lr"],
        "upper": suggestion["max_lr"],
        "at_edge": suggestion["at_edge"],
        "learned": suggestion["learned"],
    }
    # The sweep ends diverged (a loss in the hundreds of thousands; the embedded data's allconv8_1 reached 4e30):
    # that point must not flatten the curves, so the loss axis stops at 1.5 times the first loss, as the run's own
    # plot does.
    first = max(float(table[c].dropna().iloc[0]) for c in ("val/loss", "train/loss"))
    assert table["val/loss"].max() > 1000 * first
    limits = []
    real_save = figures.save
    monkeypatch.setattr(
        figures, "save", lambda fig, path: limits.append(fig.axes[0].get_ylim()) or real_save(fig, path)
    )
    arm = SimpleNamespace(label="blobs", completed={"record_dir": [str(tmp_path)]}, x=lambda key: float("nan"))
    drawn = figures.lr_range([arm], tmp_path / "figures" / "lr_range.png", "blobs: LR range test")
    assert drawn.read_bytes().startswith(b"\x89PNG")
    assert limits == [(0.0, pytest.approx(1.5 * first))]
    assert not [p for p in (tmp_path / "figures").iterdir() if p.name != "lr_range.png"]  # no temp file left
    assert figures.read_lr_range(tmp_path / "figures") == (None, {})


def test_a_range_test_study_reports_each_runs_bounds_and_flags_the_noise_not_an_accuracy(tmp_path):
    # Three seeds of one model, as +sweep=lr_range files them, and the table the collector writes beside them. Seed 1
    # sweeps to a lower top LR, so its bounds differ; seed 2 sees blank inputs and never leaves chance. The table
    # lists seed 1 first.
    records = {seed: tmp_path / "runs" / f"rec{seed}" for seed in (1, 0, 2)}
    for seed, folder in records.items():
        folder.mkdir(parents=True)
        range_test(folder, steps=60, eval_every=6, max_lr=0.3 if seed == 1 else 3.0, blind=seed == 2)
    rows = [
        {"status": "completed", "seed": seed, "model": "allconv5", "mode": "lr_range", "record_dir": str(folder)}
        | {"data": "blobs", "data.classes": 4, "steps": 60, "wall_seconds": 1.0}
        | {"final/val/acc": None, "final/test/acc": None}  # a range test's record holds curves, not a final accuracy
        for seed, folder in records.items()
    ]
    (tmp_path / "results" / "lr_range").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "results" / "lr_range" / "runs.csv", index=False)
    bounds = [json.loads((records[seed] / record.RANGE_TEST_SUGGESTION).read_text()) for seed in (0, 1, 2)]
    assert bounds[0]["max_lr"] != bounds[1]["max_lr"] and [b["learned"] for b in bounds] == [True, True, False]
    edge, noise = " (at the sweep's edge)", " (never left chance: noise)"
    expected = ", ".join(
        f"{b['base_lr']:.3g}..{b['max_lr']:.3g}{edge * b['at_edge']}{noise * (not b['learned'])}" for b in bounds
    )

    # The sweep's own summary: the bounds by seed, where a study that compares accuracies gives one.
    assert summary_lines("lr_range", tmp_path / "results") == [
        "sweep lr_range: the LR bounds each range test suggests per model (sched.base_lr..sched.max_lr, a seed each)",
        f"  allconv5  {expected}",
    ]
    # The report: a row per run, by seed, the blind one flagged; no accuracy reading, selection or interval.
    text = analyze("lr_range", tmp_path / "results").read_text()
    table = [line for line in text.splitlines() if line.startswith("| allconv5 |")]
    assert [line.split(" | ")[1] for line in table] == ["0", "1", "2"]
    assert [line.endswith("the bounds are noise |") for line in table] == [False, False, True]
    assert "- **What this budget measured**: an LR range test per run, not an accuracy:" in text
    assert "| selection |" not in text and "| interval |" not in text and "| precision target |" not in text
    # A clone without the records: still a range-test report, from the table; it says where the bounds are and keeps
    # the figure drawn where the records were.
    shutil.rmtree(tmp_path / "runs")
    text = analyze("lr_range", tmp_path / "results").read_text()
    assert "- **What this budget measured**: an LR range test per run, not an accuracy:" in text
    assert "| selection |" not in text and "| allconv5 |" not in text
    assert "The suggested bounds are in the records (`lr_range.json`), which are not on this machine" in text
    assert "](figures/lr_range.png)" in text


def test_the_suggested_command_trains_instead_of_testing_again(compose):
    # A job of `python -m ablate +sweep=lr_range model=allconv5 ...`, as Hydra hands it its overrides.
    job = ("+sweep=lr_range", "model=allconv5", "seed=1", "data.train_size=320", "mode=lr_range", "lr_range.steps=50")
    HydraConfig.instance().set_config(compose(*job, return_hydra_config=True))
    command = cyclical_command({"base_lr": 0.01, "max_lr": 0.03})
    program, overrides = command.split()[:3], command.split()[3:]
    assert program == ["python", "-m", "ablate"]
    assert overrides == ["model=allconv5", "seed=1", "data.train_size=320", "sched=cyclical"] + [
        "sched.base_lr=0.01",
        "sched.max_lr=0.03",
    ]
    cfg = compose(*overrides, return_hydra_config=True)
    assert cfg.mode == "train" and cfg.study.name == "single" and cfg.hydra.mode != RunMode.MULTIRUN
    assert (cfg.model.name, cfg.seed, cfg.sched.base_lr, cfg.sched.max_lr) == ("allconv5", 1, 0.01, 0.03)
