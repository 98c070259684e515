"""A study's analysis as one W&B run in the study's group: `python -m ablate.analyze depth --wandb`.

The run (job type `analysis`, beside the study's training runs) holds what report.md shows: the results table, one
row per scientific value at its chosen (best-on-val) nuisance setting; the claims' verdicts; the report's figures.
scripts/wandb_dashboard.py builds the W&B report's main panel on its results table. Its id is the study's,
dataset's and budget's (ablate.tracking.wandb.analysis_run_id), so analysing again updates the same run, as a
rerun of a record logs into that record's run. It goes to the project and entity the study's training runs logged
to (the `logger` node of its records), else to conf/logger/wandb.yaml's. Like every W&B mirror here, a W&B
problem is one warning line, never a failure: report.md is written before.
"""

import contextlib
import math
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ablate import record
from ablate.analysis.report import Analysis
from ablate.analysis.stats import CONFIDENCE
from ablate.analysis.study import fmt, is_missing, label, where_slug
from ablate.tracking import wandb as tracking

# The results table's columns. Accuracies are fractions, as runs.csv and the training runs' W&B metrics hold them;
# ci_low/ci_high are the 95% interval over seeds, clipped to [0, 1] as report.md clips it (empty with one seed);
# `x` is the value's number on the study's curve (depth, params... named by the run's config `x`; empty where the
# axis is not numeric); `on_curve` marks the value drawn on the curve at its x (the best on val among the values
# sharing a depth); `series` names the line (dataset/budget, and any other compared key).
RESULT_COLUMNS = (
    "value",
    "x",
    "series",
    "setting",
    "on_curve",
    "val_acc",
    "test_acc",
    "ci_low",
    "ci_high",
    "seeds",
    "flags",
)
CLAIM_COLUMNS = ("claim", "verdict", "kind", "text", "margin", "comparisons", "source")
LOGGER_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "logger" / "wandb.yaml"


def result_rows(analysis: Analysis) -> list[list]:
    """The results table: per scientific value, as report.md's Results table (in fractions, not percent)."""
    selection = analysis.selection
    spec = selection.study
    key = x_key(analysis)
    curve = next((c for c in analysis.curves if c.key == key), None)
    on_curve = None if curve is None else {id(level.arm) for level in curve.levels}
    base = "/".join(setup(analysis).values())  # data/budget: the line's name where one key is compared
    rows = []
    for arm in selection.arms:
        # Clipped to [0, 1] as report.md and the figures clip it; none with fewer than two seeds.
        low, high = (max(0.0, arm.test.low), min(1.0, arm.test.high)) if arm.test.bounded else (None, None)
        others = {k: v for k, v in arm.values.items() if k != key} if key in arm.values else {}
        rows.append(
            [
                arm.label,
                _number(arm.x(key)) if key else None,
                f"{base} {label(others)}" if others and len(spec.scientific) > 1 else base,
                ", ".join(f"{k}={fmt(v)}" for k, v in arm.setting.items()),
                True if on_curve is None else id(arm) in on_curve,
                _number(arm.val.mean),
                _number(arm.test.mean),
                _number(low),
                _number(high),
                arm.seeds,
                "; ".join(arm.flags),
            ]
        )
    return rows


def claim_rows(analysis: Analysis) -> list[list]:
    """The claims table: per claim, its verdict and each comparison as report.md states it."""
    rows = []
    for verdict in analysis.verdicts:
        claim = verdict.claim
        comparisons = "; ".join(
            f"{c.left} vs {c.right}: {c.verdict}"
            + ("" if c.diff is None or not np.isfinite(c.diff.mean) else f" ({100 * c.diff.mean:+.1f} points)")
            for c in verdict.comparisons
        )
        rows.append([claim.id, verdict.verdict, claim.kind, claim.text, verdict.margin, comparisons, claim.source])
    return rows


def x_key(analysis: Analysis) -> str | None:
    """The results' numeric axis: the saturation curve's (depth, params...), else a numeric scientific key."""
    if analysis.curves:
        return analysis.curves[0].key
    spec = analysis.selection.study
    if spec.saturation:
        return spec.saturation[0]
    arms = analysis.selection.arms
    numeric = [k for k in spec.scientific if arms and all(_number(a.values[k]) is not None for a in arms)]
    return numeric[0] if numeric else None


def setup(analysis: Analysis) -> dict:
    """The dataset and budget of the analysed rows (one each: the analysis refuses to mix them)."""
    runs = analysis.selection.runs

    def one(column: str) -> str:
        values = runs[column].dropna().unique() if column in runs else []
        return "+".join(sorted(fmt(v) for v in values)) or "unknown"

    return {"data": one("data"), "budget": one("budget")}


