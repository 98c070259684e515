"""A study's records -> results/<study>/runs.csv, one row per record: `python -m ablate.collect depth`.

Rows are built from what each record says about itself (summary.json and the resolved config.yaml), never from
folder names. The local folder and W&B (`--source wandb`) give the same record dicts to the one function `table`.
"""

import argparse
import functools
import json
import os
import sys
from pathlib import Path

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from ablate import record
from ablate.errors import ConfigError
from ablate.hints import closest
from ablate.index import write_index

RUNS_CSV = "runs.csv"
SKIPPED_CSV = "skipped.csv"  # the record folders the last local collect left out, with why
# Every completed record's metrics.jsonl, one row per evaluation keyed by identity: a report's learning curves and
# its "what this budget measured" line come from the curves, and a clone of committed results has no runs/.
CURVES_CSV = "curves.csv"

# Override keys that never become columns: where and how a run was computed, not what it computed.
NOT_SWEPT_ROOTS = ("sweep", "paths", "logger", "launcher", "study", "resume", "retry_diverged", "hydra", "budget")
NOT_SWEPT_KEYS = tuple(
    [f"trainer.{k}" for k in record.NOT_IDENTITY_TRAINER_KEYS] + [f"data.{k}" for k in record.NOT_IDENTITY_DATA_KEYS]
)
# Every study's columns, around the swept keys (which go after `seed`). ablate.analysis.study relies on these names.
HEAD_COLUMNS = ("identity", "study", "status", "seed")
# What one experiment holds fixed: rows differing here are not seeds of the same thing (ablate.analysis.study refuses
# to average them unless the study sweeps the key).
SETUP_COLUMNS = (
    "data",
    "data.root",
    "data.resolution",
    "data.train",
    "data.val",
    "data.test",
    "trainer.epochs",
    "trainer.updates",
    "batch.hold",
    "budget",
    "precision",
)
RECORD_COLUMNS = (
    *SETUP_COLUMNS,
    "plan",
    "grid_step",
    "data.classes",
    "depth",
    "params",
    "macs",
    "lr_base",
    "lr_effective",
    "wall_seconds",
    "images_per_s",
    "final/train/loss",
    "final/train/acc",
    "final/val/loss",
    "final/val/acc",
    "final/test/loss",
    "final/test/acc",
    "best/val/acc",
    "best/test/acc",
    "best/epoch",
    "steps",
    "epochs_completed",
    "git_commit",
    "error",
    "record_dir",
)


def local_records(study_dir: Path, skipped: list[dict] | None = None) -> list[dict]:
    """Every run record under runs/<study>/: a folder holding summary.json, with its resolved config.yaml.

    A folder that cannot be read as a record is left out, named with the reason on stderr and added to `skipped`
    ({record_dir, reason}); a lost or damaged config.yaml is rebuilt from Hydra's copy where that copy resolves."""
    from ablate.resolvers import register_resolvers  # Hydra's copy of a config names ablate's resolvers

    register_resolvers()
    skipped = [] if skipped is None else skipped
    records = []
    for record_dir in sorted(p for p in Path(study_dir).iterdir() if p.is_dir() and not p.name.startswith(".")):
        found, reason = read_record(record_dir)
        if found is None:
            print(f"ablate.collect: skipping {record_dir}: {reason}", file=sys.stderr)
            skipped.append({"record_dir": str(record_dir.resolve()), "reason": reason})
        else:
            records.append(found)
    return records


def read_record(record_dir: Path) -> tuple[dict | None, str | None]:
    """A record as {summary, config, record_dir}, or None and why it cannot be used."""
    summary_path = record_dir / record.SUMMARY
    if not summary_path.exists():
        return None, f"no {record.SUMMARY} (a run killed before it wrote one, or not a record)"
    summary = record.read_json(summary_path)
    if not isinstance(summary, dict):
        return None, f"{summary_path} is not valid JSON (a truncated or overwritten file)"
    broken = record.metrics_damage(record_dir, summary)
    if broken is not None:
        return None, f"{broken}; rerun its sweep to train it again"
    damaged = record.config_damage(record_dir, summary)
    if damaged is not None and summary.get("status") != "failed":
        not_rebuilt = record.regenerate_config(record_dir, summary)
        if not_rebuilt is not None:
            return None, f"{damaged}, and it cannot be rebuilt: {not_rebuilt}"
        print(f"ablate.collect: {damaged}; rebuilt it from {record.HYDRA_CONFIG}", file=sys.stderr)
    config_path = record_dir / record.CONFIG
    # A run that failed on a bad config value has a summary but no resolved config.
    try:
        config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    except yaml.YAMLError:
        config = {}
    # Absolute, so the table's record_dir works from any working directory (the analysis reads metrics.jsonl).
    return {
        "summary": summary,
        "config": config if isinstance(config, dict) else {},
        "record_dir": str(record_dir.resolve()),
    }, None


