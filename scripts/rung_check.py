"""Where successive halving may decide: how often a rung's pick keeps the setting that is best at the end of the run.

Halving stops a value's settings on their mean val accuracy part-way through the run. That is only sound if the
ranking at the rung predicts the ranking at the end; a higher LR often leads early and ends lower (short-horizon
bias), and then halving keeps the wrong setting. This reads records trained to the end without halving (every
setting, several seeds) and, for every seed subset of the size a study starts with, asks at each epoch: would the
best 1/eta settings by mean val there include the setting with the best mean final val on the same seeds?

Make the records with a plain grid at the tier to check, for example (about 25 min on 2 cores):
    python -m ablate -m budget=cpu launcher=parallel logger=none paths.runs=.cache/rung \
        model=allconv6,allconv6_1,allconv6_3,allconv6_6 optim.lr=0.1,0.03,0.01 seed=0,1,2,3,4,5,6,7
    python scripts/rung_check.py .cache/rung/single/synthetic/cpu --value model --setting optim.lr
(--where trainer.epochs=10 keeps only the records with that value, when the folder holds other lengths too.)
It prints one row per value and the mean over values: the share of seed subsets on which each epoch's rung keeps
the end's best setting. The pick reuses ablate.adaptive.keep_best, the sweeper's own rule.
"""

import argparse
import itertools
import math
import sys
from collections import defaultdict
from pathlib import Path

from ablate import record
from ablate.adaptive import keep_best
from ablate.collect import local_records, value_of


def curves(folder: Path, value_key: str, setting_keys: list[str], where: dict[str, str]) -> dict:
    """{value: {setting: {seed: {epoch: val acc}}}} from the folder's completed records that match `where`."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for found in local_records(folder):
        summary, config = found["summary"], found["config"]
        if summary.get("status") != "completed":
            continue
        if any(str(value_of(summary, config, key)) != wanted for key, wanted in where.items()):
            continue
        value = value_of(summary, config, value_key)
        setting = tuple(value_of(summary, config, key) for key in setting_keys)
        seed = value_of(summary, config, "seed")
        curve = {r["epoch"]: r["val/acc"] for r in record.read_metrics(found["record_dir"]) if "val/acc" in r}
        out[value][setting][seed] = curve
    return out


def agreement(runs: dict, seeds_per_subset: int, eta: int) -> tuple[list[int], dict[int, float]]:
    """For one value's {setting: {seed: curve}}: the epochs checked and, per epoch, the share of seed subsets on which
    the best 1/eta settings there include the best setting at the end."""
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in runs.values())))
    if len(seeds) < seeds_per_subset:
        raise SystemExit(f"rung_check: only {len(seeds)} seeds common to every setting; need {seeds_per_subset}")
    last = min(max(curve) for by_seed in runs.values() for curve in by_seed.values())
    epochs = sorted(set.intersection(*(set(c) for by_seed in runs.values() for c in by_seed.values())))
    epochs = [e for e in epochs if e < last]
    hits = dict.fromkeys(epochs, 0)
    subsets = list(itertools.combinations(seeds, seeds_per_subset))
    for subset in subsets:

        def mean_at(epoch, subset=subset):
            return {s: sum(runs[s][seed][epoch] for seed in subset) / len(subset) for s in runs}

        best = keep_best(mean_at(last), len(runs))[0]
        for epoch in epochs:
            hits[epoch] += best in keep_best(mean_at(epoch), eta)
    return [*epochs, last], {e: hits[e] / len(subsets) for e in epochs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of records: runs/<study>/<data>/<budget>")
    parser.add_argument("--value", default="model", help="the scientific axis (default: model)")
    parser.add_argument("--setting", nargs="+", default=["optim.lr"], help="the nuisance axes (default: optim.lr)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds a study starts with (the cpu tier: 3)")
    parser.add_argument("--eta", type=int, default=3, help="halving keeps the best 1/eta (the cpu tier: 3)")
    parser.add_argument("--where", nargs="*", default=[], metavar="KEY=VALUE", help="keep records with these values")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"rung_check: {args.folder} is not a folder of records", file=sys.stderr)
        return 2
    where = dict(item.split("=", 1) for item in args.where if "=" in item)
    if len(where) != len(args.where):
        print(f"rung_check: --where takes KEY=VALUE (--where trainer.epochs=10), not {args.where}", file=sys.stderr)
        return 2
    found = curves(args.folder, args.value, args.setting, where)
    if not found:
        print(f"rung_check: no completed records in {args.folder}", file=sys.stderr)
        return 2
    rows, totals = {}, defaultdict(list)
    for value in sorted(found, key=str):
        if len(found[value]) < 2:
            continue  # one setting: nothing to stop
        epochs, share = agreement(found[value], args.seeds, args.eta)
        rows[value] = (epochs[-1], share)
        for epoch, s in share.items():
            totals[epoch].append(s)
    if not rows:
        print(f"rung_check: no value with two or more {'/'.join(args.setting)} settings", file=sys.stderr)
        return 2
    epochs = sorted(totals)
    last = max(end for end, _ in rows.values())
    print(
        f"Share of {args.seeds}-seed subsets on which halving at epoch N (keeping the best 1/{args.eta}) keeps the "
        f"{args.setting} setting that is best on val at the end ({last} epochs):"
    )
    print(f"| {args.value} | " + " | ".join(f"epoch {e}" for e in epochs) + " |")
    print("|---|" + "---|" * len(epochs))
    for value, (_, share) in rows.items():
        print(f"| {value} | " + " | ".join(f"{100 * share[e]:.0f}%" if e in share else "" for e in epochs) + " |")
    mean = {e: sum(v) / len(v) for e, v in totals.items()}
    print("| mean | " + " | ".join(f"{100 * mean[e]:.0f}%" if not math.isnan(mean[e]) else "" for e in epochs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
