"""Studies as real multiruns through `python -m ablate` in a subprocess: every launcher, skip-if-done, more seeds,
a sweep killed with SIGKILL and started again, failing and diverging jobs, and the table a sweep leaves."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ablate import record
from ablate.collect import HEAD_COLUMNS, RECORD_COLUMNS
from ablate.sweep import OUTCOME, WORKER_ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
STUDIES = (
    "depth",
    "depth_bn",
    "width",
    "mobilenet_depth",
    "mobilenet_width",
    "lr_policy",
    "optimizer",
    "batch_size",
    "lr_range",
)
# A few seconds per job on one core: 256 training images, one epoch.
TINY = (
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
    "batch.size=32",
    "trainer.epochs=1",
    "logger=none",
)
COUNTS = re.compile(r"sweep (\w+): (\d+) completed, (\d+) skipped, (\d+) diverged, (\d+) failed")


def command(tmp_path: Path, *args: str) -> list[str]:
    paths = (
        f"paths.runs={tmp_path / 'runs'}",
        f"paths.results={tmp_path / 'results'}",
        f"paths.cache={tmp_path / 'cache'}",
    )
    return [sys.executable, "-m", "ablate", *args, *paths]


def environment() -> dict:
    # One torch thread per job: the tests share two cores with the rest of the suite.
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def sweep(tmp_path: Path, *args: str, timeout_s: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command(tmp_path, *args), cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=timeout_s
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def counts(result: subprocess.CompletedProcess) -> dict:
    """The sweep's last line, `sweep <study>: N completed, N skipped, N diverged, N failed`, as numbers."""
    (match,) = COUNTS.findall(result.stdout)
    return dict(zip(("completed", "skipped", "diverged", "failed"), map(int, match[1:])))


def records(tmp_path: Path, study: str) -> list[dict]:
    """Every summary.json of the study folder; each must be valid JSON and filed under its own identity."""
    summaries = []
    for path in sorted((tmp_path / "runs" / study).glob(f"*/{record.SUMMARY}")):
        summary = json.loads(path.read_text())
        assert path.parent.name == summary["identity"]
        summaries.append(summary)
    return summaries


def table(tmp_path: Path, study: str) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "results" / study / "runs.csv")


def test_every_study_runs_as_a_multirun_with_its_axes_and_three_seeds(compose):
    for study in STUDIES:
        cfg = compose(f"+sweep={study}", return_hydra_config=True)
        assert cfg.hydra.mode.name == "MULTIRUN", study
        assert cfg.study.name == study
        params = cfg.hydra.sweeper.params
        assert len(str(params.seed).split(",")) >= 3, study
        for key in [*cfg.study.scientific, *cfg.study.nuisance]:
            # Every axis is swept here, or set by what is swept (the optimizer study's solver presets).
            assert key in params or study == "optimizer", (study, key)
        # The file opens with what it measures and how to run it (after Hydra's package line, which must come first).
        lines = (CONF / "sweep" / f"{study}.yaml").read_text().splitlines()
        header = "\n".join(line for line in lines[1:] if line.startswith("#"))
        assert lines[0] == "# @package _global_" and f"python -m ablate +sweep={study}" in header, study


def test_a_study_sizes_the_embedded_dataset_and_leaves_other_data_alone(compose):
    cfg = compose("+sweep=depth")
    assert cfg.data.train_size == cfg.study.synthetic_sizes.train_size
    assert compose("+sweep=depth", "data.train_size=300").data.train_size == 300  # the command line still wins
    assert compose("data=synthetic").data.train_size > cfg.data.train_size  # single runs keep the full dataset
    assert "train_size" not in compose("+sweep=depth", "data=imagefolder", "data.root=/images").data


def test_optimizer_arms_are_distinct_values_with_their_family_lr(compose):
    seen = {}
    for solver in (
        "sgd_momentum0",
        "sgd_momentum0.9",
        "sgd_momentum0.99",
        "nesterov",
        "adagrad",
        "adadelta",
        "rmsprop",
        "adam",
    ):
        cfg = compose("+sweep=optimizer", f"+solver={solver}", "lr_factor=3", return_hydra_config=True)
        value = (cfg.hydra.runtime.choices.optim, cfg.optim.get("momentum"))
        assert value not in seen.values(), (solver, value)
        seen[solver] = value
        assert cfg.optim.lr == {"adadelta": 3.0, "rmsprop": 0.003, "adam": 0.003}.get(solver, 0.03)
    assert seen["sgd_momentum0.9"] == ("sgd", 0.9) and seen["adam"] == ("adam", None)


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
    noted = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "width").glob(f"*/{OUTCOME}")]
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
    assert (tmp_path / "runs" / "depth" / ".submitit").is_dir()
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
    sweep_dir = tmp_path / "runs" / "depth"
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
    swept = ["sched", "optim.lr", "data.train_size", "data.val_size", "data.test_size", "batch.size"]
    assert list(runs.columns) == [*HEAD_COLUMNS, *swept, *RECORD_COLUMNS]
    assert len(runs) == len(records(tmp_path, "lr_policy")) == 2
    assert set(runs["sched"]) == {"fixed", "step"} and set(runs["study"]) == {"lr_policy"}
    assert (runs["params"] > 0).all() and (runs["trainer.epochs"] == 1).all()

    # Rows come from the records, not from folder names: a renamed folder still gives its own identity.
    sweep_dir = tmp_path / "runs" / "lr_policy"
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
