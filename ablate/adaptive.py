"""Where a study spends its compute: successive halving over the nuisance grid, then seeds where claims are open.

Successive halving (Jamieson & Talwalkar 2016; Li et al.'s ASHA without the asynchrony): every nuisance setting of
every scientific value starts; after `rungs` fractions of the run the settings whose mean val accuracy over seeds
ranks below the best 1/eta of their scientific value stop (recorded `stopped`, with their curve and checkpoint); the
others continue from their checkpoints, so a survivor ends exactly as a run trained in one go.

Adaptive seeds: after the grid, every claim still inconclusive adds `seeds_per_look` seeds to each scientific value it
compares (at the setting chosen on val), up to `max_seeds`, until the claims resolve. With `futility`, a comparison
whose chance to resolve at `max_seeds` (predictive power, stats.resolve_chance) is below it adds
none: a null difference under a directional claim would otherwise take its values to the cap in vain.
Stopping for futility only leaves a claim inconclusive, so it costs power, never the family-wise error. With
`half_width`, a value whose 95% interval of test accuracy is wider than that many points gets seeds the same way
(a fixed-width interval, Chow & Robbins 1965), so a curve is drawn to a stated precision whether or not a claim
reads it; with `precision_max` above `max_seeds`, such a value goes on past `max_seeds` to `precision_max`, and
the claims read each value's first `max_seeds` seeds only (Plan.claim_seeds), so those passes are no looks.
Looking at the data after each batch of seeds inflates the error rate, so every look is judged at a
Bonferroni-corrected level: alpha / the number of looks the plan allows (a fixed look schedule), which holds the
family-wise error at alpha whatever the data do.

A time limit (`study.minutes`) bounds the study's wall time, as far as the sweeper decides it: the grid and its rungs
always run whole (without them there is no answer); after them, a grid-extension step or a seed look starts only if
it is expected to end within the limit. Its expected time comes from the records: each job's value at the seconds per
epoch its finished runs took, packed longest first onto the launcher's workers (`makespan`), scaled by how far the
sweep's earlier steps outran that estimate. A look that would end past the limit with the seeds of the precision
target still adds those of the values an open claim compares, if they fit alone: a verdict is what the study is for,
and a claim compares a few values where the target reaches them all. The claims keep their Bonferroni level and their
look schedule; a look the limit leaves out only leaves them open. A value whose seeds spread so far that even
`max_seeds` could not bring it within the target (out of reach) gets no seeds for it by default; with
`out_of_reach: last` it gets them after every other value, in a look that still fits the limit with them: time the
limit would leave unused narrows its interval instead (the depth study of 2026-12-06 ended at 63 of its 90 minutes
with three values at ±6 to ±13 points that the 2026-12-04 run, which fed them, had brought to ±4 to ±6).

Grid extension (`study.extend_grid`): a value whose best setting on val sits at the end of a numeric nuisance axis
may have its optimum outside the grid, and would be compared at a worse setting than its rivals. After the grid, such
a value runs at the next point past that end (the end times its ratio to its neighbour: 0.1 after 0.03 and 0.01 is
0.3), on the best setting's seeds and to the full budget, up to `extend_grid` steps. It reads val alone, as the
selection does, so the claims' test intervals are not looked at and need no correction for it.

The functions here are pure (job override lists and numbers in, decisions out); the Hydra sweeper in
hydra_plugins/ablate_sweeper launches what they decide.
"""

import heapq
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from ablate.errors import ConfigError

log = logging.getLogger(__name__)
SEED = "seed"
# Marks a job the grid extension added (its step, from 1): a column of runs.csv, so the report can say which
# settings lie past the sweep's grid. Not part of what a job measures (group_of) nor of its record's identity.
GRID_STEP = "study.grid_step"


# study.more_seeds.out_of_reach: what a value gets whose precision target its spread puts out of reach at the cap.
OUT_OF_REACH = ("skip", "last")


