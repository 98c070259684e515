"""Where a depth (or width) curve levels off, and what each added layer (or doubling) buys on the way."""

from dataclasses import dataclass

import numpy as np

from ablate.analysis.selection import Arm, val_rank
from ablate.analysis.stats import Interval, diff_ci
from ablate.analysis.study import Study

# Per-model numbers worth a saturation curve when a study declares none.
MODEL_SIZES = ("depth", "params", "macs")
_ZERO = Interval(0.0, 0.0, 0.0)  # the best against itself


@dataclass(frozen=True)
class Level:
    """One point of the curve: the best arm (on val) among the values sharing this x."""

    x: float
    arm: Arm
    vs_best: Interval  # test acc(this) - test acc(best level)


@dataclass(frozen=True)
class Gain:
    from_x: float
    to_x: float
    diff: Interval  # test acc(to) - test acc(from)
    per_unit: float  # diff.mean per added layer, or per doubling


@dataclass(frozen=True)
class Saturation:
    key: str
    unit: str  # "layer" (linear x) or "doubling" (log2 x)
    levels: tuple[Level, ...]
    best: Level
    # Smallest x from which every x up to the best is indistinguishable from it: the 95% CI of the difference
    # (Welch t, or bootstrap) holds 0, i.e. a two-sided test at 5% does not separate them.
    indistinguishable_from: float | None
    # Smallest x from which every x up to the best is within ±margin of it: the whole 95% CI inside (TOST-like).
    equivalent_from: float | None
    margin: float
    gains: tuple[Gain, ...]


def curve_keys(study: Study, arms: list[Arm]) -> tuple[str, ...]:
    """The study's declared saturation keys, else whichever of MODEL_SIZES varies across its values."""
    if study.saturation is not None:
        return study.saturation
    return tuple(k for k in MODEL_SIZES if len({a.x(k) for a in arms if np.isfinite(a.x(k))}) > 1)


def saturation(arms: list[Arm], key: str, margin: float, method: str = "t") -> Saturation | None:
    """The curve test acc vs `key`; None with fewer than two measured x values."""
    by_x: dict[float, Arm] = {}
    for arm in arms:
        x = arm.x(key)
        if arm.seeds == 0 or not np.isfinite(x) or not np.isfinite(arm.val.mean):
            continue
        if x not in by_x or val_rank(arm) > val_rank(by_x[x]):
            by_x[x] = arm
    if len(by_x) < 2:
        return None
    xs = sorted(by_x)
    # The best is chosen on val like every other choice here (and like the report's answer); test only reports it.
    best_x = max(xs, key=lambda x: val_rank(by_x[x]))
    best = by_x[best_x]
    levels = tuple(
        Level(x, by_x[x], _ZERO if x == best_x else diff_ci(by_x[x].claim_accs, best.claim_accs, method)) for x in xs
    )
    unit = "layer" if key == "depth" else "doubling"
    gains = []
    for low, high in zip(levels, levels[1:]):
        diff = diff_ci(high.arm.claim_accs, low.arm.claim_accs, method)
        step = high.x - low.x if unit == "layer" else np.log2(high.x / low.x)
        gains.append(Gain(low.x, high.x, diff, diff.mean / step))
    # The plateau is looked for below the best; what lies above it (deeper hurt?) the levels table shows.
    up_to_best = levels[: xs.index(best_x) + 1]
    return Saturation(
        key=key,
        unit=unit,
        levels=levels,
        best=levels[xs.index(best_x)],
        indistinguishable_from=_first_of_tail(up_to_best, lambda d: d.contains(0.0)),
        equivalent_from=_first_of_tail(up_to_best, lambda d: -margin < d.low and d.high < margin),
        margin=margin,
        gains=tuple(gains),
    )


def _first_of_tail(levels, holds) -> float | None:
    """The smallest x such that `holds` for it and for every larger x (a plateau, not one lucky point)."""
    first = None
    for level in reversed(levels):
        if not holds(level.vs_best):
            break
        first = level.x
    return first
