"""The Makefile's study targets, read with `make -n` (prints the commands, runs none)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted(path.stem for path in (ROOT / "ablate" / "conf" / "sweep").glob("*.yaml"))

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(*args: str) -> list[str]:
    """The commands `make <args>` would run for the study itself (the install step's lines left out)."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if "python -m ablate" in line]


def test_every_sweep_file_is_a_make_target_and_dashed_names_are_aliases():
    for study in STUDIES:
        sweep, analyze = dry_run(study)
        assert f"python -m ablate +sweep={study} " in sweep
        assert analyze.endswith(f"python -m ablate.analyze {study} --results results --data synthetic")
    assert dry_run("depth-bn") == dry_run("depth_bn")


def test_a_study_target_analyses_the_table_its_sweep_wrote_and_collects_no_second_one(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    commands = dry_run("mobilenet_width", f"ARGS=paths.runs={runs} paths.results={results}", "SEEDS=0,1")
    sweep, analyze = commands  # the sweep collects results/<study>/runs.csv itself, with its own paths
    assert f"paths.runs={runs} paths.results={results}" in sweep and "seed=0,1" in sweep
    assert analyze.endswith(f"python -m ablate.analyze mobilenet_width --results {results} --data synthetic")
    assert not any("ablate.collect" in command for command in commands)


def test_budget_reaches_the_sweep_and_a_study_without_it_runs_at_the_cpu_tier():
    sweep, _ = dry_run("depth", "BUDGET=smoke")
    assert "budget=smoke" in sweep
    sweep, _ = dry_run("depth")
    assert "budget=" not in sweep  # conf/sweep/base/study.yaml picks budget=cpu


def test_every_study_variable_reaches_the_sweep_and_the_analysis(tmp_path):
    # The analysis must read the table the sweep wrote: same results folder, dataset and budget.
    runs, results = tmp_path / "runs", tmp_path / "results"
    variables = ("DATA=imagefolder", "DATA_ROOT=/data/ghim", f"RUNS={runs}", f"RESULTS={results}", "BUDGET=gpu")
    sweep, analyze = dry_run("depth", *variables, "SEEDS=0,1", "EPOCHS=2", "LAUNCHER=basic")
    for override in ("data=imagefolder", "data.root=/data/ghim", f"paths.runs={runs}", f"paths.results={results}"):
        assert override in sweep
    assert "budget=gpu" in sweep and "seed=0,1" in sweep and "trainer.epochs=2" in sweep and "launcher=basic" in sweep
    assert analyze.endswith(f"python -m ablate.analyze depth --results {results} --data imagefolder --budget gpu")
    # ARGS comes last on the sweep's command line, so its value is the one the analysis must follow.
    _, analyze = dry_run("depth", "DATA=imagefolder", "ARGS=data=cifar10 paths.results=/elsewhere")
    assert analyze.endswith("--results /elsewhere --data cifar10")
    # An image folder named apart from others (data.name) files its table under that name.
    _, analyze = dry_run("depth", "DATA=imagefolder", "DATA_ROOT=/g", "ARGS=data.name=ghim12 trainer.epochs=60")
    assert analyze.endswith("--results results --data ghim12")


def test_wandb_logs_the_analysis_run_and_sync_uploads_it_from_beside_the_reports(tmp_path):
    _, analyze = dry_run("depth", "BUDGET=smoke", "WANDB=offline")
    assert analyze.endswith(
        "python -m ablate.analyze depth --results results --data synthetic --budget smoke --wandb=offline"
    )
    result = subprocess.run(
        # --no-print-directory: under `make test` this make is nested and would print "Entering directory" lines.
        ["make", "-n", "--no-print-directory", "wandb-sync", "STUDY=depth", f"RESULTS={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip().endswith(f"wandb_sync depth --root runs --results {tmp_path}")


def test_install_byte_compiles_the_environment():
    # Where PYTHONDONTWRITEBYTECODE is set Python never writes a .pyc: without them every process that imports
    # torch, Hydra and wandb compiles them again (18 s against 6 s here, README).
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "-B", "install"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert any(" sync " in line and "--compile-bytecode" in line for line in result.stdout.splitlines())
