"""Analysis on run tables whose answers are known: selection on val, intervals, saturation, claims, flags, report."""

import json
import re
import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from ablate import adaptive, collect
from ablate.analysis import analyze, figures, report
from ablate.analysis.claims import CONTRADICTED, INCONCLUSIVE, SUPPORTED, boundaries, judge, pair_verdict, parse_claims
from ablate.analysis.saturation import saturation
from ablate.analysis.selection import select
from ablate.analysis.stats import Interval, diff_ci, mean_ci, resolve_chance, seeds_for_half_width, t_band
from ablate.analysis.study import Study, load_runs
from ablate.analyze import main
from ablate.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
# Per-seed offsets with mean 0: a value's seeds average exactly to the accuracy a test gives it.
NOISE = (-0.005, 0.0, 0.005)


def run_row(record_root: Path, status="completed", val=0.5, test=0.5, **keys) -> dict:
    """One runs.csv row as the collector writes it, with a record folder holding a 3-epoch metrics.jsonl."""
    row = {
        "identity": f"id{abs(hash((status, val, test, tuple(sorted(map(str, keys.items())))))) % 10**12:012d}",
        "study": "test",
        "status": status,
        "seed": 0,
        "data": "synthetic",
        "data.resolution": 32,
        "trainer.epochs": 3,
        "depth": 6,
        "params": 1000,
        "macs": 10000,
        "lr_base": keys.get("optim.lr", 0.01),
        "lr_effective": keys.get("optim.lr", 0.01),
        "wall_seconds": 10.0,
        "images_per_s": 100.0,
        "steps": 30,
        "git_commit": "0123456789abcdef",
        **keys,
    }
    done = status == "completed"
    for split, acc in (("train", test), ("val", val), ("test", test)):
        row[f"final/{split}/acc"] = acc if done else np.nan
        row[f"final/{split}/loss"] = 1 - acc if done else np.nan
    row.update({"best/val/acc": row["final/val/acc"], "best/test/acc": row["final/test/acc"], "best/epoch": 3})
    record = record_root / row["identity"]
    record.mkdir(parents=True, exist_ok=True)
    lr = keys.get("optim.lr", 0.01)
    curve = [
        {
            "epoch": e,
            "step": 10 * e,
            "lr": lr * 0.5 ** (e - 1),
            "train/loss": 2.0 / e,
            "train/acc": val * e / 3,
            "val/loss": 2.0 / e,
            "val/acc": val * e / 3,
            "test/loss": 2.0 / e,
            "test/acc": test * e / 3,
            "seconds": e,
            "images_per_s": 100.0,
        }
        for e in (1, 2, 3)
    ]
    (record / "metrics.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))
    row["record_dir"] = str(record)
    return row


def seeded(record_root: Path, val: float, test: float, status="completed", **keys) -> list[dict]:
    """Three seeds of one setting, with means exactly `val` and `test`."""
    rows = []
    for seed, noise in zip(SEEDS, NOISE):
        row = run_row(record_root, status, val + noise, test + noise, seed=seed, **keys)
        row["seed"] = seed
        rows.append(row)
    return rows


def write_study(tmp_path: Path, study: str, rows: list[dict], sweep: str | None = None, claims: str | None = None):
    """results/<study>/runs.csv and conf/{sweep,claims}/<study>.yaml under tmp_path; returns (results, conf)."""
    results, conf = tmp_path / "results", tmp_path / "conf"
    (results / study).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(results / study / "runs.csv", index=False)
    for folder, text in (("sweep", sweep), ("claims", claims)):
        (conf / folder).mkdir(parents=True, exist_ok=True)
        if text is not None:
            (conf / folder / f"{study}.yaml").write_text(textwrap.dedent(text))
    return results, conf


def depth_rows(root: Path, accs: dict[str, tuple[int, float]], lrs=(0.001, 0.01, 0.1)) -> list[dict]:
    """Each preset at three LRs; the middle LR is best on val, so no edge flags."""
    rows = []
    for model, (depth, acc) in accs.items():
        for lr in lrs:
            penalty = 0.0 if lr == lrs[1] else 0.1
            for row in seeded(root, acc - penalty, acc - penalty, model=model, **{"optim.lr": lr}):
                row.update(depth=depth, params=1000 * depth, macs=10**depth)
                rows.append(row)
    return rows


DEPTH_SWEEP = """\
    # @package _global_
    study:
      name: depth
      scientific: [model]
      nuisance: [optim.lr]
      seeds: [0, 1, 2]
    hydra:
      sweeper:
        params:
          model: allconv5,allconv6,allconv7_1,allconv8_1
          optim.lr: 0.001,0.01,0.1
          seed: 0,1,2
"""


# ---- intervals -------------------------------------------------------------------------------------------


def test_t_interval_of_a_mean_matches_scipy_and_the_hand_computed_number():
    values = [0.70, 0.72, 0.74]
    interval = mean_ci(values)
    expected = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert interval.mean == pytest.approx(0.72)
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))
    # sd 0.02, sem 0.02/sqrt(3), t(0.975, df=2) = 4.302653
    assert interval.high - interval.mean == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-6)


def test_welch_interval_of_a_difference_matches_scipy():
    a, b = [0.71, 0.74, 0.70, 0.73], [0.65, 0.69, 0.60]
    interval = diff_ci(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert interval.mean == pytest.approx(np.mean(a) - np.mean(b))
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))


def test_bootstrap_intervals_agree_with_scipy_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.7, 0.02, 10), rng.normal(0.65, 0.03, 8)
    mine = mean_ci(a, "bootstrap")
    theirs = stats.bootstrap((a,), np.mean, method="percentile", n_resamples=10_000, rng=0).confidence_interval
    assert (mine.low, mine.high) == pytest.approx((theirs.low, theirs.high), abs=2e-3)
    mine = diff_ci(a, b, "bootstrap")
    theirs = stats.bootstrap(
        (a, b), lambda x, y: np.mean(x) - np.mean(y), method="percentile", n_resamples=10_000, rng=0
    ).confidence_interval
    assert (mine.low, mine.high) == pytest.approx((theirs.low, theirs.high), abs=3e-3)


def test_one_seed_has_no_interval():
    assert not mean_ci([0.7]).bounded
    assert not diff_ci([0.7], [0.6, 0.65]).bounded


