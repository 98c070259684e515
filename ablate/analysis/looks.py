"""A look at a study while it runs: which of its claims are still open, which arms those claims compare, and which
arms are still less precise than the plan asks.

The adaptive-seed loop (ablate.adaptive.seed_looks, driven by hydra_plugins/ablate_sweeper) asks this after the grid
and after each batch of seeds; the report asks the same question of the finished table.
"""

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablate import adaptive, collect
from ablate.analysis.claims import (
    INCONCLUSIVE,
    Claim,
    Comparison,
    Verdict,
    boundaries,
    judge,
    parse_claims,
    pinned_selectors,
)
from ablate.analysis.selection import Arm, select
from ablate.analysis.stats import reachable_half_width, resolve_chance, seeds_for_half_width
from ablate.analysis.study import Study, is_missing, load_study, read_claims_file, same

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Open:
    """What a look found: the arms open claims compare, the other arms wider than the precision target, and every
    claim's verdict. The two lists are kept apart because a study's time limit ends the seeds for precision, not
    the seeds for claims (ablate.adaptive.seed_looks)."""

    claims: list[Arm] = field(default_factory=list)
    precision: list[Arm] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    # Wider than the target, and out of reach at the cap: seeds only after the rest (study.more_seeds.out_of_reach).
    spare: list[Arm] = field(default_factory=list)

    @property
    def arms(self) -> list[Arm]:
        return [*self.claims, *self.precision, *self.spare]


def open_arms(
    runs: pd.DataFrame,
    spec: Study,
    confidence: float,
    plan: adaptive.Plan | None = None,
    told: set[str] | None = None,
) -> Open:
    """The arms that inconclusive claims compare and that are below the plan's `max_seeds` (the claims' cap; 0 or
    no plan: no cap), the other chosen arms whose 95% interval of test accuracy is wider than ±half_width points
    (with a `half_width`), below its precision cap and that the cap could bring within it (out_of_reach), and every
    claim's verdict, at `confidence`. An arm whose target is out of reach is logged once per `told` (the labels
    already logged: the sweeper keeps one set over its looks); with out_of_reach `last` it is kept apart in
    Open.spare, for seeds after the rest.

    With `futility` (and `max_seeds`), an open comparison whose chance to resolve at `max_seeds` seeds a side is
    below it (futile) adds no seeds: the seeds would most likely end at the cap with the claim still open. Dropping
    a comparison only ever leaves it inconclusive, so this costs power, never a false verdict (a non-binding
    futility rule); it is logged once per `told`, as the precision target's out-of-reach arms are.

    An arm at chance is left out: more seeds of a net that did not train cannot settle a claim about nets (the
    report says the budget measured trainability there), nor make its chance-level accuracy any more telling; so is
    a side with no runs at all."""
    told = set() if told is None else told
    plan = plan or adaptive.Plan()  # none: claims only, no cap, no precision target
    half_width, futility = plan.half_width, plan.futility
    max_seeds, cap = plan.max_seeds or None, plan.precision_cap or None
    last = plan.out_of_reach == "last"
    selection = select(runs, spec, confidence=confidence)
    verdicts = [judge(claim, selection) for claim in parse_claims(spec.claims, spec.name)]
    compared: dict[str, Arm] = {}
    wide: dict[str, Arm] = {}
    spare: dict[str, Arm] = {}
    for verdict in verdicts:
        if verdict.verdict != INCONCLUSIVE:
            continue
        for comparison in verdict.comparisons:
            if comparison.verdict != INCONCLUSIVE or len(comparison.arms) != 2:
                continue
            sides = comparison.arms
            if not all(isinstance(arm, Arm) and arm.seeds > 0 for arm in sides):
                continue
            if any(arm.at_chance for arm in sides):
                continue
            if (
                futility is not None
                and max_seeds
                and futile(comparison, verdict.margin, max_seeds, confidence, futility, told)
            ):
                continue
            for arm in sides:
                if max_seeds is None or arm.seeds < max_seeds:  # at the claims' cap it may still be too wide
                    compared.setdefault(arm.label, arm)
    if half_width is not None:
        for arm in selection.arms:
            if arm.seeds > 0 and not arm.at_chance and too_wide(arm, half_width):
                if arm.label in compared or (cap is not None and arm.seeds >= cap):
                    continue
                if cap is None or not out_of_reach(arm, half_width, cap):
                    wide.setdefault(arm.label, arm)
                    continue
                if last:
                    spare.setdefault(arm.label, arm)
                if arm.label not in told:
                    told.add(arm.label)
                    reach = reachable_half_width(arm.test_accs, cap) * 100
                    gets = "seeds after the others, while the time limit allows" if last else "no seeds for it"
                    log.info(
                        f"precision target: {arm.label} gets {gets}: its {arm.seeds} seeds spread so far "
                        f"that {cap} would give ±{reach:.1f} points at best, not ±{half_width:g}"
                        + (f" ({cost})" if (cost := precision_cost(arm, half_width)) else "")
                    )
    return Open(list(compared.values()), list(wide.values()), verdicts, list(spare.values()))


def precision_cost(arm: Arm, half_width: float) -> str:
    """What the precision target would take at the arm's present spread, for a line saying it is not met: the
    figure a user needs to size a rerun (a larger study.more_seeds.max, or a tier with more time), not a bare miss.
    Empty where its seeds give no spread to go on."""
    needed = seeds_for_half_width(arm.test_accs, half_width / 100)
    return "" if needed is None else f"±{half_width:g} would take about {needed} at this spread"


