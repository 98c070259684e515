"""One study from its run table to results/<study>/: select on val, saturation, claims, figures, then report.md."""

import dataclasses
import sys
from pathlib import Path

import numpy as np

from ablate import collect
from ablate.analysis import budget, figures, report, wandb_run
from ablate.analysis.claims import judge, parse_claims
from ablate.analysis.curves import Curves
from ablate.analysis.saturation import curve_keys, saturation
from ablate.analysis.selection import Selection, select
from ablate.analysis.stats import METHODS
from ablate.analysis.study import Study, check_one_setup, load_runs, load_study, runs_path, where_slug
from ablate.errors import ConfigError
from ablate.record import Damaged, atomic_write_text, read_metrics

DEFAULT_CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def analyze(
    study: str,
    results_dir: Path | str = "results",
    conf_dir: Path | str | None = None,
    *,
    metric: str = "final",
    ci: str = "t",
    scientific: list[str] | None = None,
    nuisance: list[str] | None = None,
    where: dict | None = None,
    out_dir: Path | str | None = None,
    wandb: str | None = None,
) -> Path:
    """Read results/<study>/runs.csv and the records it names; write report.md and figures/; return the report.

    `where` keeps the rows matching {column: value} (one dataset of several); its report then goes to
    results/<study>/<value>/ unless `out_dir` says otherwise. `wandb`, a W&B mode (auto|online|offline|disabled),
    also logs the analysis as the study's analysis run (ablate.analysis.wandb_run); None: no W&B.
    """
    results_dir = Path(results_dir)
    conf_dir = Path(conf_dir) if conf_dir is not None else DEFAULT_CONF_DIR
    if ci not in METHODS:
        raise ConfigError(f"ci={ci}: unknown interval; use one of {', '.join(METHODS)}")
    runs = load_runs(study, results_dir, where)
    runs, skipped = drop_damaged(runs)
    skipped = [*collect.read_skipped(results_dir / study), *skipped]
    spec = load_study(study, conf_dir, list(runs.columns), scientific, nuisance, runs)
    # Seeds requested by the command actually run, not the sweep file's default: each one left a record, even a
    # failed one (seed=0 alone is one seed requested, not "1 of 3 completed").
    spec = dataclasses.replace(spec, seeds_requested=int(runs["seed"].nunique()) or spec.seeds_requested)
    check_one_setup(runs, spec)
    claims = parse_claims(spec.claims, str(conf_dir / "claims" / f"{study}.yaml"))
    selection = select(runs, spec, metric, ci, spec.confidence)
    verdicts = [judge(claim, selection) for claim in claims]
    keys = curve_keys(spec, selection.arms)
    curves = [curve for curve in (saturation(selection.arms, k, spec.margin, ci) for k in keys) if curve is not None]
    if out_dir is None:
        out_dir = results_dir / study / where_slug(where) if where else results_dir / study
    out_dir = Path(out_dir)
    companion = companion_arms(spec, results_dir, conf_dir, metric, ci, where)
    run_curves = Curves.beside(runs_path(study, results_dir).parent)
    drawn = draw(selection, keys, out_dir / "figures", companion, run_curves)
    curves_here = any(run_curves.found(runs))
    for stale in set((out_dir / "figures").glob("*.png")) - {path for _, path in drawn}:
        if not curves_here and stale.name in figures.FROM_RECORDS:
            continue  # drawn from curves that are not on this machine (an old clone): not stale, only not redrawn
        stale.unlink()  # a figure this table no longer supports would sit beside the report as if current
    range_study = is_range_study(runs)
    kept = out_dir / "figures" / "lr_range.png"
    if range_study and kept.is_file() and kept not in {path for _, path in drawn}:
        drawn.append(("LR range test with the suggested bounds (drawn where the records were)", kept))
    analysis = report.Analysis(
        selection=selection,
        verdicts=verdicts,
        curves=curves,
        figures=drawn,
        inputs=inputs(selection, results_dir, conf_dir, skipped, run_curves),
        range_tests=range_tests(selection),
        range_study=range_study,
        where=dict(where or {}),
        # A range test's LR grows until its loss diverges: its curves rise and collapse by design, not by budget.
        readings={} if range_study else budget.readings(selection.arms, run_curves),
        compute=budget.compute(runs, list(spec.scientific), list(spec.nuisance), spec.plan.claim_seeds),
    )
    path = out_dir / "report.md"
    atomic_write_text(path, report.render(analysis))
    if wandb is not None:
        logged = wandb_run.log_analysis(analysis, path, wandb)
        if logged:
            print(f"W&B analysis run {logged}")
    return path


def drop_damaged(runs):
    """The rows whose record can be read, and [{record_dir, reason}] for the completed ones whose metrics.jsonl
    cannot (a file cut after collect ran), each named on stderr."""
    keep, skipped = [], []
    for record_dir, status in zip(runs["record_dir"], runs["status"]):
        reason = None
        if status == "completed" and isinstance(record_dir, str) and Path(record_dir).is_dir():
            try:
                read_metrics(record_dir)
            except Damaged as error:
                reason = f"{error}; rerun its sweep to train it again"
        keep.append(reason is None)
        if reason is not None:
            print(f"ablate.analyze: skipping {record_dir}: {reason}", file=sys.stderr)
            skipped.append({"record_dir": record_dir, "reason": reason})
    return runs[keep], skipped


