"""What a futility rule for adaptive seeds would have saved, and what it would have cost, replayed on finished tables.

Adaptive seeds add seeds to the values an open claim compares until it resolves or the values reach the cap
(ablate/adaptive.py). A comparison whose difference sits on a boundary of its claim (a null effect under a
directional claim) takes its values to the cap without resolving. `study.more_seeds.futility` stops seeding a
comparison whose chance to resolve at the cap (predictive power, ablate.analysis.stats.resolve_chance) is below a
threshold.

This replays a study's looks on its collected table (runs.csv, where the adaptive seeds are numbered on from the
grid's): at each look the table holds the seeds the sweep had then (seed < 3, 6, 9, ...), and ablate's own
open_arms says which values get seeds, once without the rule and once with it. It prints, per table, the
comparisons the rule would have stopped (at which look, and how they ended at the cap), the seeds and training time
the rule would have saved, and the claims whose verdict it would have lost. A value stops at the first look that
asks nothing of it; what the sweep ran past that point counts as saved. The replay reads the seeds the sweep
actually ran, so a later look sees seeds that the rule would not have run: a value that the rule stops and a later
look would ask for again is counted from its first stop (the sweeper would have fed it again: the saving is an
upper bound there, and the script says how often that happens).

    python scripts/futility_check.py results/reference/*/cpu/*/runs.csv --futility 0.1
"""

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ablate.analysis.claims import INCONCLUSIVE, judge, parse_claims
from ablate.analysis.looks import open_arms
from ablate.analysis.selection import select
from ablate.analysis.study import load_runs, load_study
from ablate.config import CONF_DIR


def replay(table: Path, futility: float, conf_dir: Path = CONF_DIR) -> dict:
    """The replay of one table: per look, which arms each rule feeds; the futile comparisons; what stopping saves."""
    study = table.parent.name
    runs = load_runs(study, table.parent.parent)
    spec = load_study(study, conf_dir, list(runs.columns), runs=runs)
    plan = spec.plan
    if not plan.max_seeds or not spec.claims:
        return {"table": table, "skipped": "no adaptive seeds or no claims"}
    seeds = pd.to_numeric(runs["seed"], errors="coerce")
    looks = [spec.initial_seeds + k * plan.seeds_per_look for k in range(plan.looks(spec.initial_seeds) - 1)]
    stops = {None: {}, futility: {}}  # rule -> {arm label: seeds it had at the first look that asked nothing}
    fed_again = 0
    futile: dict[tuple, int] = {}  # (claim, left, right) -> seeds at the look that first found it futile
    for at in looks:
        now = runs[seeds < at]
        for rule in stops:
            told: set[str] = set()
            found = open_arms(now, spec, spec.confidence, replace(plan, futility=rule), told)
            asked = {arm.label for arm in found.arms}
            labels = {arm.label for arm in select(now, spec, confidence=spec.confidence).arms}
            for label in labels - asked:
                stops[rule].setdefault(label, at)
            if rule is not None:
                fed_again += sum(1 for label in asked if label in stops[rule])
                for key in told:
                    if key.startswith("futility: "):
                        futile.setdefault(key.removeprefix("futility: "), at)
    selection = select(runs, spec, confidence=spec.confidence)
    verdicts = [judge(claim, selection) for claim in parse_claims(spec.claims, study)]
    ended = {f"{c.left} vs {c.right}": c.verdict for v in verdicts for c in v.comparisons}
    saved_seeds, saved_seconds = 0, 0.0
    for arm in selection.arms:
        plain = stops[None].get(arm.label, plan.max_seeds)
        ruled = stops[futility].get(arm.label, plan.max_seeds)
        if ruled < plain:
            done = arm.completed
            extra = done[(pd.to_numeric(done["seed"]) >= ruled) & (pd.to_numeric(done["seed"]) < plain)]
            saved_seeds += len(extra)
            saved_seconds += float(pd.to_numeric(extra["wall_seconds"], errors="coerce").fillna(0).sum())
    lost = [
        c
        for c, at in futile.items()
        if ended.get(c, INCONCLUSIVE) != INCONCLUSIVE  # resolved with the seeds the rule would have withheld
    ]
    total = float(pd.to_numeric(runs["wall_seconds"], errors="coerce").fillna(0).sum())
    return {
        "table": table,
        "futile": futile,
        "ended": ended,
        "lost": lost,
        "fed_again": fed_again,
        "saved_seeds": saved_seeds,
        "saved_seconds": saved_seconds,
        "total_seconds": total,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", type=Path, help="runs.csv files written by ablate.collect")
    parser.add_argument("--futility", type=float, default=0.1, help="the rule's threshold (default 0.1)")
    parser.add_argument("--conf", type=Path, default=CONF_DIR, help="the config folder with claims/<study>.yaml")
    args = parser.parse_args(argv)
    totals = {"futile": 0, "lost": 0, "seconds": 0.0, "all": 0.0, "seeds": 0}
    for table in args.tables:
        out = replay(table, args.futility, args.conf)
        name = "/".join(table.parts[-4:-1])
        if "skipped" in out:
            print(f"{name}: skipped ({out['skipped']})")
            continue
        print(
            f"{name}: {len(out['futile'])} comparisons futile, {len(out['lost'])} of them resolved later; "
            f"{out['saved_seeds']} seeds, {out['saved_seconds'] / 3600:.2f} h of {out['total_seconds'] / 3600:.2f} h "
            f"saved; {out['fed_again']} later asks for a stopped value"
        )
        for comparison, at in out["futile"].items():
            print(f"  futile at {at} seeds: {comparison} (ended {out['ended'].get(comparison, '?')})")
        totals["futile"] += len(out["futile"])
        totals["lost"] += len(out["lost"])
        totals["seconds"] += out["saved_seconds"]
        totals["all"] += out["total_seconds"]
        totals["seeds"] += out["saved_seeds"]
    print(
        f"all tables: {totals['futile']} comparisons futile, {totals['lost']} resolved later; {totals['seeds']} seeds, "
        f"{totals['seconds'] / 3600:.2f} h of {totals['all'] / 3600:.2f} h of training saved "
        f"(futility {args.futility:g})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