@dataclass(frozen=True)
class Plan:
    """A study's compute plan (`study.halving` and `study.more_seeds` in conf/sweep/*.yaml)."""

    rungs: tuple[float, ...] = ()  # fractions of the run after which the worst settings stop; () = no halving
    eta: int = 3  # keep the best 1/eta of a value's settings at each rung (at least one)
    max_seeds: int = 0  # seeds a value may reach when a claim comparing it is open (or it is too wide); 0 = none
    seeds_per_look: int = 2  # seeds added to each open value at each look
    alpha: float = 0.05  # family-wise error rate of the claim checks over all looks
    half_width: float | None = None  # points: a value whose 95% test interval is wider also gets seeds; None = off
    futility: float | None = None  # no seeds for a comparison less likely than this to resolve at max_seeds; None = off
    extend_grid: int = 0  # steps past a numeric nuisance grid's end, where a value's best setting sat on it; 0 = none
    minutes: float | None = None  # the sweep's wall time: past the grid, no step starts that would end after it
    # A value too wide whose seeds spread so far that max_seeds could not bring it within half_width: skip = no seeds
    # for it; last = seeds after every other open value, in a look that still fits the time limit (OUT_OF_REACH).
    out_of_reach: str = "skip"
    # Seeds a value may reach for the precision target alone, past max_seeds (0 = max_seeds): the claims are judged
    # on each value's first max_seeds seeds, the ones their planned looks saw, so these add no look (claim_seeds).
    precision_max: int = 0

    @property
    def halving(self) -> bool:
        return bool(self.rungs)

    def fits(self, elapsed_minutes: float, expected_minutes: float) -> bool:
        """Whether a step expected to take `expected_minutes`, started now, ends within the time limit."""
        return self.minutes is None or elapsed_minutes + expected_minutes <= self.minutes

    def time_line(self, elapsed_minutes: float, expected_minutes: float, step: str, outcome: str) -> str:
        """The sweep log's line for what the time limit kept from starting."""
        return (
            f"time limit: {step} would take about {expected_minutes:.0f} min, and the sweep has run "
            f"{elapsed_minutes:.0f} of study.minutes={self.minutes:g}: {outcome}; run it again with "
            "study.minutes=null to go on from its records"
        )

    @property
    def precision_cap(self) -> int:
        """The seeds a value may reach for the precision target: precision_max, at least max_seeds."""
        return max(self.max_seeds, self.precision_max)

    @property
    def claim_seeds(self) -> int | None:
        """How many of a value's seeds (the first, by seed number) its claims are judged on: max_seeds where seeds
        for precision may go past it, so that those add no look to the claims' Bonferroni count; else None (all)."""
        return self.max_seeds if self.precision_cap > self.max_seeds else None

    def looks(self, initial_seeds: int) -> int:
        """The number of times the claims are judged: after the grid, then after each batch of seeds."""
        if self.max_seeds <= initial_seeds:
            return 1
        return 1 + math.ceil((self.max_seeds - initial_seeds) / self.seeds_per_look)

    def confidence(self, initial_seeds: int) -> float:
        """The two-sided confidence of each claim's interval under the fixed look schedule (Bonferroni)."""
        return 1 - self.alpha / self.looks(initial_seeds)

    def look_line(
        self, for_claims: int, for_precision: int, initial_seeds: int, has_claims: bool, spare: int = 0
    ) -> str:
        """What a look found, for the sweep's log: how many values an open claim compares, how many others are
        wider than the precision target (kept apart: the time limit ends only the latter's seeds), of those how many
        out of reach at the cap get seeds last (out_of_reach=last), and the level claims are judged at (a study
        without claims, such as mobilenet_width, has the precision target alone)."""
        parts = [f"{_values(for_claims)} still compared by an open claim"] if has_claims else []
        if self.half_width is not None:
            wider = for_precision + spare
            counted = f"{wider} other{'' if wider == 1 else 's'}" if has_claims else _values(wider)
            last = f" ({spare} out of reach at the cap, fed last)" if spare else ""
            parts.append(f"{counted} wider than ±{self.half_width:g} points{last}")
        line = f"adaptive seeds: {' and '.join(parts) or _values(for_claims + for_precision) + ' open'}"
        if has_claims:
            looks = self.looks(initial_seeds)
            return f"{line} (claims judged at {self.confidence(initial_seeds):.2%}, Bonferroni over {looks} looks)"
        return f"{line} (the study states no claims)"