def test_a_curve_band_is_the_mean_interval_per_point_and_the_point_itself_where_one_seed_reached_it():
    # Three seeds' curves; the third stopped after two points (NaN), so the last point has two seeds, and a fourth
    # column only one seed reached: no spread there, the band is the point, without numpy's dof warning.
    curves = np.array([[0.1, 0.5, 0.70, 0.9], [0.2, 0.6, 0.72, np.nan], [0.3, 0.7, np.nan, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, low, high = t_band(curves)
    for point in range(3):
        seeds = curves[:, point][~np.isnan(curves[:, point])]
        interval = mean_ci(seeds)
        assert (mean[point], low[point], high[point]) == pytest.approx((interval.mean, interval.low, interval.high))
    assert (mean[3], low[3], high[3]) == (0.9, 0.9, 0.9)


# ---- selection: on val, reported on test -----------------------------------------------------------------


def test_best_setting_is_chosen_on_val_and_reported_on_test(tmp_path):
    # At LR 0.01 val is best but test is poor; at 0.1 test is best but val is not. A selection that peeks at
    # test (or reports val) gets a different number.
    rows = (
        seeded(tmp_path, 0.50, 0.95, model="a", **{"optim.lr": 0.001})
        + seeded(tmp_path, 0.80, 0.60, model="a", **{"optim.lr": 0.01})
        + seeded(tmp_path, 0.70, 0.90, model="a", **{"optim.lr": 0.1})
    )
    results, _ = write_study(tmp_path, "sel", rows)
    study = Study(name="sel", scientific=("model",), nuisance=("optim.lr",))
    arm = select(load_runs("sel", results), study).arms[0]
    assert arm.setting == {"optim.lr": 0.01}
    assert arm.test.mean == pytest.approx(0.60)
    assert arm.val.mean == pytest.approx(0.80)
    assert arm.seeds == 3
    assert not any("widen" in f for f in arm.flags)


def test_a_setting_that_diverged_on_any_seed_is_not_chosen(tmp_path):
    best_but_diverging = seeded(tmp_path, 0.90, 0.90, model="a", **{"optim.lr": 0.1})
    best_but_diverging[2].update({"status": "diverged", "final/val/acc": np.nan, "final/test/acc": np.nan})
    rows = (
        seeded(tmp_path, 0.60, 0.60, model="a", **{"optim.lr": 0.001})
        + seeded(tmp_path, 0.70, 0.70, model="a", **{"optim.lr": 0.01})
        + best_but_diverging
    )
    results, _ = write_study(tmp_path, "div", rows)
    selection = select(load_runs("div", results), Study(name="div", scientific=("model",), nuisance=("optim.lr",)))
    assert selection.arms[0].setting == {"optim.lr": 0.01}
    assert selection.settings["diverged"].sum() == 1


def test_a_setting_is_chosen_on_the_seeds_its_rivals_share_not_on_seeds_added_to_it_alone(tmp_path):
    # Halving kept two LRs; on seeds 0-2 LR 0.1 won on val (0.60 against 0.55), so adaptive seeds went to it alone and
    # came in lower (0.45). On all its seeds its mean (0.51) is now below the runner-up's 3-seed mean, but the choice
    # made on equal terms stands: comparing 8 seeds with 3 would hand the value to the setting that got no new seeds.
    late = [run_row(tmp_path, val=0.45, test=0.45, seed=s, model="a", **{"optim.lr": 0.1}) for s in range(3, 8)]
    for seed, row in zip(range(3, 8), late):
        row["seed"] = seed
    rows = seeded(tmp_path, 0.60, 0.60, model="a", **{"optim.lr": 0.1}) + late
    rows += seeded(tmp_path, 0.55, 0.55, model="a", **{"optim.lr": 0.03})
    rows += seeded(tmp_path, 0.30, 0.30, model="a", status="stopped", **{"optim.lr": 0.01})
    results, _ = write_study(tmp_path, "shared", rows)
    selection = select(
        load_runs("shared", results), Study(name="shared", scientific=("model",), nuisance=("optim.lr",))
    )
    arm = selection.arms[0]
    assert arm.setting == {"optim.lr": 0.1} and arm.seeds == 8
    assert arm.val.mean == pytest.approx((3 * 0.60 + 5 * 0.45) / 8)  # reported over every seed it has


@pytest.mark.parametrize(("best_lr", "flag"), [(0.1, "upward"), (0.001, "downward"), (0.01, None)])
def test_a_best_setting_on_the_edge_of_its_grid_is_flagged(tmp_path, best_lr, flag):
    rows = []
    for lr in (0.001, 0.01, 0.1):
        rows += seeded(tmp_path, 0.8 if lr == best_lr else 0.6, 0.7, model="a", **{"optim.lr": lr})
    results, _ = write_study(tmp_path, "edge", rows)
    study = Study(name="edge", scientific=("model",), nuisance=("optim.lr",))
    arm = select(load_runs("edge", results), study).arms[0]
    edge = [f for f in arm.flags if "widen" in f]
    if flag is None:
        assert edge == []
    else:
        assert edge == [
            f"optim.lr={best_lr:g} is the {'largest' if flag == 'upward' else 'smallest'} value tried: "
            f"widen the optim.lr grid {flag}"
        ]


# ---- saturation ------------------------------------------------------------------------------------------


def test_saturation_is_the_smallest_depth_indistinguishable_from_the_best(tmp_path):
    accs = {"d5": (5, 0.60), "d6": (6, 0.70), "d7": (7, 0.800), "d8": (8, 0.801)}
    results, _ = write_study(tmp_path, "sat", depth_rows(tmp_path, accs))
    selection = select(load_runs("sat", results), Study(name="sat", scientific=("model",), nuisance=("optim.lr",)))
    curve = saturation(selection.arms, "depth", margin=0.02)
    assert curve.best.arm.label == "d8"
    assert curve.indistinguishable_from == 7
    assert curve.equivalent_from == 7  # 0.800 vs 0.801 with sd 0.005: the whole CI inside ±2 points
    assert [g.per_unit for g in curve.gains] == pytest.approx([0.10, 0.10, 0.001])
    assert curve.unit == "layer"
    per_doubling = saturation(selection.arms, "params", margin=0.02)
    assert per_doubling.unit == "doubling"
    assert per_doubling.gains[0].per_unit == pytest.approx(0.10 / np.log2(6 / 5))


def test_the_plateau_is_the_best_alone_when_every_shallower_depth_is_clearly_worse(tmp_path):
    accs = {"d5": (5, 0.50), "d6": (6, 0.60), "d7": (7, 0.70)}
    results, _ = write_study(tmp_path, "steep", depth_rows(tmp_path, accs))
    study = Study(name="steep", scientific=("model",), nuisance=("optim.lr",))
    selection = select(load_runs("steep", results), study)
    curve = saturation(selection.arms, "depth", margin=0.02)
    assert curve.indistinguishable_from == 7  # only the best itself
    assert curve.best.x == 7


# ---- claims ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "interval", "margin", "verdict"),
    [
        ("greater", (0.05, 0.02, 0.08), 0.0, SUPPORTED),
        ("greater", (-0.05, -0.08, -0.02), 0.0, CONTRADICTED),
        ("greater", (0.01, -0.02, 0.04), 0.0, INCONCLUSIVE),
        ("greater", (0.02, 0.01, 0.03), 0.05, CONTRADICTED),  # real but smaller than the claimed margin
        ("less", (-0.05, -0.08, -0.02), 0.0, SUPPORTED),
        ("less", (0.05, 0.02, 0.08), 0.0, CONTRADICTED),
        ("less", (0.0, -0.01, 0.01), 0.0, INCONCLUSIVE),
        ("approx", (0.0, -0.01, 0.01), 0.02, SUPPORTED),
        ("approx", (0.05, 0.03, 0.07), 0.02, CONTRADICTED),
        ("approx", (-0.05, -0.07, -0.03), 0.02, CONTRADICTED),
        ("approx", (0.01, -0.01, 0.03), 0.02, INCONCLUSIVE),
        ("at_least", (-0.01, -0.015, 0.02), 0.02, SUPPORTED),
        ("at_least", (-0.05, -0.07, -0.03), 0.02, CONTRADICTED),
        ("at_least", (-0.02, -0.04, 0.0), 0.02, INCONCLUSIVE),
    ],
)
def test_pair_verdicts_follow_the_interval(kind, interval, margin, verdict):
    assert pair_verdict(kind, Interval(*interval), margin) == verdict


POLICY_SWEEP = """\
    # @package _global_
    study: {name: policy, scientific: [sched], nuisance: [optim.lr], seeds: 3}
"""
POLICY_CLAIMS = """\
    margin: 0.02
    groups:
      best_decays: [step, multistep]
    claims:
      - {id: ranked, text: step > exp > fixed, kind: order, tiers: [[best_decays], [exp], [fixed]]}
      - {id: reversed, text: fixed beats step, kind: greater, left: [fixed], right: [step]}
      - {id: close, text: step ~ multistep, kind: approx, left: [step, multistep]}
      - {id: pinned, text: fixed at 0.001 ~ exp, kind: approx, left: [{sched: fixed, optim.lr: 0.001}], right: [exp]}
      - {id: tuned, text: best of step/multistep beats exp, kind: greater,
         left: [{best_of: [best_decays]}], right: [exp]}
      - {id: missing, text: cyclical beats exp, kind: greater, left: [cyclical], right: [exp]}
      - {id: noisy, text: inv beats exp, kind: greater, left: [inv], right: [exp]}
"""


def policy_rows(root: Path) -> list[dict]:
    """Policies with known test means at their best LR on val (0.01); fixed at 0.001 tests like exp (0.70)."""
    rows = []
    for sched, acc in {"step": 0.80, "multistep": 0.805, "exp": 0.70, "fixed": 0.60}.items():
        for lr in (0.001, 0.01, 0.1):
            val = test = acc if lr == 0.01 else acc - 0.15
            if (sched, lr) == ("fixed", 0.001):
                test = 0.70  # not chosen (val 0.45): only a claim that pins this LR sees it
            rows += seeded(root, val, test, sched=sched, **{"optim.lr": lr})
    # inv is noisy: its interval straddles exp's mean.
    for seed, acc in zip(SEEDS, (0.60, 0.80, 0.72)):
        row = run_row(root, val=acc, test=acc, sched="inv", **{"optim.lr": 0.01})
        rows.append({**row, "seed": seed})
    return rows


# The module docstring's table, written out: pair_verdict derives it from each kind's boundaries (the same facts
# resolve_chance reads), so it is checked against the table itself on random intervals.
TABLE = {
    "greater": lambda lo, hi, m: SUPPORTED if lo > m else CONTRADICTED if hi < m else INCONCLUSIVE,
    "less": lambda lo, hi, m: SUPPORTED if hi < -m else CONTRADICTED if lo > -m else INCONCLUSIVE,
    "approx": lambda lo, hi, m: (
        SUPPORTED if -m < lo and hi < m else CONTRADICTED if lo > m or hi < -m else INCONCLUSIVE
    ),
    "at_least": lambda lo, hi, m: SUPPORTED if lo > -m else CONTRADICTED if hi < -m else INCONCLUSIVE,
}


def test_pair_verdicts_follow_the_docstring_table_on_every_interval():
    rng = np.random.default_rng(0)
    for kind, rule in TABLE.items():
        for _ in range(2000):
            low, high = sorted(rng.uniform(-0.06, 0.06, 2))
            margin = float(rng.choice([0.0, 0.02]))
            assert pair_verdict(kind, Interval((low + high) / 2, low, high), margin) == rule(low, high, margin)
            holds = any(low <= b <= high for b in boundaries(kind, margin))
            assert (rule(low, high, margin) == INCONCLUSIVE) == holds
        for unbounded in (Interval(0.01, -np.inf, np.inf), Interval(np.nan, np.nan, np.nan)):
            assert pair_verdict(kind, unbounded, 0.02) == INCONCLUSIVE


def test_the_seeds_a_precision_target_would_take_are_the_fewest_whose_interval_is_within_it_at_todays_spread():
    rng = np.random.default_rng(0)

    def half_width(n, like):
        """The 95% half-width of n seeds drawn with exactly the mean and standard deviation of `like`."""
        z = rng.standard_normal(n)
        interval = mean_ci(like.mean() + (z - z.mean()) / z.std(ddof=1) * like.std(ddof=1))
        return (interval.high - interval.low) / 2

    for spread in (0.01, 0.05, 0.2):
        values = rng.normal(0.6, spread, 5)
        needed = seeds_for_half_width(values, 0.03)
        assert half_width(needed, values) <= 0.03 + 1e-12
        assert needed == 2 or half_width(needed - 1, values) > 0.03
    assert seeds_for_half_width([0.6, 0.6, 0.6], 0.03) == 2  # seeds that agree: the fewest with an interval
    assert seeds_for_half_width([0.6], 0.03) is None  # one seed has no spread to go on


def test_the_chance_to_resolve_at_the_cap_is_high_for_a_clear_difference_and_low_for_a_null_one():
    a, b = [0.80, 0.82, 0.81], [0.70, 0.72, 0.71]  # 10 points apart, seeds 1 point apart
    assert resolve_chance(a, b, 16, (0.0,)) > 0.99
    same = [0.75, 0.76, 0.755] * 3
    assert resolve_chance(same, same, 16, (0.0,)) < 0.05  # a null difference under a directional claim, 9 seeds
    assert resolve_chance(same[:3], same[:3], 16, (0.0,)) > 0.3  # ... which 3 seeds cannot yet tell from a small one
    # Noisy seeds: a 4-point difference with seeds 6 points apart is open at 3 seeds and likely to resolve at 16.
    assert 0.5 < resolve_chance([0.74, 0.80, 0.77], [0.70, 0.76, 0.73], 16, (0.0,)) < 1
    # Equivalence: within a 2-point margin the chance grows with the cap; a difference right on the margin stays low.
    near, other = [0.74, 0.77, 0.755], [0.745, 0.765, 0.75]
    chances = [resolve_chance(near, other, cap, (-0.02, 0.02)) for cap in (4, 8, 16)]
    assert chances == sorted(chances) and chances[0] < 0.01 and chances[-1] > 0.7
    assert resolve_chance([0.775, 0.785, 0.78], [0.755, 0.765, 0.76], 16, (-0.02, 0.02)) < 0.5
    # Nothing to project from with one seed on a side: nothing ruled out. At the cap already, no seed to come:
    # today's interval decides (1: resolved, 0: not).
    assert resolve_chance([0.8], b, 16, (0.0,)) == 1.0
    assert resolve_chance(a, b, 3, (0.0,)) == 1.0 and resolve_chance(same, same, 3, (0.0,)) == 0.0


def test_the_chance_to_resolve_agrees_with_simulated_seeds():
    # Predictive power by simulation: draw each side's true mean from what its seeds allow, the missing seeds around
    # it, and read the final interval; the formula holds the spread at today's, so compare loosely.
    rng = np.random.default_rng(1)
    a, b = np.array([0.74, 0.79, 0.77]), np.array([0.72, 0.76, 0.73])
    resolved, trials = 0, 4000
    for _ in range(trials):
        sides = []
        for x in (a, b):
            true = rng.normal(x.mean(), x.std(ddof=1) / np.sqrt(len(x)))
            sides.append(np.concatenate([x, rng.normal(true, x.std(ddof=1), 13)]))
        interval = diff_ci(*sides, confidence=0.99)
        resolved += not interval.low <= 0.0 <= interval.high
    assert resolve_chance(a, b, 16, (0.0,), 0.99) == pytest.approx(resolved / trials, abs=0.1)


def test_every_claim_verdict_is_reachable_with_its_numbers(tmp_path):
    results, conf = write_study(tmp_path, "policy", policy_rows(tmp_path), POLICY_SWEEP, POLICY_CLAIMS)
    runs = load_runs("policy", results)
    from ablate.analysis.study import load_study

    study = load_study("policy", conf, list(runs.columns))
    selection = select(runs, study)
    verdicts = {v.claim.id: v for v in (judge(c, selection) for c in parse_claims(study.claims, "test"))}
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "ranked": SUPPORTED,
        "reversed": CONTRADICTED,
        "close": SUPPORTED,
        "pinned": SUPPORTED,
        "tuned": SUPPORTED,
        "missing": INCONCLUSIVE,
        "noisy": INCONCLUSIVE,
    }
    ranked = verdicts["ranked"].comparisons
    assert [(c.left, c.right) for c in ranked] == [("step", "exp"), ("multistep", "exp"), ("exp", "fixed")]
    assert ranked[0].diff.mean == pytest.approx(0.10)
    pinned = verdicts["pinned"].comparisons[0]
    assert pinned.left == "fixed @ optim.lr=0.001" and pinned.diff.mean == pytest.approx(0.0, abs=1e-12)
    assert verdicts["tuned"].comparisons[0].left == "multistep"  # the better of the two on val
    assert "cyclical" in verdicts["missing"].comparisons[0].note


def test_a_value_at_chance_is_flagged_and_its_claims_are_inconclusive(tmp_path):
    # 20 classes: chance is 5%. Two nets that never left chance are "equal" and one that did not is "worse",
    # but neither comparison is evidence about depth: the budget did not train them.
    accs = {"allconv5": (5, 0.40), "allconv6": (6, 0.055), "allconv7_1": (7, 0.05), "allconv8_1": (8, 0.30)}
    rows = depth_rows(tmp_path / "runs", accs)
    for row in rows:
        row["data.classes"] = 20
    claims = """\
        margin: 0.02
        claims:
          - {id: six_like_seven, text: allconv6 ≈ allconv7_1, kind: approx, left: [allconv6, allconv7_1]}
          - {id: five_beats_six, text: allconv5 > allconv6, kind: greater, left: [allconv5], right: [allconv6]}
          - {id: five_beats_eight, text: allconv5 > allconv8_1, kind: greater, left: [allconv5], right: [allconv8_1]}
    """
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, claims)
    runs = load_runs("depth", results)
    from ablate.analysis.study import load_study

    study = load_study("depth", conf, list(runs.columns))
    selection = select(runs, study)
    at_chance = {arm.label: arm.at_chance for arm in selection.arms}
    assert at_chance == {"allconv5": False, "allconv6": True, "allconv7_1": True, "allconv8_1": False}
    (six,) = [arm for arm in selection.arms if arm.label == "allconv6"]
    assert "at chance (5%) on every seed: this budget did not train it" in six.flags
    verdicts = {v.claim.id: v for v in (judge(c, selection) for c in parse_claims(study.claims, "test"))}
    assert verdicts["six_like_seven"].verdict == INCONCLUSIVE
    assert (
        verdicts["six_like_seven"].comparisons[0].note
        == "allconv6 and allconv7_1 at chance: the budget did not train them"
    )
    assert verdicts["five_beats_six"].verdict == INCONCLUSIVE
    assert verdicts["five_beats_six"].comparisons[0].note == "allconv6 at chance: the budget did not train it"
    assert verdicts["five_beats_eight"].verdict == SUPPORTED  # both trained: the guard leaves it alone
    # allconv7_1 again, but its seeds had reached 40% on val before ending at chance: a collapse (its LR is unstable),
    # which no longer budget would mend, and the flag and the claim say so.
    runs.loc[runs["model"] == "allconv7_1", "best/val/acc"] = 0.40
    selection = select(runs, study)
    (seven,) = [arm for arm in selection.arms if arm.label == "allconv7_1"]
    assert seven.collapsed == 3 and "3 of 3 had left it and fell back: an unstable setting" in " ".join(seven.flags)
    note = judge(parse_claims(study.claims, "test")[0], selection).comparisons[0].note
    assert note == "allconv6 and allconv7_1 at chance: the budget did not train them"  # allconv6 never left chance
    claim = {"id": "seven", "text": "7_1 < 8_1", "kind": "less", "left": ["allconv7_1"], "right": ["allconv8_1"]}
    (seven_vs_eight,) = parse_claims([claim], "test")
    note = judge(seven_vs_eight, selection).comparisons[0].note
    assert note == "allconv7_1 at chance: a seed left it and fell back (an unstable setting)"
    # Without the number of classes there is no chance level to compare with, and nothing is flagged.
    runs = runs.drop(columns=["data.classes"])
    assert not any(arm.at_chance for arm in select(runs, study).arms)


