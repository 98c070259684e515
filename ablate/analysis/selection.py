"""The isolation plot's numbers: per scientific value, the best nuisance setting on val, reported on test."""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate.analysis.stats import CONFIDENCE, Interval, mean_ci
from ablate.analysis.study import Study, fmt, is_missing, label, same, sort_key
from ablate.errors import ConfigError

# --metric: which summary numbers choose the setting (val) and which are reported (test).
METRICS = {
    "final": ("final/val/acc", "final/test/acc"),  # the last evaluation, as the articles report
    "best": ("best/val/acc", "best/test/acc"),  # test acc at the epoch with the best val acc
}


# A value whose every seed ends within this of 1/classes did not learn: comparing it measures the budget (an init
# plateau, a too-short run), not the network, so the report flags it and claims involving it are inconclusive.
CHANCE_MARGIN = 0.02
# A seed whose best val accuracy rose this far above chance had learned something: ending at chance after that is a
# collapse (an unstable setting), not a net the budget never trained. Wider than CHANCE_MARGIN, so noise is not one.
COLLAPSE_RISE = 0.05


def at_chance(accuracies, num_classes) -> bool:
    """Every accuracy within CHANCE_MARGIN of 1 / num_classes (False when there is none or no class count)."""
    values = np.asarray(accuracies, dtype=float)
    values = values[np.isfinite(values)]
    try:
        chance = 1.0 / float(num_classes)
    except (TypeError, ValueError, ZeroDivisionError):
        return False
    return bool(len(values) and np.isfinite(chance) and chance > 0 and values.max() <= chance + CHANCE_MARGIN)


@dataclass
class Arm:
    """One scientific value at one nuisance setting, with its seeds' results."""

    values: dict  # scientific key -> value
    setting: dict  # nuisance key -> value
    runs: pd.DataFrame  # every run at this setting, any status
    val: Interval
    test: Interval
    test_accs: np.ndarray  # one per completed seed, for the comparisons
    flags: list[str] = field(default_factory=list)
    pinned: bool = False  # the setting was named by a claim, not chosen on val
    # The seeds its claims are judged on, where the plan caps them below the precision target's (Plan.claim_seeds):
    # the first by seed number, the ones the claims' planned looks saw; None = all of test_accs.
    judged_accs: np.ndarray | None = None

    @property
    def claim_accs(self) -> np.ndarray:
        """Test accuracy per seed as the claims read it (judged_accs, else every completed seed)."""
        return self.test_accs if self.judged_accs is None else self.judged_accs

    @property
    def label(self) -> str:
        name = label(self.values)
        if self.pinned and self.setting:
            name += " @ " + ", ".join(f"{k}={fmt(v)}" for k, v in self.setting.items())
        return name

    @property
    def completed(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "completed"]

    @property
    def seeds(self) -> int:
        return len(self.test_accs)

    @property
    def at_chance(self) -> bool:
        """Every seed within CHANCE_MARGIN of guessing: the budget did not train this value at all."""
        return at_chance(self.test_accs, self.x("data.classes"))

    @property
    def collapsed(self) -> int:
        """Seeds that left chance during the run (best val accuracy beyond COLLAPSE_RISE) and ended at it: an
        instability at this setting (an LR too high), not a budget too short to train it."""
        runs, classes = self.completed, self.x("data.classes")
        if "best/val/acc" not in runs.columns or not math.isfinite(classes) or classes <= 0:
            return 0
        rose = pd.to_numeric(runs["best/val/acc"], errors="coerce") > 1.0 / classes + COLLAPSE_RISE
        ended = [at_chance([acc], classes) for acc in pd.to_numeric(runs["final/test/acc"], errors="coerce")]
        return int((rose & pd.Series(ended, index=runs.index)).sum())

    def x(self, column: str) -> float:
        """A per-model number (depth, params, macs, a swept size) as one float, NaN when the table lacks it."""
        if column in self.values:
            value = self.values[column]
        elif column in self.runs.columns:
            value = self.completed[column].median() if len(self.completed) else np.nan
        else:
            return np.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            return np.nan


@dataclass
class Selection:
    """Every value's chosen arm plus what is needed to build an arm at any other setting (claims pin some)."""

    study: Study
    runs: pd.DataFrame
    metric: str
    method: str
    arms: list[Arm]
    settings: pd.DataFrame  # one row per (value, setting): runs by status, val and test means, chosen
    # Of the claims' difference intervals: 95%, or the Bonferroni level of a study that looks at its claims after
    # each batch of adaptive seeds (ablate.adaptive.Plan.confidence). The values' own intervals stay at 95%.
    confidence: float = CONFIDENCE

    def arm(self, values: dict, setting: dict, pinned: bool = False) -> Arm:
        return build_arm(
            self.runs, values, setting, self.metric, self.method, pinned=pinned, claim_seeds=self.study.plan.claim_seeds
        )


