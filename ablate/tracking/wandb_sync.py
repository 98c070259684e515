"""Upload every offline W&B run of a study: python -m ablate.tracking.wandb_sync depth [--dry-run].

The offline runs are found from the study's records (runs/<study>/<identity>/ holding a
config.yaml, with W&B's files under its wandb/) and, for its analysis runs (python -m ablate.analyze
<study> --wandb), beside its reports (results/<data>/<budget>/<study>/wandb/), and uploaded by
`wandb sync`, which skips the ones it already uploaded, so syncing twice is harmless.
"""

import argparse
import subprocess
import sys
from pathlib import Path


def offline_run_dirs(study: str, runs_root: str | Path = "runs", wandb_root: str | Path | None = None) -> list[Path]:
    """The offline W&B run folders of every record of a study, oldest first within a record.

    W&B's files are in the record folder, or in <wandb_root>/<study>/<identity> when the
    runs set `logger.dir=<wandb_root>` (see ablate.tracking.wandb.wandb_dir).
    """
    # Every dataset and budget of the study: runs/<study>/<data>/<budget>/<identity>/ (or runs/<study>/<identity>/).
    # A record is a folder with its summary.json or its resolved config.yaml (not Hydra's .hydra/ copy).
    found = [*Path(runs_root, study).glob("**/summary.json"), *Path(runs_root, study).glob("**/config.yaml")]
    records = sorted({path.parent for path in found if path.parent.name != ".hydra"})
    folders = records if wandb_root is None else [Path(wandb_root, study, record.name) for record in records]
    return [run_dir for folder in folders for run_dir in sorted(folder.glob("wandb/offline-run-*"))]


def analysis_run_dirs(study: str, results_root: str | Path = "results") -> list[Path]:
    """The offline W&B folders of a study's analysis runs: beside each of its reports under the results folder
    (<results>/<data>/<budget>/<study>/wandb/, or a filtered report's <study>/<value>/wandb/), oldest first."""
    return sorted(Path(results_root).glob(f"**/{study}/**/wandb/offline-run-*"))


def sync_command(
    run_dirs: list[Path], entity: str | None = None, project: str | None = None, dry_run: bool = False
) -> list[str]:
    """The `wandb sync` command line that uploads these run folders."""
    command = [sys.executable, "-m", "wandb", "sync"]
    if entity:
        command += ["--entity", entity]
    if project:
        command += ["--project", project]
    if dry_run:
        command.append("--dry-run")
    return command + [str(run_dir) for run_dir in run_dirs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study name, e.g. depth (its records are <root>/<study>/*/)")
    parser.add_argument("--root", default="runs", help="the runs folder (paths.runs)")
    parser.add_argument("--wandb-dir", default=None, help="logger.dir, if the runs set one")
    parser.add_argument("--results", default="results", help="the results folder (paths.results): analysis runs")
    parser.add_argument("--entity", default=None, help="upload to this entity instead of the one the runs recorded")
    parser.add_argument("--project", default=None, help="upload to this project instead of the one the runs recorded")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    args = parser.parse_args(argv)

    run_dirs = offline_run_dirs(args.study, args.root, args.wandb_dir) + analysis_run_dirs(args.study, args.results)
    if not run_dirs:
        print(f"no offline W&B runs in the records under {Path(args.root, args.study)} nor beside its reports")
        return 0
    print(f"syncing {len(run_dirs)} offline W&B runs of study {args.study}", flush=True)
    return subprocess.call(sync_command(run_dirs, args.entity, args.project, args.dry_run))


if __name__ == "__main__":
    sys.exit(main())
