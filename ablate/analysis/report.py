"""A study's report.md as text: a pure function of what the pipeline computed (ablate.analysis.pipeline)."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import adaptive
from ablate.analysis import budget
from ablate.analysis.claims import Verdict
from ablate.analysis.looks import out_of_reach, precision_cost, too_wide
from ablate.analysis.saturation import MODEL_SIZES, Saturation
from ablate.analysis.selection import METRICS, Selection, val_rank
from ablate.analysis.stats import CONFIDENCE, Interval, reachable_half_width
from ablate.analysis.study import STATUSES, Study, fmt, is_missing, same, sort_key, where_slug

UNFINISHED = ("interrupted", "running")  # statuses of records that hold no result yet
CI_NAMES = {"t": "Student t over seeds", "bootstrap": "percentile bootstrap over seeds (10,000 resamples)"}


@dataclass(frozen=True)
class Inputs:
    """The files the numbers came from, as the report names them (relative to the working directory if under it)."""

    runs_table: Path
    sweep_file: Path  # conf/sweep/<study>.yaml, whether or not it exists
    sweep_read: bool  # False: the axes came from the command line, the records' config.yaml or the table
    claims_file: Path | None
    records_with_curves: int  # completed records holding a metrics.jsonl
    saved_curves: int  # completed runs whose record is not here, with their curve in curves.csv beside the table
    completed_records: int
    skipped: tuple[tuple[Path, str], ...] = ()  # (record folder, why) for each record collect or analyze left out


@dataclass(frozen=True)
class RangeTest:
    """One LR range test record and the bounds it suggests."""

    label: str
    seed: object
    lower_lr: float | None
    upper_lr: float | None
    points: int
    at_edge: bool
    learned: bool = True  # False: val/acc never left chance, so the bounds are noise


@dataclass(frozen=True)
class Analysis:
    """Everything one study's report shows."""

    selection: Selection
    verdicts: list[Verdict]
    curves: list[Saturation]
    figures: list[tuple[str, Path]]  # (caption, PNG written next to the report under figures/)
    inputs: Inputs
    range_tests: list[RangeTest]
    where: dict  # the rows filter, {} for the whole table
    readings: dict[str, str] = field(default_factory=dict)  # value label -> what its curve shows (analysis.budget)
    compute: budget.Compute | None = None
    range_study: bool = False  # the runs are LR range tests (pipeline.is_range_study), found or not in the records


def render(analysis: Analysis) -> str:
    """The report's markdown."""
    selection, where = analysis.selection, analysis.where
    spec = selection.study
    command = f"python -m ablate.analyze {spec.name}"
    command += "".join(f" --where {k}={fmt(v)}" for k, v in where.items())
    if selection.metric != "final":
        command += f" --metric {selection.metric}"
    if selection.method != "t":
        command += f" --ci {selection.method}"
    lines = [f"# Study `{spec.name}`" + (f" ({where_slug(where)})" if where else ""), ""]
    lines += [f"Written by `{command}` from the run records; rerun it after new runs.", ""]
    lines += _answer(analysis)
    lines += _what_was_run(selection, analysis.inputs, where, range_test=analysis.range_study)
    lines += _results_table(selection, Path(analysis.inputs.runs_table).parent)
    lines += ["## Figures", ""]
    for caption, path in analysis.figures:
        lines += [f"**{caption}**", "", f"![{caption}](figures/{Path(path).name})", ""]
    for curve in analysis.curves:
        lines += _saturation_section(curve)
    lines += _claims_section(analysis.verdicts, analysis.inputs.claims_file, selection.runs, spec)
    lines += _range_test_section(analysis.range_tests, analysis.range_study)
    lines += _settings_section(selection)
    lines += _stopped_section(selection)
    return "\n".join(lines).rstrip() + "\n"