def val_rank(arm: Arm) -> tuple[float, float]:
    """How the report ranks values on val: the mean over seeds, a tie going to the value with fewer parameters
    (the cheaper net does as well); max() keeps the first of any tie left."""
    params = arm.x("params")
    return (arm.val.mean if np.isfinite(arm.val.mean) else -np.inf, -params if np.isfinite(params) else 0.0)


def select(
    runs: pd.DataFrame, study: Study, metric: str = "final", method: str = "t", confidence: float = CONFIDENCE
) -> Selection:
    """Choose each value's nuisance setting on mean val accuracy over seeds; diverging settings are not eligible."""
    if metric not in METRICS:
        raise ConfigError(f"metric={metric}: unknown; use one of {', '.join(METRICS)}")
    val_column, test_column = METRICS[metric]
    for column in (val_column, test_column):
        if column not in runs.columns:
            raise ConfigError(
                f"metric={metric}: runs.csv has no column {column}; rerun `python -m ablate.collect {study.name}`"
            )
    settings = settings_table(runs, study, val_column, test_column)
    arms = []
    chosen = np.zeros(len(settings), dtype=bool)
    scientific = list(study.scientific)
    for _, rows in settings.groupby(scientific, dropna=False, sort=False):
        values = {k: _plain(rows.iloc[0][k]) for k in scientific}
        index, flags = _choose(rows)
        chosen[settings.index.get_loc(index)] = True
        setting = {k: _plain(settings.loc[index, k]) for k in study.nuisance}
        arm = build_arm(runs, values, setting, metric, method, claim_seeds=study.plan.claim_seeds)
        arm.flags = flags + _edge_flags(runs, values, setting, study) + _seed_flags(arm, study)
        arms.append(arm)
    settings["chosen"] = chosen
    arms.sort(key=lambda arm: sort_key(study, arm.values))
    return Selection(
        study=study, runs=runs, metric=metric, method=method, arms=arms, settings=settings, confidence=confidence
    )


def settings_table(runs: pd.DataFrame, study: Study, val_column: str, test_column: str) -> pd.DataFrame:
    """One row per (value, setting): runs by status, val and test means over its completed seeds, and `val_choice`,
    its val mean over the seeds that every completed setting of its value shares, on which the setting is chosen.

    Adaptive seeds add seeds to the chosen setting only; on all its seeds its mean drifts from the 3-seed mean that
    won (the winner's curse), and a runner-up left at 3 seeds could then overtake it. Comparing on shared seeds keeps
    the choice the one made on equal terms."""
    keys = [*study.scientific, *study.nuisance]
    completed = runs[runs["status"] == "completed"]
    shared = {}
    if study.nuisance and "seed" in runs.columns:
        for value, group in completed.groupby(list(study.scientific), dropna=False, sort=False):
            by_setting = group.groupby(list(study.nuisance), dropna=False, sort=False)
            shared[value if isinstance(value, tuple) else (value,)] = set.intersection(
                *(set(rows["seed"]) for _, rows in by_setting)
            )
    rows = []
    for key_values, group in runs.groupby(keys, dropna=False, sort=False):
        done = group[group["status"] == "completed"]
        common = shared.get(tuple(key_values[: len(study.scientific)]), set())
        on_shared = done[done["seed"].isin(common)] if common else done
        rows.append(
            {
                **{k: _plain(v) for k, v in zip(keys, key_values)},
                "runs": len(group),
                **{status: int((group["status"] == status).sum()) for status in ("completed", "diverged", "failed")},
                "val_mean": done[val_column].mean(),
                "val_choice": on_shared[val_column].mean(),
                "test_mean": done[test_column].mean(),
            }
        )
    table = pd.DataFrame(rows)
    order = sorted(range(len(table)), key=lambda i: sort_key(study, {k: table.iloc[i][k] for k in keys}))
    return table.iloc[order].reset_index(drop=True)


