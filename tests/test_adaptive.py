"""Compute spent where it matters: successive halving over the nuisance grid and adaptive seeds, on tables with a
known answer (ablate/adaptive.py, ablate/analysis/looks.py); the sweeper that launches them runs in test_sweep."""

import importlib.util
import json
import math

import pandas as pd
import pytest

from ablate import adaptive
from ablate.analysis.claims import parse_claims, pinned_selectors
from ablate.analysis.looks import claim_pins, job_settings, open_arms, same_setup_as
from ablate.analysis.selection import select
from ablate.analysis.study import Study
from ablate.config import CONF_DIR
from ablate.errors import ConfigError

LRS = ("0.1", "0.03", "0.01")


def script(name: str):
    """A module of scripts/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, CONF_DIR.parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grid(models=("a", "b"), lrs=LRS, seeds=(0, 1)) -> list[list[str]]:
    return [[f"model={m}", f"optim.lr={lr}", f"seed={s}"] for m in models for lr in lrs for s in seeds]


def test_halving_keeps_the_best_third_of_each_values_settings_by_its_mean_over_seeds():
    jobs = grid()
    val = {
        # a: 0.1 has one lucky seed, but 0.03 is better on the mean; b: 0.01 is best.
        ("a", "0.1"): [0.90, 0.40],
        ("a", "0.03"): [0.70, 0.72],
        ("a", "0.01"): [0.60, 0.61],
        ("b", "0.1"): [0.10, 0.12],
        ("b", "0.03"): [0.50, 0.52],
        ("b", "0.01"): [0.55, 0.56],
    }
    scores = {}
    for job in jobs:
        values = adaptive.parse(job)
        scores[tuple(job)] = val[(values["model"], values["optim.lr"])][int(values["seed"])]
    kept = adaptive.survivors(jobs, scores, ["optim.lr"], eta=3)
    assert kept == [j for j in jobs if j[:2] in (["model=a", "optim.lr=0.03"], ["model=b", "optim.lr=0.01"])]
    # eta=2 keeps ceil(3/2) = 2 settings of each value.
    assert len(adaptive.survivors(jobs, scores, ["optim.lr"], eta=2)) == 2 * 2 * 2


def test_a_setting_with_a_diverged_seed_ranks_below_every_setting_that_trained_on_all_seeds():
    jobs = grid(models=("a",))
    scores = {tuple(j): 0.5 for j in jobs}
    scores[tuple(grid(models=("a",))[0])] = math.nan  # lr 0.1, seed 0 diverged; its other seed is the best of all
    scores[tuple(grid(models=("a",))[1])] = 0.99
    kept = adaptive.survivors(jobs, scores, ["optim.lr"], eta=3)
    assert all("optim.lr=0.1" not in job for job in kept)


def test_a_value_whose_best_setting_sits_on_the_grids_end_runs_one_step_past_it_on_the_same_seeds():
    jobs = grid(models=("top", "inside", "bottom", "sunk"))
    best = {"top": "0.1", "inside": "0.03", "bottom": "0.01", "sunk": "0.1"}
    final = {tuple(j): 0.9 if adaptive.parse(j)["optim.lr"] == best[adaptive.parse(j)["model"]] else 0.5 for j in jobs}
    final[tuple(grid(models=("sunk",))[0])] = math.nan  # sunk: LR 0.1 diverged on seed 0, so 0.03 is its best
    del final[tuple(grid(models=("top",))[5])]  # a stopped run (top, 0.01, seed 1) was tried but has no final
    new = adaptive.beyond_edges(jobs, final, ["optim.lr"])
    # One step out: the end times its ratio to its neighbour (0.1 * 0.1 / 0.03; 0.01 * 0.01 / 0.03), 2 digits.
    assert new == [
        ["model=top", "optim.lr=0.33", "seed=0"],
        ["model=top", "optim.lr=0.33", "seed=1"],
        ["model=bottom", "optim.lr=0.0033", "seed=0"],
        ["model=bottom", "optim.lr=0.0033", "seed=1"],
    ]
    # Once tried, a point is not proposed again: where it did not win, the best is now inside the tried values.
    final.update({tuple(j): 0.6 for j in new})
    assert adaptive.beyond_edges([*jobs, *new], final, ["optim.lr"]) == []
    # Where it won, the next step goes on from it; a categorical key (sched) is never extended.
    final.update({tuple(j): 0.95 for j in new if "model=top" in j})
    assert [j[1] for j in adaptive.beyond_edges([*jobs, *new], final, ["optim.lr"])] == ["optim.lr=1.1"] * 2
    scheds = [["model=a", f"sched={s}", "seed=0"] for s in ("step", "fixed")]
    assert adaptive.beyond_edges(scheds, {tuple(scheds[0]): 0.9, tuple(scheds[1]): 0.1}, ["sched"]) == []


def test_a_step_past_an_extensions_own_run_carries_one_step_mark_the_new_one():
    first = adaptive.with_grid_step(["model=top", "optim.lr=0.33", "seed=0"], 1)
    assert first == ["model=top", "optim.lr=0.33", "seed=0", "+study.grid_step=1"]
    second = adaptive.with_grid_step(adaptive.with_value(first, "optim.lr", "1.1"), 2)
    assert second == ["model=top", "optim.lr=1.1", "seed=0", "+study.grid_step=2"]


def test_a_step_launches_its_slowest_values_first_and_values_not_yet_timed_before_them():
    look = [["model=a", "optim.lr=0.03", "seed=3"], ["model=b", "optim.lr=0.1", "seed=3"], ["model=c", "seed=3"]]
    seconds = {(("model", "a"),): 2.0, (("model", "b"),): 8.0}  # per epoch, by value; c was never timed
    order = adaptive.longest_first(look, ["optim.lr"], seconds)
    assert [look[i][0] for i in order] == ["model=c", "model=b", "model=a"]
    # Nothing timed yet (a first grid): launched as listed. Equal times keep their order too.
    assert adaptive.longest_first(grid(), ["optim.lr"], {}) == list(range(len(grid())))
    same = {(("model", "a"),): 1.0, (("model", "b"),): 1.0}
    assert adaptive.longest_first(grid(), ["optim.lr"], same) == list(range(len(grid())))


def test_grid_extension_is_a_count_of_steps_and_a_bad_one_is_one_line():
    assert adaptive.plan_from({"extend_grid": 2}).extend_grid == 2
    assert adaptive.plan_from({}).extend_grid == 0
    for bad in (-1, 1.5, True, "two"):
        with pytest.raises(ConfigError, match=r"^study.extend_grid=.*e\.g\. 2$"):
            adaptive.plan_from({"extend_grid": bad})


@pytest.mark.parametrize(
    ("epochs", "rungs", "expected"),
    [(10, (0.3,), [3]), (30, (0.2,), [6]), (4, (0.1,), [1]), (1, (0.5,), []), (10, (0.25, 0.5), [2, 5])],
)
def test_rungs_are_whole_epochs_inside_the_run(epochs, rungs, expected):
    assert adaptive.rung_epochs(epochs, rungs) == expected


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"seeds": [0, 0]}, "study.seeds"),
        ({"seeds": []}, "study.seeds"),
        ({"seeds": [0, 1.5]}, "study.seeds"),
        ({"seeds": 3}, "study.seeds"),
        ({"halving": {"rungs": [1.5]}}, "study.halving.rungs"),
        ({"halving": {"rungs": [0.5, 0.2]}}, "study.halving.rungs"),
        ({"halving": {"rungs": [0.3], "eta": 1}}, "study.halving.eta"),
        ({"more_seeds": {"max": -1}}, "study.more_seeds.max"),
        ({"more_seeds": {"max": 8, "per_look": 0}}, "study.more_seeds.per_look"),
        ({"more_seeds": {"max": 8, "alpha": 1.5}}, "study.more_seeds.alpha"),
        ({"more_seeds": {"max": 8, "half_width": 0}}, "study.more_seeds.half_width"),
        ({"more_seeds": {"max": 8, "half_width": "3 points"}}, "study.more_seeds.half_width"),
        ({"minutes": -1}, "study.minutes"),
        ({"minutes": "an hour"}, "study.minutes"),
        ({"minutes": True}, "study.minutes"),
        ({"more_seeds": {"max": 8, "futility": 1.5}}, "study.more_seeds.futility"),
        ({"more_seeds": {"max": 8, "futility": True}}, "study.more_seeds.futility"),
        ({"more_seeds": {"max": 8, "out_of_reach": "first"}}, "study.more_seeds.out_of_reach"),
        ({"more_seeds": {"max": 8, "half_width": 3, "precision_max": -1}}, "study.more_seeds.precision_max"),
        ({"more_seeds": {"max": 8, "half_width": 3, "precision_max": 4.5}}, "study.more_seeds.precision_max"),
        ({"more_seeds": {"max": 8, "precision_max": 16}}, "study.more_seeds.precision_max"),
        ({"more_seeds": {"max": 0, "half_width": 3, "precision_max": 16}}, "study.more_seeds.precision_max"),
    ],
)
def test_a_bad_plan_is_one_line_naming_the_key(node, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        adaptive.plan_from(node)


def test_every_look_is_judged_at_the_bonferroni_level_of_the_planned_looks():
    plan = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 3, "alpha": 0.05}})
    assert plan.looks(3) == 3  # after 3, 6 and 8 seeds
    assert plan.confidence(3) == pytest.approx(1 - 0.05 / 3)
    assert adaptive.plan_from({}).confidence(3) == pytest.approx(0.95)  # one look: no correction


def test_the_log_of_a_look_names_its_reasons_and_a_level_only_where_there_are_claims():
    plan = adaptive.plan_from({"more_seeds": {"max": 16, "per_look": 3, "half_width": 3}})
    assert plan.look_line(2, 1, 3, has_claims=True) == (
        "adaptive seeds: 2 values still compared by an open claim and 1 other wider than ±3 points "
        "(claims judged at 99.17%, Bonferroni over 6 looks)"
    )
    # mobilenet_width states no claims: its seeds serve the precision target, and no level is judged at all.
    assert (
        plan.look_line(0, 3, 3, has_claims=False)
        == "adaptive seeds: 3 values wider than ±3 points (the study states no claims)"
    )
    claims_only = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 3}})
    assert claims_only.look_line(0, 0, 3, has_claims=True).startswith(
        "adaptive seeds: 0 values still compared by an open claim ("
    )


# ---- the adaptive-seed loop on a synthetic table ---------------------------------------------------------------

SPEC = Study(
    name="toy",
    scientific=("model",),
    nuisance=("optim.lr",),
    claims=({"id": "b_beats_a", "text": "b > a", "kind": "greater", "left": ["b"], "right": ["a"]},),
)


class Toy:
    """A study whose runs are rows of a table: test accuracy per (model, seed) from `accs`; every lr but 0.03 is
    worse on val, so 0.03 is the chosen setting."""

    def __init__(self, accs: dict[str, list[float]]):
        self.accs = accs
        self.rows: list[dict] = []
        self.looks = 0
        self.told: set[str] = set()  # as the sweeper keeps it over its looks

    def launch(self, jobs):
        for job in jobs:
            values = adaptive.parse(job)
            model, seed, lr = values["model"], int(values["seed"]), values["optim.lr"]
            acc = self.accs[model][seed] - (0 if lr == "0.03" else 0.2)
            self.rows.append(
                {
                    "status": "completed",
                    "seed": seed,
                    "record_dir": f"/records/{model}-{lr}-{seed}",
                    "model": model,
                    "optim.lr": float(lr),
                    "data.classes": 10,
                    "final/val/acc": acc,
                    "final/test/acc": acc,
                }
            )

    def open_settings(self, plan, spec=SPEC):
        def look(launched):
            self.looks += 1
            rows = pd.DataFrame(self.rows)
            found = open_arms(rows, spec, plan.confidence(2), plan, self.told)
            arms = (found.claims, found.precision, found.spare)
            return tuple(job_settings(each, launched, ["optim.lr"]) for each in arms)

        return look


def test_seeds_are_added_to_the_compared_values_until_the_claim_resolves_then_the_loop_stops():
    # Two seeds overlap (a 0.74/0.78, b 0.80/0.76); every later seed separates them by 5 points.
    toy = Toy({"a": [0.74, 0.78] + [0.75, 0.76, 0.75, 0.76, 0.75, 0.76], "b": [0.80, 0.76] + [0.80, 0.81] * 3})
    plan = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 3}})
    jobs = grid(lrs=("0.1", "0.03"))
    toy.launch(jobs)
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan))

    # One look found the claim open and added 3 seeds to a and to b at their chosen lr; the next found it settled.
    assert toy.looks == 2 and len(batches) == 1
    assert sorted(map(tuple, batches[0])) == sorted(
        (f"model={m}", "optim.lr=0.03", f"seed={s}") for m in ("a", "b") for s in (2, 3, 4)
    )
    assert open_arms(pd.DataFrame(toy.rows), SPEC, plan.confidence(2)).verdicts[0].verdict == "supported"


def test_a_look_judges_only_the_records_of_the_sweeps_own_setup(tmp_path):
    # The study's folder also holds an earlier sweep's records at trainer.epochs=20, where b is best at LR 0.03; in
    # this sweep's (10 epochs) b is best at 0.1. Pooled, a look would choose 0.03 and feed b's seeds there.
    def row(model, lr, seed, epochs, acc):
        folder = tmp_path / f"{model}-{lr}-{seed}-{epochs}"
        folder.mkdir()
        return {
            "status": "completed",
            "seed": seed,
            "record_dir": str(folder.resolve()),
            "model": model,
            "optim.lr": lr,
            "trainer.epochs": epochs,
            "data.classes": 10,
            "final/val/acc": acc,
            "final/test/acc": acc,
        }

    ours = [
        row(m, lr, s, 10, acc)
        for m, lr, accs in (("a", 0.1, (0.60, 0.75, 0.62)), ("b", 0.1, (0.70, 0.62, 0.76)), ("b", 0.03, (0.65,) * 3))
        for s, acc in enumerate(accs)
    ]
    earlier = [row("b", 0.03, s, 20, 0.99) for s in range(8)]
    failed = {"status": "failed", "seed": 3, "record_dir": str(tmp_path / "failed"), "model": "b", "optim.lr": 0.1}
    runs = pd.DataFrame([*ours, *earlier, failed])
    own = [tmp_path / f"b-0.1-{s}-10" for s in (0, 1, 2)]  # the records the sweep launched, or some of them

    kept = same_setup_as(runs, own, SPEC)
    assert sorted(kept["record_dir"]) == sorted([r["record_dir"] for r in ours] + [failed["record_dir"]])
    arms = {arm.label: arm.setting for arm in open_arms(kept, SPEC, 0.95).claims}
    assert arms == {"a": {"optim.lr": 0.1}, "b": {"optim.lr": 0.1}}  # b > a is open at 3 seeds a side
    # Pooled with the earlier setup, b's setting is chosen on the 20-epoch runs, and the claim reads as supported.
    pooled = select(runs, SPEC, confidence=0.95)
    assert {arm.label: arm.setting for arm in pooled.arms}["b"] == {"optim.lr": 0.03}
    assert open_arms(runs, SPEC, 0.95).claims == []
    assert same_setup_as(runs, [], SPEC) is runs  # a sweep that launched nothing yet: every record


def test_a_claim_that_never_resolves_stops_at_the_seed_cap():
    same = [0.75, 0.77] * 4
    toy = Toy({"a": same, "b": list(reversed(same))})
    plan = adaptive.plan_from({"more_seeds": {"max": 6, "per_look": 2}})
    jobs = grid(lrs=("0.03",))
    toy.launch(jobs)
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan))
    assert [len(b) for b in batches] == [4, 4]  # 2 -> 4 -> 6 seeds each, then the plan's looks are spent
    assert max(row["seed"] for row in toy.rows) == 5


def test_a_look_that_would_end_past_the_time_limit_feeds_the_open_claims_alone_and_then_nothing_starts(caplog):
    # a and b: a claim that never resolves (their seeds overlap); c: no claim reads it, but its seeds spread wider
    # than the ±3-point target. Each new run is expected to take a minute, the limit is 30. The first look (at 10
    # minutes, 6 runs) fits whole. The second (at 25) would end at 31 with c's seeds, 29 without: a and b alone get
    # theirs. The third (at 29) would end at 33 even for a and b alone: nothing more starts, the cap of 8 unreached.
    same = [0.75, 0.77] * 4
    toy = Toy({"a": same, "b": list(reversed(same)), "c": [0.76, 0.80, 0.75, 0.81, 0.78, 0.78, 0.78, 0.78]})
    plan = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 2, "half_width": 3}, "minutes": 30})
    assert plan.minutes == 30 and adaptive.plan_from({}).minutes is None
    jobs = grid(models=("a", "b", "c"), lrs=("0.03",))
    toy.launch(jobs)
    clock = iter([10.0, 25.0, 29.0])
    look = toy.open_settings(plan)
    with caplog.at_level("INFO"):
        batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, look, lambda: next(clock), len)
    models = [sorted({adaptive.parse(job)["model"] for job in batch}) for batch in batches]
    assert models == [["a", "b", "c"], ["a", "b"]]
    seeds = {m: max(row["seed"] for row in toy.rows if row["model"] == m) + 1 for m in "abc"}
    assert seeds == {"a": 6, "b": 6, "c": 4}
    assert (
        "time limit: a seed look with the 1 value wider than the precision target would take about 6 min, and the "
        "sweep has run 25 of study.minutes=30: seeds go to the values an open claim compares alone; run it again with "
        "study.minutes=null to go on from its records"
    ) in caplog.text
    assert (
        "time limit: the claims' 4 seeds would take about 4 min, and the sweep has run 29 of study.minutes=30: no "
        "more seeds start" in caplog.text
    )
    # No limit (null): the same clock and costs change nothing; c gets its seeds until within ±3 points or capped.
    plain = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 2, "half_width": 3}, "minutes": None})
    assert plain.fits(10**6, 10**6)
    toy = Toy(toy.accs)
    toy.launch(jobs)
    clock = iter([10.0, 25.0, 29.0])
    batches = adaptive.seed_looks(
        jobs, plain, ["optim.lr"], toy.launch, toy.open_settings(plain), lambda: next(clock), len
    )
    assert len(batches) == 3 and "c" in {adaptive.parse(job)["model"] for job in batches[1]}


# d's seeds lie 40 points apart: at any seed count up to the cap of 8 its ±3-point target stays out of reach.
SPREAD = [0.40, 0.80, 0.60, 0.45, 0.75, 0.50, 0.70, 0.55]


def test_with_out_of_reach_last_a_value_out_of_reach_gets_seeds_after_the_rest_while_the_time_limit_allows(caplog):
    # a and b: a claim that never resolves; d: no claim reads it, and its target is out of reach. Each new run is
    # expected to take a minute, the limit is 30. The first look (at 10 minutes) fits with d's seeds (6 runs, to 16).
    # The second (at 25) would end at 31 with them, 29 without: a and b get theirs, d none. The third (at 29) would
    # end past the limit even for a and b: nothing more starts.
    same = [0.75, 0.77] * 4
    accs = {"a": same, "b": list(reversed(same)), "d": SPREAD}
    limited = {"more_seeds": {"max": 8, "per_look": 2, "half_width": 3, "out_of_reach": "last"}, "minutes": 30}
    plan = adaptive.plan_from(limited)
    toy = Toy(accs)
    jobs = grid(models=("a", "b", "d"), lrs=("0.03",))
    toy.launch(jobs)
    clock = iter([10.0, 25.0, 29.0])
    with caplog.at_level("INFO"):
        batches = adaptive.seed_looks(
            jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan), lambda: next(clock), len
        )
    models = [sorted({adaptive.parse(job)["model"] for job in batch}) for batch in batches]
    assert models == [["a", "b", "d"], ["a", "b"]]
    assert (
        "precision target: d gets seeds after the others, while the time limit allows: its 2 seeds spread so far"
        in caplog.text
    )
    assert (
        "time limit: a seed look with the 1 value whose ±3 is out of reach at the cap would take about 6 min, and the "
        "sweep has run 25 of study.minutes=30: seeds go to the others" in caplog.text
    )
    # Alone, with time to spare, d goes to the cap; skip (the default) gives it nothing, limit or not.
    toy = Toy({"d": SPREAD})
    alone = grid(models=("d",), lrs=("0.03",))
    toy.launch(alone)
    no_claims = Study(name="toy", scientific=("model",), nuisance=("optim.lr",), claims=())
    batches = adaptive.seed_looks(alone, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, no_claims))
    assert [len(batch) for batch in batches] == [2, 2, 2] and max(row["seed"] for row in toy.rows) == 7
    for skip in (
        {**limited, "more_seeds": {**limited["more_seeds"], "out_of_reach": "skip"}},
        {"more_seeds": {"max": 8, "per_look": 2, "half_width": 3}},
    ):
        toy = Toy({"d": SPREAD})
        toy.launch(alone)
        plan = adaptive.plan_from(skip)
        assert adaptive.seed_looks(alone, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, no_claims)) == []


def test_a_spare_look_that_does_not_fit_the_limit_ends_the_looks_and_says_so(caplog):
    # Only d is left wider than the target, out of reach: its 2 seeds at 29 of 30 minutes would end at 31.
    plan = adaptive.plan_from(
        {"more_seeds": {"max": 8, "per_look": 2, "half_width": 3, "out_of_reach": "last"}, "minutes": 30}
    )
    toy = Toy({"d": SPREAD})
    jobs = grid(models=("d",), lrs=("0.03",))
    toy.launch(jobs)
    no_claims = Study(name="toy", scientific=("model",), nuisance=("optim.lr",), claims=())
    with caplog.at_level("INFO"):
        batches = adaptive.seed_looks(
            jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, no_claims), lambda: 29.0, len
        )
    assert batches == []
    assert (
        "time limit: a seed look with the 1 value whose ±3 is out of reach at the cap would take about 2 min, and the "
        "sweep has run 29 of study.minutes=30: no more seeds start" in caplog.text
    )


def test_seeds_for_precision_go_past_the_claims_cap_to_precision_max_and_the_claims_read_only_their_first_seeds():
    # a and b: a claim that never resolves, their seeds close (within ±3 at 4); c: no claim, its seeds 10 points
    # apart at first, within ±3 points only at 8. The claims' cap is 4 seeds (2 looks), the precision cap 8.
    same = [0.75, 0.77] * 4
    accs = {"a": same, "b": list(reversed(same)), "c": [0.72, 0.78, 0.70, 0.80, 0.73, 0.77, 0.75, 0.75]}
    plan = adaptive.plan_from({"more_seeds": {"max": 4, "per_look": 2, "half_width": 3, "precision_max": 8}})
    assert (plan.looks(2), plan.precision_cap, plan.claim_seeds) == (2, 8, 4)
    assert plan.confidence(2) == pytest.approx(1 - 0.05 / 2)  # the passes for precision alone are no looks
    spec = Study(name="toy", scientific=("model",), nuisance=("optim.lr",), claims=SPEC.claims, plan=plan)
    toy = Toy(accs)
    jobs = grid(models=("a", "b", "c"), lrs=("0.03",))
    toy.launch(jobs)
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, spec))
    assert [sorted({adaptive.parse(job)["model"] for job in batch}) for batch in batches] == [
        ["a", "b", "c"],
        ["c"],
        ["c"],
    ]
    assert {m: sum(row["model"] == m for row in toy.rows) for m in "abc"} == {"a": 4, "b": 4, "c": 8}
    # Seeds past the claims' cap change no claim: b > a reads a's first 4 seeds, as the study's looks did, not the 4
    # later ones (put there by hand) that would move its mean.
    toy.launch([["model=a", "optim.lr=0.03", f"seed={seed}"] for seed in range(4, 8)])
    rows = pd.DataFrame(toy.rows)
    arms = {arm.label: arm for arm in select(rows, spec).arms}
    assert arms["a"].seeds == 8 and list(arms["a"].claim_accs) == same[:4]

    def difference(table, study):
        return open_arms(table, study, plan.confidence(2)).verdicts[0].comparisons[0].diff

    first = difference(rows[rows["seed"] < 4], spec)
    every_seed = Study(**{**spec.__dict__, "plan": adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 2}})})
    assert difference(rows, spec) == first != difference(rows, every_seed)


def test_a_claims_value_that_reaches_the_claims_cap_in_a_short_batch_still_goes_on_to_the_precision_cap():
    # a: seeds 10 points apart at first, wider than ±3 until 6; b: the same on every seed; b > a never resolves.
    # With 2 seeds, 2 a look, a claims' cap of 3 and a precision cap of 6, a goes 2 -> 3 (the claims' cap, a short
    # batch) -> 5 -> 6: three passes, one more than (6 - 2) / 2 (a count of passes stopped it at 5).
    accs = {"a": [0.70, 0.80, 0.74, 0.76, 0.75, 0.75], "b": [0.75] * 6}
    plan = adaptive.plan_from(
        {"more_seeds": {"max": 3, "per_look": 2, "half_width": 3, "precision_max": 6, "out_of_reach": "last"}}
    )
    spec = Study(
        name="toy",
        scientific=("model",),
        nuisance=("optim.lr",),
        claims=({"id": "b_beats_a", "text": "b > a", "kind": "greater", "left": ["b"], "right": ["a"]},),
        plan=plan,
    )
    toy = Toy(accs)
    jobs = grid(models=("a", "b"), lrs=("0.03",))
    toy.launch(jobs)
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, spec))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert {m: sum(row["model"] == m for row in toy.rows) for m in "ab"} == {"a": 6, "b": 3}


def test_a_look_fills_the_workers_last_round_with_seeds_for_precision_but_a_claims_values_keep_their_look_size():
    # c: no claim reads it, its seeds within ±3 points only at 8. Looks of 3 on 2 workers leave one idle in their
    # last round: the look that takes c from 2 seeds to 5 takes it to 6 at no cost in wall time, then 6 -> 8.
    c = [0.72, 0.78, 0.70, 0.80, 0.73, 0.77, 0.75, 0.75]
    no_claims = Study(name="toy", scientific=("model",), nuisance=("optim.lr",), claims=())
    plan = adaptive.plan_from({"more_seeds": {"max": 2, "per_look": 3, "half_width": 3, "precision_max": 8}})
    sizes = {}
    for workers in (1, 2, 4):
        toy = Toy({"c": c})
        jobs = grid(models=("c",), lrs=("0.03",))
        toy.launch(jobs)
        look = toy.open_settings(plan, no_claims)
        batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, look, workers=workers)
        sizes[workers] = [len(batch) for batch in batches]
        assert sorted(row["seed"] for row in toy.rows) == list(range(8))  # the same seeds, to the cap
    # On 4 workers a look of 3 is less than a round: filling it would spend a seed per idle worker (hundreds on a
    # cluster) for a value that may need none, so it gets none.
    assert sizes == {1: [3, 3], 2: [4, 2], 4: [3, 3]}

    # a and b: a claim that never resolves, so each look adds exactly 3 seeds to each (the looks the claims' level
    # counts); c, wider than the target, fills the 9th run's round with a 10th. The last look (3 + 3 + 2) is even.
    same = [0.75, 0.77] * 4
    plan = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 3, "half_width": 3}})
    toy = Toy({"a": same, "b": list(reversed(same)), "c": c})
    jobs = grid(models=("a", "b", "c"), lrs=("0.03",))
    toy.launch(jobs)
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan), workers=2)
    per_model = [{m: sum(adaptive.parse(j)["model"] == m for j in batch) for m in "abc"} for batch in batches]
    assert per_model == [{"a": 3, "b": 3, "c": 4}, {"a": 3, "b": 3, "c": 2}]
    # On 8 workers the 9 runs' last round wants 7 more, past c's 3 more at most (a look at most doubles a value's
    # seeds): the round cannot be filled whole, so nothing is added.
    toy = Toy({"a": same, "b": list(reversed(same)), "c": c})
    toy.launch(jobs)
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan), workers=8)
    assert sum(adaptive.parse(j)["model"] == "c" for j in batches[0]) == 3
    # A look that would end past the time limit with the extra seed launches without it.
    toy = Toy({"c": c})
    jobs = grid(models=("c",), lrs=("0.03",))
    toy.launch(jobs)
    limited = adaptive.plan_from(
        {"more_seeds": {"max": 2, "per_look": 3, "half_width": 3, "precision_max": 8}, "minutes": 13.5}
    )
    batches = adaptive.seed_looks(
        jobs, limited, ["optim.lr"], toy.launch, toy.open_settings(limited, no_claims), lambda: 10.0, len, workers=2
    )
    assert [len(batch) for batch in batches][0] == 3


def test_a_steps_expected_time_packs_its_runs_longest_first_onto_the_workers():
    # Two workers: the 8-minute run alone on one, the four 2-minute runs on the other.
    assert adaptive.makespan([2, 2, 8, 2, 2], workers=2) == 8
    assert adaptive.makespan([3, 3, 3], workers=2) == 6
    assert adaptive.makespan([3, 3, 3], workers=1) == 9
    assert adaptive.makespan([], workers=4) == 0


def test_a_comparison_that_cannot_resolve_at_the_cap_gets_no_seeds_with_the_futility_rule(caplog):
    # b > a is claimed, but their seeds agree to within a point (a null difference, spread 1 point): no cap in reach
    # separates them, and without the rule they go to the cap of 16 in vain. With it, they stop at 6: at 3 seeds the
    # rule still allows that the true difference is a point either way (16% chance to resolve), at 6 it does not
    # (3%). d > c is 4 points apart with seeds 6 points apart: 3 and 6 seeds leave it open, 9 resolve it; with the
    # rule too, it keeps getting them.
    null = [0.750, 0.760, 0.755] * 6
    toy = Toy({"a": null, "b": list(reversed(null)), "c": [0.70, 0.76, 0.73] * 6, "d": [0.74, 0.80, 0.77] * 6})
    spec = Study(
        name="toy",
        scientific=("model",),
        nuisance=("optim.lr",),
        claims=(
            {"id": "b_beats_a", "text": "b > a", "kind": "greater", "left": ["b"], "right": ["a"]},
            {"id": "d_beats_c", "text": "d > c", "kind": "greater", "left": ["d"], "right": ["c"]},
        ),
    )
    jobs = grid(models="abcd", lrs=("0.03",), seeds=(0, 1, 2))
    plain = adaptive.plan_from({"more_seeds": {"max": 16, "per_look": 3}})
    toy.launch(jobs)
    adaptive.seed_looks(jobs, plain, ["optim.lr"], toy.launch, toy.open_settings(plain, spec))
    assert {m: sum(r["model"] == m for r in toy.rows) for m in "abcd"} == {"a": 16, "b": 16, "c": 9, "d": 9}

    ruled = adaptive.plan_from({"more_seeds": {"max": 16, "per_look": 3, "futility": 0.1}})
    toy = Toy(toy.accs)
    toy.launch(jobs)
    with caplog.at_level("INFO"):
        adaptive.seed_looks(jobs, ruled, ["optim.lr"], toy.launch, toy.open_settings(ruled, spec))
    assert {m: sum(r["model"] == m for r in toy.rows) for m in "abcd"} == {"a": 6, "b": 6, "c": 9, "d": 9}
    assert "futility: b vs a gets no seeds: its difference, +0.0 points at 6 and 6 seeds, would resolve at 16" in (
        caplog.text
    )
    assert caplog.text.count("futility: b vs a") == 1  # once, not at every look
    # Either way d > c resolves: the rule only stops seeds where they would not have settled anything.
    verdicts = open_arms(pd.DataFrame(toy.rows), spec, ruled.confidence(3)).verdicts
    assert [v.verdict for v in verdicts] == ["inconclusive", "supported"]


def test_values_at_chance_get_no_seeds_more_seeds_cannot_train_them():
    toy = Toy({"a": [0.10, 0.11] * 4, "b": [0.70, 0.60] * 4})  # a guesses (10 classes)
    plan = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 3}})
    jobs = grid(lrs=("0.03",))
    toy.launch(jobs)
    assert adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan)) == []


def test_a_value_wider_than_the_precision_target_gets_seeds_until_its_interval_is_narrow_enough():
    # No claim at all: a's two seeds agree (95% interval ±1.3 points), b's lie 12 points apart, then settle near
    # 0.80: its interval is ±5.3 points at 5 seeds and ±2.7 at 8, where it stops with looks to spare (cap 11).
    toy = Toy({"a": [0.700, 0.702] * 4, "b": [0.74, 0.86, 0.80, 0.79, 0.81, 0.80, 0.80, 0.80]})
    plan = adaptive.plan_from({"more_seeds": {"max": 11, "per_look": 3, "half_width": 3}})
    jobs = grid(lrs=("0.03",))
    toy.launch(jobs)
    no_claims = Study(name="toy", scientific=("model",), nuisance=("optim.lr",), claims=())
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, no_claims))
    assert [sorted(map(tuple, batch)) for batch in batches] == [
        [("model=b", "optim.lr=0.03", f"seed={s}") for s in (2, 3, 4)],
        [("model=b", "optim.lr=0.03", f"seed={s}") for s in (5, 6, 7)],
    ]
    assert open_arms(pd.DataFrame(toy.rows), no_claims, plan.confidence(2), plan).arms == []  # b: ±2.7
    # Without a precision target the same study adds nothing: no claim asks for seeds.
    plain = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 3}})
    assert open_arms(pd.DataFrame(toy.rows[:4]), no_claims, plain.confidence(2), plain).arms == []


def test_a_value_whose_seeds_spread_too_far_for_the_target_at_the_cap_gets_no_seeds_for_it(caplog):
    # c's three seeds lie 40 points apart (sd 20): even at the low end of what three seeds allow for the spread
    # (sd 11.6), 8 seeds would give ±9.7 points, so seeds for the ±3 target would be spent in vain. b's two seeds
    # lie 12 apart (sd 8.5, low end 4.3: ±2.9 at 8 seeds): they might get there, and do. The line that says so
    # gives what ±3 would cost at c's spread taken as it is (174 seeds).
    toy = Toy(
        {
            "b": [0.74, 0.86, 0.80, 0.79, 0.81, 0.80, 0.80, 0.80],
            "c": [0.40, 0.80, 0.60, 0.45, 0.75, 0.50, 0.70, 0.55],
        }
    )
    plan = adaptive.plan_from({"more_seeds": {"max": 8, "per_look": 3, "half_width": 3}})
    jobs = grid(models=("b", "c"), lrs=("0.03",), seeds=(0, 1, 2))
    toy.launch(jobs)
    no_claims = Study(name="toy", scientific=("model",), nuisance=("optim.lr",), claims=())
    with caplog.at_level("INFO"):
        batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, no_claims))
    assert {adaptive.parse(job)["model"] for batch in batches for job in batch} == {"b"}
    assert (
        "precision target: c gets no seeds for it: its 3 seeds spread so far that 8 would give ±9.7 points at best, "
        "not ±3 (±3 would take about 174 at this spread)" in caplog.text
    )
    assert len(batches) == 2 and caplog.text.count("precision target: c gets no seeds") == 1  # once, not per look
    # A claim comparing c still adds its seeds: a difference can resolve where a mean stays wide.
    toy = Toy({"b": [0.90] * 8, "c": [0.40, 0.80, 0.60, 0.70, 0.75, 0.70, 0.72, 0.74]})
    claims = Study(
        name="toy",
        scientific=("model",),
        nuisance=("optim.lr",),
        claims=({"id": "b_beats_c", "text": "b > c", "kind": "greater", "left": ["b"], "right": ["c"]},),
    )
    toy.launch(jobs)
    batches = adaptive.seed_looks(jobs, plan, ["optim.lr"], toy.launch, toy.open_settings(plan, claims))
    assert "c" in {adaptive.parse(job)["model"] for job in batches[0]}


def test_halving_keeps_a_setting_that_a_claim_compares_whatever_its_rank():
    # The articles compare "fixed 0.001" with inv: halving must not stop fixed at 0.001 for ranking last on val.
    jobs = [[f"sched={s}", f"optim.lr={lr}", "seed=0"] for s in ("fixed", "inv") for lr in ("0.01", "0.001")]
    scores = {tuple(j): (0.5 if "optim.lr=0.01" in j else 0.1) for j in jobs}
    pinned = claim_pins(CONF_DIR, "lr_policy", ["optim.lr"])
    kept = adaptive.survivors(jobs, scores, ["optim.lr"], eta=2, pinned=pinned)
    assert kept == [jobs[0], jobs[1], jobs[2]]  # inv keeps its best LR only; fixed keeps both pinned LRs
    assert adaptive.survivors(jobs, scores, ["optim.lr"], eta=2) == [jobs[0], jobs[2]]


def test_the_settings_claims_pin_are_their_terms_with_a_nuisance_key_groups_and_best_of_expanded():
    claims = parse_claims(
        [
            {"id": "a", "kind": "greater", "left": ["slow"], "right": [{"best_of": [{"sched": "inv", "lr": 0.1}]}]},
            {"id": "b", "kind": "order", "tiers": [["step"], [{"sched": "fixed", "lr": 0.01}, {"sched": "exp"}]]},
        ],
        "test",
    )
    groups = {"slow": [{"sched": "fixed", "lr": 0.001}, "poly"]}
    assert pinned_selectors(claims, groups, ["lr"]) == [
        {"sched": "fixed", "lr": 0.001},
        {"sched": "inv", "lr": 0.1},
        {"sched": "fixed", "lr": 0.01},
    ]
    assert pinned_selectors(claims, groups, []) == []


def test_rung_check_measures_how_often_a_rung_keeps_the_setting_best_at_the_end(tmp_path, capsys):
    # scripts/rung_check.py on records built with a known answer: LR 0.1 leads at epochs 1-2 and stalls, LR 0.03
    # overtakes it at epoch 3 and ends best, LR 0.01 is always last. Keeping 1 of 3 (eta 3) before epoch 3 keeps the
    # wrong LR on every seed subset; keeping 2 of 3 (eta 2) keeps the right one from epoch 1.
    import importlib.util
    import json

    import yaml

    spec = importlib.util.spec_from_file_location("rung_check", CONF_DIR.parents[1] / "scripts" / "rung_check.py")
    rung_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rung_check)
    curves = {
        0.1: [0.30, 0.35, 0.36, 0.37, 0.38],
        0.03: [0.20, 0.30, 0.40, 0.50, 0.60],
        0.01: [0.10, 0.15, 0.2, 0.25, 0.3],
    }
    for lr, curve in curves.items():
        for seed in range(4):
            record = tmp_path / f"lr{lr}-s{seed}"
            record.mkdir()
            accs = [acc + 0.001 * seed for acc in curve]
            rows = [{"epoch": e, "val/acc": acc} for e, acc in enumerate(accs, 1)]
            (record / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            config = {"model": {"name": "allconv6"}, "optim": {"lr": lr}, "trainer": {"epochs": 5}, "seed": seed}
            (record / "config.yaml").write_text(yaml.safe_dump(config))
            summary = {"status": "completed", "seed": seed, "epochs_completed": 5, "choices": {"model": "allconv6"}}
            (record / "summary.json").write_text(json.dumps(summary))
    assert rung_check.main([str(tmp_path), "--eta", "3"]) == 0
    table = capsys.readouterr().out
    assert "| allconv6 | 0% | 0% | 100% | 100% |" in table  # 4 choose 3 subsets, epochs 1-4 of 5
    assert rung_check.main([str(tmp_path), "--eta", "2"]) == 0
    assert "| allconv6 | 100% | 100% | 100% | 100% |" in capsys.readouterr().out
    assert rung_check.main([str(tmp_path), "--where", "trainer.epochs=30"]) == 2  # nothing matches: one line
    assert "no completed records" in capsys.readouterr().err


def toy_table(tmp_path, accs: dict, seconds: dict, max_seeds: int, claims: str) -> tuple:
    """A finished study `toy` as the replay scripts read it: runs.csv (value -> per-seed accuracies, each run its
    `seconds` for 10 epochs, seeds past 3 added 3 a look up to `max_seeds`) and a config folder with its claims."""
    plan = json.dumps({"seeds": [0, 1, 2], "more_seeds": {"max": max_seeds, "per_look": 3}})
    rows = [
        {
            "status": "completed",
            "seed": seed,
            "model": model,
            "optim.lr": 0.03,
            "data.classes": 10,
            "final/val/acc": acc,
            "final/test/acc": acc,
            "wall_seconds": seconds[model],
            "epochs_completed": 10,
            "record_dir": f"r/{model}{seed}",
            "plan": plan,
        }
        for model, values in accs.items()
        for seed, acc in enumerate(values)
    ]
    table = tmp_path / "results" / "toy" / "runs.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(table, index=False)
    conf = tmp_path / "conf"
    (conf / "claims").mkdir(parents=True)
    (conf / "claims" / "toy.yaml").write_text(claims)
    return table, conf


def test_futility_check_replays_a_finished_tables_looks_and_counts_what_the_rule_saves(tmp_path, capsys):
    # scripts/futility_check.py on the table the futility test's sweep makes without the rule: a and b (a null
    # difference under "b > a") went to the cap of 16 seeds, c and d resolved at 9. Replayed, the rule stops b vs a
    # at the look after 6 seeds: 10 seeds of each saved, nothing it stopped resolved later.
    futility_check = script("futility_check")
    null = [0.750, 0.760, 0.755] * 6
    accs = {"a": null[:16], "b": list(reversed(null))[:16], "c": [0.70, 0.76, 0.73] * 3, "d": [0.74, 0.80, 0.77] * 3}
    table, conf = toy_table(
        tmp_path,
        accs,
        dict.fromkeys(accs, 60.0),
        16,
        "claims:\n"
        "  - {id: b_beats_a, text: b > a, kind: greater, left: [b], right: [a]}\n"
        "  - {id: d_beats_c, text: d > c, kind: greater, left: [d], right: [c]}\n",
    )
    assert futility_check.main([str(table), "--futility", "0.1", "--conf", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "1 comparisons futile, 0 of them resolved later; 20 seeds, 0.33 h of 0.83 h saved" in out
    assert "futile at 6 seeds: b vs a (ended inconclusive)" in out
    # A far smaller threshold stops it only at the last look, where one seed more cannot move a null difference.
    futility_check.main([str(table), "--futility", "1e-9", "--conf", str(conf)])
    out = capsys.readouterr().out
    assert "futile at 15 seeds: b vs a" in out and "1 comparisons futile, 0 resolved later; 2 seeds" in out


def test_launch_order_check_replays_the_seed_looks_slowest_first_against_the_grids_order(tmp_path, capsys):
    # scripts/launch_order_check.py: c's runs take five times a's and b's and come last in each look's listing, so
    # on 2 workers the grid's order leaves one worker waiting on c while the other is done; slowest first does not.
    launch_order_check = script("launch_order_check")
    accs = dict.fromkeys(("a", "b", "c"), [0.8] * 6)
    table, conf = toy_table(tmp_path, accs, {"a": 60.0, "b": 60.0, "c": 300.0}, 6, "claims: []\n")
    (result,) = launch_order_check.main([str(table), "--conf", str(conf)])
    # One look of 9 runs, 1260 s of work: in the grid's order c5 starts last, at 480 s, and ends at 780; slowest
    # first the three c runs start at once on the two workers and the short ones fill in: 660 s (the bound: 630).
    assert result["looks"] == 1
    assert result["grid order"] == pytest.approx(780 / 60) and result["slowest first"] == pytest.approx(660 / 60)
    assert result["bound"] == pytest.approx(630 / 60)
    assert "1 looks, 13.0 min in the grid's order, 11.0 slowest first, bound 10.5" in capsys.readouterr().out
