"""Budgets: one key sizes every study, and the report says what the budget measured and what it cost."""

import pandas as pd
import pytest
from omegaconf import OmegaConf

from ablate.analysis import budget
from ablate.config import CONF_DIR

STUDIES = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
TIERS = sorted(p.stem for p in (CONF_DIR / "budget").glob("*.yaml"))
CHANCE = 0.05


def test_the_tiers_are_the_budget_files():
    assert {"smoke", "cpu", "gpu"} <= set(TIERS)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("study", STUDIES)
def test_every_study_composes_at_every_tier_and_the_tier_alone_sets_its_size(study, tier, compose):
    cfg = compose(f"+sweep={study}", f"budget={tier}", return_hydra_config=True)
    tier_file = compose(f"budget={tier}")  # the tier without a study: what the study must not change
    assert cfg.budget.name == tier
    assert list(cfg.study.seeds) == list(tier_file.study.seeds)
    assert cfg.data.limit == tier_file.data.limit
    if study != "lr_range":  # the range test's length is its LR sweep, not a training budget (conf/sweep/lr_range)
        assert cfg.trainer.epochs == tier_file.trainer.epochs
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.ablate_sweeper.AdaptiveSweeper"


def test_a_study_runs_at_the_cpu_tier_by_default_and_a_single_run_has_no_tier(compose):
    assert compose("+sweep=depth").budget.name == "cpu"
    assert compose().get("budget") is None


def test_the_cpu_tier_halves_the_nuisance_grid_and_adds_seeds_where_claims_are_open_or_intervals_wide(compose):
    study = compose("+sweep=depth").study
    assert list(study.halving.rungs) == [0.3] and study.halving.eta == 2
    assert study.more_seeds.max == 16 and study.more_seeds.half_width == 3


@pytest.mark.parametrize("study", STUDIES)
def test_the_cpu_tier_gives_a_study_an_hour_and_the_depth_study_90_minutes_and_the_other_tiers_no_limit(study, compose):
    def minutes(*overrides):
        cfg = compose(f"+sweep={study}", *overrides, return_hydra_config=True)  # the study's name is its choice
        return OmegaConf.to_container(cfg.study, resolve=True)["minutes"]

    assert minutes() == (90 if study == "depth" else 60)
    assert minutes("budget=smoke") is None and minutes("budget=gpu") is None
    assert minutes("study.minutes=null") is None and minutes("study.minutes=25") == 25


# ---- what the budget measured, from curves built to show each case ---------------------------------------------


def curve(*accs):
    return list(enumerate(accs, start=1))


@pytest.mark.parametrize(
    ("accs", "reading"),
    [
        ((0.05, 0.06, 0.05, 0.06, 0.05), budget.UNTRAINED),  # never leaves chance (20 classes)
        ((0.05, 0.05, 0.06, 0.05, 0.05, 0.06, 0.30, 0.60), budget.LATE),  # 6 of 8 evaluations at chance
        ((0.20, 0.40, 0.55, 0.65, 0.72, 0.80), budget.CLIMBING),  # +8 points over the last fifth
        ((0.30, 0.60, 0.80, 0.85, 0.86, 0.86), budget.PLATEAU),  # levelled off
        ((0.08, 0.34, 0.05, 0.05, 0.05, 0.05), budget.COLLAPSED),  # learned, then fell back to chance
        ((0.05, 0.09, 0.05, 0.06, 0.05, 0.05), budget.LATE),  # a 4-point blip is not a collapse
        ((0.40, 0.80, 0.95, 0.97, 0.985, 0.99), budget.CEILING),  # still rising, but into 100%
        ((0.40, 0.80, 0.95, 0.975, 0.978, 0.979), budget.PLATEAU),  # levelled off 2.1 points short of it
    ],
)
def test_a_curve_reads_as_untrained_late_collapsed_climbing_ceiling_or_plateau(accs, reading):
    assert budget.classify(curve(*accs), CHANCE) == reading


def test_a_plateau_reached_after_the_lr_ran_out_reads_as_the_schedule_not_capacity():
    levelled = curve(0.10, 0.15, 0.18, 0.18, 0.18, 0.18)
    decayed = curve(0.03, 0.01, 0.003, 0.001, 1e-4, 1e-5)  # exp compressed into the run: < 5% of peak at the end
    stepped = curve(0.03, 0.03, 0.03, 0.03, 0.003, 0.003)  # a last step to 10%: still learning
    assert budget.classify(levelled, CHANCE, decayed) == budget.LR_SPENT
    assert budget.classify(levelled, CHANCE, stepped) == budget.PLATEAU
    assert budget.classify(levelled, CHANCE) == budget.PLATEAU  # no LR in the records: the older reading
    rising = curve(0.10, 0.20, 0.30, 0.40, 0.50, 0.60)
    assert budget.classify(rising, CHANCE, decayed) == budget.CLIMBING