def build_arm(
    runs,
    values: dict,
    setting: dict,
    metric: str,
    method: str,
    pinned: bool = False,
    claim_seeds: int | None = None,
) -> Arm:
    val_column, test_column = METRICS[metric]
    mask = np.ones(len(runs), dtype=bool)
    for key, value in {**values, **setting}.items():
        mask &= np.array([same(v, value) for v in runs[key]], dtype=bool)
    rows = runs[mask]
    done = rows[rows["status"] == "completed"]
    test_accs = done[test_column].to_numpy(dtype=float)
    judged = None
    if claim_seeds is not None and "seed" in done.columns and len(done) > claim_seeds:
        first = done.sort_values("seed", kind="stable").head(claim_seeds)[test_column].to_numpy(dtype=float)
        judged = first[~np.isnan(first)]
    return Arm(
        values=dict(values),
        setting=dict(setting),
        runs=rows,
        val=mean_ci(done[val_column], method),
        test=mean_ci(test_accs, method),
        test_accs=test_accs[~np.isnan(test_accs)],
        pinned=pinned,
        judged_accs=judged,
    )


def _choose(rows: pd.DataFrame):
    """The eligible setting with the best val mean on shared seeds; a setting where any seed diverged is a failed
    setting."""
    measured = rows[(rows["completed"] > 0) & rows["val_choice"].notna()]
    eligible = measured[measured["diverged"] == 0]
    flags = []
    if len(eligible) == 0 and len(measured) > 0:
        # Nothing ran cleanly: the least-diverging settings are the best we have, and the report says so.
        fraction = measured["diverged"] / (measured["diverged"] + measured["completed"])
        eligible = measured[fraction == fraction.min()]
        flags.append("every setting diverged on some seed")
    if len(eligible) == 0:
        flags.append("no completed run with a val accuracy")
        return rows.index[0], flags
    ties = int(np.isclose(eligible["val_choice"], eligible["val_choice"].max(), rtol=0, atol=1e-9).sum())
    if ties > 1:
        flags.append(f"{ties} settings tie on val; the first in the sweep file's grid (else the smallest) is used")
    return eligible["val_choice"].idxmax(), flags


def _edge_flags(runs, values: dict, setting: dict, study: Study) -> list[str]:
    """A best value at the end of a numeric grid means the optimum may lie outside it."""
    at_value = np.ones(len(runs), dtype=bool)
    for key, value in values.items():
        at_value &= np.array([same(v, value) for v in runs[key]], dtype=bool)
    flags = []
    for key, chosen in setting.items():
        grid = pd.to_numeric(runs.loc[at_value, key], errors="coerce").dropna().unique()
        if len(grid) < 2 or is_missing(chosen):
            continue
        try:
            chosen = float(chosen)
        except (TypeError, ValueError):
            continue
        if np.isclose(chosen, grid.max()):
            flags.append(f"{key}={fmt(chosen)} is the largest value tried: widen the {key} grid upward")
        elif np.isclose(chosen, grid.min()):
            flags.append(f"{key}={fmt(chosen)} is the smallest value tried: widen the {key} grid downward")
    return flags


def _seeds_expected(arm: Arm, study: Study) -> int:
    """The seeds this arm should have: every seed launched at its setting (each leaves a record, even a failed one)
    and, at least, the seeds the study started every value with. Under adaptive seeds a value gets only the seeds
    its claims needed, so the study's most-seeded value is no yardstick for the others."""
    launched = int(arm.runs["seed"].nunique())
    start = study.seeds_requested or 0
    if study.plan.max_seeds and study.initial_seeds:  # a grid run with fewer seeds than the budget's keeps its own
        start = min(start, study.initial_seeds)
    return max(launched, start)


def _seed_flags(arm: Arm, study: Study) -> list[str]:
    flags = []
    expected = _seeds_expected(arm, study)
    if arm.seeds < expected:
        flags.append(f"{arm.seeds} of {expected} seeds completed")
    if arm.seeds == 1:
        flags.append("one seed: no interval")
    if arm.at_chance and arm.collapsed:
        flags.append(
            f"at chance ({1 / arm.x('data.classes'):.0%}) at the end on every seed; {arm.collapsed} of {arm.seeds} "
            "had left it and fell back: an unstable setting (its LR), which a longer budget does not mend"
        )
    elif arm.at_chance:
        flags.append(f"at chance ({1 / arm.x('data.classes'):.0%}) on every seed: this budget did not train it")
    else:
        stuck = sum(at_chance([acc], arm.x("data.classes")) for acc in arm.test_accs)
        if stuck:
            flags.append(f"{stuck} of {arm.seeds} seeds at chance: the interval mixes trained and untrained nets")
    diverged = int((arm.runs["status"] == "diverged").sum())
    if diverged:
        flags.append(f"{diverged} seed(s) diverged at the chosen setting")
    return flags


def _plain(value):
    """numpy scalars and NaN as plain Python values (None for NaN) so values compare and hash."""
    if is_missing(value):
        return None
    return value.item() if isinstance(value, np.generic) else value
