"""`python -m ablate` (or `ablate`): one run, or with -m / +sweep=NAME a whole study (conf/sweep/NAME.yaml)."""

import errno
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from ablate import hints, sweep
from ablate.errors import ConfigError
from ablate.index import write_index
from ablate.loop import check_trainer, pick_device
from ablate.record import DiskFull
from ablate.resolvers import register_resolvers
from ablate.train import discard_unstarted, run

log = logging.getLogger("ablate")
# A folder that cannot be written: no permission, a read-only filesystem, or a file where a folder should be.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)

# Before Hydra composes anything: the config tree names them (hydra.run.dir is ${identity:}). Hydra hands them on
# to its joblib and submitit workers.
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    record_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    summary = {}
    try:
        hints.check_values(cfg, HydraConfig.get().overrides.task)
        # Before the skip check in run(): a command that cannot run here says so even when its record is complete.
        check_trainer(cfg)
        pick_device(str(cfg.trainer.device))
        summary = run(cfg, record_dir)
        outcome = summary["outcome"]
    except ConfigError as error:
        print(f"ablate: error: {error}", file=sys.stderr)
        # Caught before training: the folder Hydra made holds no run, and left there collect would count it killed.
        discard_unstarted(record_dir)
        if not in_sweep:
            sys.exit(2)
        outcome = "failed"
    except DiskFull as error:  # one line naming the file; the record says failed where the disk still let it
        print(f"ablate: error: {error}", file=sys.stderr)
        if not in_sweep:
            sys.exit(1)
        outcome = "failed"
    except KeyboardInterrupt:
        # One line, printed by cli() where the whole invocation stops; a sweep stops here too, not at the next job.
        if in_sweep:
            sweep.note_outcome(record_dir, "interrupted")
        raise
    except Exception as error:
        # In a sweep one broken job must not stop the others: its record already says failed, with the traceback.
        if not in_sweep:
            raise
        print(f"ablate: job {record_dir.name} failed: {type(error).__name__}: {error}", file=sys.stderr)
        outcome = "failed"
    log.info(last_line(summary, outcome, record_dir))
    if not in_sweep:  # a sweep's jobs may run at once in several processes: the sweep's end writes its index
        write_index(record_dir.parent)
    if in_sweep:
        sweep.note_outcome(record_dir, outcome)
        sweep.log_progress(record_dir)
    elif outcome == "interrupted":
        sys.exit(130 if sweep.interrupted_by == "SIGINT" else 143)  # the shell's codes for SIGINT and SIGTERM
    return outcome


def last_line(summary: dict, outcome: str, record_dir: Path) -> str:
    """`allconv6/s0 completed: test acc 82.0% (top-5 97.1%) in 43 s; record runs/single/.../<identity>`, or
    `allconv6/s0 skipped (already completed; resume=false trains again): test acc 82.0% ...`, or
    `allconv6/s0 stopped after epoch 3 (checkpoint kept): test acc 41.0% ...`."""
    final = summary.get("final") or {}
    why = f" ({summary['skipped_because']})" if outcome == "skipped" and summary.get("skipped_because") else ""
    if outcome == "stopped":  # paused by trainer.stop_after_epochs (successive halving): it resumes from here
        why = f" after epoch {summary.get('epochs_completed')} (checkpoint kept)"
    parts = [f"{summary.get('name', record_dir.name)} {outcome}{why}"]
    if "test/acc" in final:
        top5 = f" (top-5 {100 * final['test/top5']:.1f}%)" if "test/top5" in final else ""
        parts.append(f": test acc {100 * final['test/acc']:.1f}%{top5}")
    if summary.get("wall_seconds") is not None and outcome != "skipped":
        parts.append(f" in {summary['wall_seconds']:.0f} s")
    return "".join(parts) + f"; record {shown(record_dir)}"


def shown(path: Path) -> str:
    """A path relative to the working folder when it is inside it: shorter, and what the user typed."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cli() -> None:
    """The console script and `python -m ablate`: Hydra's errors and Ctrl-C as one line each, no traceback."""
    # Hydra prints its own errors (with a hint to add `+key`, which would add a key nothing reads) and exits; with
    # full errors on, they reach the handler below, which answers with the key the user probably meant.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.argv[1:] = flags_first([expand_home(arg) for arg in sys.argv[1:]])
    try:
        check_launcher(sys.argv[1:])
        main()
    except KeyboardInterrupt:
        print("ablate: interrupted; run the same command again to resume (completed runs are skipped)", file=sys.stderr)
        sys.exit(130)
    except (HydraException, ConfigError) as error:
        message = hints.explain_hydra_error(error, sys.argv[1:])
        if message is None:
            raise
        print(f"ablate: error: {message}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        # Hydra creates the run's folder before the run starts; the run itself writes the data cache.
        if error.errno not in UNWRITABLE or error.filename is None:
            raise
        print(
            f"ablate: error: cannot write {error.filename} ({error.strerror}); point paths.runs (records) or "
            "paths.cache (decoded data) at a folder you can write",
            file=sys.stderr,
        )
        sys.exit(2)


def expand_home(arg: str) -> str:
    """`data.root=~/data` as the README writes it: the shell leaves a ~ after `key=` alone, and Hydra's override
    grammar has no ~ in values, so it is expanded here."""
    key, sep, value = arg.partition("=")
    if sep and not arg.startswith("-") and (value == "~" or value.startswith("~/")):
        return f"{key}={os.path.expanduser(value)}"
    return arg


# Hydra's flags that take no value: they may go anywhere in the command line, so they can go first.
BARE_FLAGS = ("-m", "--multirun", "-r", "--run", "--resolve")


def flags_first(argv: list[str]) -> list[str]:
    """`python -m ablate +sweep=depth -m budget=smoke`: Hydra's argparse reads the overrides as one run of words, so
    those after `-m` were refused ("unrecognized arguments: budget=smoke"); its bare flags go first instead."""
    return [arg for arg in argv if arg in BARE_FLAGS] + [arg for arg in argv if arg not in BARE_FLAGS]


def check_launcher(argv: list[str]) -> None:
    """launcher=slurm where there is no SLURM: one line now, instead of submitit's traceback after composing."""
    if "launcher=slurm" in argv and shutil.which("sbatch") is None:
        raise ConfigError(
            "launcher=slurm: sbatch (SLURM) is not on this machine's PATH; run on the cluster's login node, "
            "or try the same code path here with launcher=submitit_local"
        )


if __name__ == "__main__":
    cli()