def _answer(analysis: Analysis) -> list[str]:
    """The report's first screen: the curve, the verdicts, the budget and what it measured, the compute."""
    selection, verdicts = analysis.selection, analysis.verdicts
    runs, spec = selection.runs, selection.study
    lines = ["## The answer", ""]
    curve = next((f for f in analysis.figures if "against" in f[0]), analysis.figures[0] if analysis.figures else None)
    if curve is not None:
        lines += [f"![{curve[0]}](figures/{Path(curve[1]).name})", ""]
    if verdicts:
        counts = {v: sum(x.verdict == v for x in verdicts) for v in ("supported", "contradicted", "inconclusive")}
        lines.append(
            f"- **Claims**: {counts['supported']} supported, {counts['contradicted']} contradicted, "
            f"{counts['inconclusive']} inconclusive of {len(verdicts)} ({_claims_level(spec)}): "
            + "; ".join(f"`{v.claim.id}` {v.verdict}" for v in verdicts)
            + "."
        )
    measured = [a for a in selection.arms if np.isfinite(a.test.mean)]
    if measured:
        best = max(measured, key=val_rank)
        lines.append(f"- **Best on val**: {best.label}, test {_interval(best.test)} %.")
    tier = _counted(runs, ["budget"], lambda v: f"`{fmt(v['budget'])}`") if "budget" in runs else "-"
    finished = runs[runs["status"] == "completed"]
    updates = f", median {fmt(finished['steps'].median())} updates a run" if "steps" in runs else ""
    epochs = _run_length(runs)
    data = _counted(
        runs,
        ["data", "data.train"],
        lambda v: f"`{fmt(v.get('data'))}`" + (f" ({fmt(v['data.train'])} train images)" if "data.train" in v else ""),
    )
    lines.append(f"- **Budget**: {tier}: {epochs}{updates}, on {data}.")
    if analysis.range_study:  # its curves rise and collapse by design: no budget reading applies
        lines.append(
            "- **What this budget measured**: an LR range test per run, not an accuracy: the LR grows every update "
            "until the loss diverges, so every curve rises and then collapses by design; the LR bounds each run "
            "suggests are in the table below (`sched=cyclical sched.bounds_from=<record>` trains with them)."
        )
    else:
        lines.append(f"- **What this budget measured**: {budget.measured_line(analysis.readings)}.")
    if analysis.compute is not None:
        c = analysis.compute
        cap = analysis.selection.study.plan.claim_seeds  # None unless precision seeds may go past the claims' cap
        seeds = "the most-seeded value's seed count" + (f" up to the claims' cap: {c.seeds}" if cap is not None else "")
        if cap is None:
            past = ""
        elif c.precision_only > 0:  # only a value past the claims' cap has such seeds, so c.seeds is the cap here
            past = f"; the seeds past {cap} for the precision target alone took {c.precision_only / 3600:.2f} h of it"
        else:
            past = f"; no value went past the claims' {cap} seeds for the precision target alone"
        lines.append(
            f"- **Compute**: {c.spent / 3600:.2f} h of training in {c.runs} runs ({c.stopped} stopped by successive "
            f"halving); the full grid at this budget (every setting to the end, on {seeds}) would take "
            f"{c.full_grid / 3600:.2f} h: halving saved {c.saved_by_halving / 3600:.2f} h, adaptive seeds "
            f"{c.saved_by_seeds / 3600:.2f} h{past}."
        )
    return lines + [""]


def _seeds_with_results(runs: pd.DataFrame) -> list:
    return _sorted_unique(runs.loc[~runs["status"].isin(UNFINISHED), "seed"])


def _seeds_only_begun(runs: pd.DataFrame) -> str:
    """A sweep stopped as a seed look began leaves `interrupted` (or `running`) records of seeds no value has a
    result for: named apart, since listing them with the rest would overstate the seeds the values have."""
    ran = set(_seeds_with_results(runs))
    begun = [s for s in _sorted_unique(runs.loc[runs["status"].isin(UNFINISHED), "seed"]) if s not in ran]
    return f"; {', '.join(fmt(s) for s in begun)} only begun (interrupted or running, no result)" if begun else ""


def _why_seeds(plan) -> str:
    """What made the study add seeds to a value (ablate.adaptive.Plan)."""
    past = f", to {plan.precision_cap} for this alone" if plan.claim_seeds is not None else ""
    wide = (
        f" or the 95% interval was wider than ±{plan.half_width:g} points{past}" if plan.half_width is not None else ""
    )
    futile = (
        f" and at least {plan.futility:.0%} likely to resolve at the cap (study.more_seeds.futility)"
        if plan.futility is not None
        else ""
    )
    return "a claim was open" + futile + wide


