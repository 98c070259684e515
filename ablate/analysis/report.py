"""One study's table, figures, saturation and verdicts, written to results/<study>/report.md."""

from pathlib import Path

import numpy as np
import pandas as pd

from ablate.analysis import figures
from ablate.analysis.claims import Verdict, judge, parse_claims
from ablate.analysis.saturation import Saturation, saturation
from ablate.analysis.selection import METRICS, Selection, select
from ablate.analysis.stats import CONFIDENCE, Interval
from ablate.analysis.study import (
    STATUSES,
    Study,
    check_one_setup,
    fmt,
    is_missing,
    load_runs,
    load_study,
    runs_path,
    same,
    where_slug,
)
from ablate.errors import ConfigError
from ablate.record import METRICS as METRICS_FILE
from ablate.record import atomic_write_text

DEFAULT_CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Per-model numbers worth a saturation curve when a study declares none.
MODEL_SIZES = ("depth", "params", "macs")
CI_NAMES = {"t": "Student t over seeds", "bootstrap": "percentile bootstrap over seeds (10,000 resamples)"}


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
) -> Path:
    """Read results/<study>/runs.csv and the records it names; write report.md and figures/; return the report.

    `where` keeps the rows matching {column: value} (one dataset of several); its report then goes to
    results/<study>/<value>/ unless `out_dir` says otherwise.
    """
    results_dir = Path(results_dir)
    conf_dir = Path(conf_dir) if conf_dir is not None else DEFAULT_CONF_DIR
    if ci not in CI_NAMES:
        raise ConfigError(f"ci={ci}: unknown interval; use one of {', '.join(CI_NAMES)}")
    runs = load_runs(study, results_dir, where)
    spec = load_study(study, conf_dir, list(runs.columns), scientific, nuisance, runs)
    check_one_setup(runs, spec)
    claims = parse_claims(spec.claims, str(conf_dir / "claims" / f"{study}.yaml"))
    selection = select(runs, spec, metric, ci)
    verdicts = [judge(claim, selection) for claim in claims]
    curves = [saturation(selection.arms, key, spec.margin, ci) for key in saturation_keys(spec, selection)]
    curves = [c for c in curves if c is not None]
    if out_dir is None:
        out_dir = results_dir / study / where_slug(where) if where else results_dir / study
    out_dir = Path(out_dir)
    companion = companion_arms(spec, results_dir, conf_dir, metric, ci, where)
    drawn = draw(selection, spec, out_dir / "figures", companion)
    for stale in set((out_dir / "figures").glob("*.png")) - {path for _, path in drawn}:
        stale.unlink()  # a figure this table no longer supports would sit beside the report as if current
    text = render(selection, verdicts, curves, drawn, results_dir, conf_dir, where)
    report = out_dir / "report.md"
    atomic_write_text(report, text)
    return report


def saturation_keys(spec: Study, selection: Selection) -> tuple[str, ...]:
    if spec.saturation is not None:
        return spec.saturation
    return tuple(k for k in MODEL_SIZES if len({a.x(k) for a in selection.arms if np.isfinite(a.x(k))}) > 1)


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


def draw(selection: Selection, spec: Study, folder: Path, companion) -> list[tuple[str, Path]]:
    """Every figure this study's data supports, as (caption, path)."""
    arms, name = selection.arms, spec.name
    setting = f"best {', '.join(spec.nuisance)} on val" if spec.nuisance else "one setting"
    drawn = [
        (
            "Test accuracy per value",
            figures.accuracy_per_value(
                arms, folder / "accuracy.png", f"{name}: test accuracy per {' x '.join(spec.scientific)} ({setting})"
            ),
        ),
    ]
    for key in saturation_keys(spec, selection):
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
    if len(spec.scientific) == 2 and len(numeric) >= 1 and numeric[0] not in saturation_keys(spec, selection):
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
                ),
            )
        )
    range_test = figures.lr_range(arms, folder / "lr_range.png", f"{name}: LR range test")
    if range_test is not None:  # a range test's metrics.jsonl is its LR sweep, drawn here against the LR
        drawn.append(("LR range test with the suggested bounds", range_test))
    else:
        drawn.append(
            (
                "Learning curves at each value's chosen setting",
                figures.learning_curves(arms, folder / "learning_curves.png", f"{name}: mean and 95% band over seeds"),
            )
        )
    return [(caption, path) for caption, path in drawn if path is not None]