def test_a_bad_claim_is_one_line_naming_the_entry_and_the_fix():
    with pytest.raises(ConfigError, match=r"claims\[1\]\.kind=bigger: unknown kind; use one of greater, less"):
        parse_claims([{"id": "a", "kind": "less", "left": ["x"], "right": ["y"]}, {"kind": "bigger"}], "f.yaml")
    with pytest.raises(ConfigError, match=r"claims\[0\]\.right: missing"):
        parse_claims([{"kind": "greater", "left": ["x"]}], "f.yaml")


def test_a_claims_file_yaml_cannot_parse_is_one_line_naming_the_file_and_line(tmp_path):
    from ablate.analysis.study import read_claims_file

    path = tmp_path / "depth.yaml"
    path.write_text("claims:\n  - id: a\n   kind: greater\n")  # the second key indented one space less
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}, line 3: not valid YAML \(.*\); fix the file"):
        read_claims_file(path)
    assert read_claims_file(tmp_path / "none.yaml") == {}  # a study without claims


def test_the_repository_claims_name_values_their_sweeps_run():
    """Every claim in conf/claims parses, and its terms name groups, axes and values that conf/sweep runs."""
    from omegaconf import OmegaConf

    from ablate.analysis.study import load_study, same

    files = sorted((ROOT / "ablate" / "conf" / "claims").glob("*.yaml"))
    assert {f.stem for f in files} >= {
        "depth",
        "depth_bn",
        "width",
        "mobilenet_depth",
        "mobilenet_width",
        "lr_policy",
        "optimizer",
        "batch_size",
    }
    for path in files:
        claims = parse_claims(OmegaConf.to_container(OmegaConf.load(path)).get("claims"), str(path))
        sweep = OmegaConf.load(ROOT / "ablate" / "conf" / "sweep" / path.name)
        axes = [*sweep.study.scientific, *sweep.study.nuisance]
        study = load_study(path.stem, ROOT / "ablate" / "conf", axes)

        def check(term, where, study=study, axes=axes, path=path):
            if isinstance(term, str) and term in study.groups:
                for t in study.groups[term]:
                    check(t, where)
            elif isinstance(term, dict) and "best_of" in term:
                for t in term["best_of"]:
                    check(t, where)
            elif isinstance(term, dict):
                for key, value in term.items():
                    assert key in axes, f"{where}: {key} is not an axis of {path.stem}"
                    listed = study.value_order.get(key)
                    assert listed is None or any(same(value, v) for v in listed), f"{where}: {key}={value} not swept"
            else:
                check({study.scientific[0]: term}, where)

        for claim in claims:
            for term in [*claim.left, *claim.right, *(t for tier in claim.tiers for t in tier)]:
                check(term, f"{path.name} {claim.id}")