def plan_from(node: dict | None) -> Plan:
    """The Plan of a study's config node (`study`), checked: a bad value is one line naming the key."""
    node = node or {}
    grid_seeds = node.get("seeds")
    # A repeated seed is one identity launched twice: the second job finds the record done or locked ("running
    # elsewhere") and the plan counts a seed the value does not have. An empty list runs the config's `seed` alone.
    if grid_seeds is not None and (
        not isinstance(grid_seeds, list)
        or not grid_seeds
        or any(isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 for seed in grid_seeds)
        or len(set(grid_seeds)) != len(grid_seeds)
    ):
        raise ConfigError(f"study.seeds={grid_seeds}: list distinct integers >= 0, at least one; e.g. [0,1,2]")
    halving = node.get("halving") or {}
    seeds = node.get("more_seeds") or {}
    rungs = tuple(halving.get("rungs") or ())
    for rung in rungs:
        if not isinstance(rung, (int, float)) or not 0 < rung < 1:
            raise ConfigError(f"study.halving.rungs={list(rungs)}: each rung is a fraction of the run in (0, 1)")
    if list(rungs) != sorted(set(rungs)):
        raise ConfigError(f"study.halving.rungs={list(rungs)}: list the fractions once each, in increasing order")
    eta = halving.get("eta", Plan.eta)
    if not isinstance(eta, int) or eta < 2:
        raise ConfigError(f"study.halving.eta={eta}: must be an integer >= 2 (keep the best 1/eta); e.g. 3")
    max_seeds = seeds.get("max", Plan.max_seeds) or 0
    per_look = seeds.get("per_look", Plan.seeds_per_look)
    alpha = seeds.get("alpha", Plan.alpha)
    if not isinstance(max_seeds, int) or max_seeds < 0:
        raise ConfigError(f"study.more_seeds.max={max_seeds}: must be an integer >= 0 (0 = no adaptive seeds)")
    if not isinstance(per_look, int) or per_look < 1:
        raise ConfigError(f"study.more_seeds.per_look={per_look}: must be a positive integer; e.g. 2")
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"study.more_seeds.alpha={alpha}: must be in (0, 1); e.g. 0.05")
    half_width = _optional(
        seeds.get("half_width"),
        "study.more_seeds.half_width",
        lambda value: value > 0,
        "must be a positive number of points (a value whose 95% interval is wider gets more seeds), or null; e.g. 3",
    )
    futility = _optional(
        seeds.get("futility"),
        "study.more_seeds.futility",
        lambda value: 0 < value < 1,
        "must be a probability in (0, 1) (a comparison less likely than this to resolve at the seed cap gets no more "
        "seeds), or null; e.g. 0.1",
    )
    out_of_reach = seeds.get("out_of_reach", Plan.out_of_reach)
    if out_of_reach not in OUT_OF_REACH:
        raise ConfigError(
            f"study.more_seeds.out_of_reach={out_of_reach}: use skip (no seeds for a value the cap could not bring "
            "within half_width) or last (seeds after every other value, while study.minutes allows)"
        )
    precision_max = _count(
        seeds.get("precision_max", Plan.precision_max) or 0,
        "study.more_seeds.precision_max",
        "seeds a value may reach for the precision target alone, past study.more_seeds.max; 0 = max); e.g. 48",
    )
    if precision_max and (half_width is None or not max_seeds):
        raise ConfigError(
            f"study.more_seeds.precision_max={precision_max}: seeds past the claims' cap need that cap and a target; "
            "set study.more_seeds.max (e.g. 16) and half_width (e.g. 3), or precision_max=0"
        )
    extend = _count(
        node.get("extend_grid", Plan.extend_grid) or 0,
        "study.extend_grid",
        "steps past a grid's end where a value's best setting sits on it; 0 = none); e.g. 2",
    )
    minutes = _optional(
        node.get("minutes"),
        "study.minutes",
        lambda value: value >= 0,
        "must be a number of minutes >= 0 (past the grid, no grid-extension step or seed look starts that would end "
        "after the sweep has run that long), or null for no limit; e.g. 60",
    )
    return Plan(
        minutes=None if minutes is None else float(minutes),
        extend_grid=extend,
        rungs=rungs,
        eta=eta,
        max_seeds=max_seeds,
        seeds_per_look=per_look,
        alpha=float(alpha),
        half_width=None if half_width is None else float(half_width),
        futility=None if futility is None else float(futility),
        out_of_reach=out_of_reach,
        precision_max=precision_max,
    )


