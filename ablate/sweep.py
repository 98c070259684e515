"""What a sweep did this time, and what its launchers need: each job notes its outcome in its record folder, the end
of the sweep counts them and collects the study's table; parallel workers get their allocator and thread settings."""

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ablate.record import atomic_write_json

OUTCOME = "outcome.json"
# A sweep counts the notes of its own jobs only, in <sweep dir>/.outcomes/<sweep id>/: a second sweep on the same
# runs folder at the same time writes its notes beside them, never over them.
OUTCOMES_DIR = ".outcomes"
SWEEP_ID = "ABLATE_SWEEP_ID"  # set by SweepSummary in the sweep's process; its workers and SLURM jobs inherit it
# `interrupted`: a signal ended the run (checkpoint kept); `running elsewhere`: another process holds the record's
# lock and trains it, so this sweep left it alone; neither is a failure.
# `stopped`: paused by successive halving at a rung (a later rung or the end continues it, or it stays stopped).
OUTCOMES = ("completed", "stopped", "skipped", "diverged", "failed", "interrupted", "running elsewhere")

# Set once a signal ended a run in this process (ablate.train), or the sweep (ablate.launcher): the jobs the sweep
# would start next are not started, and the sweep exits 130 (SIGINT) or 143 (SIGTERM) once it has written its table.
interrupted_by: str | None = None

# The environment of launcher=parallel's workers. glibc reads MALLOC_* once, when a process starts, so they are set in
# the sweep's own process before the launcher spawns its workers, which inherit them.
WORKER_ENVIRONMENT = {
    # Keep freed memory in the heap rather than unmapping it and faulting it in again a few steps later: 1.1x to 3.5x
    # faster for small convolutions (issue 7). 32 MiB is the largest mmap threshold every glibc accepts (older ones
    # silently ignore a larger value); the trim threshold has no such limit.
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
    # One process per core: threads inside a worker would only compete with the other workers.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def note_outcome(record_dir: Path, outcome: str) -> None:
    """Note a job's outcome for the sweep that ran it; a note it cannot write (a full disk) is one line, not a crash
    of the sweep."""
    # A file per job, not a return value: joblib and SLURM jobs run in other processes (or machines) than the sweep.
    # The environment the process started with is noted too, to show what the allocator saw (see WORKER_ENVIRONMENT).
    note = {"outcome": outcome, "at": time.time(), "pid": os.getpid(), "environment": start_environment()}
    record_dir = Path(record_dir)
    paths = [record_dir.parent / OUTCOMES_DIR / os.environ.get(SWEEP_ID, "unknown") / f"{record_dir.name}.json"]
    # Not into a record another process trains (nor a folder that is gone: a job that left none).
    if outcome not in ("running elsewhere", "not started") and record_dir.is_dir():
        paths.append(record_dir / OUTCOME)
    for path in paths:
        try:
            atomic_write_json(path, note)
        except OSError as error:
            print(f"ablate: could not note the outcome {outcome} of {record_dir.name}: {error}", file=sys.stderr)


def start_environment() -> dict:
    """WORKER_ENVIRONMENT's keys as this process saw them when it started (later changes to os.environ excluded)."""
    try:
        # /proc/self/environ is the environment at exec time; glibc read MALLOC_* from exactly this.
        entries = Path("/proc/self/environ").read_bytes().split(b"\0")
        started = dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)
    except OSError:
        started = dict(os.environ)
    return {key: started.get(key) for key in WORKER_ENVIRONMENT}


def count_outcomes(sweep_dir: Path, sweep_id: str) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for path in (Path(sweep_dir) / OUTCOMES_DIR / sweep_id).glob("*.json"):
        try:
            noted = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if noted.get("outcome") in counts:
            counts[noted["outcome"]] += 1
    return counts


class SweepSummary(Callback):
    """Prints `sweep <study>: N completed, N skipped, N diverged, N failed, ...` when a multirun ends, and collects
    the study's records into results/<study>/runs.csv. A sweep a signal stopped then exits 130 (SIGINT) or 143."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        os.environ[SWEEP_ID] = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = os.environ.get(SWEEP_ID, "unknown")
        counts = count_outcomes(sweep_dir, sweep_id)
        shutil.rmtree(sweep_dir / OUTCOMES_DIR / sweep_id, ignore_errors=True)
        line = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        print(f"sweep {config.study.name}: {line}  (records in {config.hydra.sweep.dir})")
        from ablate import collect  # pandas is only needed here, once per sweep

        try:
            table = collect.write_study_table(sweep_dir, Path(config.paths.results) / config.study.name)
        except Exception as error:  # noqa: BLE001 — the records are safe; `python -m ablate.collect` can redo this
            print(
                f"sweep {config.study.name}: could not collect the table ({type(error).__name__}: {error}); "
                f"retry with: python -m ablate.collect {config.study.name} --runs {config.paths.runs}"
            )
        else:
            print(f"sweep {config.study.name}: table in {table}")
        if interrupted_by is not None:
            sys.exit(130 if interrupted_by == "SIGINT" else 143)


class WorkerEnvironment(Callback):
    """Puts WORKER_ENVIRONMENT into this process's environment before the launcher starts its workers.

    A value the user exported already is kept."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        for key, value in WORKER_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
