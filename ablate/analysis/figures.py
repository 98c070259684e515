"""The articles' figures, redrawn from run records with seeds' confidence intervals (PNG, written atomically)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from ablate.analysis.curves import RECORDS_ONLY, Curves
from ablate.analysis.selection import Arm
from ablate.analysis.stats import Interval, t_band
from ablate.analysis.study import fmt
from ablate.record import atomic_write, read_range_test

AXIS_NAMES = {
    "depth": "depth (layers: convs + classifier)",
    "params": "parameters",
    "macs": "MACs per image",
    "batch.size": "batch size",
    "model.width_mult": "width multiplier",
}
# Axes spanning a factor of this or more are drawn on a log2 scale (params, MACs, batch sizes, widths).
LOG_SPAN = 4.0
# Figures drawn from the runs' curves rather than from runs.csv: on a machine with neither the records nor the
# curves.csv beside the table (results committed before collect wrote it) they cannot be redrawn, and are kept
# rather than deleted as stale. A range test's LR sweep is in its record alone.
FROM_RECORDS = frozenset({"learning_curves.png", "val_acc_vs_iteration.png", "lr_range.png"})
# Points of vertical space between the labels of values drawn at one x (allconv8_1, 8_2, 8_3 are all depth 8).
LABEL_SPACING_POINTS = 10


def dataset_name(runs: pd.DataFrame) -> str:
    """The dataset a table's runs trained on, for titles: `synthetic`, `imagefolder (cifar10-subset)`."""
    names = []
    columns = [c for c in ("data", "data.root") if c in runs.columns]
    for _, row in runs.drop_duplicates(subset=columns).iterrows() if columns else ():
        name = fmt(row.get("data"))
        root = row.get("data.root")
        if isinstance(root, str) and root:
            name += f" ({Path(root).name})"
        names.append(name)
    return ", ".join(sorted(set(names))) or "unknown data"


def chance(arms: list[Arm]) -> float | None:
    """1 / classes of the study's data, as a fraction (None when the table has no class count)."""
    classes = [arm.x("data.classes") for arm in arms]
    classes = [c for c in classes if np.isfinite(c) and c > 0]
    return 1.0 / classes[0] if classes else None


def _chance_line(ax, arms: list[Arm], vertical: bool = False) -> None:
    level = chance(arms)
    if level is None:
        return
    line = ax.axvline if vertical else ax.axhline
    line(100 * level, color="0.45", ls="--", lw=1, label=f"chance ({100 * level:.3g}%)")


def save(fig, path: Path) -> Path:
    """Write the figure as a PNG, atomically (a reader never sees half a file), and close it."""
    try:
        return atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=110))
    finally:
        plt.close(fig)


def accuracy_per_value(arms: list[Arm], path: Path, title: str) -> Path | None:
    """Test mean and 95% CI per scientific value at its chosen setting (val mean as an open marker)."""
    arms = [a for a in arms if _measured(a)]
    if not arms:
        return None
    labels = [_with_setting(a) for a in arms]
    # Room for the longest label (about 0.075 inch a character at this font size) beside a 5-inch plot.
    width_inches = 5.0 + 0.075 * max(len(text) for text in labels)
    fig, ax = plt.subplots(figsize=(width_inches, 1.6 + 0.38 * len(arms)), layout="constrained")
    ys = np.arange(len(arms))[::-1]
    for y, arm in zip(ys, arms):
        low, high = _bar(arm.test)
        ax.errorbar(100 * arm.test.mean, y, xerr=[[100 * low], [100 * high]], fmt="o", color="C0", capsize=3)
        ax.plot(100 * arm.val.mean, y, "o", mfc="none", color="C1")
        ax.plot(100 * np.asarray(arm.test_accs), np.full(len(arm.test_accs), y - 0.18), "|", color="C0", alpha=0.7)
    ax.set_yticks(ys, labels)
    ax.plot([], [], "o", color="C0", label="test (mean, 95% CI over seeds)")
    ax.plot([], [], "|", color="C0", label="test, each seed")
    ax.plot([], [], "o", mfc="none", color="C1", label="val (mean): chooses the setting")
    _chance_line(ax, arms, vertical=True)
    ax.set_xlim(left=0)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncol=2, frameon=False)
    return save(fig, path)


def _label_offsets(xs: list[float]) -> list[float]:
    """Vertical label offsets in points: values drawn at one x get labels stacked apart, not on top of each other."""
    offsets, seen, count = [], {}, {}
    for x in xs:
        seen[x] = seen.get(x, 0) + 1
    for x in xs:
        i = count.get(x, 0)
        count[x] = i + 1
        offsets.append(LABEL_SPACING_POINTS * (i - (seen[x] - 1) / 2))
    return offsets