def table(records: list[dict]) -> pd.DataFrame:
    """One row per record: identity, study, status, seed, every swept key, then the record's numbers."""
    swept = [k for k in swept_keys(records) if k not in HEAD_COLUMNS and k not in RECORD_COLUMNS]
    columns = [*HEAD_COLUMNS, *swept, *RECORD_COLUMNS]
    rows = [row(r, swept) for r in records]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["study", "identity"], kind="stable", ignore_index=True)


def swept_keys(records: list[dict]) -> list[str]:
    """The study's scientific, nuisance and fixed keys (model.batch_norm of depth_bn), then every other key a record
    was overridden with, in first-seen order; keys that change only where or how fast a run computes are left out."""
    keys = {}
    for r in records:
        study = r["config"].get("study") or {}
        for part in ("scientific", "nuisance", "fixed"):
            for key in study.get(part) or []:  # {key: values} in a sweep file; a list of keys in older records
                keys.setdefault(key, None)
    for r in records:
        for key in overrides(r["summary"]):
            root = key.split(".")[0].split("/")[0]
            if root not in NOT_SWEPT_ROOTS and key not in NOT_SWEPT_KEYS:
                keys.setdefault(key, None)
    return list(keys)


def overrides(summary: dict) -> dict:
    """The record's command-line and sweep overrides as {key: value}, read with Hydra's own override parser."""
    parsed = {}
    for text in summary.get("overrides") or []:
        try:
            override = _override_parser().parse_override(text)
        except HydraException:  # not Hydra's syntax, so not an override the run was given
            continue
        parsed[override.key_or_group] = override.value()
    return parsed


@functools.cache
def _override_parser() -> OverridesParser:
    return OverridesParser.create()


def row(r: dict, swept: list[str]) -> dict:
    summary, config = r["summary"], r["config"]
    model, lr = summary.get("model") or {}, summary.get("lr") or {}
    final, best = summary.get("final") or {}, summary.get("best") or {}
    values = {
        "identity": summary.get("identity"),
        "study": summary.get("study"),
        "status": summary.get("status"),
        "seed": summary.get("seed", record.select(config, "seed")),
        **{key: value_of(summary, config, key) for key in swept},
        # The dataset's name, as the runs/ and results/ folders file it (data.name: two image folders given their
        # own names stay two datasets); the data option's name for a record without one.
        "data": record.select(config, "data.name") or value_of(summary, config, "data"),
        "data.root": value_of(summary, config, "data.root"),
        "data.resolution": value_of(summary, config, "data.resolution"),
        # The split sizes and classes the run saw, from its summary: a subset or a smaller embedded dataset shows here.
        **{f"data.{key}": (summary.get("data") or {}).get(key) for key in ("train", "val", "test", "classes")},
        "trainer.epochs": value_of(summary, config, "trainer.epochs"),
        # What the run length held: trainer.updates when set, and batch.hold; a record from before batch.hold held
        # epochs, as the key's old value says.
        "trainer.updates": value_of(summary, config, "trainer.updates"),
        "batch.hold": value_of(summary, config, "batch.hold")
        or (record.NEW_KEY_DEFAULTS["batch.hold"][0] if record.select(config, "batch") else None),
        # The budget tier a study ran at (conf/budget/); none for a single run or a record from before the tiers.
        "budget": record.select(config, "budget.name"),
        "precision": summary.get("precision"),
        # How the study was launched (seeds, halving, adaptive seeds): the analysis judges claims at this plan's
        # level, so a table keeps it without the records. A study extended later (study.more_seeds.max=16) leaves
        # rows of both plans.
        "plan": plan_of(config),
        # A setting past the sweep's grid, run by the grid extension at this step (none: the grid's own).
        "grid_step": record.select(config, "study.grid_step"),
        "depth": model.get("depth"),
        "params": model.get("params"),
        "macs": model.get("macs"),
        "lr_base": lr.get("base"),
        "lr_effective": lr.get("effective"),
        "wall_seconds": summary.get("wall_seconds"),
        "images_per_s": summary.get("images_per_s"),
        **{
            f"final/{k}": final.get(k)
            for k in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc")
        },
        **{f"best/{k}": best.get(k) for k in ("val/acc", "test/acc", "epoch")},
        "steps": summary.get("steps"),
        "epochs_completed": summary.get("epochs_completed"),
        "git_commit": (summary.get("git") or {}).get("commit"),
        "error": summary.get("error"),
        "record_dir": r["record_dir"],
    }
    # Lists and dicts (optim.betas=[0.9,0.99]) become one cell each, as JSON.
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in values.items()}