# ---- the markdown ---------------------------------------------------------------------------------------


def render(
    selection: Selection,
    verdicts: list[Verdict],
    curves: list[Saturation],
    drawn,
    results_dir: Path,
    conf_dir: Path,
    where: dict | None = None,
) -> str:
    spec, runs = selection.study, selection.runs
    command = f"python -m ablate.analyze {spec.name}"
    command += "".join(f" --where {k}={fmt(v)}" for k, v in (where or {}).items())
    if selection.metric != "final":
        command += f" --metric {selection.metric}"
    if selection.method != "t":
        command += f" --ci {selection.method}"
    lines = [f"# Study `{spec.name}`" + (f" ({where_slug(where)})" if where else ""), ""]
    lines += [f"Written by `{command}` from the run records; rerun it after new runs.", ""]
    lines += _what_was_run(selection, results_dir, conf_dir, where)
    lines += _results_table(selection)
    lines += ["## Figures", ""]
    for caption, path in drawn:
        lines += [f"**{caption}**", "", f"![{caption}](figures/{path.name})", ""]
    for curve in curves:
        lines += _saturation_section(curve)
    lines += _claims_section(verdicts, spec, runs)
    lines += _range_test_section(selection)
    lines += _settings_section(selection)
    return "\n".join(lines).rstrip() + "\n"