def _claims_level(spec) -> str:
    if spec.plan.max_seeds:
        looks = spec.plan.looks(spec.initial_seeds)
        first = f", on each value's first {spec.plan.claim_seeds} seeds" if spec.plan.claim_seeds is not None else ""
        return (
            f"judged at {spec.confidence:.2%}: Bonferroni over the {looks} planned looks of adaptive seeds, "
            f"family-wise error {spec.plan.alpha:.0%}{first}"
        )
    return f"judged at {spec.confidence:.0%}"


def _stopped_section(selection: Selection) -> list[str]:
    """The runs successive halving stopped: which, when, and how they stood."""
    runs, spec = selection.runs, selection.study
    stopped = runs[runs["status"] == "stopped"]
    if stopped.empty:
        return []
    keys = [*spec.scientific, *spec.nuisance]
    lines = [
        "## Stopped by successive halving",
        "",
        "Each stopped run keeps its curve and checkpoint (a rerun with a later rung continues it); it ranked below "
        + (
            f"the {_kept_share(spec.plan.eta)} of its value's settings"
            if spec.plans_seen
            else "the settings of its value that continued"  # a table from before collect wrote the plan
        )
        + " on mean val accuracy over seeds at that epoch.",
        "",
        "| " + " | ".join([*keys, "seeds", "stopped after epoch", "val acc % then"]) + " |",
        "|" + "---|" * (len(keys) + 3),
    ]
    for key_values, rows in stopped.groupby(keys, dropna=False, sort=False):
        values = key_values if isinstance(key_values, tuple) else (key_values,)
        epochs = (
            ", ".join(fmt(e) for e in _sorted_unique(rows["epochs_completed"])) if "epochs_completed" in rows else "-"
        )
        lines.append(
            "| "
            + " | ".join([*(fmt(v) for v in values), str(len(rows)), epochs, _pct(rows["final/val/acc"].mean())])
            + " |"
        )
    return lines + [""]