def plan_of(config: dict) -> dict | None:
    """The record's study.seeds/halving/more_seeds/extend_grid/minutes (ablate/adaptive.py); None outside a study."""
    study = config.get("study") if isinstance(config, dict) else None
    if not isinstance(study, dict):
        return None
    plan = {key: study[key] for key in ("seeds", "halving", "more_seeds", "extend_grid", "minutes") if key in study}
    return _without_nulls(plan) or None


def _without_nulls(node):
    """The plan without its null keys: null means off, as an absent key does, so a key added to the budgets later
    (study.more_seeds.futility: null) does not make records of one plan read as two."""
    if isinstance(node, dict):
        return {key: _without_nulls(value) for key, value in node.items() if value is not None}
    return node


def value_of(summary: dict, config: dict, key: str):
    """A config group's option name (model=allconv6), else the resolved config value, else the override's value
    (a run that failed before writing its config)."""
    choices = summary.get("choices") or {}
    if key in choices:
        return choices[key]
    value = record.select(config, key)
    if value is None:
        value = overrides(summary).get(key)
    return value


def write_table(frame: pd.DataFrame, results_dir: Path) -> Path:
    """<results>/<data>/<budget>/<study>/runs.csv, written atomically so a reader never sees half a table.

    record_dir is written relative to the table's folder (the analysis resolves it from there): the table holds no
    machine's absolute paths, and still finds the records from any working folder while runs/ and results/ keep
    their places."""
    path = Path(results_dir) / RUNS_CSV
    frame = frame.copy()
    frame["record_dir"] = [relative_to_table(d, path.parent) for d in frame["record_dir"]]
    record.atomic_write_text(path, frame.to_csv(index=False))
    return path


def relative_to_table(record_dir, table_dir: Path):
    if not isinstance(record_dir, str) or not Path(record_dir).is_absolute():
        return record_dir
    return Path(os.path.relpath(record_dir, Path(table_dir).resolve())).as_posix()