def _count(value, key: str, meaning: str) -> int:
    """`value` as a whole number >= 0, else one line naming `key`; `meaning` ends the line: "what it is); e.g. N"."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}={value}: must be an integer >= 0 ({meaning}")
    return value


def _optional(value, key: str, valid, rule: str):
    """`value` when it is null or a number `valid` accepts, else one line naming `key` and its `rule`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value)):
        raise ConfigError(f"{key}={value}: {rule}")
    return value


def parse(job: Sequence[str]) -> dict[str, str]:
    """A job's overrides as {key: value text}, without Hydra's +/++/~ prefixes."""
    parsed = {}
    for text in job:
        key, _, value = text.partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def check_halving(jobs: Sequence[Sequence[str]], hold: str, updates) -> None:
    """Successive halving pauses runs after whole epochs; a run counted in updates (batch.hold=updates, or
    trainer.updates) cuts its passes short and cannot pause there: one line before any job starts, not one per job.
    `hold` and `updates` are the config's values, which a job's own override replaces."""
    for job in jobs:
        keys = parse(job)
        job_hold, job_updates = keys.get("batch.hold", hold), keys.get("trainer.updates", updates)
        if str(job_hold) == "updates":
            raise ConfigError(
                "batch.hold=updates: successive halving pauses runs after whole epochs, which a run held as updates "
                "does not have; add study.halving=null, or batch.hold=epochs"
            )
        if job_updates not in (None, "null"):
            raise ConfigError(
                f"trainer.updates={job_updates}: successive halving pauses runs after whole epochs, which a run "
                "counted in updates does not have; add study.halving=null, or trainer.updates=null"
            )


def group_of(job: Sequence[str], nuisance: Iterable[str]) -> tuple:
    """What a job measures: every override but the nuisance keys and the seed."""
    skip = {*nuisance, SEED, GRID_STEP}
    return tuple(sorted((k, v) for k, v in parse(job).items() if k not in skip))


def setting_of(job: Sequence[str], nuisance: Iterable[str]) -> tuple:
    """The job's nuisance setting."""
    values = parse(job)
    return tuple((k, values.get(k)) for k in nuisance)


def longest_first(jobs: Sequence[Sequence[str]], nuisance: Iterable[str], seconds_per_epoch: dict) -> list[int]:
    """The order to launch `jobs` in: a step ends when its last job does, so the slowest start first and the short
    ones fill in beside them (a seed look of one 8-minute run and four 2-minute ones takes 8 minutes on 2 workers in
    this order, 12 in the grid's if the long one comes last). A job's expected time is that of its value
    (`seconds_per_epoch`, keyed by group_of: what its finished records took); jobs of a value not measured yet go
    first, in their given order (the sweeper passes a first grid its models' MACs instead: expected_cost). Only the
    order changes, never what runs."""
    nuisance = list(nuisance)

    def key(i: int) -> float:
        rate = seconds_per_epoch.get(group_of(jobs[i], nuisance))
        return -math.inf if rate is None else -rate

    return sorted(range(len(jobs)), key=key)


def makespan(seconds: Iterable[float], workers: int) -> float:
    """The wall time of jobs taking `seconds` each on `workers` workers, launched longest first (longest_first), each
    to the first worker free: a step's expected time, for the time limit."""
    loads = [0.0] * max(1, workers)
    for job in sorted(seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + job)
    return max(loads)


def rung_epochs(epochs: int, rungs: Sequence[float]) -> list[int]:
    """The epochs after which each rung decides, rounded, each at least 1 and before the run's end."""
    points = sorted({min(epochs - 1, max(1, round(f * epochs))) for f in rungs})
    return [p for p in points if 0 < p < epochs]


