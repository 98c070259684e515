"""What a study's budget measured, read from its curves, and what its compute cost against the full grid.

A comparison of final accuracies means what the curves behind it allow:
- a value whose seeds all end at chance did not train: the comparison is about trainability at this budget;
- a value that left chance and ended back at it collapsed: the comparison is about its stability (an LR too high);
- a value that spent most of its run at chance started late: its final accuracy mostly says when it left the plateau;
- a value still climbing at the end had not converged: the comparison is of learning speed at this budget;
- a value that levelled off after its LR schedule had all but ended (an `exp` policy compressed into a short run)
  stopped where the schedule stopped it: the comparison is of schedules at this budget, not of capacity;
- a value whose val accuracy ends within CEILING_POINTS of 100% has (nearly) solved the data: values there differ by
  less than the room left, so the comparison is bounded by the data's ceiling, not by what each net could learn;
- only values that plateaued with their LR still working, below the ceiling, compare capacity.
"""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ablate.analysis.curves import RECORDS_ONLY, Curves
from ablate.analysis.selection import CHANCE_MARGIN, COLLAPSE_RISE, Arm

UNTRAINED, LATE, CLIMBING, PLATEAU = "at chance", "late start", "still climbing", "plateau"
COLLAPSED = "collapsed"
LR_SPENT = "LR spent"
CEILING = "ceiling"
# Still climbing: val accuracy rose by more than this over the last TAIL of the evaluated run.
CLIMB_POINTS = 0.02
TAIL = 0.2
# A late start: more than this share of the evaluations within CHANCE_MARGIN of chance.
LATE_SHARE = 0.5
# LR spent: over the last TAIL of the run the LR averaged below this share of its peak (learning 20x slower; inv
# ends at 3% of its peak, exp at 0.005%, the default step at 10%).
SPENT_SHARE = 0.05
# At the ceiling: the mean val accuracy ends within this of 100% (on the embedded data at 20 epochs most no-BN nets end
# at 98-99.6%, and every BN net does: a claim that one beats another there is about tenths of a point).
CEILING_POINTS = 0.02


def classify(curve: list[tuple[float, float]], chance: float, lr: list[tuple[float, float]] = ()) -> str:
    """One value's mean val-accuracy curve [(epoch, acc)], in run order, as one of the readings above; `lr` is its
    LR curve [(epoch, lr)] (without one, a plateau reads as capacity)."""
    points = [(x, y) for x, y in curve if math.isfinite(y)]
    if not points:
        return UNTRAINED
    accs = np.array([y for _, y in points])
    if accs.max() <= chance + CHANCE_MARGIN:
        return UNTRAINED
    if accs[-1] <= chance + CHANCE_MARGIN and accs.max() > chance + COLLAPSE_RISE:
        return COLLAPSED
    if np.mean(accs <= chance + CHANCE_MARGIN) > LATE_SHARE:
        return LATE
    if accs[-1] >= 1.0 - CEILING_POINTS:
        return CEILING
    end = points[-1][0]
    start = points[0][0]
    cut = end - TAIL * (end - start)
    earlier = [y for x, y in points if x <= cut]
    if earlier and accs[-1] - earlier[-1] > CLIMB_POINTS:
        return CLIMBING
    rates = [y for _, y in lr if math.isfinite(y)]
    tail = [y for x, y in lr if x > cut and math.isfinite(y)]
    if rates and tail and np.mean(tail) < SPENT_SHARE * max(rates):
        return LR_SPENT
    return PLATEAU


def mean_curve(arm: Arm, key: str = "val/acc", curves: Curves = RECORDS_ONLY) -> list[tuple[float, float]]:
    """The arm's `key` (a metrics.jsonl column) per evaluated epoch, averaged over its completed seeds."""
    tables = [curves.of(run) for _, run in arm.completed.iterrows()]
    tables = [t[["epoch", key]].dropna() for t in tables if t is not None and {"epoch", key} <= set(t.columns)]
    if not tables:
        return []
    table = pd.concat(tables).groupby("epoch")[key].mean()
    return [(float(epoch), float(value)) for epoch, value in table.items()]


def readings(arms: list[Arm], curves: Curves = RECORDS_ONLY) -> dict[str, str]:
    """Each arm's reading, by label (arms without a class count or curve are left out)."""
    found = {}
    for arm in arms:
        classes = arm.x("data.classes")
        curve = mean_curve(arm, curves=curves)
        if curve and math.isfinite(classes) and classes > 0:
            found[arm.label] = classify(curve, 1.0 / classes, mean_curve(arm, "lr", curves))
    return found