def inputs(
    selection: Selection, results_dir: Path, conf_dir: Path, skipped: list[dict], curves: Curves
) -> report.Inputs:
    """The files the numbers came from, as the report names them."""
    spec, runs = selection.study, selection.runs
    sweep_file = conf_dir / "sweep" / f"{spec.name}.yaml"
    claims_file = next((p for p in spec.sources if p.parent.name == "claims"), None)
    completed = runs[runs["status"] == "completed"]
    in_records, saved = curves.found(completed)
    return report.Inputs(
        runs_table=shown(runs_path(spec.name, results_dir)),
        sweep_file=shown(sweep_file),
        sweep_read=sweep_file in spec.sources,
        claims_file=None if claims_file is None else shown(claims_file),
        records_with_curves=in_records,
        saved_curves=saved,
        completed_records=len(completed),
        skipped=tuple((shown(Path(str(s["record_dir"]))), str(s["reason"])) for s in skipped),
    )


def is_range_study(runs) -> bool:
    """Whether the table's runs are LR range tests (mode=lr_range): read from the table, so that a clone without the
    records still reports them as range tests."""
    return "mode" in runs.columns and set(runs["mode"].dropna()) == {"lr_range"}


def range_tests(selection: Selection) -> list[report.RangeTest]:
    """The LR range tests among the chosen arms' completed records, with their suggested bounds."""
    found = []
    for arm in selection.arms:
        for _, run in arm.completed.sort_values("seed").iterrows():
            table, bounds = figures.read_lr_range(run["record_dir"])
            if table is not None:
                lower, upper, at_edge = bounds["lower"], bounds["upper"], bounds["at_edge"]
                found.append(
                    report.RangeTest(arm.label, run["seed"], lower, upper, len(table), at_edge, bounds["learned"])
                )
    return found


def companion_arms(spec: Study, results_dir: Path, conf_dir: Path, metric: str, ci: str, where: dict | None):
    """The sibling study's arms (depth_bn for depth) on the same rows filter, or None while it has no usable table."""
    if not spec.companion:
        return None
    try:
        runs = load_runs(spec.companion, results_dir, where)
        other = load_study(spec.companion, conf_dir, list(runs.columns), runs=runs)
        check_one_setup(runs, other)
        return select(runs, other, metric, ci).arms
    except ConfigError:
        return None


def draw(
    selection: Selection, keys: tuple[str, ...], folder: Path, companion, curves: Curves
) -> list[tuple[str, Path]]:
    """Every figure this study's data supports, as (caption, path); `keys` are its saturation curves' x axes."""
    spec = selection.study
    # Every title names the dataset: the same study on the embedded data and on CIFAR-10 are different curves.
    arms, name = selection.arms, f"{spec.name} on {figures.dataset_name(selection.runs)}"
    setting = f"best {', '.join(spec.nuisance)} on val" if spec.nuisance else "one setting"
    drawn = [
        (
            "Test accuracy per value",
            figures.accuracy_per_value(
                arms, folder / "accuracy.png", f"{name}: test accuracy per {' x '.join(spec.scientific)} ({setting})"
            ),
        ),
    ]
    for key in keys:
        series = {name: arms}
        if companion:
            series[spec.companion] = companion
        drawn.append(
            (
                f"Test accuracy against {key}",
                figures.accuracy_vs(
                    series, key, folder / f"accuracy_vs_{_file_name(key)}.png", f"{name}: test accuracy against {key}"
                ),
            )
        )
    numeric = [k for k in spec.scientific if _numeric([a.values[k] for a in arms])]
    if len(spec.scientific) == 2 and len(numeric) >= 1 and numeric[0] not in keys:
        x_key = numeric[0]
        line_key = next(k for k in spec.scientific if k != x_key)
        drawn.append(
            (
                f"Test accuracy against {x_key}, one line per {line_key}",
                figures.lines_vs(
                    arms,
                    x_key,
                    line_key,
                    folder / f"accuracy_vs_{_file_name(x_key)}.png",
                    f"{name}: test accuracy against {x_key} per {line_key}",
                ),
            )
        )
    if any(k == "sched" or k.startswith("sched.") for k in spec.scientific):
        drawn.append(
            (
                "Val accuracy, train loss and LR against iteration",
                figures.learning_curves(
                    arms,
                    folder / "val_acc_vs_iteration.png",
                    f"{name}: per policy, mean and 95% band over seeds",
                    x="step",
                    curves=curves,
                ),
            )
        )
    range_test = figures.lr_range(arms, folder / "lr_range.png", f"{name}: LR range test")
    if range_test is not None:  # a range test's metrics.jsonl is its LR sweep, drawn here against the LR
        drawn.append(("LR range test with the suggested bounds", range_test))
    else:
        # Runs that hold updates (batch.hold=updates) make different numbers of passes: updates are their common x.
        runs = selection.runs
        held = "batch.hold" in runs.columns and bool((runs["batch.hold"] == "updates").any())
        drawn.append(
            (
                "Learning curves at each value's chosen setting" + (", against updates" if held else ""),
                figures.learning_curves(
                    arms,
                    folder / "learning_curves.png",
                    f"{name}: mean and 95% band over seeds",
                    x="step" if held else "epoch",
                    curves=curves,
                ),
            )
        )
    return [(caption, path) for caption, path in drawn if path is not None]


def shown(path: Path) -> Path:
    """A path relative to the working directory when it lies under it: a committed report names no one's home."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def _numeric(values) -> bool:
    try:
        return (
            all(v is not None for v in values)
            and all(np.isfinite(float(v)) for v in values)
            and not any(isinstance(v, bool) for v in values)
        )
    except (TypeError, ValueError):
        return False


def _file_name(key: str) -> str:
    return key.split(".")[-1] if key.startswith("model.") else key.replace(".", "_")