def _what_was_run(selection: Selection, inputs: Inputs, where: dict, range_test: bool = False) -> list[str]:
    """The setup table; a range test's leaves out what only a comparison of accuracies has (selection, interval,
    the precision target, the extension and the time limit that serve them)."""
    spec, runs = selection.study, selection.runs
    val_column, test_column = METRICS[selection.metric]
    statuses = runs["status"].value_counts()
    status_text = ", ".join(f"{int(statuses.get(s, 0))} {s}" for s in STATUSES)
    others = [s for s in statuses.index if s not in STATUSES]
    if others:
        status_text += ", " + ", ".join(f"{int(statuses[s])} {s}" for s in others)
    nuisance = "; ".join(f"`{k}` in {{{', '.join(fmt(v) for v in _sorted_unique(runs[k]))}}}" for k in spec.nuisance)
    rows_text = f"{len(runs)} rows"
    if where:
        rows_text += " where " + ", ".join(f"{k}={fmt(v)}" for k, v in where.items())
    files = [f"`{inputs.runs_table}` ({rows_text})"]
    if inputs.sweep_read:
        files.append(f"`{inputs.sweep_file}`")
    if inputs.claims_file is not None:
        files.append(f"`{inputs.claims_file}`")
    if not inputs.sweep_read:
        files.append(f"no `{inputs.sweep_file}`: axes from the command line, the records' config.yaml or the table")
    curves_text = (
        f"per-evaluation curves from `metrics.jsonl` in {inputs.records_with_curves} of "
        f"{inputs.completed_records} completed records"
    )
    if inputs.saved_curves:
        curves_text += f", from `curves.csv` beside the table for {inputs.saved_curves} (records not on this machine)"
    files.append(curves_text)
    files.append(
        f"{len(inputs.skipped)} records skipped"
        + "".join(f"; `{folder}`: {reason}" for folder, reason in inputs.skipped)
    )
    rows = [
        (
            "data",
            _counted(runs, ["data", "data.root", "data.resolution", "data.train", "data.val", "data.test"], _data_text),
        ),
        (
            "budget",
            _run_length(runs)
            + (
                f"; median {fmt(runs.loc[runs['status'] == 'completed', 'steps'].median())} updates a completed run"
                if "steps" in runs
                else ""
            ),
        ),
        ("scientific axis (compared)", ", ".join(f"`{k}`" for k in spec.scientific)),
        ("nuisance axes (tuned on val)", nuisance or "none"),
        ("successive halving", _halving_text(spec, runs)),
        *(
            [("grid extension", _extension_text(spec, runs, [a.label for a in selection.arms if _on_edge(a)]))]
            if spec.plan.extend_grid
            else []
        ),
        *(
            [
                (
                    "time limit",
                    # The rule, not whether it bound: a study resumed from its records restarts the clock, so
                    # only each invocation's log knows whether the limit was reached.
                    f"{_limits_text(runs, spec.plan.minutes)} (`study.minutes`): the grid runs whole; after it, a "
                    "grid-extension step or seed look starts only if the records say it ends within the limit, and "
                    "a look that would not with the precision target's seeds gives the values an open claim "
                    "compares theirs alone (the sweep's log says what the limit kept from starting)",
                )
            ]
            if spec.plan.minutes is not None
            else []
        ),
        (
            "seeds",
            ", ".join(fmt(s) for s in _seeds_with_results(runs))
            + (
                f" ({spec.initial_seeds} for every value, up to {spec.plan.max_seeds} where {_why_seeds(spec.plan)})"
                if spec.plan.max_seeds and 0 < spec.initial_seeds < (spec.seeds_requested or 0)
                else f" ({spec.seeds_requested} requested)"
                if spec.seeds_requested
                else ""
            )
            + _seeds_only_begun(runs),
        ),
        *([("precision target", _precision_text(selection))] if spec.plan.half_width and spec.plan.max_seeds else []),
        ("runs", f"{len(runs)}: {status_text}"),
        ("git commit", _counted(runs, ["git_commit"], lambda v: f"`{str(v['git_commit'])[:12]}`")),
        (
            "compute",
            f"{runs['wall_seconds'].sum() / 3600:.2f} h of training in all (each run's wall time, summed)"
            if "wall_seconds" in runs
            else "-",
        ),
        (
            "selection",
            f"per value, the setting with the best mean `{val_column}` over the seeds its settings share (those "
            f"added later go to the chosen one only) among settings where no seed diverged; `{test_column}` of "
            "that setting is reported, over all its seeds; a tie on val goes to the setting "
            "listed first in the sweep file's grid (values not listed there: the smallest first)",
        ),
        ("interval", f"{CONFIDENCE:.0%} {CI_NAMES[selection.method]}"),
        ("inputs", "; ".join(files)),
    ]
    if range_test:
        comparison = ("grid extension", "time limit", "precision target", "selection", "interval")
        rows = [(k, v) for k, v in rows if k not in comparison]
    lines = ["## What was run", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return lines + [""]


def _results_table(selection: Selection, table_dir: Path) -> list[str]:
    spec = selection.study
    if not any(np.isfinite(arm.val.mean) for arm in selection.arms):
        return ["## Results", "", "The records hold no val accuracy to compare (range tests record curves only).", ""]
    sizes = [k for k in MODEL_SIZES if k in selection.runs.columns and k not in spec.scientific]
    header = [
        " x ".join(spec.scientific),
        *sizes,
        *spec.nuisance,
        "val acc %",
        f"test acc % [{CONFIDENCE:.0%} CI]",
        "seeds",
        "test acc % per seed (links: records)",
        "diverged / failed (all settings)",
        "flags",
    ]
    lines = [
        "## Results",
        "",
        "Per value of the scientific axis, its best setting on val and the test accuracy of that setting.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for arm in selection.arms:
        all_settings = selection.runs.loc[_rows_of(selection, arm.values)]
        diverged = int((all_settings["status"] == "diverged").sum())
        failed = int((all_settings["status"] == "failed").sum())
        cells = [
            f"**{arm.label}**",
            *[_size(arm.x(k)) for k in sizes],
            *[fmt(arm.setting[k]) for k in spec.nuisance],
            _pct(arm.val.mean),
            _interval(arm.test),
            str(arm.seeds),
            _per_seed(arm, METRICS[selection.metric][1], table_dir),
            f"{diverged} / {failed}",
            "; ".join(arm.flags),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    edge = [f for arm in selection.arms for f in arm.flags if _is_edge_flag(f)]
    if edge:
        lines += [
            "",
            f"**{len(edge)} best setting(s) lie on the edge of the grid**: the optimum may lie outside it, "
            "and the comparison is then between under-tuned values. Widen the grid and rerun the study.",
        ]
    return lines + [""]


def _saturation_section(curve: Saturation) -> list[str]:
    unit = "per added layer" if curve.unit == "layer" else "per doubling"
    best = curve.best
    lines = [f"## Saturation along `{curve.key}`", ""]
    lines += [
        f"- Best on val: **{best.arm.label}** ({curve.key} {_size(best.x)}), test {_interval(best.arm.test)}.",
        f"- Smallest {curve.key} indistinguishable from the best: **{_size_or_none(curve.indistinguishable_from)}** "
        f"(it and every {curve.key} up to the best have a {CONFIDENCE:.0%} interval of the difference to the best "
        "that contains 0: Welch's t-test, or the bootstrap, does not separate them at 5%; "
        "few seeds make this lenient).",
        f"- Smallest {curve.key} equivalent to the best within ±{100 * curve.margin:.1f} points: "
        f"**{_size_or_none(curve.equivalent_from)}** (the whole interval of the difference inside the margin, "
        "TOST-like; the stricter reading).",
        "",
        f"| {curve.key} | value (best on val at this {curve.key}) | test acc % | minus best, points |",
        "|---|---|---|---|",
    ]
    for level in curve.levels:
        lines.append(
            f"| {_size(level.x)} | {level.arm.label} | {_interval(level.arm.test)} | "
            f"{_points(level.vs_best) if level is not best else 'best'} |"
        )
    lines += [
        "",
        f"Marginal gain {unit} of `{curve.key}` (test accuracy, points):",
        "",
        f"| from | to | gain, points [{CONFIDENCE:.0%} CI] | {unit} |",
        "|---|---|---|---|",
    ]
    for gain in curve.gains:
        lines.append(
            f"| {_size(gain.from_x)} | {_size(gain.to_x)} | {_points(gain.diff)} | {100 * gain.per_unit:+.2f} |"
        )
    return lines + [""]


def _claims_section(verdicts: list[Verdict], claims_file: Path | None, runs: pd.DataFrame, spec) -> list[str]:
    lines = ["## The articles' claims", ""]
    if not verdicts:
        where = f" in `{claims_file}`." if claims_file else " (no conf/claims file)."
        lines += ["No claims for this study" + where, ""]
        return lines
    data = ", ".join(fmt(d) for d in _sorted_unique(runs["data"])) if "data" in runs else "this data"
    lines += [
        f"Each claim is checked on **{data}** from the intervals of test-accuracy differences "
        "(left minus right, in points). greater/less: supported when the interval excludes 0 in the claimed "
        "direction (beyond the margin, if one is declared), contradicted when it lies on the other side; "
        "approx (≈): supported when the interval lies inside ±margin, contradicted when it lies outside; "
        "at_least (≥): supported when it lies above -margin. A claim is supported when all its comparisons are, "
        "contradicted when any is; otherwise inconclusive. "
        + (
            f"Intervals at {spec.confidence:.2%}, not 95%: the study added seeds after looking at these claims, "
            f"so each of its {spec.plan.looks(spec.initial_seeds)} planned looks is judged at "
            f"1 - {spec.plan.alpha:g}/{spec.plan.looks(spec.initial_seeds)} (Bonferroni), which holds the "
            f"family-wise error at {spec.plan.alpha:.0%}. "
            + (
                f"Each value's claims read its first {spec.plan.claim_seeds} seeds, the ones those looks saw; seeds "
                f"past them (up to {spec.plan.precision_cap}) serve the precision target alone, so they add no look. "
                if spec.plan.claim_seeds is not None
                else ""
            )
            + (
                f"The study was extended after its first looks: its runs were launched under {spec.plans_seen} "
                f"plans, and every look is judged under the one with the most ({spec.plan.max_seeds} seeds at "
                "most), so the earlier looks are counted too. "
                if spec.plans_seen > 1
                else ""
            )
            + "No correction across claims."
            if spec.plan.max_seeds
            else "No correction for multiple comparisons."
        ),
        "",
        "| claim | source | verdict | margin |",
        "|---|---|---|---|",
    ]
    for v in verdicts:
        margin = f"±{100 * v.margin:.1f} pts" if v.margin else "-"
        lines.append(f"| `{v.claim.id}`: {v.claim.text} | {v.claim.source or '-'} | **{v.verdict}** | {margin} |")
    lines.append("")
    for v in verdicts:
        lines += [
            f"**`{v.claim.id}`** ({v.claim.kind}"
            + (f", relation {v.claim.relation}" if v.claim.kind == "order" else "")
            + f"): {v.claim.text} → **{v.verdict}**",
            "",
        ]
        if not v.comparisons:
            lines += ["- nothing to compare", ""]
        for c in v.comparisons:
            numbers = f"{_points(c.diff)} pts" if c.diff is not None else "no numbers"
            note = f" ({c.note})" if c.note else ""
            lines.append(f"- {c.left} {_symbol(c.kind)} {c.right}: {numbers} → {c.verdict}{note}")
        lines.append("")
    return lines


def _range_test_section(range_tests: list[RangeTest], range_study: bool = False) -> list[str]:
    if not range_tests:
        if not range_study:
            return []
        return [
            "## LR range test",
            "",
            "The suggested bounds are in the records (`lr_range.json`), which are not on this machine: rerun this "
            "where runs/ holds them.",
            "",
        ]
    lines = [
        "## LR range test",
        "",
        "| value | seed | suggested lower LR | suggested upper LR | points | flags |",
        "|---|---|---|---|---|---|",
    ]
    for test in range_tests:
        flags = ["at the edge of the sweep: widen lr_range.min_lr/max_lr"] * test.at_edge
        flags += ["val/acc never left chance: the bounds are noise"] * (not test.learned)
        bounds = f"{lr_text(test.lower_lr)} | {lr_text(test.upper_lr)}"
        lines.append(f"| {test.label} | {fmt(test.seed)} | {bounds} | {test.points} | {'; '.join(flags)} |")
    return lines + [""]


def _settings_section(selection: Selection) -> list[str]:
    spec, table = selection.study, selection.settings
    if not spec.nuisance:
        return []
    keys = [*spec.scientific, *spec.nuisance]
    header = [*keys, "completed", "diverged", "failed", "val acc %", "test acc %", "chosen"]
    lines = ["## Every setting tried", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [fmt(row[k]) for k in keys] + [str(int(row[s])) for s in ("completed", "diverged", "failed")]
        cells += [_pct(row["val_mean"]), _pct(row["test_mean"]), "✓" if row["chosen"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


# ---- small helpers ----------------------------------------------------------------------------------------


def _rows_of(selection: Selection, values: dict):
    mask = np.ones(len(selection.runs), dtype=bool)
    for key, value in values.items():
        mask &= np.array([same(v, value) for v in selection.runs[key]], dtype=bool)
    return mask


def _data_text(v: dict) -> str:
    """`imagefolder` (.cache/data/cifar10-ref) at 32 px, 1800 / 200 / 1000 train / val / test images."""
    text = f"`{fmt(v.get('data'))}`"
    if not is_missing(v.get("data.root")):
        text += f" (`{v['data.root']}`)"
    text += f" at {fmt(v.get('data.resolution'))} px"
    sizes = [v.get(f"data.{split}") for split in ("train", "val", "test")]
    if not any(is_missing(size) for size in sizes):
        text += ", " + " / ".join(fmt(size) for size in sizes) + " train / val / test images"
    return text


def _counted(runs: pd.DataFrame, columns: list[str], text) -> str:
    """The distinct values of some columns as text, with their run counts when there are several."""
    present = [c for c in columns if c in runs.columns]
    if not present:
        return "-"
    counts = runs.groupby(present, dropna=False).size()
    parts = [text(dict(zip(present, k if isinstance(k, tuple) else (k,)))) for k in counts.index]
    if len(parts) == 1:
        return parts[0]
    return "; ".join(f"{part} ({n} runs)" for part, n in zip(parts, counts))


def _kept_share(eta: int) -> str:
    """What halving keeps of a value's settings at a rung: `best third` for eta 3."""
    return "best " + {2: "half", 3: "third", 4: "quarter"}.get(eta, f"1/{eta}")


def _halving_text(spec: Study, runs: pd.DataFrame) -> str:
    """The plan the rows ran under: when halving decided and what it kept, or that it did not run."""
    plan = spec.plan
    if not spec.plans_seen:  # the plan is not in the table: the sweep file's today may not be the one they ran under
        stopped = int((runs["status"] == "stopped").sum())
        return f"not recorded in this table (collected before its `plan` column); {stopped} runs stopped"
    if not plan.halving or not spec.nuisance:
        return "none: every setting ran to the end"
    epochs = pd.to_numeric(runs.get("trainer.epochs"), errors="coerce").dropna() if "trainer.epochs" in runs else []
    rungs = f"rungs {list(plan.rungs)}"
    if len(epochs):
        total = int(epochs.median())
        rungs = f"after epoch {', '.join(map(str, adaptive.rung_epochs(total, plan.rungs)))} of {total}"
    return (
        f"{rungs}, the {_kept_share(plan.eta)} of each value's settings by mean val accuracy continued, the rest "
        f"stopped (`study.halving`: eta {plan.eta})"
    )


def _precision_text(selection: Selection) -> str:
    """How each value stands against the plan's interval target, and why a wider one got no more seeds."""
    plan = selection.study.plan
    target, cap = plan.half_width, plan.precision_cap
    arms = [a for a in selection.arms if a.seeds > 0]
    wide = [a for a in arms if too_wide(a, target)]
    text = f"95% interval within ±{target:g} points for {len(arms) - len(wide)} of {len(arms)} values"
    if not wide:
        return text
    why = []
    for arm in wide:
        half = (arm.test.high - arm.test.low) / 2 * 100 if arm.test.bounded else np.inf
        seeds = f"{arm.seeds} seed{'' if arm.seeds == 1 else 's'}"
        ended = (
            f"the time limit (study.minutes={plan.minutes:g}), a cut or the planned looks ended its seeds"
            if plan.minutes is not None
            else "the sweep was cut or its looks ran out"
        )
        if arm.at_chance:
            reason = "at chance: seeds cannot train it"
        elif arm.seeds >= cap:
            reason = "the cap"
        elif out_of_reach(arm, target, cap):
            reach = reachable_half_width(arm.test_accs, cap) * 100
            fed = f"its seeds came last: {ended}" if plan.out_of_reach == "last" else "none were added for it"
            reason = f"out of reach: {cap} would give ±{reach:.1f} at best, so {fed}"
        else:
            reason = f"below the cap: {ended}"
        if not arm.at_chance and (cost := precision_cost(arm, target)):
            reason += f"; {cost}"
        why.append(f"{arm.label} ±{half:.1f} ({seeds}, {reason})")
    return text + "; wider: " + "; ".join(why)


def _extension_text(spec: Study, runs: pd.DataFrame, edge_labels: list[str]) -> str:
    """Where the grid was extended: the settings the extension ran, per scientific value, with their step; where it
    ran nothing, whether that is because no best setting sat on an end (`edge_labels`: the values whose best does)."""
    steps = pd.to_numeric(runs["grid_step"], errors="coerce") if "grid_step" in runs else pd.Series(dtype=float)
    steps = steps.reindex(runs.index).fillna(0)
    # Values in the study's order, each one's settings in step order (the table comes in record-folder order, where a
    # second step's run can sort before the first's).
    added = runs[steps > 0].assign(_step=steps[steps > 0]).sort_values("_step", kind="stable")
    groups = list(added.groupby([*spec.scientific], sort=False, dropna=False))
    groups.sort(key=lambda group: sort_key(spec, dict(zip(spec.scientific, _as_tuple(group[0]), strict=True))))
    ran = []
    for label, rows in groups:
        name = ", ".join(fmt(v) for v in _as_tuple(label))
        settings = rows.drop_duplicates(subset=[*spec.nuisance])
        ran.append(
            f"{name}: "
            + ", ".join(
                " ".join(f"`{k}`={fmt(row[k])}" for k in spec.nuisance) + f" (step {int(row['grid_step'])})"
                for _, row in settings.iterrows()
            )
        )
    if ran:
        done = "; ".join(ran)
    elif not edge_labels:
        done = "no value's best setting sat on a grid's end"
    else:
        # The sweep stopped before its extension: a time limit already spent after the grid, or a cut.
        first = f"the time limit (study.minutes={spec.plan.minutes:g}) or a cut" if spec.plan.minutes else "a cut"
        done = (
            f"none ran, though the best setting of {', '.join(edge_labels)} sits on a grid's end (flags below): "
            f"{first} ended the sweep before it"
        )
    return (
        f"up to {spec.plan.extend_grid} steps past a numeric grid's end, for a value whose best setting on val sat on "
        f"it (`study.extend_grid`): {done}"
    )


def _is_edge_flag(flag: str) -> bool:
    """An arm flag that says its best setting is a grid's end (ablate.analysis.selection._edge_flags)."""
    return "widen" in flag


def _on_edge(arm) -> bool:
    return any(map(_is_edge_flag, arm.flags))


def _as_tuple(label) -> tuple:
    """A groupby label as a tuple whether it grouped by one key or several."""
    return label if isinstance(label, tuple) else (label,)


def _run_length(runs: pd.DataFrame) -> str:
    """`10 epochs`, and under batch.hold=updates that they are epochs at the base batch size held as updates."""
    if "trainer.epochs" not in runs.columns:
        return "-"

    def text(v: dict) -> str:
        held = v.get("batch.hold") == "updates"
        return f"{fmt(v['trainer.epochs'])} epochs" + (
            " at batch.base_size, the same updates at every batch size (`batch.hold=updates`)" if held else ""
        )

    return _counted(runs, ["trainer.epochs", "batch.hold"], text)


def _sorted_unique(series: pd.Series) -> list:
    values = series.dropna().unique().tolist()
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def _pct(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.2f}"


def _limits_text(runs: pd.DataFrame, minutes: float) -> str:
    """`60 minutes`; where the table's runs were launched under more than one limit (a study that went on from its
    records with another study.minutes), each with its runs: `45 minutes for 90 runs, 60 for 10`."""
    counts: dict[float, int] = {}
    for text in runs["plan"].dropna().astype(str) if "plan" in runs else []:
        limit = json.loads(text).get("minutes")
        if limit is not None:
            counts[float(limit)] = counts.get(float(limit), 0) + 1
    if len(counts) < 2:
        return f"{minutes:g} minutes"
    (first, n), *rest = sorted(counts.items())
    return f"{first:g} minutes for {n} runs, " + ", ".join(f"{m:g} for {k}" for m, k in rest)


def _interval(interval: Interval) -> str:
    """`55.20 [50.10, 60.30]`; the interval clipped to [0, 100]: a t interval over a few seeds near chance would
    otherwise reach below 0 (`5.50 [-0.85, 11.85]`)."""
    if not np.isfinite(interval.mean):
        return "-"
    if not interval.bounded:
        return f"{_pct(interval.mean)} (no interval)"
    return f"{_pct(interval.mean)} [{_pct(max(0.0, interval.low))}, {_pct(min(1.0, interval.high))}]"


def _per_seed(arm, test_column: str, table_dir: Path) -> str:
    """Each completed seed's test accuracy, linked to its record folder (relative to the table's folder, where the
    report is written by default): `[5.20](../../runs/depth/.../3f2a9c)`."""
    cells = []
    for _, run in arm.completed.sort_values("seed").iterrows():
        text = f"s{fmt(run['seed'])} {_pct(run.get(test_column))}"
        record_dir = run.get("record_dir")
        if isinstance(record_dir, str) and record_dir:
            link = Path(os.path.relpath(Path(record_dir).resolve(), table_dir.resolve())).as_posix()
            text = f"[{text}]({link})"
        cells.append(text)
    return ", ".join(cells) or "-"


def _points(interval: Interval) -> str:
    """`+17.33 [+13.31, +21.35]`, a difference in points; the interval clipped to [-100, +100] as `_interval` clips
    a value's: a t interval over 3 seeds that split between 61% and 98% would read `[-103.72, +157.50]`."""
    if not np.isfinite(interval.mean):
        return "-"
    if not interval.bounded:
        return f"{100 * interval.mean:+.2f} (no interval)"
    return f"{100 * interval.mean:+.2f} [{100 * max(-1.0, interval.low):+.2f}, {100 * min(1.0, interval.high):+.2f}]"


def _size(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.3g}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.3g}k"
    return f"{x:g}"


def _size_or_none(x) -> str:
    return "none (no plateau before the best)" if x is None else _size(x)


def lr_text(value) -> str:
    """An LR as the reports and the sweep's summary write it: 3 significant digits, '-' for none."""
    return "-" if value is None else f"{float(value):.3g}"


def _symbol(kind: str) -> str:
    return {"greater": ">", "less": "<", "approx": "≈", "at_least": "≥"}.get(kind, kind)