# ---- the report and the figures --------------------------------------------------------------------------


def png_ok(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_depth_report_names_its_inputs_and_draws_both_bn_curves(tmp_path):
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75), "allconv7_1": (7, 0.76), "allconv8_1": (8, 0.76)}
    claims = """\
        margin: 0.02
        saturation: [depth]
        companion: depth_bn
        claims:
          - {id: five_worse, text: allconv5 < allconv6, kind: less, left: [allconv5], right: [allconv6]}
    """
    rows = depth_rows(tmp_path / "a", accs)
    for row in rows:  # the study's smaller embedded dataset: the report must say how small
        row.update({"data.train": 1600, "data.val": 500, "data.test": 500})
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, claims)
    bn = {k: (d, a + 0.05) for k, (d, a) in accs.items()}
    write_study(tmp_path, "depth_bn", depth_rows(tmp_path / "b", bn), DEPTH_SWEEP.replace("name: depth", "name: x"))
    report = analyze("depth", results_dir=results, conf_dir=conf)
    text = report.read_text()
    for needed in (
        str(results / "depth" / "runs.csv"),
        str(conf / "sweep" / "depth.yaml"),
        str(conf / "claims" / "depth.yaml"),
        "`synthetic` at 32 px, 1600 / 500 / 500 train / val / test images",
        "3 epochs",
        "0, 1, 2",
        "36: 36 completed, 0 diverged, 0 failed",
        "`0123456789ab`",
        "Student t",
        "`five_worse`",
        "**supported**",
        "## Saturation along `depth`",
    ):
        assert needed in text, needed
    assert "allconv7_1" in text.split("## Figures")[0]
    figures = report.parent / "figures"
    for name in ("accuracy.png", "accuracy_vs_depth.png", "learning_curves.png"):
        assert png_ok(figures / name), name
        assert f"(figures/{name})" in text
    assert not list(figures.glob("*.tmp"))


def test_a_report_names_its_inputs_relative_to_the_working_directory(tmp_path, monkeypatch):
    # Reports are committed: they must not carry the absolute paths of whoever ran the analysis.
    monkeypatch.chdir(tmp_path)
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75)}
    results, conf = write_study(tmp_path, "depth", depth_rows(tmp_path / "a", accs), DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    (inputs,) = [line for line in text.splitlines() if line.startswith("| inputs |")]
    assert "`results/depth/runs.csv` (18 rows); `conf/sweep/depth.yaml`; `conf/claims/depth.yaml`" in inputs
    assert str(tmp_path) not in text


def test_the_report_is_rendered_from_computed_results_alone(tmp_path, monkeypatch):
    # The markdown writer formats what the pipeline computed; it reads no file, so the records may be gone.
    from ablate.analysis import pipeline, report

    captured = []
    monkeypatch.setattr(pipeline.report, "render", lambda analysis: captured.append(analysis) or "")
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75)}
    results, conf = write_study(tmp_path, "depth", depth_rows(tmp_path / "runs", accs), DEPTH_SWEEP, "claims: []\n")
    analyze("depth", results_dir=results, conf_dir=conf)
    monkeypatch.undo()
    written = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(results)
    monkeypatch.chdir(tmp_path.parent)
    assert report.render(captured[0]) == written


def test_every_study_figure_is_written(tmp_path):
    # width: per preset, against params and MACs
    accs = {"allconv6_1": (6, 0.6), "allconv6_5": (6, 0.7), "allconv6": (6, 0.72)}
    rows = depth_rows(tmp_path / "w", accs)
    for row in rows:
        row["params"] = {"allconv6_1": 20_000, "allconv6_5": 80_000, "allconv6": 300_000}[row["model"]]
        row["macs"] = row["params"] * 50
    results, conf = write_study(tmp_path, "width", rows, claims="saturation: [params, macs]\nclaims: []\n")
    analyze("width", results_dir=results, conf_dir=conf)
    for name in ("accuracy.png", "accuracy_vs_params.png", "accuracy_vs_macs.png", "learning_curves.png"):
        assert png_ok(results / "width" / "figures" / name), name

    # lr_policy: val accuracy against iteration per policy
    results, conf = write_study(tmp_path, "policy", policy_rows(tmp_path / "p"), POLICY_SWEEP, POLICY_CLAIMS)
    text = analyze("policy", results_dir=results, conf_dir=conf).read_text()
    assert png_ok(results / "policy" / "figures" / "val_acc_vs_iteration.png")
    assert "**contradicted**" in text and "**inconclusive**" in text

    # batch_size: accuracy against batch size, one line per rule
    rows = []
    for size in (32, 64, 128):
        for rule in ("none", "linear", "sqrt"):
            rows += seeded(tmp_path / "b", 0.7, 0.7 - size / 2000, **{"batch.size": size, "batch.rule": rule})
    sweep = "study: {scientific: [batch.size, batch.rule], nuisance: []}\n"
    results, conf = write_study(tmp_path, "batch", rows, sweep)
    analyze("batch", results_dir=results, conf_dir=conf)
    assert png_ok(results / "batch" / "figures" / "accuracy_vs_batch_size.png")

    # lr_range: loss and accuracy against LR with the suggested bounds, as ablate.lr_range writes them
    rows = seeded(tmp_path / "r", np.nan, np.nan, model="allconv6")
    lrs = np.geomspace(1e-4, 1.0, 30)
    for row in rows:
        folder = Path(row["record_dir"])
        curve = {"lr": lrs, "train/loss": 2 - np.log10(lrs) / 10, "train/acc": np.linspace(0.1, 0.5, 30)}
        curve.update({"val/loss": curve["train/loss"] + 0.1, "val/acc": curve["train/acc"] - 0.05})
        pd.DataFrame(curve).to_csv(folder / "lr_range.csv", index=False)
        (folder / "lr_range.json").write_text(json.dumps({"base_lr": 0.01, "max_lr": 0.03, "at_edge": False}))
    results, conf = write_study(tmp_path, "lr_range", rows, "study: {scientific: [model], nuisance: []}\n")
    text = analyze("lr_range", results_dir=results, conf_dir=conf).read_text()
    assert png_ok(results / "lr_range" / "figures" / "lr_range.png")
    assert "| allconv6 | 0 | 0.01 | 0.03 | 30 |  |" in text


