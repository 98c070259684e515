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
    var_x, var_y = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = np.sqrt(var_x + var_y)
    if se == 0:  # identical results on every seed (a deterministic run): the interval is the point
        return Interval(diff, diff, diff)
    # Welch-Satterthwaite degrees of freedom: the two sides need not share a variance or a seed count.
    dof = (var_x + var_y) ** 2 / (var_x**2 / (len(x) - 1) + var_y**2 / (len(y) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, dof) * se
    return Interval(diff, diff - half, diff + half)


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