def keep_best(scores: dict[tuple, float], eta: int) -> list[tuple]:
    """The best ceil(n / eta) settings by score (higher is better); ties keep the earlier setting."""
    ranked = sorted(scores, key=lambda s: -_finite(scores[s]))
    return ranked[: max(1, math.ceil(len(ranked) / eta))]


def survivors(
    jobs: Sequence[Sequence[str]],
    val_acc: dict[tuple, float],
    nuisance: Sequence[str],
    eta: int,
    pinned: Callable[[Sequence[str]], bool] = lambda job: False,
) -> list:
    """The jobs whose setting ranks in the best 1/eta of its value at this rung, and the jobs `pinned` names.

    `val_acc` maps tuple(job) to the job's val accuracy at the rung (NaN for a diverged or failed run); a setting's
    score is the mean over its seeds, so one lucky seed does not carry a setting. A pinned job is one a claim
    compares at its own setting (the articles' "fixed 0.001"): it runs to the end whatever its rank, or the claim
    would have nothing to judge."""
    if not nuisance:
        return list(jobs)
    by_setting: dict[tuple, dict[tuple, list[float]]] = {}
    for job in jobs:
        scores = by_setting.setdefault(group_of(job, nuisance), {})
        scores.setdefault(setting_of(job, nuisance), []).append(val_acc.get(tuple(job), math.nan))
    kept = {
        group: set(keep_best({s: _mean(v) for s, v in settings.items()}, eta)) for group, settings in by_setting.items()
    }
    return [job for job in jobs if setting_of(job, nuisance) in kept[group_of(job, nuisance)] or pinned(job)]


def beyond_edges(
    jobs: Sequence[Sequence[str]], final_val: dict[tuple, float], nuisance: Sequence[str]
) -> list[list[str]]:
    """New jobs one grid step past the end of a numeric nuisance axis, for each value whose best setting sits there.

    `jobs` are every job launched so far (a stopped one counts as tried); `final_val` maps tuple(job) to the val
    accuracy at the end of each job that ran to it. A value's best setting is the one with the best mean over seeds
    (a diverged seed sinks it, as in halving). For each numeric key of that setting at the smallest or largest value
    the value tried (the other keys held), the next point out is the end times its ratio to its neighbour, rounded
    to 2 significant digits; it runs at every seed of the best setting. Nothing is proposed twice."""
    by_group: dict[tuple, list[Sequence[str]]] = {}
    for job in jobs:
        by_group.setdefault(group_of(job, nuisance), []).append(job)
    tried = {(group_of(j, nuisance), setting_of(j, nuisance)) for j in jobs}
    new = []
    for group, group_jobs in by_group.items():
        scores: dict[tuple, list[float]] = {}
        for job in group_jobs:
            if tuple(job) in final_val:
                scores.setdefault(setting_of(job, nuisance), []).append(final_val[tuple(job)])
        if not scores:
            continue
        best = max(scores, key=lambda setting: _finite(_mean(scores[setting])))  # a tie keeps the earlier setting
        if not math.isfinite(_mean(scores[best])):
            continue  # every setting diverged somewhere: no edge to read
        best_jobs = [j for j in group_jobs if setting_of(j, nuisance) == best and tuple(j) in final_val]
        for i, (key, text) in enumerate(best):
            line = [_number(s[i][1]) for s in {setting_of(j, nuisance) for j in group_jobs} if _others(s, best, i)]
            line = sorted(v for v in line if v is not None)
            value = _number(text)
            if value is None or len(line) < 2 or value <= 0 or line[0] <= 0:
                continue
            if value == line[-1]:
                step = value * value / line[-2]
            elif value == line[0]:
                step = value * value / line[1]
            else:
                continue
            step_text = f"{float(f'{step:.2g}'):g}"
            setting = tuple((k, step_text if k == key else v) for k, v in best)
            if (group, setting) in tried:
                continue
            tried.add((group, setting))
            new += [with_value(job, key, step_text) for job in best_jobs]
    return new


def with_value(job: Sequence[str], key: str, value: str) -> list[str]:
    """The same job with `key` set to `value` (its own override replaced, keeping any +/++ prefix)."""
    out = []
    for text in job:
        name, _, _ = text.partition("=")
        out.append(f"{name}={value}" if name.lstrip("+~") == key else text)
    return out