def test_bootstrap_and_best_metric_options_reach_the_report(tmp_path):
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75)}
    results, conf = write_study(tmp_path, "depth", depth_rows(tmp_path, accs), DEPTH_SWEEP)
    assert main(["depth", "--results", str(results), "--conf", str(conf), "--ci", "bootstrap", "--metric", "best"]) == 0
    text = (results / "depth" / "report.md").read_text()
    assert "percentile bootstrap" in text and "`best/val/acc`" in text


def test_missing_table_or_no_completed_runs_is_one_friendly_line(tmp_path, capsys):
    assert main(["depth", "--results", str(tmp_path / "results")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "no table" in error and "depth/runs.csv; run the study (python -m ablate +sweep=depth)" in error

    rows = [run_row(tmp_path, status="failed", model="a"), run_row(tmp_path, status="diverged", model="b")]
    results, _ = write_study(tmp_path, "broken", rows)
    with pytest.raises(ConfigError, match=r"no completed runs \(1 failed, 1 diverged\)"):
        analyze("broken", results_dir=results, conf_dir=tmp_path / "conf")


def test_a_table_asked_for_where_it_is_not_names_where_it_is_or_the_study_meant(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "synthetic" / "cpu" / "depth").mkdir(parents=True)
    (results / "synthetic" / "cpu" / "depth" / "runs.csv").write_text("identity\n")
    assert main(["depth", "--results", str(results), "--data", "cifar10"]) == 2
    assert "its tables here: --data synthetic --budget cpu; or run the study" in capsys.readouterr().err
    assert main(["depht", "--results", str(results)]) == 2
    assert "depht/runs.csv; did you mean depth? or run the study" in capsys.readouterr().err
    assert main(["batchsize", "--results", str(results)]) == 2  # no table, but a sweep file of that name
    assert "did you mean batch_size?" in capsys.readouterr().err


def test_seeds_of_different_data_are_not_averaged_and_where_picks_one(tmp_path):
    rows = seeded(tmp_path, 0.7, 0.7, model="a") + seeded(tmp_path, 0.6, 0.6, model="b")
    other = seeded(tmp_path, 0.9, 0.9, model="a") + seeded(tmp_path, 0.8, 0.8, model="b")
    for row in other:
        row["data"] = "cifar10"
    results, conf = write_study(tmp_path, "mix", rows + other, "study: {scientific: [model], nuisance: []}\n")
    with pytest.raises(ConfigError, match=r"mixes data=synthetic \(6 runs\), cifar10 \(6 runs\); .* --where data="):
        analyze("mix", results_dir=results, conf_dir=conf)
    report = analyze("mix", results_dir=results, conf_dir=conf, where={"data": "cifar10"})
    assert report == results / "mix" / "cifar10" / "report.md"
    text = report.read_text()
    assert "(6 rows where data=cifar10)" in text and "--where data=cifar10" in text
    assert "| **a** | 6 | 1000 | 10k | 90.00 |" in text


def test_a_batch_study_held_as_epochs_and_as_updates_is_two_experiments_and_its_report_says_which(tmp_path):
    rows = seeded(tmp_path, 0.7, 0.7, model="a") + seeded(tmp_path, 0.6, 0.6, model="b")
    for row in rows:
        row["batch.hold"] = "updates"
    results, conf = write_study(tmp_path, "hold", rows, "study: {scientific: [model], nuisance: []}\n")
    text = analyze("hold", results_dir=results, conf_dir=conf).read_text()
    assert "epochs at batch.base_size, the same updates at every batch size (`batch.hold=updates`)" in text
    equal_epochs = seeded(tmp_path, 0.5, 0.5, model="a")
    for row in equal_epochs:
        row["batch.hold"] = "epochs"
    results, conf = write_study(tmp_path, "hold", rows + equal_epochs, "study: {scientific: [model], nuisance: []}\n")
    with pytest.raises(ConfigError, match=r"mixes batch.hold=updates \(6 runs\), epochs \(3 runs\); .* --where batch"):
        analyze("hold", results_dir=results, conf_dir=conf)


def test_without_a_sweep_file_the_axes_come_from_the_records_config(tmp_path):
    rows = []
    for model, acc in (("a", 0.6), ("b", 0.7)):
        for lr in (0.001, 0.01, 0.1):
            rows += seeded(
                tmp_path,
                acc if lr == 0.01 else acc - 0.1,
                acc,
                model=model,
                **{"optim.lr": lr, "data.root": "/data/x", "sched": "fixed"},
            )
    (Path(rows[0]["record_dir"]) / "config.yaml").write_text("study:\n  scientific: [model]\n  nuisance: [optim.lr]\n")
    results, conf = write_study(tmp_path, "adhoc", rows)
    text = analyze("adhoc", results_dir=results, conf_dir=conf).read_text()
    assert "| scientific axis (compared) | `model` |" in text
    assert "| **b** | 6 | 1000 | 10k | 0.01 | 70.00 | 70.00 [" in text
    # Without the record's config: the varying swept column is compared, constant overrides are not.
    (Path(rows[0]["record_dir"]) / "config.yaml").unlink()
    text = analyze("adhoc", results_dir=results, conf_dir=conf).read_text()
    assert "| scientific axis (compared) | `model` |" in text


# ---- what the report and figures show (issue 15, section 7) -------------------------------------------------


def near_chance_rows(root: Path) -> list[dict]:
    """20 classes, seeds at 1%, 5% and 10.5% test accuracy: a t interval over them reaches below 0."""
    rows = []
    for seed, acc in zip(SEEDS, (0.01, 0.05, 0.105)):
        row = run_row(root, val=acc, test=acc, model="allconv5", seed=seed, **{"optim.lr": 0.01})
        row.update(seed=seed, depth=5, **{"data.classes": 20})
        rows.append(row)
    return rows


def test_intervals_are_clipped_to_0_100_and_each_seed_links_its_record(tmp_path):
    assert mean_ci([0.01, 0.05, 0.105]).low < 0  # what the table would show unclipped
    results, conf = write_study(tmp_path, "depth", near_chance_rows(tmp_path / "runs"), DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| **allconv5**")]
    assert "5.50 [0.00, " in row and "[-" not in row
    # Per-seed values, each a link to its record folder, relative to the report's folder.
    links = dict(re.findall(r"\[s(\d) [\d.]+\]\(([^)]+)\)", row))
    assert sorted(links) == ["0", "1", "2"]
    assert all((results / "depth" / link / "metrics.jsonl").is_file() for link in links.values())
    # The tie-break the selection applies is the one the report states.
    assert "a tie on val goes to the setting listed first in the sweep file's grid" in text


def test_a_difference_in_points_is_clipped_to_plus_minus_100_as_a_value_is_to_0_100():
    # batch_size's 1024 under the sqrt rule (seeds 61, 98, 98) against batch 64: the t interval reaches past ±100
    wide = diff_ci([0.6105, 0.978, 0.9755], [0.6315, 0.575, 0.554, 0.60, 0.57, 0.59], confidence=1 - 0.05 / 6)
    assert wide.low < -1 and wide.high > 1
    assert report._points(wide) == f"{100 * wide.mean:+.2f} [-100.00, +100.00]"
    assert report._points(Interval(0.1733, 0.1331, 0.2135)) == "+17.33 [+13.31, +21.35]"


def test_seeds_requested_come_from_the_runs_not_the_sweep_files_default(tmp_path):
    rows = [r for r in depth_rows(tmp_path / "runs", {"allconv5": (5, 0.6), "allconv6": (6, 0.7)}) if r["seed"] == 0]
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert "| seeds | 0 (1 requested) |" in text and "of 3 seeds completed" not in text


def test_seeds_a_stopped_sweep_only_began_are_named_apart_from_the_seeds_that_ran(tmp_path):
    """A sweep stopped as a seed look began leaves `interrupted` records of seeds no value has a result for."""
    root = tmp_path / "runs"
    rows = depth_rows(root, {"allconv5": (5, 0.6), "allconv6": (6, 0.7)})
    for seed in (3, 4):
        begun = run_row(root, status="interrupted", model="allconv6", seed=seed, **{"optim.lr": 0.01})
        rows.append({**begun, "depth": 6})
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| seeds |")]
    assert row.startswith("| seeds | 0, 1, 2 (")
    assert row.endswith("); 3, 4 only begun (interrupted or running, no result) |")


@pytest.fixture
def drawn_figures(monkeypatch):
    """Capture each figure the analysis saves, by file name, instead of only writing the PNG; the figures stay open
    for the test to read and close after it."""
    from ablate.analysis import figures

    captured = {}
    save, close = figures.save, figures.plt.close

    def capture(fig, path):
        captured[Path(path).name] = fig
        fig.canvas.draw()  # text positions exist only once drawn
        return save(fig, path)

    monkeypatch.setattr(figures, "save", capture)
    monkeypatch.setattr(figures.plt, "close", lambda fig=None: None)
    yield captured
    for fig in captured.values():
        close(fig)


def test_every_accuracy_figure_has_a_chance_line_a_dataset_title_and_axes_within_0_100(tmp_path, drawn_figures):
    captured = drawn_figures
    rows = near_chance_rows(tmp_path / "runs")
    for row in depth_rows(tmp_path / "runs", {"allconv8_1": (8, 0.3), "allconv8_2": (8, 0.3), "allconv8_3": (8, 0.3)}):
        rows.append({**row, "data.classes": 20})
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    analyze("depth", results_dir=results, conf_dir=conf)
    assert {"accuracy.png", "accuracy_vs_depth.png", "learning_curves.png"} <= set(captured)
    for name, fig in captured.items():
        title = fig._suptitle or fig.axes[0].title
        assert "on synthetic" in title.get_text(), name
        # A title longer than the figure is wide (optimizer's, over a 5-inch plot) is broken into lines at draw
        # time, not cut off at the figure's edge.
        assert title.get_wrap(), name
        labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
        assert "chance (5%)" in labels, name
    vs_depth = captured["accuracy_vs_depth.png"].axes[0]
    assert vs_depth.get_ylim()[0] >= 0  # no axis to -10% from an unclipped interval
    # The three presets at depth 8 (equal accuracy) have labels that do not overlap.
    renderer = captured["accuracy_vs_depth.png"].canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in vs_depth.texts if t.get_text().startswith("allconv8")]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_a_curve_with_one_evaluation_is_drawn_as_a_point(tmp_path, drawn_figures):
    captured = drawn_figures
    rows = near_chance_rows(tmp_path / "runs")
    for row in rows:  # one evaluation per run
        metrics = Path(row["record_dir"]) / "metrics.jsonl"
        metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    analyze("depth", results_dir=results, conf_dir=conf)
    (val_panel, _) = captured["learning_curves.png"].axes
    (line,) = [line for line in val_panel.get_lines() if line.get_label() == "allconv5"]
    assert len(line.get_xdata()) == 1 and line.get_marker() == "o"


def test_analysing_the_committed_tables_without_their_records_keeps_the_curves_figure(tmp_path):
    # A fresh clone has the committed tables and figures but not the raw runs the learning curves come from.
    reference = tmp_path / "reference"
    table = Path("synthetic", "cpu", "depth")
    shutil.copytree(ROOT / "results" / "reference" / table, reference / table)
    (reference / table / "curves.csv").unlink(missing_ok=True)  # as committed before collect wrote the curves
    curves = reference / table / "figures" / "learning_curves.png"
    before = curves.read_bytes()
    assert main(["depth", "--results", str(reference)]) == 0
    assert curves.read_bytes() == before


def test_a_clone_without_the_records_redraws_the_curves_and_what_the_budget_measured_from_curves_csv(
    tmp_path, drawn_figures
):
    captured = drawn_figures
    rows = near_chance_rows(tmp_path / "runs")
    for row in depth_rows(tmp_path / "runs", {"allconv6": (6, 0.6)}):
        rows.append({**row, "data.classes": 20})
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    records = [
        {"summary": {"identity": r["identity"], "status": r["status"]}, "record_dir": r["record_dir"]} for r in rows
    ]
    collect.write_curves(collect.curves_table(records), results / "depth")

    def report_and_curves():
        text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
        measured = next(line for line in text.splitlines() if line.startswith("- **What this budget measured**"))
        lines = captured.pop("learning_curves.png").axes[0].get_lines()
        return text, measured, {line.get_label(): list(line.get_ydata()) for line in lines}

    text, measured, drawn = report_and_curves()
    assert "not known" not in measured and "curves.csv" not in text
    shutil.rmtree(tmp_path / "runs")
    text_without, measured_without, drawn_without = report_and_curves()
    assert (measured_without, drawn_without) == (measured, drawn)
    assert "from `curves.csv` beside the table for 12 (records not on this machine)" in text_without
    (results / "depth" / "curves.csv").unlink()  # neither records nor curves: the reading is not known
    assert "not known" in analyze("depth", results_dir=results, conf_dir=conf).read_text()


def test_committed_tables_carry_no_absolute_paths():
    tables = sorted((ROOT / "results" / "reference").glob("**/runs.csv"))
    assert tables
    for path in tables:
        record_dirs = pd.read_csv(path)["record_dir"].dropna()
        assert not any(Path(d).is_absolute() for d in record_dirs), path


def test_analyze_finds_each_dataset_and_budgets_table_and_keeps_them_apart(tmp_path, capsys):
    # runs.csv per <data>/<budget>, as sweeps and ablate.collect write them: one report each, never mixed.
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75)}
    _, conf = write_study(tmp_path / "elsewhere", "depth", [], DEPTH_SWEEP, "claims: []\n")
    for data in ("synthetic", "imagefolder"):
        rows = [{**r, "data": data} for r in depth_rows(tmp_path / "runs" / data, accs)]
        (tmp_path / "results" / data / "default" / "depth").mkdir(parents=True)
        pd.DataFrame(rows).to_csv(tmp_path / "results" / data / "default" / "depth" / "runs.csv", index=False)
    assert main(["depth", "--results", str(tmp_path / "results"), "--conf", str(conf)]) == 0
    written = capsys.readouterr().out
    for data in ("synthetic", "imagefolder"):
        assert f"{data}/default/depth/report.md" in written
    assert main(["depth", "--results", str(tmp_path / "results"), "--conf", str(conf), "--data", "imagefolder"]) == 0
    assert "synthetic" not in capsys.readouterr().out


