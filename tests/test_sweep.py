"""Studies as real multiruns through `python -m ablate` in a subprocess: every launcher, skip-if-done, more seeds,
a sweep killed with SIGKILL and started again, failing and diverging jobs, and the table a sweep leaves."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from ablate import record
from ablate.analysis import analyze, stats
from ablate.collect import HEAD_COLUMNS, RECORD_COLUMNS
from ablate.optim import effective_lr
from ablate.resolvers import override_value
from ablate.sweep import OUTCOME, WORKER_ENVIRONMENT
from hydra_plugins.ablate_sweeper import expected_cost

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "ablate" / "conf"
# A study is its sweep file (plus its claims): conf/sweep/base/ holds what they share and is no study.
STUDIES = sorted(path.stem for path in (CONF / "sweep").glob("*.yaml"))
# A few seconds per job on one core: 256 training images, one epoch; the smoke budget (no halving, no added seeds).
TINY = (
    "budget=smoke",
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
    "batch.size=32",
    "trainer.epochs=1",
    "sched.warmup_epochs=0",  # the default warm-up epoch would be the whole of a one-epoch run
    "logger=none",
)
# The budget every test sweep runs at (TINY): its name is a level of the runs and results folders.
BUDGET = "smoke"
COUNTS = re.compile(r"sweep (\w+): (\d+) completed, (\d+) stopped, (\d+) skipped, (\d+) diverged, (\d+) failed")


def command(tmp_path: Path, *args: str) -> list[str]:
    paths = (
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.results={tmp_path / 'results'}",
        f"paths.cache={tmp_path / 'cache'}",
    )
    return [sys.executable, "-m", "ablate", *args, *paths]


def environment() -> dict:
    # One torch thread per job: the tests share two cores with the rest of the suite. PYTHONPATH: this tree's code,
    # whatever else the interpreter has installed.
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def sweep(tmp_path: Path, *args: str, timeout_s: int = 300, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command(tmp_path, *args), cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=timeout_s
    )
    assert result.returncode == 0 or not ok, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def error_line(tmp_path: Path, *args: str) -> str:
    """A sweep that must stop on bad input before any job: exit status 2, and its one `ablate: error:` line."""
    result = sweep(tmp_path, *args, ok=False)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("ablate: error:")]
    assert "Launching" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr[-3000:]  # the line alone
    return line


def counts(result: subprocess.CompletedProcess) -> dict:
    """The sweep's last line, `sweep <study>: N completed, N stopped, N skipped, ...`, as numbers; a sweep without
    successive halving stops nothing, so `stopped` is checked here and left out of the returned counts."""
    (match,) = COUNTS.findall(result.stdout)
    found = dict(zip(("completed", "stopped", "skipped", "diverged", "failed"), map(int, match[1:])))
    assert found.pop("stopped") == 0, result.stdout[-2000:]
    return found


def study_dir(tmp_path: Path, study: str) -> Path:
    """The folder of a study's runs on the embedded data at the default budget: runs/<study>/synthetic/<budget>/."""
    return tmp_path / "runs" / study / "synthetic" / BUDGET


def records(tmp_path: Path, study: str) -> list[dict]:
    """Every summary.json of the study folder; each must be valid JSON and filed under its own identity."""
    summaries = []
    for path in sorted(study_dir(tmp_path, study).glob(f"*/{record.SUMMARY}")):
        summary = json.loads(path.read_text())
        assert path.parent.name == summary["identity"]
        summaries.append(summary)
    return summaries


def table(tmp_path: Path, study: str) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "results" / "synthetic" / BUDGET / study / "runs.csv")