def _others(setting: tuple, best: tuple, i: int) -> bool:
    """Whether `setting` holds every key of `best` but the i-th at best's values."""
    return all(a == b for j, (a, b) in enumerate(zip(setting, best)) if j != i)


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def with_seed(job: Sequence[str], seed: int) -> list[str]:
    """The same job at another seed."""
    out = [text for text in job if parse([text]).keys() != {SEED}]
    return [*out, f"{SEED}={seed}"]


def with_grid_step(job: Sequence[str], step: int) -> list[str]:
    """The job filed as grid extension step `step`: a step past an extension's own run replaces its mark (Hydra
    refuses to append a key twice)."""
    out = [text for text in job if parse([text]).keys() != {GRID_STEP}]
    return [*out, f"+{GRID_STEP}={step}"]


def more_seeds(
    jobs: Sequence[Sequence[str]],
    wanted: Iterable[tuple[tuple, tuple]],
    nuisance: Sequence[str],
    plan: Plan,
    cap: int | None = None,
) -> list[list[str]]:
    """New jobs: `plan.seeds_per_look` more seeds for each wanted (group, setting), up to `cap` seeds (default
    `plan.max_seeds`, the claims' cap)."""
    new = []
    for group, setting in dict.fromkeys(wanted):  # once each, in order
        same_arm = [j for j in jobs if group_of(j, nuisance) == group and setting_of(j, nuisance) == setting]
        if not same_arm:
            continue
        seeds = sorted(int(parse(j)[SEED]) for j in same_arm if SEED in parse(j))
        room = (plan.max_seeds if cap is None else cap) - len(seeds)
        start = (max(seeds) + 1) if seeds else 0
        new += [with_seed(same_arm[0], start + i) for i in range(min(room, plan.seeds_per_look))]
    return new


def seed_looks(
    jobs: Sequence[Sequence[str]],
    plan: Plan,
    nuisance: Sequence[str],
    launch: Callable[[list[list[str]]], object],
    open_settings: Callable[[list[list[str]]], tuple[list[tuple[tuple, tuple]], ...]],
    elapsed_minutes: Callable[[], float] = lambda: 0.0,
    expected_minutes: Callable[[list[list[str]]], float] = lambda jobs: 0.0,
    workers: int = 1,
) -> list[list[list[str]]]:
    """The adaptive-seed loop: look at the claims, add seeds where one is open or a value is wider than the
    precision target, until nothing is, the plan's looks are spent or the time limit is.
    `open_settings(launched)` names the (group, setting) pairs open claims compare, apart those wider than the
    target, and apart again (with plan.out_of_reach=last) those wider still whose spread puts the target out of reach
    at the cap; `launch` runs jobs. A claim's values get seeds to plan.max_seeds, the others to plan.precision_cap:
    the passes past the claims' looks serve the precision target alone. Values out of reach get seeds only in a
    look that fits the time limit with them: the limit's spare time, never another value's seeds. A look whose
    seeds would end past the time limit (`elapsed_minutes()`: the sweep's wall time so far; `expected_minutes(new)`:
    what the new jobs would take) adds the claims' seeds alone if those fit, and otherwise ends the looks. A look
    whose runs would leave some of the launcher's `workers` idle in its last round gets seeds for precision to fill
    them (fill_workers). Returns the batches launched, one per look that found something to add."""
    launched = [list(j) for j in jobs]
    batches = []
    told = told_spare = False
    cap = plan.precision_cap
    if cap <= len({parse(j).get(SEED) for j in jobs}):
        return batches  # the grid's seeds reach every cap: no look to take
    # Until no value gets a seed: every pass adds seeds below a cap, so it ends. Not a count of passes: a claim's
    # value that reaches the claims' cap in a short last batch (15 -> 16) needs more passes to the precision cap than
    # one fed for precision from the start (width's allconv6_3 stopped at 46 of 48 under such a count).
    while True:
        for_claims, for_precision, *rest = open_settings(launched)
        # A claim's values to the claims' cap, values wider than the target to the precision cap (once each).
        new = [
            *more_seeds(launched, for_claims, nuisance, plan),
            *more_seeds(launched, [s for s in for_precision if s not in for_claims], nuisance, plan, cap),
        ]
        spare = more_seeds(launched, rest[0], nuisance, plan, cap) if rest and plan.out_of_reach == "last" else []
        if not new and not spare:
            break
        elapsed = elapsed_minutes()
        if spare:
            with_spare = expected_minutes([*new, *spare])
            if plan.fits(elapsed, with_spare):
                new = [*new, *spare]
            elif not new or not told_spare:
                told_spare = True
                values = _values(len({(group_of(j, nuisance), setting_of(j, nuisance)) for j in spare}))
                step = f"a seed look with the {values} whose ±{plan.half_width:g} is out of reach at the cap"
                outcome = "no more seeds start" if not new else "seeds go to the others"
                log.info(plan.time_line(elapsed, with_spare, step, outcome))
                if not new:
                    break
        expected = expected_minutes(new)
        if not plan.fits(elapsed, expected):
            claims_only = more_seeds(launched, for_claims, nuisance, plan)
            alone = expected_minutes(claims_only) if claims_only else 0.0
            if not claims_only or not plan.fits(elapsed, alone):
                step = (
                    f"the claims' {len(claims_only)} seeds" if claims_only else f"a seed look of {runs_text(len(new))}"
                )
                log.info(plan.time_line(elapsed, alone if claims_only else expected, step, "no more seeds start"))
                break
            if not told:
                told = True
                # Only the wide values this look would feed: one at the cap or out of reach gets no seeds anyway.
                wide = [
                    s
                    for s in dict.fromkeys(for_precision)
                    if s not in for_claims and more_seeds(launched, [s], nuisance, plan, cap)
                ]
                log.info(
                    plan.time_line(
                        elapsed,
                        expected,
                        f"a seed look with the {_values(len(wide))} wider than the precision target",
                        "seeds go to the values an open claim compares alone",
                    )
                )
            new = claims_only
        fill = fill_workers(launched, new, for_claims, nuisance, plan, cap, workers)
        if fill and plan.fits(elapsed, expected_minutes([*new, *fill])):
            new = [*new, *fill]
        launch(new)
        launched += new
        batches.append(new)
    return batches