def test_the_report_leads_with_the_answer_the_budget_the_correction_and_the_compute(tmp_path):
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75), "allconv7_1": (7, 0.76), "allconv8_1": (8, 0.76)}
    rows = depth_rows(tmp_path / "a", accs)
    for row in rows:
        row.update({"budget": "cpu", "data.classes": 20, "epochs_completed": 3})
        if row["optim.lr"] != 0.01:  # halving stopped the other LRs after one of three epochs
            row.update(status="stopped", epochs_completed=1, wall_seconds=10.0 / 3, **{"final/val/acc": 0.3})
    first = next(row for row in rows if row["status"] == "completed")
    # The records say how the study was launched: adaptive seeds, 3 planned looks from 3 seeds.
    study = {"seeds": [0, 1, 2], "more_seeds": {"max": 8, "per_look": 3, "alpha": 0.05}}
    (tmp_path / "a" / first["identity"] / "config.yaml").write_text(OmegaConf.to_yaml({"study": study}))
    claims = """\
        claims:
          - {id: five_worse, text: allconv5 < allconv6, kind: less, left: [allconv5], right: [allconv6]}
    """
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, claims)
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    answer = text[text.index("## The answer") : text.index("## What was run")]
    assert "- **Claims**: 1 supported, 0 contradicted, 0 inconclusive of 1" in answer
    assert "judged at 98.33%: Bonferroni over the 3 planned looks" in answer
    assert "- **Budget**: `cpu`: 3 epochs, median 30 updates a run" in answer
    assert "- **What this budget measured**: " in answer and "not known" not in answer
    assert "(24 stopped by successive halving)" in answer
    # Spent: 12 completed x 10 s + 24 stopped x 3.3 s; the full grid: 4 values x 3 LRs x 3 seeds x 10 s.
    assert "0.06 h of training in 36 runs" in answer and "would take 0.10 h" in answer
    assert "Intervals at 98.33%, not 95%" in text
    stopped = text[text.index("## Stopped by successive halving") :]
    assert "| allconv5 | 0.001 | 3 | 1 | 30.00 |" in stopped