def logger_settings(analysis: Analysis) -> dict:
    """conf/logger/wandb.yaml's settings, with the project and entity the study's runs logged to (the `logger` node
    of the first record's config.yaml, where that logger was W&B's)."""
    settings = OmegaConf.to_container(OmegaConf.load(LOGGER_DEFAULTS))
    for record_dir in analysis.selection.runs["record_dir"]:
        path = Path(str(record_dir)) / record.CONFIG
        if not path.is_file():
            continue
        try:
            logger = OmegaConf.to_container(OmegaConf.load(path)).get("logger") or {}
        except Exception:  # noqa: BLE001 (a damaged record: the defaults)
            break
        if str(logger.get("_target_", "")).endswith("WandbLogger"):
            settings.update({k: logger[k] for k in ("project", "entity") if k in logger})
        break
    return settings


def log_analysis(analysis: Analysis, report_path: Path, mode: str = "auto") -> str | None:
    """Log the analysis as the study's analysis run (W&B files beside report.md); returns where it went, or None."""
    try:
        mode = tracking.resolve_mode(mode)
        if mode == "disabled":
            return None
        import wandb

        spec, selection = analysis.selection.study, analysis.selection
        where = where_slug(analysis.where)
        data, budget = setup(analysis)["data"], setup(analysis)["budget"]
        settings = logger_settings(analysis)
        config = {
            "study": spec.name,
            "data": data,
            "budget": budget,
            "where": dict(analysis.where),
            "scientific": list(spec.scientific),
            "nuisance": list(spec.nuisance),
            "x": x_key(analysis),
            "metric": selection.metric,
            "ci": selection.method,
            "confidence": CONFIDENCE,
            "claims_confidence": selection.confidence,
            "report": str(report_path),
        }
        run = tracking.start(
            mode,
            run_id=tracking.analysis_run_id(spec.name, data, budget, where),
            name="/".join(part for part in (spec.name, tracking.ANALYSIS_JOB_TYPE, data, budget, where) if part),
            group=spec.name,
            job_type=tracking.ANALYSIS_JOB_TYPE,
            tags=[spec.name, tracking.ANALYSIS_JOB_TYPE, data, budget],
            config=config,
            path=Path(report_path).parent,
            project=settings["project"],
            entity=settings.get("entity"),
            init_timeout_s=settings.get("init_timeout_s", 15),
            finish_timeout_s=settings.get("finish_timeout_s", 120),
        )
    except Exception as error:  # noqa: BLE001 (the report is written; W&B is its mirror)
        _warn("set-up", error)
        return None
    try:
        payload = {
            tracking.RESULTS_TABLE: wandb.Table(columns=list(RESULT_COLUMNS), data=result_rows(analysis)),
            tracking.CLAIMS_TABLE: wandb.Table(columns=list(CLAIM_COLUMNS), data=claim_rows(analysis)),
        }
        for caption, path in analysis.figures:
            payload[f"figures/{Path(path).stem}"] = wandb.Image(str(path), caption=caption)
        run.log(payload)
        run.summary.update(summary(analysis))
        where_to = f"offline in {Path(report_path).parent / 'wandb'}" if run.offline else run.url
        run.finish()
    except Exception as error:  # noqa: BLE001
        _warn("log", error)
        with contextlib.suppress(Exception):  # warned once already; the service may be gone
            run.finish(exit_code=1)
        return None
    return f"{run.id} {where_to}"


def summary(analysis: Analysis) -> dict:
    """The run's summary: the best value on val with its test accuracy, and the claims' counts."""
    counts = {v: sum(x.verdict == v for x in analysis.verdicts) for v in ("supported", "contradicted", "inconclusive")}
    values = {f"claims/{verdict}": count for verdict, count in counts.items()}
    measured = [a for a in analysis.selection.arms if np.isfinite(a.val.mean)]
    if measured:
        best = max(measured, key=lambda a: a.val.mean)
        values.update({"best/value": best.label, "best/test_acc": _number(best.test.mean)})
    return values


def _number(value) -> float | None:
    """A plain float for the table; None for a missing or unbounded one (an interval over one seed)."""
    if is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _warn(stage: str, error: BaseException) -> None:
    text = " ".join(str(error).split()) or type(error).__name__
    print(
        f"ablate.analyze: warning: the W&B analysis run was not logged ({stage} failed: {type(error).__name__}: "
        f"{text[:300]}); report.md is unaffected",
        file=sys.stderr,
    )