def write_study_table(study_dir: Path, results_dir: Path) -> Path:
    """The local records of one study folder (runs/<study>/<data>/<budget>/) into its runs.csv, and the folders it
    left out (with why) into skipped.csv beside it, which the analysis counts in its report; called at the end of
    every sweep."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        study = study_dir.name
        there = sorted(path.name for path in study_dir.parent.glob("*") if path.is_dir())
        near = closest(study, there)  # a typo of a study whose records are there
        meant = f"did you mean {near} ({study_dir.parent / near})? or " if near else ""
        raise ConfigError(
            f"study={study}: {study_dir} does not exist; {meant}run the study first: python -m ablate +sweep={study}"
        )
    skipped = []
    records = local_records(study_dir, skipped)
    path = write_table(table(records), results_dir)
    write_curves(curves_table(records), results_dir)
    write_skipped(skipped, results_dir)
    write_index(study_dir)
    return path


def curves_table(records: list[dict]) -> pd.DataFrame:
    """identity, then every metrics.jsonl column, one row per evaluation of each completed training record (a
    stopped run's curve stays in its record: the report draws the completed ones). A range test's metrics.jsonl is
    its LR sweep, not a curve over training, and stays in its record too."""
    frames = []
    for r in records:
        summary = r["summary"]
        if summary.get("status") != "completed" or summary.get("mode", "train") != "train":
            continue
        rows = record.read_metrics(r["record_dir"])  # collect checked it (record.metrics_damage)
        if rows:
            frames.append(pd.DataFrame(rows).assign(identity=summary.get("identity")))
    if not frames:
        return pd.DataFrame(columns=["identity"])
    frame = pd.concat(frames, ignore_index=True)
    return frame[["identity", *(c for c in frame.columns if c != "identity")]]


def write_curves(frame: pd.DataFrame, results_dir: Path) -> Path:
    path = Path(results_dir) / CURVES_CSV
    record.atomic_write_text(path, frame.to_csv(index=False))
    return path


def write_skipped(skipped: list[dict], results_dir: Path) -> Path:
    path = Path(results_dir) / SKIPPED_CSV
    record.atomic_write_text(path, pd.DataFrame(skipped, columns=["record_dir", "reason"]).to_csv(index=False))
    return path


def read_skipped(results_dir: Path) -> list[dict]:
    """What the last collect left out: [{record_dir, reason}] ([] before any collect or from W&B)."""
    path = Path(results_dir) / SKIPPED_CSV
    try:
        return pd.read_csv(path).to_dict("records")
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return []


def record_folders(study_root: Path, data: str | None = None, budget: str | None = None) -> list[Path]:
    """The folders under runs/<study>/ that hold records: one per dataset and budget (<data>/<budget>/), or the
    study folder itself in the layout before them; `data` and `budget` keep only that dataset's or budget's (a
    study run on two datasets rewrites one table without touching the other's)."""
    study_root = Path(study_root)
    folders = sorted({summary.parent.parent for summary in study_root.glob(f"**/{record.SUMMARY}")})
    if data is None and budget is None:
        return folders
    kept = [f for f in folders if _matches(f.relative_to(study_root).parts, data, budget)]
    if folders and not kept:
        have = ", ".join("/".join(f.relative_to(study_root).parts) or "." for f in folders)
        asked = " ".join(f"--{k} {v}" for k, v in (("data", data), ("budget", budget)) if v is not None)
        raise ConfigError(f"{asked}: {study_root} has no records of it; pick one of its <data>/<budget>: {have}")
    return kept


def _matches(parts: tuple[str, ...], data: str | None, budget: str | None) -> bool:
    return len(parts) == 2 and data in (None, parts[0]) and budget in (None, parts[1])


def wandb_records(study: str, entity: str | None, project: str | None) -> list[dict]:
    from ablate.tracking.wandb_source import fetch_study_runs, records_from_wandb  # needs wandb and the network

    return records_from_wandb(fetch_study_runs(entity, project, study))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ablate.collect",
        description="Collect a study's run records into results/<study>/runs.csv (one row per record).",
    )
    parser.add_argument("study", help="study name, e.g. depth (the records are in <runs>/<study>/)")
    parser.add_argument("--runs", default="runs", help="the runs folder (paths.runs), default runs")
    parser.add_argument("--results", default="results", help="the results folder (paths.results), default results")
    parser.add_argument(
        "--source",
        choices=("local", "wandb"),
        default="local",
        help="local: the record folders (the truth); wandb: the runs mirrored to W&B",
    )
    parser.add_argument("--data", default=None, help="only the records of this dataset (data.name, e.g. ghim12)")
    parser.add_argument("--budget", default=None, help="only the records of this budget (budget.name, e.g. cpu)")
    parser.add_argument("--entity", default=None, help="W&B entity (with --source wandb; default: yours)")
    parser.add_argument("--project", default=None, help="W&B project (with --source wandb)")
    args = parser.parse_args(argv)
    try:
        if args.source == "wandb":
            if not args.project:
                raise ConfigError("--project: required with --source wandb; e.g. --project ablate")
            if args.data or args.budget:  # W&B runs are one table per study; analyze's --where splits it
                raise ConfigError(
                    "--data/--budget: pick local record folders; with --source wandb, collect all and analyze with "
                    "--where data=<name>"
                )
            records = wandb_records(args.study, args.entity, args.project)
            paths = [write_table(table(records), Path(args.results) / args.study)]
        else:
            study_root = Path(args.runs) / args.study
            # none: write_study_table says what to run
            folders = record_folders(study_root, args.data, args.budget) or [study_root]
            # Each dataset and budget gets its own table: <results>/<data>/<budget>/<study>/runs.csv.
            paths = [
                write_study_table(folder, Path(args.results) / folder.relative_to(study_root) / args.study)
                for folder in folders
            ]
    except ConfigError as error:
        print(f"ablate.collect: error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        frame = pd.read_csv(path)
        counts = ", ".join(f"{n} {status}" for status, n in frame["status"].value_counts().items()) or "no records"
        skipped = len(read_skipped(path.parent)) if args.source == "local" else 0
        left_out = (
            f"; {skipped} records skipped (named above, listed in {path.parent / SKIPPED_CSV})" if skipped else ""
        )
        print(f"wrote {path}: {len(frame)} runs ({counts}){left_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