def measured_line(found: dict[str, str]) -> str:
    """The headline's "what this budget measured", from the readings."""
    if not found:
        return "not known: no learning curves in the records"
    kinds = (UNTRAINED, LATE, COLLAPSED, CLIMBING, LR_SPENT, CEILING, PLATEAU)
    by = {kind: [label for label, k in found.items() if k == kind] for kind in kinds}
    n = len(found)
    parts = []
    if by[UNTRAINED] or by[LATE]:
        stuck = by[UNTRAINED] + by[LATE]
        parts.append(
            f"**trainability** for {share(stuck, n)}: they spent most of the run at "
            "chance, so their accuracy says when (or whether) they left the init's plateau, not what they can learn"
        )
    if by[COLLAPSED]:
        parts.append(
            f"**stability** for {share(by[COLLAPSED], n)}: they left chance "
            "and fell back to it by the end, so their setting (its LR) is unstable, whatever the budget"
        )
    if by[CLIMBING]:
        parts.append(
            f"**learning speed** for {share(by[CLIMBING], n)}: still climbing "
            f"(val accuracy up more than {100 * CLIMB_POINTS:.0f} points over the last {TAIL:.0%} of the run), so "
            "a longer budget may reorder them"
        )
    if by[LR_SPENT]:
        parts.append(
            f"**the schedule** for {share(by[LR_SPENT], n)}: their curves "
            f"levelled off with the LR below {SPENT_SHARE:.0%} of its peak over the last {TAIL:.0%} of the run, so "
            "they stopped where their schedule stopped learning, not at what the network can learn"
        )
    if by[CEILING]:
        parts.append(
            f"**the data's ceiling** for {share(by[CEILING], n)}: their val accuracy ends within "
            f"{100 * CEILING_POINTS:.0f} points of 100%, so the data is (nearly) solved and differences between them "
            "are bounded by the room left, not by what each network can learn"
        )
    if by[PLATEAU]:
        parts.append(f"**capacity** for {share(by[PLATEAU], n)}: their curves had levelled off")
    return "; ".join(parts)


def share(labels: list[str], n: int) -> str:
    """A group of readings as the headline counts it: "every value (`a`, `b`)" or "2 of 3 values (`a`, `b`)". Each
    label is quoted because a study of two axes labels a value "batch.size=16, batch.rule=none": unquoted, fifteen of
    them in a row read as thirty."""
    named = ", ".join(f"`{label}`" for label in labels)
    return ("every value" if len(labels) == n else f"{len(labels)} of {n} values") + f" ({named})"


@dataclass(frozen=True)
class Compute:
    """Training seconds spent, and what the same budget would have cost as a full grid."""

    spent: float  # every run's wall_seconds, stopped and diverged included
    runs: int
    stopped: int
    full_grid: float  # every setting of every value to the end, on the most-seeded value's seeds (at most claim_seeds)
    saved_by_halving: float  # what the stopped runs would have cost to finish
    saved_by_seeds: float  # the rest of the difference: seeds never run on values whose claims were settled
    seeds: int  # the seed count full_grid is priced at
    precision_only: float  # seeds past the claims' cap, for the precision target alone (in spent, not in full_grid)

    @property
    def saved(self) -> float:
        """What halving and adaptive seeds saved together: the full grid against what was spent on the claims' seeds."""
        return self.full_grid - (self.spent - self.precision_only)


def compute(
    runs: pd.DataFrame, scientific: list[str], nuisance: list[str], claim_seeds: int | None = None
) -> Compute | None:
    """Compute from runs.csv (wall_seconds, epochs_completed, trainer.epochs); None when the table lacks them.

    Where the claims read each value's first `claim_seeds` seeds (study.more_seeds.precision_max), the full grid is
    priced at those: a fixed design answers the same claims on them, and the seeds past them, which serve the
    precision target alone, are counted apart (`precision_only`) rather than inflating what adaptive seeds saved."""
    needed = ("wall_seconds", "epochs_completed", "trainer.epochs")
    if any(c not in runs.columns for c in needed) or runs["wall_seconds"].isna().all():
        return None
    runs = runs[runs["wall_seconds"].notna()]
    epochs = pd.to_numeric(runs["trainer.epochs"], errors="coerce")
    done = pd.to_numeric(runs["epochs_completed"], errors="coerce")
    per_epoch = runs["wall_seconds"] / done.where(done > 0)
    stopped = runs["status"] == "stopped"
    saved_halving = float(((epochs - done) * per_epoch)[stopped].sum())
    value_keys = list(scientific)
    seeds_of = runs[runs["status"] != "stopped"].groupby(value_keys, dropna=False)["seed"].nunique()
    most_seeds = int(seeds_of.max()) if len(seeds_of) else 0
    if claim_seeds is not None:
        most_seeds = min(most_seeds, claim_seeds)
    full = precision_only = 0.0
    # A run's whole cost: what it took if it ran to the end (its passes need not be trainer.epochs: trainer.updates,
    # batch.hold=updates), else its pace times the epochs it was stopped short of.
    whole = runs["wall_seconds"].where(runs["status"] == "completed", per_epoch * epochs)
    for _, rows in runs.groupby(value_keys, dropna=False):
        settings = rows.groupby(list(nuisance), dropna=False).ngroups if nuisance else 1
        cost = float(whole[rows.index].median())
        if math.isfinite(cost):
            full += settings * most_seeds * cost
        if claim_seeds is not None:
            past = sorted(rows["seed"].dropna().unique())[claim_seeds:]
            precision_only += float(rows.loc[rows["seed"].isin(past), "wall_seconds"].sum())
    spent = float(runs["wall_seconds"].sum())
    return Compute(
        spent=spent,
        runs=len(runs),
        stopped=int(stopped.sum()),
        full_grid=full,
        saved_by_halving=saved_halving,
        saved_by_seeds=max(0.0, full - (spent - precision_only) - saved_halving),
        seeds=most_seeds,
        precision_only=precision_only,
    )