def test_the_studies_are_the_sweep_files():
    assert {"depth", "depth_bn", "width", "mobilenet_depth", "mobilenet_width", "lr_policy", "optimizer"} <= set(
        STUDIES
    )
    assert {"batch_size", "lr_range"} <= set(STUDIES) and "base" not in STUDIES


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_is_a_multirun_over_its_axes_declared_once_and_three_seeds(study, compose):
    cfg = compose(f"+sweep={study}", return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.study.name == study  # from the file's name, nowhere else
    params = cfg.hydra.sweeper.params
    axes = {**cfg.study.scientific, **cfg.study.nuisance}
    assert cfg.study.scientific and set(params) == {*axes, *cfg.study.fixed, "seed"}
    for key, values in axes.items():
        assert params[key] == ",".join(str(v) for v in values), key
    assert len(params["seed"].split(",")) >= 3
    # The file opens with what it measures and how to run it (after Hydra's package line, which must come first).
    lines = (CONF / "sweep" / f"{study}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_" and f"python -m ablate +sweep={study}" in lines[1]
    assert "hydra" not in OmegaConf.load(CONF / "sweep" / f"{study}.yaml"), "the sweeper's params come from study"


def test_a_sweep_parameter_is_written_so_that_hydra_reads_the_same_value_back():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for value in (0.0003, 1e-05, 3, True, None, "allconv7_1", "sgd_momentum0.8", "a b", "true", [0.9, 0.99]):
        override = parser.parse_override(f"key={override_value(value)}")
        assert override.value() == value, value


def test_a_fixed_key_is_one_sweep_value_and_the_command_line_still_replaces_every_list(compose):
    params = compose("+sweep=depth_bn", return_hydra_config=True).hydra.sweeper.params
    assert params["model.batch_norm"] == "true"
    # Hydra appends the command line's sweep overrides after these params, so `seed=0,1,2,3,4` replaces seed's list:
    # the subprocess sweeps below pass model=..., optim.lr=... and seed=... and count exactly the jobs they asked for.
    mobilenet = compose("+sweep=mobilenet_width", return_hydra_config=True).hydra.sweeper.params
    assert (mobilenet["model"], mobilenet["optim"], mobilenet["sched"]) == ("mobilenet16", "adam", "fixed")


def test_a_study_limits_every_dataset_through_data_limit_and_single_runs_keep_all(compose):
    cfg = compose("+sweep=depth")
    assert dict(cfg.data.limit) == {"train": 5000, "val": 1000, "test": 2000}  # budget=cpu, a study's default
    assert compose("+sweep=width", "budget=smoke").data.limit.train == 256
    assert compose("+sweep=depth", "data.limit.train=300").data.limit.train == 300  # the command line still wins
    assert compose("+sweep=depth", "data=imagefolder", "data.root=/images").data.limit.train == 5000
    single = compose("data=synthetic").data
    assert dict(single.limit) == {"train": None, "val": None, "test": None} and single.train_size == 5000
    # The data config no longer reads the study node.
    assert "study" not in OmegaConf.to_yaml(single)


def test_the_optimizer_studys_lr_factor_multiplies_each_arms_own_lr(compose):
    for arm, lr in (("sgd_momentum0.95", 0.03), ("adadelta", 3.0), ("adam", 0.003)):
        cfg = compose("+sweep=optimizer", f"optim={arm}", "optim.lr_factor=3")
        assert effective_lr(cfg.optim, cfg.batch).effective == lr, arm


def test_parallel_launcher_uses_every_core_with_one_thread_each(compose):
    cfg = compose("launcher=parallel", return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    if not torch.cuda.is_available():
        assert cfg.hydra.launcher.n_jobs == len(os.sched_getaffinity(0))
        assert cfg.trainer.device == "auto"
    assert cfg.trainer.threads == 1
    assert compose("launcher=parallel", "trainer.threads=2").trainer.threads == 2  # the command line still wins


def test_slurm_launcher_takes_its_resources_from_config(compose, monkeypatch):
    cfg = compose(
        "launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.array_parallelism=8", return_hydra_config=True
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.array_parallelism) == ("gpu", 8)
    for key in ("gpus_per_node", "timeout_min", "cpus_per_task", "mem_gb"):
        assert launcher[key] is not None, key
    # A run's torch threads are the CPUs SLURM gave its task.
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert compose("launcher=slurm").trainer.threads == 6
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert compose("launcher=slurm").trainer.threads is None
    assert compose("launcher=submitit_local", return_hydra_config=True).hydra.launcher._target_.endswith(
        "LocalLauncher"
    )


def test_sweep_without_dash_m_runs_the_study_then_skips_it_then_runs_only_new_seeds(tmp_path):
    study = ("+sweep=depth", "model=allconv5,allconv6", "optim.lr=0.01", *TINY)
    first = sweep(tmp_path, *study, "seed=0")
    assert counts(first) == {"completed": 2, "skipped": 0, "diverged": 0, "failed": 0}
    # Nothing timed yet, so the model's arithmetic orders the launch: allconv6 (4.9M MACs) before allconv5 (1.3M).
    assert re.search(r"#0 : model=allconv6 ", first.stdout + first.stderr), (first.stdout + first.stderr)[-2000:]
    assert [s["status"] for s in records(tmp_path, "depth")] == ["completed"] * 2
    runs = table(tmp_path, "depth")
    assert len(runs) == 2 and set(runs["model"]) == {"allconv5", "allconv6"}

    again = sweep(tmp_path, *study, "seed=0")
    assert counts(again) == {"completed": 0, "skipped": 2, "diverged": 0, "failed": 0}
    assert again.stdout.count("already completed") == 2

    more = sweep(tmp_path, *study, "seed=0,1,2")
    assert counts(more) == {"completed": 4, "skipped": 2, "diverged": 0, "failed": 0}
    summaries = records(tmp_path, "depth")
    assert sorted((s["choices"]["model"], s["seed"]) for s in summaries) == [
        (model, seed) for model in ("allconv5", "allconv6") for seed in (0, 1, 2)
    ]
    runs = table(tmp_path, "depth")
    assert len(runs) == 6 and runs["identity"].is_unique
    assert set(runs["status"]) == {"completed"}


def test_before_any_run_is_timed_a_runs_cost_is_its_models_macs_times_its_images(compose):
    def cost(*overrides):
        return expected_cost(compose(*overrides))

    assert cost("+sweep=depth", "model=allconv8_1") > 50 * cost("+sweep=depth", "model=allconv5")
    assert cost("+sweep=width", "model=allconv6_1") < cost("+sweep=width", "model=allconv6")
    # Equal updates at every batch size: batch 1024 sees 64 times the images of batch 16; at equal epochs, the same.
    # (The study's fixed batch.hold reaches each job as an override, as it does here.)
    updates, epochs = ("+sweep=batch_size", "batch.hold=updates"), ("+sweep=batch_size", "batch.hold=epochs")
    assert cost(*updates, "batch.size=1024") == 64 * cost(*updates, "batch.size=16")
    assert cost(*epochs, "batch.size=1024") == cost(*epochs, "batch.size=16")


def test_successive_halving_stops_the_worse_settings_at_the_rung_and_finishes_the_rest(tmp_path):
    tiny = [arg for arg in TINY if not arg.startswith("trainer.epochs")]
    study = ("+sweep=depth", "model=allconv5", "optim.lr=0.1,0.03,0.01", "seed=0,1", "trainer.epochs=2", *tiny)
    result = sweep(tmp_path, *study, "study.halving={rungs:[0.5],eta:3}")
    assert "halving at epoch 1/2: 2 of 6 runs continue, 4 stop" in result.stderr + result.stdout
    # The whole is unknown while halving decides; its progress lines count within each step.
    assert "sweep depth, rung 1 (to epoch 1 of 2): 6/6 done" in result.stderr + result.stdout
    assert "sweep depth, the survivors to the end: 2/2 done" in result.stderr + result.stdout
    # Each step the records could time says what it took against the time limit's estimate; the first rung, which
    # no record had timed, cannot.
    assert re.search(r"the survivors to the end: took \d+\.\d min, estimated \d+\.\d \(", result.stderr + result.stdout)
    assert "rung 1 (to epoch 1 of 2): took" not in result.stderr + result.stdout
    # A stopped run's one last line says where it paused.
    assert (result.stderr + result.stdout).count("stopped after epoch 1 (checkpoint kept): test acc") == 6
    # The last outcome of each record: the survivors' completion replaces their `stopped` at the rung.
    found = re.search(r"(\d+) completed, (\d+) stopped", result.stdout)
    assert found.groups() == ("2", "4")
    summaries = records(tmp_path, "depth")
    by_lr = {}
    for s in summaries:
        by_lr.setdefault(s["lr"]["base"], set()).add((s["status"], s["epochs_completed"]))
    assert sorted(by_lr.values(), key=str) == sorted(
        [{("completed", 2)}, {("stopped", 1)}, {("stopped", 1)}], key=str
    ), by_lr
    runs = table(tmp_path, "depth")
    assert sorted(runs["status"]) == ["completed"] * 2 + ["stopped"] * 4  # stopped runs are rows, never dropped

    # The study again: every record already holds what it asks for, nothing trains.
    again = sweep(tmp_path, *study, "study.halving={rungs:[0.5],eta:3}")
    assert re.search(r"0 completed, 0 stopped, (\d+) skipped", again.stdout), again.stdout[-2000:]


def just_under_the_width_of(accs: list[float]) -> float:
    """A precision target (points) a hair under the 95% half-width these seeds give, which one more seed can reach:
    what a trained net scores on a few test images differs between machines, so the tests of the target set it from
    the seeds they trained instead of a number measured on one machine."""
    interval = stats.mean_ci(accs)
    width = interval.high - interval.mean
    assert width > 0.5, f"the seeds {accs} agree too closely for a precision target to open"
    return math.floor(99 * width) / 100


# One BN net on three seeds at LR 0.1, 128 updates: off chance by a margin that differs per seed (the precision tests).
PRECISION_BN_NET = (
    "+sweep=depth_bn",
    "model=allconv5",
    "optim.lr=0.1",
    "seed=0,1,2",
    *TINY,
    "data.train_size=1024",
    "data.limit.train=1024",
    "trainer.epochs=4",
)


def test_the_precision_target_adds_a_seed_to_a_wide_value_that_no_claim_compares(tmp_path):
    # One BN net alone: depth_bn's claims compare two nets, so none is open for it, and only the target can add a
    # seed. 128 updates at LR 0.1 take it off chance (5% on 20 classes) by a margin that differs per seed and per
    # machine (64 test images, 1.6 points an image: 14-16% on one VM, 12-22% on another), so the target is set just
    # under the width its three seeds gave: wider than the target, and within what a fourth seed could reach.
    study = PRECISION_BN_NET
    without = sweep(tmp_path, *study, "study.more_seeds={max:4,per_look:1}")
    assert "adaptive seeds: 0 values still compared by an open claim (" in without.stderr + without.stdout
    assert sorted(s["seed"] for s in records(tmp_path, "depth_bn")) == [0, 1, 2]
    target = just_under_the_width_of([100 * s["final"]["test/acc"] for s in records(tmp_path, "depth_bn")])
    more_seeds = f"study.more_seeds={{max:4,per_look:1,half_width:{target}}}"
    # A time limit already spent: the look would end past it, and no claim is open to get seeds alone.
    late = sweep(tmp_path, *study, more_seeds, "study.minutes=0")
    assert (
        "time limit: a seed look of 1 run would take about 0 min, and the sweep has run 0 of study.minutes=0: no more "
        "seeds start" in late.stderr + late.stdout
    )
    assert sorted(s["seed"] for s in records(tmp_path, "depth_bn")) == [0, 1, 2]

    result = sweep(tmp_path, *study, more_seeds)
    assert f"adaptive seeds: 0 values still compared by an open claim and 1 other wider than ±{target:g} points" in (
        result.stderr + result.stdout
    )
    assert sorted(s["seed"] for s in records(tmp_path, "depth_bn")) == [0, 1, 2, 3]
    runs = table(tmp_path, "depth_bn")
    plan = json.loads(runs.loc[runs["seed"] == 3, "plan"].iloc[0])
    assert plan["more_seeds"]["half_width"] == target  # the report reads the target from here


# One BN net on two seeds, 128 updates, grid extension up to 2 steps and no halving: the extension tests' study.
EXTENDED_BN_NET = (
    "+sweep=depth_bn",
    "model=allconv5",
    "seed=0,1",
    *TINY,
    "data.train_size=1024",
    "data.limit.train=1024",
    "trainer.epochs=4",
    "study.halving=null",
    "study.extend_grid=2",
)


def test_a_best_lr_on_the_grids_end_gets_one_step_past_it_and_the_report_names_it(tmp_path):
    # LR 1e-5 leaves the BN net at chance and 0.01 takes it off in 128 updates (the test above), so 0.01, the grid's
    # top, is best: the extension runs 0.01 * 0.01 / 1e-5 = 10 on both seeds. 10 cannot beat it (it diverges or
    # stays lower), so 0.01 is then inside the tried values and the second step allowed finds nothing to extend.
    study = ("optim.lr=0.01,0.00001", *EXTENDED_BN_NET)
    # A time limit already spent: the grid still runs whole, the extension does not start ...
    limited = sweep(tmp_path, *study, "study.minutes=0")
    assert "time limit: grid extension step 1/2 (2 runs) would take about 0 min, and the sweep has run 0 of " in (
        limited.stderr + limited.stdout
    )
    assert len(records(tmp_path, "depth_bn")) == 4
    # ... and the same sweep without it goes on from those records.
    result = sweep(tmp_path, *study)
    assert counts(result)["skipped"] == 4
    log = result.stderr + result.stdout
    assert "grid extension 1/2: 2 runs past the grid's end, where a value's best setting on val sat on it" in log
    assert "(optim.lr=10)" in log and "grid extension 2/2" not in log
    lrs = sorted((s["lr"]["base"], s["seed"]) for s in records(tmp_path, "depth_bn"))
    assert lrs == [(1e-05, 0), (1e-05, 1), (0.01, 0), (0.01, 1), (10.0, 0), (10.0, 1)]
    runs = table(tmp_path, "depth_bn")
    assert {json.loads(p)["extend_grid"] for p in runs["plan"]} == {2}
    # The grid's records keep the limit they ran under (the report reads it from here); the extension's had none
    # (null, which the plan column leaves out as it does every key that is off).
    assert sorted((json.loads(p).get("minutes") for p in runs["plan"]), key=str) == [0, 0, 0, 0, None, None]
    assert runs.loc[runs["optim.lr"] == 10.0, "grid_step"].tolist() == [1, 1]
    assert runs.loc[runs["optim.lr"] != 10.0, "grid_step"].isna().all()  # the grid's own settings
    report = analyze(
        "depth_bn", results_dir=tmp_path / "results" / "synthetic" / BUDGET, conf_dir=ROOT / "ablate" / "conf"
    ).read_text()
    assert (
        "| grid extension | up to 2 steps past a numeric grid's end, for a value whose best setting on val sat on it "
        "(`study.extend_grid`): allconv5: `optim.lr`=10 (step 1) |" in report
    )
    assert "is the largest value tried" not in report


def test_the_extension_reads_a_value_only_from_a_completed_record_and_any_other_as_nan(tmp_path):
    # A diverged run's last val accuracy came before it diverged: read as a score it could make a grid's end look
    # best and send the extension further into divergence.
    from hydra_plugins.ablate_sweeper import AdaptiveSweeper

    sweeper = object.__new__(AdaptiveSweeper)  # only its record bookkeeping, no Hydra context
    sweeper.record_dirs = {}
    for status in ("completed", "diverged", "stopped", "interrupted"):
        (tmp_path / status).mkdir()
        summary = {"status": status, "final": {"val/acc": 42.0}}
        (tmp_path / status / record.SUMMARY).write_text(json.dumps(summary))
        sweeper.record_dirs[(status,)] = tmp_path / status
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / record.SUMMARY).write_text('{"status": "compl')
    sweeper.record_dirs[("torn",)] = tmp_path / "torn"

    assert sweeper.final_val_acc(["completed"]) == 42.0
    for job in (["diverged"], ["stopped"], ["interrupted"], ["torn"], ["never launched"]):
        assert math.isnan(sweeper.final_val_acc(job)), job


def test_the_sweepers_seed_looks_fill_the_launchers_workers(tmp_path, monkeypatch):
    # ablate.adaptive.fill_workers rounds a look up to the workers the launcher runs at once: the sweeper must say
    # how many (launcher=parallel's n_jobs; launcher=basic one at a time).
    from ablate import adaptive
    from hydra_plugins.ablate_sweeper import AdaptiveSweeper

    seen = []
    monkeypatch.setattr(adaptive, "seed_looks", lambda *args, workers=1: seen.append(workers))
    sweeper = object.__new__(AdaptiveSweeper)  # no Hydra context: the loop itself is replaced
    for n_jobs in (2, None):
        sweeper.config = OmegaConf.create(
            {"trainer": {"epochs": 10}, "hydra": {"launcher": {"n_jobs": n_jobs}, "sweep": {"dir": str(tmp_path)}}}
        )
        sweeper.seed_looks([["model=a", "seed=0"]], adaptive.plan_from({}), [], {"name": "depth"}, False)
    assert seen == [2, 1]


def test_a_precision_look_on_two_workers_runs_a_fourth_seed_that_fills_its_last_round(tmp_path):
    # The same one-net study as the precision target's test, under launcher=parallel's 2 workers: a look of 3 seeds
    # would leave a worker idle in its last round, so the look runs 4 (seeds 3-6), and the seeds stop at max=7.
    study = (*PRECISION_BN_NET, "launcher=parallel", "hydra.launcher.n_jobs=2")
    sweep(tmp_path, *study, "study.more_seeds={max:7,per_look:3}")
    target = just_under_the_width_of([100 * s["final"]["test/acc"] for s in records(tmp_path, "depth_bn")])
    result = sweep(tmp_path, *study, f"study.more_seeds={{max:7,per_look:3,half_width:{target}}}")
    assert "seed look 1: 4/4 done" in result.stderr + result.stdout
    assert sorted(s["seed"] for s in records(tmp_path, "depth_bn")) == [0, 1, 2, 3, 4, 5, 6]


def test_the_time_limit_expects_a_step_to_take_its_values_timed_epochs_on_the_workers_at_the_sweeps_pace(tmp_path):
    # Records: model a took 2 s an epoch, b 6 s. Three 10-epoch jobs (a, a, b) on 2 workers: b alone on one, both a
    # on the other: 60 s. A value no record has timed yet (c) counts at the slowest rate. Once the sweep's steps have
    # taken twice what such estimates said (the jobs' start and evaluation, cores shared), the estimate doubles.
    from hydra_plugins.ablate_sweeper import AdaptiveSweeper

    sweeper = object.__new__(AdaptiveSweeper)  # only its record bookkeeping, no Hydra context
    sweeper.config = OmegaConf.create({"trainer": {"epochs": 10}, "hydra": {"launcher": {"n_jobs": 2}}})
    sweeper.nuisance, sweeper.record_dirs, sweeper.timed = ["optim.lr"], {}, [0.0, 0.0]
    # b's record stopped at a rung, after 30 of its 100 updates: 18 s, 6 s an epoch all the same.
    for model, seconds, steps in (("a", 20, 100), ("b", 18, 30)):
        (tmp_path / model).mkdir()
        summary = {"status": "completed", "wall_seconds": seconds, "steps": steps, "total_steps": 100}
        (tmp_path / model / record.SUMMARY).write_text(json.dumps(summary))
        sweeper.record_dirs[(f"model={model}", "optim.lr=0.1", "seed=0")] = tmp_path / model
    jobs = [[f"model={m}", "optim.lr=0.1", f"seed={s}"] for m, s in (("a", 1), ("a", 2), ("b", 1))]

    assert sweeper.expected_minutes(jobs) == pytest.approx(1.0)
    assert sweeper.expected_minutes(jobs, epochs=5) == pytest.approx(0.5)
    assert sweeper.expected_minutes([["model=c", "optim.lr=0.1", "seed=0"]]) == pytest.approx(1.0)
    sweeper.timed = [240.0, 120.0]
    assert sweeper.expected_minutes(jobs) == pytest.approx(2.0)
    sweeper.config.hydra.launcher.n_jobs = None  # launcher=basic: one job at a time
    assert sweeper.expected_minutes(jobs) == pytest.approx(2 * (20 + 20 + 60) / 60)
    # A run held as updates (batch.hold=updates): batch 1024 makes 780 updates in 195 passes over the data for the
    # 10 epochs the config names. It takes its 351 s a run, not 351 / 195 s for each of 10 epochs.
    (tmp_path / "held").mkdir()
    held = {"status": "completed", "wall_seconds": 351.0, "epochs_completed": 195, "steps": 780, "total_steps": 780}
    (tmp_path / "held" / record.SUMMARY).write_text(json.dumps(held))
    sweeper.timed, sweeper.record_dirs = [0.0, 0.0], {("batch.size=1024", "optim.lr=0.1", "seed=0"): tmp_path / "held"}
    assert sweeper.expected_minutes([["batch.size=1024", "optim.lr=0.1", "seed=1"]]) == pytest.approx(351 / 60)
    sweeper.record_dirs = {}
    assert sweeper.expected_minutes(jobs) == 0  # nothing timed yet: the limit cannot tell, the step starts


def test_a_value_whose_best_setting_is_past_the_grid_gets_its_added_seeds_there(tmp_path):
    # LR 1e-5 leaves the BN net at chance and 0.001 is the grid's top, so the first step runs 0.001 * 0.001 / 1e-5 =
    # 0.1, which takes it furthest (the test above), and the second, from 0.1, runs 0.1 * 0.1 / 0.001 = 10, which
    # cannot beat it. The value's chosen setting is then the first step's, and the precision target's added seed
    # trains at 0.1, filed as that step like the seeds it joins. The target is set from the two seeds at 0.1 (the
    # first sweep's cap is its two seeds), just under the width they give, which a third seed can reach.
    study = ("optim.lr=0.001,0.00001", *EXTENDED_BN_NET)
    first = sweep(tmp_path, *study, "study.more_seeds={max:2,per_look:1}")
    log = first.stderr + first.stdout
    assert "grid extension 1/2: 2 runs" in log and "grid extension 2/2: 2 runs" in log
    # The progress lines count within each step the sweeper launches.
    assert "sweep depth_bn, grid extension 2/2: 2/2 done" in log
    target = just_under_the_width_of(
        [100 * s["final"]["test/acc"] for s in records(tmp_path, "depth_bn") if s["lr"]["base"] == 0.1]
    )
    result = sweep(tmp_path, *study, f"study.more_seeds={{max:3,per_look:1,half_width:{target}}}")
    assert "sweep depth_bn, seed look 1: 1/1 done" in result.stderr + result.stdout
    lrs = sorted((s["lr"]["base"], s["seed"]) for s in records(tmp_path, "depth_bn"))
    assert lrs == [(1e-05, 0), (1e-05, 1), (0.001, 0), (0.001, 1), (0.1, 0), (0.1, 1), (0.1, 2), (10.0, 0), (10.0, 1)]
    runs = table(tmp_path, "depth_bn")
    assert runs.loc[runs["optim.lr"] == 0.1, "grid_step"].tolist() == [1, 1, 1]
    assert runs.loc[runs["optim.lr"] == 10.0, "grid_step"].tolist() == [2, 2]


def test_a_study_with_no_nuisance_grid_runs_its_grid_whole_under_a_halving_plan(tmp_path):
    # batch_size tunes nothing (the rule sets each size's LR): the cpu tier's halving plan has nothing to halve.
    tiny = [arg for arg in TINY if not arg.startswith("trainer.epochs")]
    study = ("-m", "+sweep=batch_size", "batch.size=16", "batch.rule=none", "seed=0,1", "trainer.epochs=2", *tiny)
    result = sweep(tmp_path, *study, "study.halving={rungs:[0.5],eta:2}")
    log = result.stderr + result.stdout
    assert "sweep batch_size, the grid: 2/2 done" in log, log[-3000:]
    assert "halving at" not in log and "survivors" not in log
    assert sorted(s["status"] for s in records(tmp_path, "batch_size")) == ["completed", "completed"]


def test_halving_never_stops_a_setting_that_a_claim_compares(tmp_path):
    # conf/claims/lr_policy.yaml compares fixed at LR 0.01 and at 0.001: both run to the end whatever val says;
    # eta=4 keeps one of the other two LRs at most.
    tiny = [arg for arg in TINY if not arg.startswith("trainer.epochs")]
    study = ("+sweep=lr_policy", "sched=fixed", "optim.lr=0.03,0.01,0.003,0.001", "seed=0", "trainer.epochs=2", *tiny)
    result = sweep(tmp_path, *study, "study.halving={rungs:[0.5],eta:4}")
    assert "continue because a claim compares their setting" in result.stderr + result.stdout
    status = {s["lr"]["base"]: s["status"] for s in records(tmp_path, "lr_policy")}
    assert status[0.01] == status[0.001] == "completed", status
    assert sorted(status[lr] for lr in (0.03, 0.003)) in (["completed", "stopped"], ["stopped", "stopped"]), status


def test_parallel_launcher_runs_jobs_in_workers_with_the_allocator_environment(tmp_path):
    result = sweep(
        tmp_path,
        "+sweep=width",
        "launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "model=allconv6_1,allconv6_2",
        "optim.lr=0.01",
        "seed=0",
        *TINY,
    )
    assert counts(result) == {"completed": 2, "skipped": 0, "diverged": 0, "failed": 0}
    summaries = records(tmp_path, "width")
    assert {s["status"] for s in summaries} == {"completed"} and len(summaries) == 2
    assert {s["threads"] for s in summaries} == {1}
    noted = [json.loads(p.read_text()) for p in study_dir(tmp_path, "width").glob(f"*/{OUTCOME}")]
    # What the worker processes started with, so what glibc read: the values the launcher set before spawning them.
    assert [n["environment"] for n in noted] == [WORKER_ENVIRONMENT] * 2
    assert os.getpid() not in {n["pid"] for n in noted}
    assert len(table(tmp_path, "width")) == 2


def test_submitit_local_launcher_runs_the_sweep(tmp_path):
    result = sweep(
        tmp_path, "+sweep=depth", "launcher=submitit_local", "model=allconv5,allconv6", "optim.lr=0.01", "seed=0", *TINY
    )
    assert counts(result) == {"completed": 2, "skipped": 0, "diverged": 0, "failed": 0}
    assert {s["status"] for s in records(tmp_path, "depth")} == {"completed"}
    assert (study_dir(tmp_path, "depth") / ".submitit").is_dir()
    assert len(table(tmp_path, "depth")) == 2


def test_failing_and_diverging_jobs_do_not_stop_their_sweep(tmp_path):
    # batch.size=100000 is larger than the training split (a config error); optim.lr=1e6 blows the loss up.
    result = sweep(
        tmp_path,
        "+sweep=depth",
        "model=allconv5",
        "model.init=kaiming",
        "optim.lr=0.01,1e6",
        "seed=0",
        *TINY,
        "batch.size=32,100000",
    )
    assert counts(result) == {"completed": 1, "skipped": 0, "diverged": 1, "failed": 2}
    by_status = {}
    for summary in records(tmp_path, "depth"):
        by_status.setdefault(summary["status"], []).append(summary)
    assert {k: len(v) for k, v in by_status.items()} == {"completed": 1, "diverged": 1, "failed": 2}
    assert all("batch.size=100000" in s["error"] for s in by_status["failed"])
    assert "train/loss" in by_status["diverged"][0]["error"]
    runs = table(tmp_path, "depth")
    assert sorted(runs["status"]) == ["completed", "diverged", "failed", "failed"]
    failed = runs[runs["status"] == "failed"]
    # A job that failed before writing its config still gets its swept values, from the overrides in its record.
    assert set(failed["batch.size"]) == {100000} and set(failed["optim.lr"]) == {0.01, 1e6}


def test_a_job_whose_value_does_not_resolve_fails_alone_under_the_parallel_launcher(tmp_path):
    # Hydra names each job's folder from its resolved config (${identity:}) before the job runs: a typo in one
    # job's interpolation must fail that job, recorded, not the set-up of the whole sweep.
    result = sweep(
        tmp_path,
        "+sweep=depth",
        "launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "model=allconv5",
        "optim.lr=0.01,${oops}",
        "seed=0",
        *TINY,
    )
    assert counts(result) == {"completed": 1, "skipped": 0, "diverged": 0, "failed": 1}
    (failed,) = [s for s in records(tmp_path, "depth") if s["status"] == "failed"]
    assert failed["error"] == "optim.lr: Interpolation key 'oops' not found; fix the interpolation in that value"


def test_sweep_killed_mid_run_and_started_again_completes_without_losing_or_duplicating(tmp_path):
    epochs = 4
    study = (
        "+sweep=depth",
        "model=allconv5,allconv6",
        "optim.lr=0.01",
        "seed=0",
        *TINY,
        "data.train_size=640",
        f"trainer.epochs={epochs}",
    )
    sweep_dir = study_dir(tmp_path, "depth")
    process = subprocess.Popen(
        command(tmp_path, *study),
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Kill once the first job is done and the second has a checkpoint, i.e. in the middle of the second run.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            statuses = [
                (s["status"], (sweep_dir / s["identity"] / record.CHECKPOINT).exists())
                for s in map(record.read_json, sweep_dir.glob(f"*/{record.SUMMARY}"))
                if s
            ]
            if ("completed", False) in statuses and ("running", True) in statuses:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the sweep ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    killed = {s["identity"]: s for s in records(tmp_path, "depth")}
    assert sorted(s["status"] for s in killed.values()) == ["completed", "running"]
    (half_done,) = [i for i, s in killed.items() if s["status"] == "running"]
    assert (sweep_dir / half_done / record.CHECKPOINT).exists()

    again = sweep(tmp_path, *study)
    assert counts(again) == {"completed": 1, "skipped": 1, "diverged": 0, "failed": 0}
    # Resumed from its checkpoint, not restarted.
    (resumed_after,) = map(int, re.findall(r"resuming .* after epoch (\d+)", again.stdout))
    assert 1 <= resumed_after < epochs
    summaries = records(tmp_path, "depth")
    assert sorted(s["identity"] for s in summaries) == sorted(killed)
    assert {s["status"] for s in summaries} == {"completed"}
    for summary in summaries:
        metrics = record.read_metrics(sweep_dir / summary["identity"])
        assert [row["epoch"] for row in metrics] == list(range(1, epochs + 1))
        assert not (sweep_dir / summary["identity"] / record.CHECKPOINT).exists()
    runs = table(tmp_path, "depth")
    assert len(runs) == 2 and set(runs["status"]) == {"completed"}


def test_table_has_one_row_per_record_and_the_documented_columns(tmp_path):
    sweep(tmp_path, "+sweep=lr_policy", "sched=fixed,step", "optim.lr=0.01", "seed=0", *TINY)
    runs = table(tmp_path, "lr_policy")
    swept = [
        "sched",
        "optim.lr",
        "data.train_size",
        "data.val_size",
        "data.test_size",
        "batch.size",
        "sched.warmup_epochs",
    ]
    assert list(runs.columns) == [*HEAD_COLUMNS, *swept, *RECORD_COLUMNS]
    assert len(runs) == len(records(tmp_path, "lr_policy")) == 2
    assert set(runs["sched"]) == {"fixed", "step"} and set(runs["study"]) == {"lr_policy"}
    assert (runs["params"] > 0).all() and (runs["trainer.epochs"] == 1).all()

    # Rows come from the records, not from folder names: a renamed folder still gives its own identity.
    sweep_dir = study_dir(tmp_path, "lr_policy")
    first = sorted(p for p in sweep_dir.iterdir() if (p / record.SUMMARY).exists())[0]
    first.rename(sweep_dir / "renamed")
    collected = subprocess.run(
        [
            sys.executable,
            "-m",
            "ablate.collect",
            "lr_policy",
            "--runs",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "results"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0, collected.stderr
    assert set(table(tmp_path, "lr_policy")["identity"]) == set(runs["identity"])


def test_collect_of_a_study_never_run_is_one_line_naming_the_folder_and_the_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ablate.collect", "width", "--runs", str(tmp_path / "runs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "runs" / "width") in result.stderr and "python -m ablate +sweep=width" in result.stderr


def test_a_new_study_needs_only_its_sweep_file_and_its_claims(tmp_path):
    # A study kept outside the repository's conf/: Hydra finds it through hydra.searchpath, the analysis through
    # --conf, and both take the shared conf/sweep/base/study.yaml from the repository.
    conf = tmp_path / "conf"
    for folder in ("sweep", "claims"):
        (conf / folder).mkdir(parents=True)
        shutil.copy(CONF / folder / "depth_bn.yaml", conf / folder / "bn_pair.yaml")
    result = sweep(
        tmp_path,
        "+sweep=bn_pair",
        f"hydra.searchpath=[file://{conf}]",
        "model=allconv5,allconv6",
        "optim.lr=0.03",
        "seed=0,1",
        *TINY,
    )
    assert counts(result) == {"completed": 4, "skipped": 0, "diverged": 0, "failed": 0}
    assert len(records(tmp_path, "bn_pair")) == 4  # filed under the file's name
    runs = table(tmp_path, "bn_pair")
    assert set(runs["study"]) == {"bn_pair"} and set(runs["model"]) == {"allconv5", "allconv6"}
    assert runs["model.batch_norm"].tolist() == [True] * 4  # the key the sweep file fixes is a column

    analysis = subprocess.run(
        [sys.executable, "-m", "ablate.analyze", "bn_pair", "--results", f"{tmp_path}/results", "--conf", str(conf)],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert analysis.returncode == 0, analysis.stderr[-3000:]
    report = (tmp_path / "results" / "synthetic" / BUDGET / "bn_pair" / "report.md").read_text()
    assert "bn_pair" in report and "allconv6" in report


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (("kind: greater", "kind: bigger"), ("kind=bigger", "use one of greater")),
        (("kind: greater", " kind: greater"), ("bn_pair.yaml, line", "not valid YAML")),  # a key indented astray
    ],
)
def test_a_bad_claims_file_is_one_line_before_any_job_when_the_plan_adds_seeds(tmp_path, edit, names):
    # Without halving, the claims were first read after the grid had trained; now the plan reads them up front.
    conf = tmp_path / "conf"
    for folder in ("sweep", "claims"):
        (conf / folder).mkdir(parents=True)
        shutil.copy(CONF / folder / "depth_bn.yaml", conf / folder / "bn_pair.yaml")
    claims = conf / "claims" / "bn_pair.yaml"
    claims.write_text(claims.read_text().replace(*edit, 1))
    line = error_line(
        tmp_path,
        "+sweep=bn_pair",
        f"hydra.searchpath=[file://{conf}]",
        "model=allconv5",
        "optim.lr=0.03",
        "seed=0",
        *TINY,
        "study.more_seeds={max:2,per_look:1}",
    )
    assert all(name in line for name in names), line
    assert not (tmp_path / "runs" / "bn_pair").exists()  # not even the sweep's progress file (runs/<study>/)


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("study.minutes=soon", "study.minutes=soon: must be a number of minutes"),
        ("study.extend_grid=-1", "e.g. 2"),
        ("study.more_seeds={max:2,per_look:1,futility:10}", "study.more_seeds.futility=10: must be a probability"),
        ("study.more_seeds={max:2,per_look:1,out_of_reach:always}", "study.more_seeds.out_of_reach=always: use skip"),
    ],
)
def test_a_bad_plan_value_on_the_command_line_is_one_line_before_any_job(tmp_path, override, names):
    line = error_line(tmp_path, "+sweep=depth_bn", "model=allconv5", "seed=0", *TINY, override)
    assert names in line and override.split("=")[0] in line, line
    assert not (tmp_path / "runs" / "depth_bn").exists()  # not even the sweep's progress file (runs/<study>/)


def test_the_progress_total_counts_the_grid_and_is_unknown_where_the_sweeper_decides_as_it_goes(compose):
    from ablate.sweep import job_count

    smoke = compose("+sweep=depth", "budget=smoke", "optim.lr=0.01", return_hydra_config=True)
    assert job_count(smoke) == 7 * 1 * 2  # 7 models x 1 LR x the smoke budget's 2 seeds, no halving, no added seeds
    assert job_count(compose("+sweep=depth", return_hydra_config=True)) is None  # cpu: halving and adaptive seeds


def test_a_steps_time_left_weighs_its_jobs_by_their_expected_times():
    from ablate.sweep import time_left

    # Four jobs, the first launched expected to take as long as the other three together: done after 60 s, it
    # leaves 60 s of work, where counting jobs would say 180.
    assert time_left(60.0, 1, 4, [3.0, 1.0, 1.0, 1.0]) == 60.0
    assert time_left(60.0, 1, 4) == 180.0  # nothing timed yet (a first grid): by count
    assert time_left(60.0, 4, 4, [3.0, 1.0, 1.0, 1.0]) == 0.0
