"""Analyse one study: `python -m ablate.analyze depth` -> results/<data>/<budget>/depth/report.md and figures/, for
every dataset and budget the study has a table for (--data and --budget pick one)."""

import argparse
import sys
from pathlib import Path

from ablate.analysis import analyze
from ablate.analysis.selection import METRICS
from ablate.analysis.stats import METHODS
from ablate.config import CONF_DIR
from ablate.errors import ConfigError
from ablate.hints import closest
from ablate.tracking.wandb import MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ablate.analyze",
        description="Per scientific value: best nuisance setting on val, test accuracy with a 95% CI over seeds, "
        "saturation, the articles' claims, figures. Reads results/<study>/runs.csv (python -m ablate.collect).",
    )
    parser.add_argument("study", help="study name, e.g. depth, width, lr_policy (conf/sweep/<study>.yaml)")
    parser.add_argument(
        "--results",
        default="results",
        help="results folder (paths.results) holding <data>/<budget>/<study>/runs.csv, or <study>/runs.csv",
    )
    parser.add_argument("--data", default=None, help="only the table of this dataset (data.name, e.g. imagefolder)")
    parser.add_argument("--budget", default=None, help="only the table of this budget (budget.name)")
    parser.add_argument("--conf", default=None, help="config folder with sweep/ and claims/ (default: the repo's conf)")
    parser.add_argument("--ci", choices=METHODS, default="t", help="interval over seeds: Student t or bootstrap")
    parser.add_argument(
        "--metric",
        choices=list(METRICS),
        default="final",
        help="final: last evaluation; best: test acc at the best-val epoch",
    )
    parser.add_argument("--scientific", default=None, help="compared keys, comma-separated (overrides the sweep file)")
    parser.add_argument(
        "--nuisance", default=None, help="keys tuned on val, comma-separated, '' for none (overrides the sweep file)"
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep only these rows, e.g. --where data=cifar10 (repeatable); "
        "the report then goes to results/<study>/<value>/",
    )
    parser.add_argument("--out", default=None, help="folder for report.md and figures/ (default: results/<study>)")
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="auto",
        default=None,
        choices=MODES,
        metavar="MODE",
        help="also log the analysis (results and claims tables, figures) as the study's W&B analysis run, which the "
        "W&B report's main panel shows; MODE as logger.mode: auto (default: online with W&B credentials, else "
        "offline beside report.md), online, offline, disabled",
    )
    args = parser.parse_args(argv)
    try:
        where = _where(args.where)
        folders = tables(args.study, Path(args.results), args.data, args.budget)
        if args.out is not None and len(folders) > 1:
            raise ConfigError(f"--out={args.out}: {len(folders)} tables match; pick one with --data and --budget")
        for folder in folders:
            report = analyze(
                args.study,
                results_dir=folder,
                conf_dir=args.conf,
                metric=args.metric,
                ci=args.ci,
                scientific=_keys(args.scientific),
                nuisance=_keys(args.nuisance),
                where=where,
                out_dir=args.out,
                wandb=args.wandb,
            )
            print(f"wrote {report}")
    except ConfigError as error:
        print(f"ablate.analyze: error: {error}", file=sys.stderr)
        return 2
    return 0


def tables(study: str, results: Path, data: str | None, budget: str | None) -> list[Path]:
    """The results folders (each holding <study>/runs.csv) to analyse: <results>/<data>/<budget>/, or <results>
    itself where it holds the study's table directly (a table kept by hand, the committed reference results)."""
    if data is None and budget is None and (results / study / "runs.csv").is_file():
        return [results]
    found = sorted(path.parent.parent for path in results.glob(f"{data or '*'}/{budget or '*'}/{study}/runs.csv"))
    if not found:
        looked = results / (data or "<data>") / (budget or "<budget>") / study / "runs.csv"
        raise ConfigError(
            f"study={study}: no table {looked}; {where_else(study, results)}run the study (python -m ablate "
            f"+sweep={study}) or collect its records (python -m ablate.collect {study})"
        )
    return found


def where_else(study: str, results: Path) -> str:
    """What a user who asked for a table that is not there probably meant: the study's tables under another --data
    or --budget, else a study name that is there or has a sweep file (a typo)."""
    elsewhere = sorted(results.glob(f"*/*/{study}/runs.csv"))
    if elsewhere:
        picks = [f"--data {path.parents[2].name} --budget {path.parents[1].name}" for path in elsewhere]
        return f"its tables here: {', '.join(picks)}; or "
    studies = {path.parent.name for path in results.glob("*/*/*/runs.csv")} | {
        path.stem for path in (CONF_DIR / "sweep").glob("*.yaml")
    }
    near = None if study in studies else closest(study, sorted(studies))
    return f"did you mean {near}? or " if near else ""


def _where(pairs: list[str]) -> dict:
    where = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"where={pair}: not KEY=VALUE; write e.g. --where data=cifar10")
        where[key.strip()] = value.strip()
    return where


def _keys(text: str | None) -> list[str] | None:
    return None if text is None else [k.strip() for k in text.split(",") if k.strip()]


if __name__ == "__main__":
    sys.exit(main())