def test_claims_are_judged_at_the_plan_the_table_carries_and_an_extended_study_at_its_strictest(tmp_path):
    # No records (a fresh clone of the committed table): the level comes from the table's `plan` column. A study
    # first run to 8 seeds, then extended to 16 (study.more_seeds.max=16), has rows of both plans; judging every
    # look at the 16-seed plan's level (6 looks) counts the 3 looks already taken.
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75)}
    claims = """\
        claims:
          - {id: five_worse, text: allconv5 < allconv6, kind: less, left: [allconv5], right: [allconv6]}
    """
    first = {"seeds": [0, 1, 2], "more_seeds": {"max": 8, "per_look": 3, "alpha": 0.05}}
    extended = {**first, "more_seeds": {**first["more_seeds"], "max": 16}}
    for plans, level, extended_note in (([first], "98.33%", False), ([first, extended], "99.17%", True)):
        rows = depth_rows(tmp_path / level, accs)
        for i, row in enumerate(rows):
            row["plan"] = json.dumps(plans[i % len(plans)])
        results, conf = write_study(tmp_path / level, "depth", rows, DEPTH_SWEEP, claims)
        text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
        looks = 6 if extended_note else 3
        assert f"judged at {level}: Bonferroni over the {looks} planned looks" in text
        assert ("The study was extended after its first looks" in text) == extended_note
        strictest = "under 2 plans, and every look is judged under the one with the most (16 seeds"
        assert (strictest in text) == extended_note
    # A study that went on with study.more_seeds.precision_max (as many looks): its plan is the one that explains the
    # seeds past the claims' cap, whichever sorts first in the table.
    capped = {"seeds": [0, 1, 2], "more_seeds": {"max": 16, "per_look": 3, "half_width": 3, "out_of_reach": "last"}}
    wider = {"seeds": [0, 1, 2], "more_seeds": {"max": 16, "per_look": 3, "half_width": 3, "precision_max": 48}}
    wider["more_seeds"]["out_of_reach"] = "last"
    assert json.dumps(capped) < json.dumps(wider)
    for i, row in enumerate(rows):
        row["plan"] = json.dumps((capped, wider)[i % 2])
    results, conf = write_study(tmp_path / "precision", "depth", rows, DEPTH_SWEEP, claims)
    assert "on each value's first 16 seeds" in analyze("depth", results_dir=results, conf_dir=conf).read_text()
    rows[0]["plan"] = "{seeds: [0"  # a hand-edited table: one line naming the column and the fix
    results, conf = write_study(tmp_path / "edited", "depth", rows, DEPTH_SWEEP, claims)
    with pytest.raises(ConfigError, match=r"^runs.csv column plan=.*collect the table again$"):
        analyze("depth", results_dir=results, conf_dir=conf)


def test_the_report_states_the_halving_plan_its_table_ran_under_and_not_todays_budget(tmp_path):
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75)}
    rows = depth_rows(tmp_path, accs)
    for row in rows[::3]:
        row["status"] = "stopped"
    plan = {"seeds": [0, 1, 2], "halving": {"rungs": [0.3], "eta": 2}}
    for row in rows:
        row.update({"plan": json.dumps(plan), "trainer.epochs": 10})
    results, conf = write_study(tmp_path / "eta2", "depth", rows, DEPTH_SWEEP)
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert "| successive halving | after epoch 3 of 10, the best half of each value's settings" in text
    assert "ranked below the best half of its value's settings" in text
    for row in rows:
        del row["plan"]  # a table collected before the plan column: the sweep file of today is no witness
    results, conf = write_study(tmp_path / "old", "depth", rows, DEPTH_SWEEP)
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    stopped = sum(row["status"] == "stopped" for row in rows)
    assert (
        f"| successive halving | not recorded in this table (collected before its `plan` column); {stopped} runs"
        in text
    )
    assert "ranked below the settings of its value that continued" in text


def test_a_tie_on_val_goes_to_the_net_with_fewer_params_in_the_answer_and_on_every_curve(tmp_path):
    # mobilenet_width's widths 1 and 0.75 tied on val to the last digit: the answer named 1 (listed first) while
    # the saturation section named 0.75 (smaller x). Here allconv5, listed first and shallower, has more params:
    # the answer and the depth and params curves all name allconv6 (every run has the same macs: no curve).
    root = tmp_path / "runs"
    rows = []
    for model, depth, params, test in (("allconv5", 5, 9000, 0.70), ("allconv6", 6, 6000, 0.75)):
        for seed in (0, 1, 2):
            row = run_row(root, val=0.80, test=test + seed / 100, seed=seed, model=model, **{"optim.lr": 0.01})
            rows.append({**row, "seed": seed, "depth": depth, "params": params})
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert "- **Best on val**: allconv6, test 76.00" in text
    assert text.count("- Best on val: **allconv6**") == 2 and "- Best on val: **allconv5**" not in text


LIMITED = "the time limit (study.minutes=45), a cut or the planned looks ended its seeds"


@pytest.mark.parametrize(
    ("limit", "ended", "fed"),
    [
        ({}, "the sweep was cut or its looks ran out", "none were added for it"),
        ({"minutes": 45}, LIMITED, "none were added for it"),
        ({"minutes": 45, "out_of_reach": "last"}, LIMITED, f"its seeds came last: {LIMITED}"),
    ],
)
def test_the_report_says_which_values_missed_the_precision_target_and_why_they_got_no_more_seeds(
    tmp_path, limit, ended, fed
):
    # Test accuracy per seed at one LR, against ±3 points with a cap of 8: allconv5's three seeds agree; allconv6
    # reached the cap still 10 points apart; allconv7_1's three seeds lie 40 points apart, so even 8 seeds would
    # not do (a test of ablate.analysis.looks.out_of_reach); allconv8_1's might have, but the sweep ended first,
    # which a study with a time limit may owe to it. Each wider value says what ±3 would cost at its spread: a
    # standard deviation of 5.3 points (allconv6) needs 15 seeds, of 20 (allconv7_1) 174, of 6 (allconv8_1) 18.
    # Under study.more_seeds.out_of_reach=last allconv7_1 would have had seeds after the rest, had the limit allowed.
    accs = {
        "allconv5": [0.60, 0.61, 0.60],
        "allconv6": [0.60, 0.70] * 4,
        "allconv7_1": [0.40, 0.80, 0.60],
        "allconv8_1": [0.74, 0.86, 0.80],
    }
    root = tmp_path / "runs"
    rows = [
        {**run_row(root, val=acc, test=acc, seed=seed, model=model, **{"optim.lr": 0.01}), "seed": seed}
        for model, seeds in accs.items()
        for seed, acc in enumerate(seeds)
    ]
    more_seeds = {
        "max": 8,
        "per_look": 3,
        "half_width": 3,
        **({"out_of_reach": "last"} if "out_of_reach" in limit else {}),
    }
    study = {"seeds": [0, 1, 2], "more_seeds": more_seeds, **{k: v for k, v in limit.items() if k != "out_of_reach"}}
    (root / rows[0]["identity"] / "config.yaml").write_text(OmegaConf.to_yaml({"study": study}))
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert (
        "| precision target | 95% interval within ±3 points for 1 of 4 values; wider: "
        "allconv6 ±4.5 (8 seeds, the cap; ±3 would take about 15 at this spread); "
        f"allconv7_1 ±49.7 (3 seeds, out of reach: 8 would give ±9.7 at best, so {fed}; "
        "±3 would take about 174 at this spread); "
        f"allconv8_1 ±14.9 (3 seeds, below the cap: {ended}; ±3 would take about 18 at this spread) |"
    ) in text
    limit_row = (
        "| time limit | 45 minutes (`study.minutes`): the grid runs whole; after it, a grid-extension step or seed "
        "look starts only if the records say it ends within the limit"
    )
    assert (limit_row in text) == bool(limit)


