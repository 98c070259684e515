"""Confidence intervals over seeds: a mean, and a difference of two means (Student t or percentile bootstrap)."""

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ablate.errors import ConfigError

CONFIDENCE = 0.95
METHODS = ("t", "bootstrap")
BOOTSTRAP_RESAMPLES = 10_000
# A fixed seed: the same table always gives the same report.
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """An estimate and its confidence interval; low/high are -inf/inf when there are too few seeds for one."""

    mean: float
    low: float
    high: float

    @property
    def bounded(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def mean_ci(values, method: str = "t", confidence: float = CONFIDENCE) -> Interval:
    """The mean of per-seed values and its interval: Student t with n-1 degrees of freedom, or percentile bootstrap."""
    x = _clean(values)
    if len(x) == 0:
        return Interval(np.nan, -np.inf, np.inf)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, -np.inf, np.inf)
    if method == "bootstrap":
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        means = x[rng.integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
        return Interval(mean, *_percentiles(means, confidence))
    _check(method)
    sem = x.std(ddof=1) / np.sqrt(len(x))
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * sem
    return Interval(mean, mean - half, mean + half)


def reachable_half_width(values, seeds: int, confidence: float = CONFIDENCE) -> float:
    """The narrowest half-width of the Student t interval that `seeds` seeds could plausibly give: the seeds' spread
    taken at the 95% lower confidence bound of its standard deviation (chi-square), so that a few seeds that happen
    to spread wide do not rule a value out. 0 with fewer than two values: no spread known, nothing ruled out."""
    x = _clean(values)
    if len(x) < 2 or seeds < 2:
        return 0.0
    sd_low = x.std(ddof=1) * np.sqrt((len(x) - 1) / stats.chi2.ppf(0.95, len(x) - 1))
    return float(stats.t.ppf(0.5 + confidence / 2, seeds - 1) * sd_low / np.sqrt(seeds))


def seeds_for_half_width(values, half_width: float, confidence: float = CONFIDENCE, most: int = 100_000) -> int | None:
    """The fewest seeds whose Student t interval would be within ±half_width at the seeds' present spread (their
    sample standard deviation taken as the truth): what a precision target costs where it is out of reach today.
    None with fewer than two values (no spread known) or where even `most` would not do; 2 where they agree."""
    x = _clean(values)
    if len(x) < 2:
        return None
    sd = x.std(ddof=1)
    if sd == 0:
        return 2

    # t shrinks as seeds grow, so the half-width falls monotonically in n: bisect for the first n within it.
    def half(n: int) -> float:
        return stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / np.sqrt(n)

    if half(most) > half_width:
        return None
    low, high = 2, most
    while low < high:
        middle = (low + high) // 2
        if half(middle) <= half_width:
            high = middle
        else:
            low = middle + 1
    return low


def diff_ci(a, b, method: str = "t", confidence: float = CONFIDENCE) -> Interval:
    """mean(a) - mean(b) for independent seeds: Welch's t interval, or a bootstrap resampling each side."""
    x, y = _clean(a), _clean(b)
    if len(x) == 0 or len(y) == 0:
        return Interval(np.nan, -np.inf, np.inf)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Interval(diff, -np.inf, np.inf)
    if method == "bootstrap":
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        resampled_x = x[rng.integers(0, len(x), (BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
        resampled_y = y[rng.integers(0, len(y), (BOOTSTRAP_RESAMPLES, len(y)))].mean(axis=1)
        return Interval(diff, *_percentiles(resampled_x - resampled_y, confidence))
    _check(method)
    half = _welch_half_width(x.var(ddof=1), len(x), y.var(ddof=1), len(y), confidence)
    return Interval(diff, diff - half, diff + half)


def resolve_chance(a, b, seeds: int, boundaries, confidence: float = CONFIDENCE) -> float:
    """The chance that Welch's interval of mean(a) - mean(b), each side grown to `seeds` seeds, holds none of
    `boundaries` (the thresholds of a claim's verdict, claims.boundaries: an interval clear of them resolves the
    comparison): predictive power (Spiegelhalter, Freedman & Blackburn 1986). Each side's true mean is what its
    seeds allow (normal around their mean, flat prior) at their present spread; the seeds still to come move the
    final difference around today's by that much, and the final interval's half-width is taken at today's spreads.
    Conditional power (the true means taken as today's) is the better-known rule but trusts a 3-seed mean: replayed
    on the committed reports (scripts/futility_check.py) it stopped 45 comparisons at 10%, 9 of which resolved with
    the seeds it would have withheld; this one stopped 33, 2 of them. 1 where a side has fewer than two seeds:
    nothing to project from, nothing ruled out."""
    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return 1.0
    nx, ny = max(seeds, len(x)), max(seeds, len(y))
    var_x, var_y = x.var(ddof=1), y.var(ddof=1)
    diff = float(x.mean() - y.mean())
    half = _welch_half_width(var_x, nx, var_y, ny, confidence)
    # Inconclusive where the final interval holds a boundary: the difference within `half` of one (spans merged
    # where they overlap, as an equivalence claim's two boundaries do when the interval is wider than the margin).
    spans: list[list[float]] = []
    for boundary in sorted(boundaries):
        if spans and boundary - half <= spans[-1][1]:
            spans[-1][1] = boundary + half
        else:
            spans.append([boundary - half, boundary + half])
    # A side's final mean is (n m + k m_new) / N with k = N - n new seeds; m_new around the true mean (v / k), the
    # true mean around m (v / n): its variance about today's is k v / (N n).
    still = np.sqrt((nx - len(x)) * var_x / (nx * len(x)) + (ny - len(y)) * var_y / (ny * len(y)))
    if still == 0:
        return 0.0 if any(low <= diff <= high for low, high in spans) else 1.0
    inside = sum(stats.norm.cdf((high - diff) / still) - stats.norm.cdf((low - diff) / still) for low, high in spans)
    return float(max(0.0, 1.0 - inside))


def _welch_half_width(var_x: float, n_x: int, var_y: float, n_y: int, confidence: float) -> float:
    """Half-width of Welch's t interval for a difference of two means from their seeds' variances and counts."""
    sem_x, sem_y = var_x / n_x, var_y / n_y
    se = np.sqrt(sem_x + sem_y)
    if se == 0:  # identical results on every seed (a deterministic run): the interval is the point
        return 0.0
    # Welch-Satterthwaite degrees of freedom: the two sides need not share a variance or a seed count.
    dof = (sem_x + sem_y) ** 2 / (sem_x**2 / (n_x - 1) + sem_y**2 / (n_y - 1))
    return float(stats.t.ppf(0.5 + confidence / 2, dof) * se)


def t_band(matrix: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean and Student t band of a (seeds x points) array with NaN for missing points (curves)."""
    n = np.sum(~np.isnan(matrix), axis=0)
    spread = n >= 2  # a point one seed reached has no spread: its band is the point
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(matrix, axis=0)
        squares = np.nansum((matrix - mean) ** 2, axis=0)
        sem = np.sqrt(np.where(spread, squares / np.maximum(n - 1, 1), 0.0) / np.maximum(n, 1))
        half = np.where(spread, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * sem, 0.0)
    return mean, mean - half, mean + half


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[~np.isnan(x)]


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _check(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"ci={method}: unknown interval method; use one of {', '.join(METHODS)}")