def test_the_headline_names_what_each_group_of_values_measured():
    every_plateau = budget.measured_line({"a": budget.PLATEAU, "b": budget.PLATEAU})
    assert every_plateau.startswith("**capacity** for every value")
    mixed = budget.measured_line({"a": budget.UNTRAINED, "b": budget.CLIMBING, "c": budget.PLATEAU})
    assert "**trainability** for 1 of 3 values (`a`)" in mixed
    assert "**learning speed** for 1 of 3 values (`b`)" in mixed
    assert "**capacity** for 1 of 3 values (`c`)" in mixed
    assert "capacity" not in budget.measured_line({"a": budget.LATE})
    collapsed = budget.measured_line({"a": budget.COLLAPSED, "b": budget.PLATEAU})
    assert "**stability** for 1 of 2 values (`a`): they left chance and fell back" in collapsed
    spent = budget.measured_line({"exp": budget.LR_SPENT, "step": budget.PLATEAU})
    assert "**the schedule** for 1 of 2 values (`exp`)" in spent and "**capacity** for 1 of 2 values (`step`)" in spent
    solved = budget.measured_line({"a": budget.CEILING, "b": budget.CEILING, "c": budget.CLIMBING})
    ceiling = "**the data's ceiling** for 2 of 3 values (`a`, `b`): their val accuracy ends within 2 points of 100%"
    assert ceiling in solved
    assert "**capacity**" not in solved
    two_axes = budget.measured_line({"size=16, rule=none": budget.UNTRAINED, "size=32, rule=none": budget.PLATEAU})
    assert "**trainability** for 1 of 2 values (`size=16, rule=none`)" in two_axes  # one value, not two


# ---- compute spent and saved -----------------------------------------------------------------------------------


def test_compute_counts_what_halving_and_adaptive_seeds_saved_against_the_full_grid():
    rows = []
    # Value a: 3 lrs x 2 seeds; halving stopped lr 0.1 and 0.01 after 3 of 10 epochs (10 s an epoch); lr 0.03 then
    # got 2 more seeds. Value b: the same grid, but its claim settled: no more seeds.
    for model, more in (("a", 2), ("b", 0)):
        for lr in (0.1, 0.03, 0.01):
            kept = lr == 0.03
            for seed in range(2 + (more if kept else 0)):
                done = 10 if kept else 3
                rows.append(
                    {
                        "model": model,
                        "optim.lr": lr,
                        "seed": seed,
                        "status": "completed" if kept else "stopped",
                        "wall_seconds": 10.0 * done,
                        "epochs_completed": done,
                        "trainer.epochs": 10,
                    }
                )
    c = budget.compute(pd.DataFrame(rows), ["model"], ["optim.lr"])
    assert c.runs == len(rows) and c.stopped == 8
    assert c.spent == pytest.approx(8 * 30 + 6 * 100)
    assert c.full_grid == pytest.approx(2 * 3 * 4 * 100)  # 2 values x 3 lrs x 4 seeds (a's count) x 100 s
    assert c.saved_by_halving == pytest.approx(8 * 70)
    assert c.saved_by_seeds == pytest.approx(c.full_grid - c.spent - c.saved_by_halving)
    assert c.saved_by_seeds == pytest.approx(2 * 3 * 100 + 2 * 2 * 100)  # b's 2 seeds x 3 lrs, a's 2 stopped lrs
    assert c.saved == pytest.approx(c.saved_by_halving + c.saved_by_seeds)
    # The claims read each value's first 3 seeds (precision_max went past them): the grid is priced at 3, and a's
    # fourth seed (100 s) served the precision target alone, named apart and not counted against the saving.
    capped = budget.compute(pd.DataFrame(rows), ["model"], ["optim.lr"], claim_seeds=3)
    assert capped.seeds == 3 and capped.full_grid == pytest.approx(2 * 3 * 3 * 100)
    assert capped.precision_only == pytest.approx(100)
    assert capped.saved_by_seeds == pytest.approx(capped.full_grid - (capped.spent - 100) - capped.saved_by_halving)
    assert capped.saved == pytest.approx(capped.saved_by_halving + capped.saved_by_seeds)


def test_a_completed_run_costs_its_wall_time_even_when_its_passes_are_not_trainer_epochs():
    # batch.hold=updates: at 10 base-size epochs batch 16 makes 3 passes and batch 1024 makes 195, so pace per pass
    # times trainer.epochs would price batch 1024's run at 3 s, not the 60 s it took.
    rows = [
        {"batch.size": size, "seed": seed, "status": "completed", "wall_seconds": wall, "epochs_completed": passes}
        for size, passes, wall in ((16, 3, 30.0), (1024, 195, 60.0))
        for seed in range(2)
    ]
    c = budget.compute(pd.DataFrame(rows).assign(**{"trainer.epochs": 10}), ["batch.size"], [])
    assert c.spent == pytest.approx(180.0) and c.full_grid == pytest.approx(180.0) and c.saved == pytest.approx(0.0)