def _what_was_run(selection: Selection, results_dir: Path, conf_dir: Path, where: dict | None) -> list[str]:
    spec, runs = selection.study, selection.runs
    val_column, test_column = METRICS[selection.metric]
    statuses = runs["status"].value_counts()
    status_text = ", ".join(f"{int(statuses.get(s, 0))} {s}" for s in STATUSES)
    others = [s for s in statuses.index if s not in STATUSES]
    if others:
        status_text += ", " + ", ".join(f"{int(statuses[s])} {s}" for s in others)
    nuisance = "; ".join(f"`{k}` in {{{', '.join(fmt(v) for v in _sorted_unique(runs[k]))}}}" for k in spec.nuisance)
    records = runs.loc[runs["status"] == "completed", "record_dir"]
    with_curves = sum((Path(str(d)) / METRICS_FILE).is_file() for d in records)
    rows_text = f"{len(runs)} rows"
    if where:
        rows_text += " where " + ", ".join(f"{k}={fmt(v)}" for k, v in where.items())
    inputs = [f"`{runs_path(spec.name, results_dir)}` ({rows_text})"]
    inputs += [f"`{_shown(p)}`" for p in spec.sources]
    if not any(p.parent.name == "sweep" for p in spec.sources):
        inputs.append(
            f"no `{_shown(conf_dir / 'sweep' / (spec.name + '.yaml'))}`: axes from the command line, "
            "the records' config.yaml or the table"
        )
    inputs.append(f"per-evaluation curves from `metrics.jsonl` in {with_curves} of {len(records)} completed records")
    rows = [
        (
            "data",
            _counted(runs, ["data", "data.root", "data.resolution", "data.train", "data.val", "data.test"], _data_text),
        ),
        (
            "budget",
            _counted(runs, ["trainer.epochs"], lambda v: f"{fmt(v['trainer.epochs'])} epochs")
            + (f"; median {fmt(runs['steps'].median())} updates a run" if "steps" in runs else ""),
        ),
        ("scientific axis (compared)", ", ".join(f"`{k}`" for k in spec.scientific)),
        ("nuisance axes (tuned on val)", nuisance or "none"),
        (
            "seeds",
            ", ".join(fmt(s) for s in _sorted_unique(runs["seed"]))
            + (f" ({spec.seeds_requested} requested)" if spec.seeds_requested else ""),
        ),
        ("runs", f"{len(runs)}: {status_text}"),
        ("git commit", _counted(runs, ["git_commit"], lambda v: f"`{str(v['git_commit'])[:12]}`")),
        (
            "compute",
            f"{runs['wall_seconds'].sum() / 3600:.2f} h of wall time in all" if "wall_seconds" in runs else "-",
        ),
        (
            "selection",
            f"per value, the setting with the best mean `{val_column}` over seeds among settings where "
            f"no seed diverged; `{test_column}` of that setting is reported",
        ),
        ("interval", f"{CONFIDENCE:.0%} {CI_NAMES[selection.method]}"),
        ("inputs", "; ".join(inputs)),
    ]
    lines = ["## What was run", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return lines + [""]


def _results_table(selection: Selection) -> list[str]:
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
            f"{diverged} / {failed}",
            "; ".join(arm.flags),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    edge = [f for arm in selection.arms for f in arm.flags if "widen" in f]
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


def _claims_section(verdicts: list[Verdict], spec: Study, runs: pd.DataFrame) -> list[str]:
    lines = ["## The articles' claims", ""]
    if not verdicts:
        source = next((p for p in spec.sources if p.parent.name == "claims"), None)
        lines += ["No claims for this study" + (f" in `{source}`." if source else " (no conf/claims file)."), ""]
        return lines
    data = ", ".join(fmt(d) for d in _sorted_unique(runs["data"])) if "data" in runs else "this data"
    lines += [
        f"Each claim is checked on **{data}** from the {CONFIDENCE:.0%} intervals of test-accuracy differences "
        "(left minus right, in points). greater/less: supported when the interval excludes 0 in the claimed "
        "direction (beyond the margin, if one is declared), contradicted when it lies on the other side; "
        "approx (≈): supported when the interval lies inside ±margin, contradicted when it lies outside; "
        "at_least (≥): supported when it lies above -margin. A claim is supported when all its comparisons are, "
        "contradicted when any is; otherwise inconclusive. No correction for multiple comparisons.",
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


def _range_test_section(selection: Selection) -> list[str]:
    rows = []
    for arm in selection.arms:
        for _, run in arm.completed.iterrows():
            table, bounds = figures.read_lr_range(run["record_dir"])
            if table is not None:
                edge = "at the edge of the sweep: widen lr_range.min_lr/max_lr" if bounds["at_edge"] else ""
                rows.append(
                    f"| {arm.label} | {fmt(run['seed'])} | {_lr(bounds['lower'])} | "
                    f"{_lr(bounds['upper'])} | {len(table)} | {edge} |"
                )
    if not rows:
        return []
    return [
        "## LR range test",
        "",
        "| value | seed | suggested lower LR | suggested upper LR | points | flags |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


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


def _shown(path: Path) -> Path:
    """A path relative to the working directory when it lies under it: a committed report names no one's home."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


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


def _sorted_unique(series: pd.Series) -> list:
    values = series.dropna().unique().tolist()
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


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


def _pct(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.2f}"


def _interval(interval: Interval) -> str:
    if not np.isfinite(interval.mean):
        return "-"
    if not interval.bounded:
        return f"{_pct(interval.mean)} (no interval)"
    return f"{_pct(interval.mean)} [{_pct(interval.low)}, {_pct(interval.high)}]"


def _points(interval: Interval) -> str:
    if not np.isfinite(interval.mean):
        return "-"
    if not interval.bounded:
        return f"{100 * interval.mean:+.2f} (no interval)"
    return f"{100 * interval.mean:+.2f} [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]"


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


def _lr(value) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def _symbol(kind: str) -> str:
    return {"greater": ">", "less": "<", "approx": "≈", "at_least": "≥"}.get(kind, kind)