def fill_workers(
    launched: Sequence[Sequence[str]],
    new: Sequence[Sequence[str]],
    for_claims: Sequence[tuple[tuple, tuple]],
    nuisance: Sequence[str],
    plan: Plan,
    cap: int,
    workers: int,
) -> list[list[str]]:
    """More seeds, one at a time in turn, for the values a look feeds for precision alone (those in `new` that no
    open claim compares), so that its runs fill the last round of the launcher's `workers`. A look ends when its
    last run does, so on 2 workers a look of 3 takes the time of 4: the 4th seed is free in wall time. Only a look
    of a round or more, only to fill its last round whole, each value at most `plan.seeds_per_look` more and below
    `cap`; else none: on a cluster's hundreds of workers a look of 3 would otherwise buy hundreds of seeds. A
    claim's values keep `plan.seeds_per_look`, the size the claims' planned looks assume."""
    if workers <= 1 or len(new) < workers or not len(new) % workers:
        return []
    one = replace(plan, seeds_per_look=1)
    claims = set(for_claims)
    wanted = [
        s for s in dict.fromkeys((group_of(j, nuisance), setting_of(j, nuisance)) for j in new) if s not in claims
    ]
    fill: list[list[str]] = []
    for _ in range(plan.seeds_per_look):
        for setting in wanted:
            if not (len(new) + len(fill)) % workers:
                return fill
            fill += more_seeds([*launched, *new, *fill], [setting], nuisance, one, cap)
    return fill if not (len(new) + len(fill)) % workers else []


def _values(count: int) -> str:
    return f"{count} value{'' if count == 1 else 's'}"


def runs_text(count: int) -> str:
    """'1 run', '3 runs': the sweep's log lines."""
    return f"{count} run{'' if count == 1 else 's'}"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    # A setting with a diverged or failed seed ranks below every setting that trained on all of them.
    return sum(finite) / len(finite) if finite and len(finite) == len(values) else -math.inf


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf
