"""What a sweep did this time, and what its launchers need: each job notes its outcome in its record folder, the end
of the sweep counts them and collects the study's table; parallel workers get their allocator and thread settings."""

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ablate import adaptive
from ablate.config import CONF_DIR
from ablate.errors import ConfigError
from ablate.record import atomic_write_json, read_json

log = logging.getLogger("ablate")

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
# Written in the study's runs folder when a sweep starts, read by its jobs to print "12/63 done": when it started and
# how many jobs it launches (None where the sweeper decides as it goes: successive halving, adaptive seeds). Such a
# sweeper notes each step it launches instead (note_step), so its jobs count within the step.
PROGRESS = ".sweep.json"

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
    # A job launched again after a worker died (ablate.launcher) can find its run finished by the first attempt, whose
    # result the broken pool lost: that `skipped` would hide that this sweep trained it, so it keeps the first note.
    if outcome == "skipped" and paths[0].exists():
        return
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


def clock(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def log_progress(record_dir: Path) -> None:
    """After each job: `sweep depth: 12/63 done (1 failed), about 5:20 left`, from the outcome notes of the sweep that
    is running (its jobs may run in other processes, so the notes are the one place to count them)."""
    study_dir = next((p for p in Path(record_dir).parents if (p / PROGRESS).is_file()), None)
    if study_dir is None:
        return
    progress = read_json(study_dir / PROGRESS) or {}
    started, total = progress.get("started", 0.0), progress.get("total")
    text = f"sweep {progress.get('study', study_dir.name)}"
    step = None if total else progress.get("step")
    if step:  # an adaptive sweep: the whole is unknown, the step it is in is not
        text += f", {step['what']}"
        started, total = step["started"], step["total"]
    # A record's note replaces its earlier one (a survivor's `completed` its `stopped`): a step's are counted by time.
    counts = count_outcomes(
        Path(record_dir).parent, os.environ.get(SWEEP_ID, "unknown"), since=started if step else None
    )
    done = sum(counts.values())
    failed = counts["failed"] + counts["diverged"]
    text += f": {done}/{total or '?'} done"
    text += f" ({failed} failed or diverged)" if failed else ""
    if total and done > 0:
        text += f", about {clock(time_left(time.time() - started, done, total, (step or {}).get('weights')))} left"
    log.info(text)


def time_left(elapsed: float, done: int, total: int, weights: list | None = None) -> float:
    """Seconds left at the pace so far: by count, or by `weights` (expected times in launch order) where the sweeper
    knows them. A step launches its slowest jobs first, so by count its first jobs would make the rest look long;
    the jobs done are taken to be the first launched."""
    if not weights or len(weights) != total:
        return elapsed / done * max(total - done, 0)
    finished = sum(weights[:done])
    return elapsed / finished * max(sum(weights) - finished, 0.0) if finished > 0 else 0.0


def note_step(study_dir: Path, what: str, total: int, weights: list | None = None) -> None:
    """Note the step an adaptive sweep launches next (`what`: "rung 1 (to epoch 18 of 60)", "seed look 2"), so that
    its jobs' progress lines count the outcomes noted since it started. `weights`: each job's expected time, in launch
    order (None where unknown), for the time left."""
    path = Path(study_dir) / PROGRESS
    progress = read_json(path) or {}
    known = weights if weights and all(w is not None for w in weights) else None
    progress["step"] = {"what": what, "total": total, "started": time.time(), "weights": known}
    with contextlib.suppress(OSError):  # only the progress lines lose their step (a full disk): the sweep goes on
        atomic_write_json(path, progress)


def count_outcomes(sweep_dir: Path, sweep_id: str, since: float | None = None) -> dict[str, int]:
    """The sweep's jobs by outcome, one per record (its last), or only those noted at `since` or later."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for path in (Path(sweep_dir) / OUTCOMES_DIR / sweep_id).glob("*.json"):
        try:
            noted = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if since is not None and noted.get("at", 0.0) < since:
            continue
        if noted.get("outcome") in counts:
            counts[noted["outcome"]] += 1
    return counts


def job_count(config: DictConfig) -> int | None:
    """The jobs Hydra's basic sweeper will launch: the product of its parameters and the command line's sweeps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
    adaptive = OmegaConf.select(config, "study.halving") or OmegaConf.select(config, "study.more_seeds.max")
    # ablate's sweeper launches the basic grid when it neither halves nor adds seeds.
    if "basic_sweeper" not in target and ("ablate_sweeper" not in target or adaptive):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    try:
        params = config.hydra.sweeper.params or {}
        # ablate's sweeper builds its params with a resolver (ablate.sweep_params): a plain dict, not a config node.
        params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params)
        texts = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
        overrides = OverridesParser.create().parse_overrides(texts)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception:  # noqa: BLE001 — only the progress line's total: without it the line shows "12/? done"
        return None


def study_settings(config: DictConfig) -> dict:
    """The study node as plain data, resolved (empty for a single run, which has none)."""
    return OmegaConf.to_container(config.study, resolve=True) if "study" in config else {}


def study_plan(config: DictConfig) -> tuple[adaptive.Plan, bool]:
    """The study's plan (ablate.adaptive.plan_from) and whether its claims file states claims, both read and checked:
    a bad value in either is one ConfigError line naming it. The sweep callback asks first, so that a sweep that will
    not run leaves no progress file; the sweeper then plans with the answer. The claims are read only where the plan
    uses them (halving, which pins their settings, or adaptive seeds)."""
    study = study_settings(config)
    plan = adaptive.plan_from(study)
    if not (plan.max_seeds or (plan.halving and study.get("nuisance"))):
        return plan, False
    from ablate.analysis.looks import study_claims  # pandas only when the plan reads the claims

    name = str(study.get("name"))
    return plan, bool(study_claims(claims_conf_dir(config, name), name)[0])


def claims_conf_dir(config: DictConfig, name: str) -> Path:
    """The config folder holding claims/<study>.yaml: the first of the run's file config sources that has it (a study
    kept outside the repository comes through hydra.searchpath), else ablate's own conf/."""
    for source in OmegaConf.select(config, "hydra.runtime.config_sources") or []:
        if source.get("schema") == "file" and (Path(source.path) / "claims" / f"{name}.yaml").is_file():
            return Path(source.path)
    return CONF_DIR


class SweepSummary(Callback):
    """Progress while a multirun runs; at its end `sweep <study>: N completed, N stopped, N skipped, N diverged,
    N failed, ...`, the study's records collected into <results>/<data>/<budget>/<study>/runs.csv, and one line per
    scientific value (its best nuisance setting on val, test accuracy with its interval over seeds). A sweep a signal
    stopped then exits 130 (SIGINT) or 143 (SIGTERM)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if "study" in config:
            try:
                study_plan(config)
            except ConfigError:  # the sweeper stops on it with its one line, before any job: no file for a sweep that
                return  # will not run (raised here, Hydra would print it again as a callback's warning)
        os.environ[SWEEP_ID] = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        study_dir = Path(config.paths.runs) / config.study.name
        progress = {"study": config.study.name, "started": time.time(), "total": job_count(config)}
        atomic_write_json(study_dir / PROGRESS, progress)
        runs = progress["total"] or "its"
        log.info(f"sweep {config.study.name}: {runs} runs, records in {config.hydra.sweep.dir}")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = os.environ.get(SWEEP_ID, "unknown")
        counts = count_outcomes(sweep_dir, sweep_id)
        shutil.rmtree(sweep_dir / OUTCOMES_DIR / sweep_id, ignore_errors=True)
        line = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        print(f"sweep {config.study.name}: {line}  (records in {config.hydra.sweep.dir})")
        from ablate import collect  # pandas is only needed here, once per sweep

        results_dir = Path(config.paths.results) / config.paths.group
        try:
            table = collect.write_study_table(sweep_dir, results_dir / config.study.name)
        except Exception as error:  # noqa: BLE001 — the records are safe; `python -m ablate.collect` can redo this
            print(
                f"sweep {config.study.name}: could not collect the table ({type(error).__name__}: {error}); "
                f"retry with: python -m ablate.collect {config.study.name} --runs {config.paths.runs}"
            )
        else:
            print(f"sweep {config.study.name}: table in {table}")
            for text in summary_lines(config.study.name, results_dir):
                print(text)
        if interrupted_by is not None:
            sys.exit(130 if interrupted_by == "SIGINT" else 143)


def summary_lines(study: str, results_dir: Path) -> list[str]:
    """The sweep's compact result: per scientific value, the best nuisance setting on val and the test accuracy."""
    from ablate.analysis.selection import select
    from ablate.analysis.study import check_one_setup, fmt, load_runs, load_study

    try:
        runs = load_runs(study, results_dir)
        spec = load_study(study, CONF_DIR, list(runs.columns), runs=runs)
        check_one_setup(runs, spec)
        selection = select(runs, spec)
    except ConfigError as error:
        return [f"sweep {study}: no summary ({error})"]
    arms = selection.arms
    from ablate.analysis.pipeline import is_range_study, range_tests

    if is_range_study(runs):  # the records hold no test accuracy, only the LR bounds each range test suggests
        return range_test_lines(study, selection, range_tests(selection))
    tuned = f"best {', '.join(spec.nuisance)} on val, " if spec.nuisance else ""
    lines = [f"sweep {study}: test accuracy per {' x '.join(spec.scientific)} ({tuned}mean [95% CI] over seeds)"]
    width = max(len(arm.label) for arm in arms) if arms else 0
    for arm in arms:
        setting = " ".join(f"{key}={fmt(value)}" for key, value in arm.setting.items()) or "-"
        test = arm.test
        if test.mean != test.mean:  # NaN: no completed seed
            result = "no completed run"
        else:
            interval = f" [{max(0, 100 * test.low):.1f}, {min(100, 100 * test.high):.1f}]" if test.bounded else ""
            result = f"{100 * test.mean:.1f}%{interval}  {arm.seeds} seed{'s' * (arm.seeds != 1)}"
        lines.append(f"  {arm.label:<{width}}  {setting:<16}  {result}")
    return lines


def range_test_lines(study: str, selection, found) -> list[str]:
    """A range-test sweep's compact result: the LR bounds each run suggests, by seed, with the report's flags."""
    from ablate.analysis.report import lr_text

    bounds: dict[str, list[str]] = {arm.label: [] for arm in selection.arms}
    for test in found:
        flags = " (at the sweep's edge)" * test.at_edge + " (never left chance: noise)" * (not test.learned)
        bounds[test.label].append(f"{lr_text(test.lower_lr)}..{lr_text(test.upper_lr)}{flags}")
    axes = " x ".join(selection.study.scientific)
    lines = [
        f"sweep {study}: the LR bounds each range test suggests per {axes} (sched.base_lr..sched.max_lr, a seed each)"
    ]
    width = max(map(len, bounds), default=0)
    for label, texts in bounds.items():
        lines.append(f"  {label:<{width}}  {', '.join(texts) or 'no completed run'}")
    return lines


class WorkerEnvironment(Callback):
    """Puts WORKER_ENVIRONMENT into this process's environment before the launcher starts its workers.

    A value the user exported already is kept."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        for key, value in WORKER_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