def accuracy_vs(series: dict[str, list[Arm]], key: str, path: Path, title: str) -> Path | None:
    """Test accuracy against a per-model number, every value labelled; one colour per study (e.g. with/without BN)."""
    series = {name: [a for a in arms if _measured(a) and np.isfinite(a.x(key))] for name, arms in series.items()}
    xs_all = [arm.x(key) for arms in series.values() for arm in arms]
    if not xs_all:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    log = _is_log(xs_all)
    for s, (name, arms) in enumerate(series.items()):
        color = f"C{s}"
        positions = _spread([a.x(key) for a in arms], log)
        # Labels of values at one x are stacked by accuracy, so that allconv8_1/8_2/8_3 stay readable.
        order = sorted(range(len(arms)), key=lambda i: (arms[i].x(key), arms[i].test.mean))
        offsets = dict(zip(order, _label_offsets([arms[i].x(key) for i in order])))
        for i, (arm, x) in enumerate(zip(arms, positions)):
            low, high = _bar(arm.test)
            ax.errorbar(x, 100 * arm.test.mean, yerr=[[100 * low], [100 * high]], fmt="o", color=color, capsize=3)
            ax.plot(np.full(len(arm.test_accs), x), 100 * np.asarray(arm.test_accs), "_", color=color, alpha=0.6)
            ax.annotate(
                arm.label,
                (x, 100 * arm.test.mean),
                textcoords="offset points",
                xytext=(8, offsets[i] + (4 if s % 2 == 0 else -10)),
                fontsize=7,
                color=color,
                va="center",
            )
        best = _best_per_x(arms, key)
        ax.plot(
            [a.x(key) for a in best],
            [100 * a.test.mean for a in best],
            "-",
            color=color,
            alpha=0.6,
            label=f"{name} (line: best per {AXIS_NAMES.get(key, key).split(' ')[0]} on val)",
        )
    _x_axis(ax, key, xs_all, log)
    _chance_line(ax, [a for arms in series.values() for a in arms])
    ax.plot([], [], "_", color="0.3", label="each seed")
    ax.set_ylabel("test accuracy (%), mean and 95% CI over seeds")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def lines_vs(arms: list[Arm], x_key: str, line_key: str, path: Path, title: str) -> Path | None:
    """Test accuracy against a numeric axis, one line per value of the other axis (batch size x scaling rule)."""
    arms = [a for a in arms if _measured(a)]
    if not arms:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    lines = {}
    for arm in arms:
        lines.setdefault(fmt(arm.values[line_key]), []).append(arm)
    log = _is_log([a.x(x_key) for a in arms])
    for i, (name, members) in enumerate(lines.items()):
        members.sort(key=lambda a: a.x(x_key))
        xs = np.array([a.x(x_key) for a in members])
        # Lines side by side at the same x would hide each other's error bars.
        xs_drawn = xs * 2 ** (0.04 * (i - (len(lines) - 1) / 2)) if log else xs
        means = np.array([100 * a.test.mean for a in members])
        bars = np.array([_bar(a.test) for a in members]).T * 100
        ax.errorbar(xs_drawn, means, yerr=bars, fmt="o-", capsize=3, color=f"C{i}", label=f"{line_key}={name}")
    _x_axis(ax, x_key, [a.x(x_key) for a in arms], log)
    _chance_line(ax, arms)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("test accuracy (%), mean and 95% CI over seeds")
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def learning_curves(
    arms: list[Arm], path: Path, title: str, x: str = "epoch", curves: Curves = RECORDS_ONLY
) -> Path | None:
    """Val accuracy and train loss per evaluation, mean over seeds with a shaded 95% band, one line per value."""
    panels = [("val/acc", "val accuracy (%)", 100.0), ("train/loss", "train loss", 1.0)]
    if x == "step":
        panels.append(("lr", "learning rate", 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.6, 4.2), layout="constrained")
    arms = [a for a in arms if a.seeds]
    drawn = False
    for arm, color in zip(arms, _colors(len(arms))):
        tables = [curves.of(run) for _, run in arm.completed.iterrows()]
        tables = [t for t in tables if t is not None and x in t.columns]
        drawn = drawn or bool(tables)
        for ax, (metric, _, scale) in zip(axes, panels):
            grid, matrix = _align(tables, x, metric)
            if grid is None:
                continue
            mean, low, high = t_band(matrix * scale)
            if metric == "val/acc":
                low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)
            # One evaluation is one point: a line alone would draw nothing.
            marker = "o" if len(grid) == 1 else None
            ax.plot(grid, mean, color=color, label=arm.label, lw=1.4, marker=marker)
            ax.fill_between(grid, low, high, color=color, alpha=0.18, lw=0)
    if not drawn:
        plt.close(fig)
        return None
    _chance_line(axes[0], arms)
    for ax, (metric, name, _) in zip(axes, panels):
        ax.set_xlabel("iteration (optimizer updates)" if x == "step" else "epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric == "lr":
            ax.set_yscale("log")  # decays span decades
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right upper", frameon=False)
    fig.suptitle(title, fontsize=10, wrap=True)
    return save(fig, path)


def lr_range(arms: list[Arm], path: Path, title: str) -> Path | None:
    """Loss and accuracy against the LR in each range test (val solid, train dashed), suggested bounds as lines."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    drawn = False
    start_loss = 0.0  # the highest first loss: a diverged point (1e30) would flatten every curve below it
    for arm, color in zip(arms, _colors(len(arms))):
        for i, record_dir in enumerate(arm.completed["record_dir"]):
            table, bounds = read_lr_range(record_dir)
            if table is None:
                continue
            drawn = True
            first = [
                table[c].dropna().iloc[0] for c in ("val/loss", "train/loss") if c in table and table[c].notna().any()
            ]
            start_loss = max([start_loss, *(float(v) for v in first if np.isfinite(v))])
            for ax, metric in zip(axes, ("loss", "acc")):
                scale = 100.0 if metric == "acc" else 1.0
                for split, style in (("val", "-"), ("train", "--")):
                    if f"{split}/{metric}" in table.columns:
                        name = arm.label if i == 0 and split == "val" else None
                        ax.plot(
                            table["lr"],
                            scale * table[f"{split}/{metric}"],
                            style,
                            color=color,
                            lw=1.2,
                            alpha=0.85,
                            label=name,
                        )
                for bound, style in (("lower", ":"), ("upper", "-.")):
                    if bounds.get(bound) is not None:
                        ax.axvline(float(bounds[bound]), color=color, ls=style, lw=1)
    if not drawn:
        plt.close(fig)
        return None
    _chance_line(axes[1], arms)
    if start_loss > 0:
        axes[0].set_ylim(0, 1.5 * start_loss)  # as the run's own lr_range.png: the divergence runs off the top
    for ax, name in zip(axes, ("loss", "accuracy (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].plot([], [], "k-", label="val")
    axes[0].plot([], [], "k--", label="train")
    axes[0].plot([], [], "k:", label="suggested lower bound")
    axes[0].plot([], [], "k-.", label="suggested upper bound")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10, wrap=True)
    return save(fig, path)


def read_lr_range(record_dir):
    """A range test's curves as a table and its suggested bounds {lower, upper, at_edge, learned}, or (None, {})
    without one; `learned` is False where val/acc never left chance (the bounds are then noise)."""
    found = read_range_test(str(record_dir))
    if found is None:
        return None, {}
    rows, suggestion = found
    bounds = {"lower": suggestion.get("base_lr"), "upper": suggestion.get("max_lr")}
    flags = {"at_edge": bool(suggestion.get("at_edge", False)), "learned": bool(suggestion.get("learned", True))}
    return pd.DataFrame(rows), {**bounds, **flags}


def _align(curves, x: str, metric: str):
    """Seeds x evaluation points, NaN where a seed has no value at that point."""
    curves = [c.dropna(subset=[metric]) for c in curves if metric in c.columns]
    if not curves:
        return None, None
    grid = np.array(sorted({float(v) for c in curves for v in c[x]}))
    matrix = np.full((len(curves), len(grid)), np.nan)
    for i, curve in enumerate(curves):
        matrix[i, np.searchsorted(grid, curve[x].to_numpy(dtype=float))] = curve[metric].to_numpy(dtype=float)
    return grid, matrix


def _measured(arm: Arm) -> bool:
    return arm.seeds > 0 and bool(np.isfinite(arm.test.mean))


def _bar(interval: Interval) -> tuple[float, float]:
    """Error bar lengths below and above the mean, the interval clipped to [0, 1] (an accuracy cannot leave it);
    none when there is no interval (one seed)."""
    if not interval.bounded:
        return 0.0, 0.0
    return interval.mean - max(0.0, interval.low), min(1.0, interval.high) - interval.mean


def _with_setting(arm: Arm) -> str:
    if not arm.setting:
        return arm.label
    return f"{arm.label}  ({', '.join(f'{k}={fmt(v)}' for k, v in arm.setting.items())})"


def _best_per_x(arms: list[Arm], key: str) -> list[Arm]:
    best = {}
    for arm in arms:
        x = arm.x(key)
        if x not in best or arm.val.mean > best[x].val.mean:
            best[x] = arm
    return [best[x] for x in sorted(best)]


def _spread(xs: list[float], log: bool) -> list[float]:
    """Nudge values that share an x apart (allconv7_1 and 7_2 are both depth 7) so their bars stay readable."""
    out, seen = [], {}
    for x in xs:
        seen[x] = seen.get(x, 0) + 1
    count = {}
    for x in xs:
        i = count.get(x, 0)
        count[x] = i + 1
        offset = 0.09 * (i - (seen[x] - 1) / 2)
        out.append(x * 2**offset if log else x + offset)
    return out


def _x_axis(ax, key: str, xs, log: bool) -> None:
    """Name the axis; log2 scale with plain tick labels (32k, not 2^15) for sizes spanning factors."""
    ax.set_xlabel(AXIS_NAMES.get(key, key))
    if log:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif all(float(x).is_integer() for x in xs if np.isfinite(x)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _short(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def _is_log(xs) -> bool:
    xs = np.array([x for x in xs if np.isfinite(x)])
    return len(xs) > 1 and xs.min() > 0 and xs.max() / xs.min() >= LOG_SPAN


def _colors(n: int):
    if n > 20:  # a crossed study (7 batch sizes x 3 rules): no qualitative map has that many distinct colours
        return [plt.get_cmap("viridis")(i / max(n - 1, 1)) for i in range(n)]
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i) for i in range(n)]
