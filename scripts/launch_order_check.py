"""What launching each step's slowest values first saves, replayed on finished tables.

A step of the adaptive sweeper (a rung, the survivors, a grid extension, a seed look) ends when its last job does.
The sweeper orders each step by ablate.adaptive.longest_first (the seconds per epoch a value's records took); this
replays the seed looks of a collected table (runs.csv) on `--workers` workers, each run taking the wall time its
record took, once in the grid's order (the sweep file's values, seeds ascending) and once in that order, against the
bound no order beats (half the look's work, or its longest run). The looks are the seeds past the grid's taken
`per_look` at a time, as the study's plan added them; a look's runs are the completed ones.

    python scripts/launch_order_check.py results/reference/*/cpu/*/runs.csv
"""

import argparse
import heapq
from pathlib import Path

import pandas as pd

from ablate import adaptive
from ablate.analysis.study import load_runs, load_study
from ablate.config import CONF_DIR


def makespan(seconds: list[float], workers: int) -> float:
    """When the last of `seconds` ends, each started on the first free worker in the order given."""
    free = [0.0] * workers
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def replay(table: Path, workers: int, conf_dir: Path = CONF_DIR) -> dict:
    study = table.parent.name
    runs = load_runs(study, table.parent.parent)
    spec = load_study(study, conf_dir, list(runs.columns), runs=runs)
    per_look = spec.plan.seeds_per_look or 1
    done = runs[runs["status"].isin(["completed", "stopped"])].copy()
    done["seed"] = pd.to_numeric(done["seed"], errors="coerce")

    def job(row) -> list[str]:  # the row as the sweeper's job: its scientific values and its seed
        return [*(f"{key}={row[key]}" for key in spec.scientific), f"seed={int(row['seed'])}"]

    # Seconds per epoch by value, from the grid's runs: what the sweeper knows when the looks start.
    grid = done[done["seed"] < spec.initial_seeds]
    rates = {}
    for _, row in grid.iterrows():
        rates.setdefault(adaptive.group_of(job(row), []), []).append(row["wall_seconds"] / row["epochs_completed"])
    rates = {group: sum(v) / len(v) for group, v in rates.items()}

    # The sweep file's order of values, then seeds ascending: how the sweeper lists a look's jobs.
    rank = {key: {str(v): i for i, v in enumerate(order)} for key, order in spec.value_order.items()}

    def listed(row) -> tuple:
        return (*(rank.get(key, {}).get(str(row[key]), 0) for key in spec.scientific), row["seed"])

    looks = done[(done["seed"] >= spec.initial_seeds) & (done["status"] == "completed")]
    totals = {"grid order": 0.0, "slowest first": 0.0, "bound": 0.0}
    count = 0
    for _, look in looks.groupby((looks["seed"] - spec.initial_seeds) // per_look):
        rows = sorted((row for _, row in look.iterrows()), key=listed)
        seconds = [float(row["wall_seconds"]) for row in rows]
        order = adaptive.longest_first([job(row) for row in rows], [], rates)
        totals["grid order"] += makespan(seconds, workers)
        totals["slowest first"] += makespan([seconds[i] for i in order], workers)
        totals["bound"] += max(sum(seconds) / workers, max(seconds))
        count += 1
    return {"table": table, "looks": count, **{k: v / 60 for k, v in totals.items()}}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", type=Path, help="runs.csv files written by ablate.collect")
    parser.add_argument("--workers", type=int, default=2, help="jobs at once (default 2: launcher=parallel here)")
    parser.add_argument("--conf", type=Path, default=CONF_DIR, help="the config folder with sweep/ and claims/")
    args = parser.parse_args(argv)
    results = []
    for table in args.tables:
        result = replay(table, args.workers, args.conf)
        results.append(result)
        name = "/".join(table.parts[-4:-1])
        if not result["looks"]:
            print(f"{name}: no seed looks")
            continue
        print(
            f"{name}: {result['looks']} looks, {result['grid order']:.1f} min in the grid's order, "
            f"{result['slowest first']:.1f} slowest first, bound {result['bound']:.1f}"
        )
    return results


if __name__ == "__main__":
    main()