def futile(
    comparison: Comparison,
    margin: float,
    max_seeds: int,
    confidence: float,
    futility: float,
    told: set[str] | None = None,
) -> bool:
    """Whether the open comparison's chance to resolve with both sides at `max_seeds` seeds, at `confidence`, is
    below `futility` (resolve_chance: predictive power); logged once per `told`."""
    a, b = comparison.arms
    chance = resolve_chance(a.claim_accs, b.claim_accs, max_seeds, boundaries(comparison.kind, margin), confidence)
    if chance >= futility:
        return False
    key = f"futility: {comparison.left} vs {comparison.right}"
    if told is None or key not in told:
        if told is not None:
            told.add(key)
        log.info(
            f"{key} gets no seeds: its difference, {comparison.diff.mean * 100:+.1f} points at "
            f"{a.seeds} and {b.seeds} seeds, would resolve at {max_seeds} seeds with {chance:.0%} chance, "
            f"under study.more_seeds.futility={futility:g}"
        )
    return True


def too_wide(arm: Arm, half_width: float) -> bool:
    """Whether the arm's 95% interval of test accuracy (Student t over seeds) reaches past ±half_width points;
    one seed has no interval, so it is too wide."""
    return not arm.test.bounded or (arm.test.high - arm.test.low) / 2 * 100 > half_width


def out_of_reach(arm: Arm, half_width: float, max_seeds: int) -> bool:
    """Whether even `max_seeds` seeds could not bring the arm's 95% interval within ±half_width points, its seeds'
    spread taken at the low end of what they allow (stats.reachable_half_width): seeds added for precision there
    would be spent without reaching the target. Claims still get their seeds: a difference can resolve where a
    mean stays wide."""
    return reachable_half_width(arm.test_accs, max_seeds) * 100 > half_width


def open_arms_of_records(
    study_dir: Path,
    study: dict,
    conf_dir: Path,
    confidence: float,
    plan: adaptive.Plan,
    told: set[str] | None = None,
    *,
    own: Iterable[Path],
) -> Open:
    """open_arms over the records of a study folder that share the setup of `own` (the records the sweep launched;
    every record where it has launched none yet; required, so that no caller pools another setup's records), with
    the axes of `study` (the sweeper's resolved study node) and the claims of `conf_dir`/claims/<study>.yaml."""
    name = str(study["name"])
    runs = collect.table(collect.local_records(Path(study_dir)))
    if runs.empty or not (runs["status"] == "completed").any():
        return Open()
    spec = load_study(name, conf_dir, list(runs.columns), runs=runs, sweep=study)
    if not spec.claims and plan.half_width is None:
        return Open()
    return open_arms(same_setup_as(runs, own, spec), spec, confidence, plan, told)


def same_setup_as(runs: pd.DataFrame, own: Iterable[Path], spec: Study) -> pd.DataFrame:
    """The rows that are seeds of the same experiment as the records `own`: equal to them in every setup column
    (collect.SETUP_COLUMNS) the study does not sweep. A study's folder can also hold another setup's records (an
    earlier sweep of it at trainer.epochs=20, measured 2026-12-06: a width sweep's looks pooled the two, chose
    allconv6_6's LR on the 20-epoch runs and fed it seeds at an LR the report, which refuses to pool them
    (study.check_one_setup), did not choose). A row without the column's value (a run that failed before its config
    resolved) stays: it only counts as failed."""
    mine = {os.path.normpath(str(Path(d).resolve())) for d in own}
    ours = runs[[isinstance(d, str) and os.path.normpath(d) in mine for d in runs["record_dir"]]]
    if ours.empty:
        return runs
    keep = pd.Series(True, index=runs.index)
    for key in collect.SETUP_COLUMNS:
        if key in runs.columns and key not in spec.scientific and key not in spec.nuisance:
            values = ours[key].dropna().unique()
            if len(values) == 1:
                keep &= runs[key].map(lambda v, value=values[0]: is_missing(v) or same(v, value))
    return runs[keep]


def job_settings(arms: list[Arm], jobs: list[list[str]], nuisance: list[str]) -> list[tuple[tuple, tuple]]:
    """Each arm as the sweeper knows it, (group, setting) of ablate.adaptive, from the first launched job whose
    overrides hold the arm's scientific values and nuisance setting."""
    found = []
    for arm in arms:
        for job in jobs:
            if holds(job, {**arm.values, **arm.setting}):
                found.append((adaptive.group_of(job, nuisance), adaptive.setting_of(job, nuisance)))
                break
    return found


def study_claims(conf_dir: Path, name: str) -> tuple[list[Claim], dict]:
    """The claims of conf_dir/claims/<name>.yaml, checked (a bad one is one ConfigError line naming it), and its
    named groups; none where the study has no claims file."""
    path = Path(conf_dir) / "claims" / f"{name}.yaml"
    raw = read_claims_file(path)
    return parse_claims(raw.get("claims"), str(path)), raw.get("groups") or {}


def claim_pins(conf_dir: Path, name: str, nuisance: list[str]) -> Callable[[Sequence[str]], bool]:
    """Whether a job is a setting that a claim of conf_dir/claims/<name>.yaml pins (claims.pinned_selectors)."""
    selectors = pinned_selectors(*study_claims(conf_dir, name), nuisance)
    return lambda job: any(holds(job, selector) for selector in selectors)


def holds(job: Sequence[str], wanted: dict) -> bool:
    """Whether the job's overrides give every key of `wanted` its value (0.01 matches 0.010, true matches True)."""
    given = adaptive.parse(job)
    return all(key in given and same(given[key], value) for key, value in wanted.items())
