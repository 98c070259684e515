"""launcher=parallel: Hydra's joblib launcher, except that a worker process that dies (OOM killer, kill -9) costs
one job, not the sweep.

Hydra's own joblib launcher hands all jobs to one joblib.Parallel call; when a loky worker dies, that call raises
TerminatedWorkerError, loky kills the other workers with their jobs, and the sweep ends with exit 1, no table and
records left `running`. Here each job's result is kept as it arrives; after a dead worker the jobs that did not
finish are launched again (a run resumes from its checkpoint, so the retry loses at most an epoch), and a job whose
worker died twice is recorded `failed`. A job whose Hydra set-up fails (a full disk while Hydra writes .hydra/) is
recorded `failed` too, and the sweep goes on, as the README promises.

A Ctrl-C reaches the sweep's process and every worker (the terminal signals its whole foreground group). Hydra's
launcher lets it raise inside joblib, which SIGKILLs the workers while their runs still write `interrupted`: the
records were left `running`. Here the sweep's process only notes it and starts no further job, each worker ends the
run it trains as `interrupted` (a worker between runs notes it too, rather than dying of it and taking the pool
down), and the sweep writes its table once they have returned.

launcher=submitit_local (launch_local below): Hydra's submitit launcher waits on its jobs' processes, which a SIGTERM
or SIGINT to the sweep left running after the sweep had gone. Here the sweep stops them first: each records
`interrupted` with its checkpoint, and no process is left behind.

Hydra instantiates only launcher classes defined in the `hydra_plugins` package, so the classes are
hydra_plugins/ablate_launcher's JoblibLauncher and LocalLauncher (named in conf/launcher/parallel.yaml and
submitit_local.yaml), whose launch is this module's.
"""

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import BrokenProcessPool

from ablate import record, sweep

log = logging.getLogger(__name__)

# A job is launched at most this often: once, and once more after its worker died.
ATTEMPTS = 2


def launch(launcher: JoblibLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """One JobReturn per job, in order, each COMPLETED with the job's outcome ("completed", "failed", ...) as its
    value: a failed job is ablate's to record, and a FAILED JobReturn would stop Hydra's sweepers."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    joblib_cfg = {**launcher.joblib, "backend": "loky"}  # as Hydra's: its threading backend cannot run Hydra jobs
    _core.process_joblib_cfg(joblib_cfg)
    log.info(
        f"Joblib.Parallel({','.join(f'{k}={v}' for k, v in joblib_cfg.items())}) is launching {len(job_overrides)} jobs"
    )
    for idx, overrides in enumerate(job_overrides):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")

    results: list[JobReturn | None] = [None] * len(job_overrides)
    attempts = [0] * len(job_overrides)
    singleton_state = Singleton.get_state()
    while sweep.interrupted_by is None:
        pending = [i for i, result in enumerate(results) if result is None]
        if not pending:
            break
        started = time.time()
        jobs = (
            delayed(_execute)(
                i,
                initial_job_idx + i,
                job_overrides[i],
                launcher.hydra_context,
                launcher.config,
                launcher.task_function,
                singleton_state,
            )
            for i in pending
            if sweep.interrupted_by is None  # read as joblib dispatches each job: none starts after a Ctrl-C
        )
        try:
            with sigint_noted():
                for i, result in Parallel(**joblib_cfg, return_as="generator_unordered", initializer=worker_start)(
                    jobs
                ):
                    results[i] = result
        except BrokenProcessPool as error:  # TerminatedWorkerError is one: a worker died, and loky killed the rest
            if sweep.interrupted_by is not None:  # a Ctrl-C that reached a worker still starting up: no retry
                break
            why = " ".join(str(error).split())[:200]
            for i in (i for i in pending if results[i] is None):
                record_dir = record_dir_of(launcher, job_overrides[i])
                if record_dir is not None and _started_since(record_dir, started):
                    attempts[i] += 1
                if attempts[i] >= ATTEMPTS:
                    results[i] = _failed(
                        job_overrides[i],
                        record_dir,
                        f"its worker process died {ATTEMPTS} times ({type(error).__name__}: {why})",
                    )
            again = sum(result is None for result in results)
            print(
                f"ablate: a worker process died ({type(error).__name__}); launching the {again} unfinished jobs "
                "again (a run resumes from its checkpoint)",
                flush=True,
            )
        except KeyboardInterrupt:  # outside sigint_noted's block: the workers stop their runs all the same
            sweep.interrupted_by = "SIGINT"
    return [
        result if result is not None else _returned(job_overrides[i], "not started") for i, result in enumerate(results)
    ]


@contextlib.contextmanager
def sigint_noted() -> Iterator[None]:
    """In the sweep's process while joblib runs the jobs (and while the adaptive sweeper plans between its steps): a
    SIGINT notes that the sweep stops instead of raising KeyboardInterrupt inside joblib, which would SIGKILL the
    workers while their runs write `interrupted`."""
    previous = signal.signal(signal.SIGINT, _note_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def worker_start() -> None:
    """Each launcher=parallel worker, once, as it starts: a SIGINT outside a run is noted, so a later run in this
    worker is `not started`; inside a run it raises KeyboardInterrupt (ablate.train.interruptible), which records the
    run `interrupted`. Left to raise between runs, it would end the worker, and loky would kill the others with it."""
    signal.signal(signal.SIGINT, _note_sigint)


def _note_sigint(signum, frame) -> None:
    sweep.interrupted_by = "SIGINT"


def _execute(i: int, idx: int, overrides, hydra_context, config, task_function, singleton_state):
    """Hydra's job function in a worker, with the job's index; a job that breaks in Hydra's own set-up is `failed`."""
    try:
        return i, _core.execute_job(idx, overrides, hydra_context, config, task_function, singleton_state)
    except Exception as error:  # noqa: BLE001 — one job's set-up (a full disk under .hydra/) must not stop the sweep
        print(f"ablate: job #{idx} failed before it started: {type(error).__name__}: {error}", flush=True)
        return i, _failed(overrides, None, f"{type(error).__name__}: {error}", config.hydra.sweep.dir)


def record_dir_of(launcher: JoblibLauncher, overrides: Sequence[str]) -> Path | None:
    """Where the job files its record (hydra.sweep.dir/hydra.sweep.subdir, i.e. runs/<study>/<identity>)."""
    try:
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    except Exception:  # noqa: BLE001 — a job whose config does not compose has no record to look at
        return None


def _started_since(record_dir: Path, since: float) -> bool:
    """Whether the job took its record's lock since `since`, i.e. was running when its worker died."""
    try:
        return (record_dir / record.LOCK).stat().st_mtime >= since - 1
    except OSError:
        return False


def _failed(overrides: Sequence[str], record_dir: Path | None, error: str, sweep_dir=None) -> JobReturn:
    """Record a job that could not run to its end as `failed`, and note it for the sweep's count."""
    if record_dir is not None and record_dir.is_dir():
        summary = record.read_json(record_dir / record.SUMMARY) or {"identity": record_dir.name}
        summary.update(status="failed", error=error, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        try:
            record.atomic_write_json(record_dir / record.SUMMARY, summary)
        except OSError as write_error:
            print(f"ablate: could not record {record_dir} as failed: {write_error}")
        sweep.note_outcome(record_dir, "failed")
        print(f"ablate: job {record_dir.name} failed: {error}", flush=True)
    else:
        print(f"ablate: job {' '.join(filter_overrides(overrides))} failed: {error}", flush=True)
        if sweep_dir is not None:  # no record folder: the sweep still counts the job
            sweep.note_outcome(Path(sweep_dir) / f".job-{abs(hash(tuple(overrides)))}", "failed")
    return _returned(overrides, "failed")


def _returned(overrides: Sequence[str], outcome: str) -> JobReturn:
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=outcome)


# ---- launcher=submitit_local -----------------------------------------------------------------------------------

# How often the sweep looks at its jobs' processes, in seconds (Hydra's launcher: every second, one job at a time).
POLL_S = 0.2
# How long the sweep waits for the jobs it stopped: a run stops within its current step, and a job still starting
# (imports, data) at once; this is for a job stuck in a long call.
STOP_GRACE_S = 60


def launch_local(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Hydra's submitit launch (hydra-submitit-launcher 1.2's BaseSubmititLauncher.launch, for the local executor),
    except that a SIGTERM or SIGINT to the sweep stops the jobs it started before the sweep exits: each records
    `interrupted` at its last finished epoch, checkpoint kept, and the sweep then writes its table."""
    import submitit  # as Hydra's launcher: only when a sweep launches
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    from ablate.train import Interrupted, interruptible

    if sweep.interrupted_by is not None:  # a later batch of a sweep a signal stopped
        return [_returned(overrides, "not started") for overrides in job_overrides]
    params = dict(launcher.params)
    init_params = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init_params["local_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster="local", **init_params)
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in generic else f"local_{key}": value for key, value in params.items()})
    log.info(f"Submitit 'local' sweep output dir : {launcher.config.hydra.sweep.dir}")
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in launcher.config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(launcher.config.hydra.sweep.mode), 8))
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))

    jobs = []
    try:
        with interruptible():  # SIGTERM raises Interrupted here, SIGINT KeyboardInterrupt
            with jobs_ignore_sigint():
                jobs = executor.map_array(launcher, *zip(*job_params, strict=True))
            while not all(job.done() for job in jobs):
                time.sleep(POLL_S)
    except (Interrupted, KeyboardInterrupt) as error:
        sweep.interrupted_by = "SIGINT" if isinstance(error, KeyboardInterrupt) else str(error)
        stop_local_jobs(jobs, sweep.interrupted_by)
    returns = [_local_return(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=False)]
    return returns + [_returned(overrides, "not started") for overrides in job_overrides[len(jobs) :]]


@contextlib.contextmanager
def jobs_ignore_sigint() -> Iterator[None]:
    """The job processes started in the block ignore SIGINT (a Python process keeps a SIGINT ignored at its start),
    and a SIGINT or SIGTERM to the sweep meanwhile is held until every job has started, so none runs unknown to it.

    A Ctrl-C at the terminal reaches every process of its foreground group, submitit's controller of each job
    included: the controller would pass it on to its job, SIGKILL the job a second later, maybe in the middle of
    writing its record, and print a traceback. So only the sweep acts on it, and stops its jobs with SIGTERM."""
    held = []
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # a blocked signal waits, even one ignored meanwhile
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C held meanwhile arrives here
        for signum in held[:1]:
            signal.raise_signal(signum)


def stop_local_jobs(jobs: Sequence, why: str) -> None:
    """SIGTERM to each job still running, through its submitit controller (the job id is the controller's pid; it
    passes the signal on to its job); wait until they have ended, and say so in one line."""
    running = [job for job in jobs if not job.done()]
    if not running:  # every job had ended already: the sweep's counts say the rest
        return
    for job in running:
        with contextlib.suppress(ProcessLookupError):  # not done above, so not reaped: the pid is still the job's
            os.kill(int(job.job_id), signal.SIGTERM)
    # A second signal while they stop would only cut short what they write.
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        while any(not job.done() for job in running) and time.monotonic() < deadline:
            time.sleep(POLL_S)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stuck = [job.job_id for job in running if not job.done()]
    if stuck:  # in a long call: Python acts on the signal when the call returns
        message = (
            f"{len(stuck)} of the sweep's {len(running)} running jobs have not stopped within {STOP_GRACE_S} s; "
            f"they stop when their current call returns (their submitit processes: {' '.join(stuck)})"
        )
    else:
        message = (
            f"stopped the sweep's {len(running)} running job{'s' * (len(running) != 1)}, each recorded interrupted "
            "at its last finished epoch; run the same command again to resume"
        )
    print(f"ablate: {why}: {message}", file=sys.stderr, flush=True)


def _local_return(job, overrides: Sequence[str]) -> JobReturn:
    """The job's JobReturn; a job the sweep stopped before it could return one (still starting) is `not started`."""
    if sweep.interrupted_by is not None and not job.paths.result_pickle.exists():
        return _returned(overrides, "not started")
    return job.results()[0]  # a job that failed outside ablate's reach raises here, as under Hydra's launcher


def local_job(call, sweep_overrides: Sequence[str], *args) -> JobReturn:
    """A job of launcher=submitit_local, in its own process: from the start a SIGTERM (the sweep stopping it) ends
    it, not only once its run trains, where it is recorded `interrupted`."""
    from ablate.train import Interrupted, interruptible

    try:
        with interruptible():
            return call(sweep_overrides, *args)
    except Interrupted:  # before its run began (Hydra's set-up) or after it was recorded
        return _returned(sweep_overrides, "not started")