def test_a_report_whose_precision_seeds_went_past_the_claims_cap_says_its_claims_read_the_first_seeds(tmp_path):
    # max 4 for the claims, precision_max 8: allconv6 went to 8 seeds for the ±3 target alone.
    accs = {"allconv5": [0.60, 0.61, 0.60], "allconv6": [0.60, 0.70] * 4}
    root = tmp_path / "runs"
    rows = [
        {**run_row(root, val=acc, test=acc, seed=seed, model=model, **{"optim.lr": 0.01}), "seed": seed}
        for model, seeds in accs.items()
        for seed, acc in enumerate(seeds)
    ]
    more_seeds = {"max": 4, "per_look": 1, "half_width": 3, "precision_max": 8}
    (root / rows[0]["identity"] / "config.yaml").write_text(
        OmegaConf.to_yaml({"study": {"seeds": [0, 1, 2], "more_seeds": more_seeds}})
    )
    claims = "claims:\n  - {id: deeper, text: deeper is better, kind: greater, left: [allconv6], right: [allconv5]}\n"
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, claims)
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert (
        "Bonferroni over the 2 planned looks of adaptive seeds, family-wise error 5%, on each value's first 4 seeds"
        in text
    )
    assert (
        "(3 for every value, up to 4 where a claim was open or the 95% interval was wider than ±3 points, "
        "to 8 for this alone)" in text
    )
    assert "Each value's claims read its first 4 seeds, the ones those looks saw; seeds past them (up to 8)" in text
    assert "allconv6 ±4.5 (8 seeds, the cap;" in text
    # Compute: the full grid is priced at the claims' 4 seeds (2 values x 1 LR x 4 x 360 s = 0.80 h), and allconv6's
    # seeds 4-7 (0.40 h) are named apart; priced at 8 seeds it would be 1.60 h, with adaptive seeds "saving" 0.50 h.
    for row in rows:
        row.update(wall_seconds=360.0, epochs_completed=3)
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, claims)
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert (
        "1.10 h of training in 11 runs (0 stopped by successive halving); the full grid at this budget (every setting "
        "to the end, on the most-seeded value's seed count up to the claims' cap: 4) would take 0.80 h: halving saved "
        "0.00 h, adaptive seeds 0.10 h; the seeds past 4 for the precision target alone took 0.40 h of it." in text
    )
    assert "| compute | 1.10 h of training in all (each run's wall time, summed) |" in text
    # Where no value got past the claims' 4 seeds, the line says so rather than pricing seeds that never ran at 0.00 h.
    results, conf = write_study(tmp_path, "depth", [r for r in rows if r["seed"] < 3], DEPTH_SWEEP, claims)
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert "on the most-seeded value's seed count up to the claims' cap: 3) would take 0.60 h" in text
    assert "; no value went past the claims' 4 seeds for the precision target alone." in text
    assert "for the precision target alone took" not in text


def test_the_time_limit_row_names_each_limit_a_study_that_went_on_from_its_records_ran_under(tmp_path):
    # depth_bn ran its grid and looks under the 45-minute limit, then went on from its records under the hour's.
    def plan(minutes):
        return json.dumps({"seeds": [0, 1, 2], "more_seeds": {"max": 8, "per_look": 3}, "minutes": minutes})

    root = tmp_path / "runs"
    rows = [
        {**run_row(root, val=0.6, test=0.6 + seed / 100, seed=seed, model=model, **{"optim.lr": 0.01}), "seed": seed}
        for model in ("allconv5", "allconv6")
        for seed in range(4)
    ]
    for row in rows:
        row["plan"] = plan(60 if row["seed"] == 3 else 45)
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    assert "| time limit | 45 minutes for 6 runs, 60 for 2 (`study.minutes`): the grid runs whole;" in text
    for row in rows:
        row["plan"] = plan(45)  # one limit: the row names it alone
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    assert (
        "| time limit | 45 minutes (`study.minutes`)"
        in analyze("depth", results_dir=results, conf_dir=conf).read_text()
    )


@pytest.mark.parametrize(
    ("precision", "why"),
    [
        ({}, "where a claim was open)"),
        ({"half_width": 3}, "where a claim was open or the 95% interval was wider than ±3 points)"),
        (
            {"futility": 0.1},
            "where a claim was open and at least 10% likely to resolve at the cap (study.more_seeds.futility))",
        ),
    ],
)
def test_under_adaptive_seeds_a_value_is_flagged_only_for_seeds_it_lost_not_for_seeds_it_never_needed(
    tmp_path, precision, why
):
    accs = {"allconv5": (5, 0.60), "allconv6": (6, 0.75)}
    root = tmp_path / "runs"
    rows = depth_rows(root, accs)
    # Adaptive seeds gave allconv6 three more seeds at its chosen LR; allconv5's claims did not need them.
    for seed in (3, 4, 5):
        row = run_row(root, val=0.95, test=0.75, seed=seed, model="allconv6", **{"optim.lr": 0.01})
        rows.append({**row, "seed": seed, "depth": 6})
    # A seed of allconv5 at its chosen LR failed, and one of allconv6's ended at chance (5% for 20 classes).
    rows.append({**run_row(root, "failed", seed=3, model="allconv5", **{"optim.lr": 0.01}), "seed": 3, "depth": 5})
    rows[-2].update({"final/test/acc": 0.05, "final/val/acc": 0.05})
    for row in rows:
        row["data.classes"] = 20
    study = {"seeds": [0, 1, 2], "more_seeds": {"max": 8, "per_look": 3, "alpha": 0.05, **precision}}
    (root / rows[0]["identity"] / "config.yaml").write_text(OmegaConf.to_yaml({"study": study}))
    results, conf = write_study(tmp_path, "depth", rows, DEPTH_SWEEP, "claims: []\n")
    text = analyze("depth", results_dir=results, conf_dir=conf).read_text()
    five = next(line for line in text.splitlines() if line.startswith("| **allconv5**"))
    six = next(line for line in text.splitlines() if line.startswith("| **allconv6**"))
    assert "3 of 4 seeds completed" in five
    assert "seeds completed" not in six and "1 of 6 seeds at chance" in six
    assert f"| seeds | 0, 1, 2, 3, 4, 5 (3 for every value, up to 8 {why} |" in text


def test_the_extension_row_lists_each_values_added_settings_in_step_order(tmp_path):
    # The table comes in record-folder order, where a second step's run can sort before the first's.
    from ablate.analysis.report import _extension_text

    rows = [
        run_row(tmp_path, model="allconv5", grid_step=np.nan, **{"optim.lr": 0.03}),
        run_row(tmp_path, model="allconv5", grid_step=2, **{"optim.lr": 0.27}),
        run_row(tmp_path, model="allconv6", grid_step=1, **{"optim.lr": 0.09}),
        run_row(tmp_path, model="allconv5", grid_step=1, **{"optim.lr": 0.09}),
    ]
    spec = Study(name="depth", scientific=("model",), nuisance=("optim.lr",), plan=adaptive.Plan(extend_grid=2))
    assert _extension_text(spec, pd.DataFrame(rows), ["allconv5"]).endswith(
        "(`study.extend_grid`): allconv5: `optim.lr`=0.09 (step 1), `optim.lr`=0.27 (step 2); "
        "allconv6: `optim.lr`=0.09 (step 1)"
    )


def test_an_extension_that_never_ran_is_not_reported_as_not_needed(tmp_path):
    # The grid alone: found on MobileNet depth, whose grid outlasted its time limit, so the extension never started
    # while five values' best LR sat on the grid's top.
    from ablate.analysis.report import _extension_text

    rows = pd.DataFrame([run_row(tmp_path, model="allconv5", **{"optim.lr": 0.03})])
    limited = Study(
        name="depth", scientific=("model",), nuisance=("optim.lr",), plan=adaptive.Plan(extend_grid=2, minutes=45)
    )
    assert _extension_text(limited, rows, ["allconv5", "allconv6"]).endswith(
        "none ran, though the best setting of allconv5, allconv6 sits on a grid's end (flags below): "
        "the time limit (study.minutes=45) or a cut ended the sweep before it"
    )
    assert _extension_text(limited, rows, []).endswith("no value's best setting sat on a grid's end")


def test_a_table_without_data_columns_names_its_dataset_unknown_instead_of_failing():
    # A hand-made table (a range test's, say) may hold no data or data.root column: the titles then say so.
    assert figures.dataset_name(pd.DataFrame({"seed": [0, 1], "status": ["completed"] * 2})) == "unknown data"
    assert figures.dataset_name(pd.DataFrame({"data": ["synthetic", "synthetic"]})) == "synthetic"
