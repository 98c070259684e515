"""`python -m ablate`: one run, or with -m / +sweep=NAME a whole study (conf/sweep/NAME.yaml)."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ablate import sweep
from ablate.errors import ConfigError
from ablate.record import DiskFull
from ablate.resolvers import register_resolvers
from ablate.train import run

# Before Hydra composes anything: the config tree names them (hydra.run.dir is ${identity:}). Hydra hands them on
# to its joblib and submitit workers.
register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    record_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        outcome = run(cfg, record_dir)["outcome"]
    except ConfigError as error:
        print(f"ablate: error: {error}", file=sys.stderr)
        if not in_sweep:
            sys.exit(2)
        outcome = "failed"
    except DiskFull as error:  # one line naming the file; the record says failed where the disk still let it
        print(f"ablate: error: {error}", file=sys.stderr)
        if not in_sweep:
            sys.exit(1)
        outcome = "failed"
    except Exception as error:
        # In a sweep one broken job must not stop the others: its record already says failed, with the traceback.
        if not in_sweep:
            raise
        print(f"ablate: job {record_dir.name} failed: {type(error).__name__}: {error}", file=sys.stderr)
        outcome = "failed"
    if in_sweep:
        sweep.note_outcome(record_dir, outcome)
    elif outcome == "interrupted":
        sys.exit(130 if sweep.interrupted_by == "SIGINT" else 143)  # the shell's codes for SIGINT and SIGTERM
    return outcome


if __name__ == "__main__":
    main()
