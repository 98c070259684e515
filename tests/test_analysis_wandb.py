"""A study's analysis as a W&B run (python -m ablate.analyze STUDY --wandb), written offline and read back with
wandb's own reader: its tables hold the report's numbers, and analysing again updates the same run."""

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from scipy import stats
from test_analysis import DEPTH_SWEEP, depth_rows, write_study
from test_wandb import fresh_wandb_session, isolate_wandb, leet

from ablate.analysis import wandb_run
from ablate.analyze import main
from ablate.tracking import wandb_sync
from ablate.tracking.wandb import analysis_run_id

# allconv7_1 and allconv7_2 share depth 7: the curve takes the better on val, the table keeps both.
ACCS = {"allconv5": (5, 0.60), "allconv6": (6, 0.75), "allconv7_1": (7, 0.80), "allconv7_2": (7, 0.70)}
CLAIMS = """\
    claims:
      - {id: five_worse, text: allconv5 < allconv6, kind: less, left: [allconv5], right: [allconv6]}
      - {id: six_like_seven, text: allconv6 ~ allconv7_1, kind: approx, left: [allconv6], right: [allconv7_1]}
"""


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A depth study at budget=smoke analysed three times: without --wandb, then twice with --wandb=offline."""
    root = tmp_path_factory.mktemp("analysis")
    rows = [{**row, "budget": "smoke"} for row in depth_rows(root / "runs", ACCS)]
    # The records logged to W&B project `my-study`: the analysis run goes where its training runs went.
    logger = {"_target_": "ablate.tracking.wandb.WandbLogger", "project": "my-study", "entity": None}
    for row in rows:
        (Path(row["record_dir"]) / "config.yaml").write_text(OmegaConf.to_yaml({"logger": logger}))
    results, conf = write_study(root, "depth", rows, DEPTH_SWEEP, CLAIMS)
    arguments = ["depth", "--results", str(results), "--conf", str(conf)]
    out_dir = results / "depth"
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_wandb(monkeypatch, root)
        fresh_wandb_session()
        assert main(arguments) == 0
        without = sorted(out_dir.glob("wandb/*"))
        try:
            for _ in range(2):
                assert main([*arguments, "--wandb=offline"]) == 0
        finally:
            fresh_wandb_session()
    run_dirs = sorted(out_dir.glob("wandb/offline-run-*"))
    return {
        "results": results,
        "report": (out_dir / "report.md").read_text(),
        "without": without,
        "run_dirs": run_dirs,
        "reads": [leet(run_dir) for run_dir in run_dirs],
    }


def logged_table(run_dir: Path, read: dict, key: str) -> list[dict]:
    """A table the run logged, from the file its history row names, as {column: value} rows."""
    [row] = [row for row in read["history"] if f"{key}.path" in row]  # the reader flattens {key: {path: ...}}
    assert row[f"{key}._type"] == "table-file"
    table = json.loads((run_dir / "files" / row[f"{key}.path"]).read_text())
    return [dict(zip(table["columns"], values)) for values in table["data"]]


def report_results(report: str) -> dict[str, list[str]]:
    """report.md's Results table: value -> its cells."""
    section = report[report.index("## Results") : report.index("## Figures")]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| **")]
    return {cells[0].strip(" *"): [cell.strip() for cell in cells] for cells in rows}


def test_without_the_flag_nothing_goes_to_wandb(analysed):
    assert analysed["without"] == []


def test_the_analysis_run_is_one_run_in_the_studys_group_where_its_training_runs_logged(analysed):
    run = analysed["reads"][0]["run"]
    assert run["run_id"] == analysis_run_id("depth", "synthetic", "smoke") == "depth-analysis-synthetic-smoke"
    assert (run["run_group"], run["job_type"], run["display_name"]) == (
        "depth",
        "analysis",
        "depth/analysis/synthetic/smoke",
    )
    assert run["project"] == "my-study"
    config = run["config"]["update"]
    assert {k: config[k] for k in ("study", "data", "budget", "x", "scientific", "nuisance")} == {
        "study": "depth",
        "data": "synthetic",
        "budget": "smoke",
        "x": "depth",
        "scientific": ["model"],
        "nuisance": ["optim.lr"],
    }
    assert analysed["reads"][0]["exit_code"] == 0


def test_analysing_again_updates_the_same_run_and_sync_finds_both_folders(analysed):
    assert len(analysed["run_dirs"]) == 2
    assert {read["run"]["run_id"] for read in analysed["reads"]} == {"depth-analysis-synthetic-smoke"}
    assert wandb_sync.analysis_run_dirs("depth", analysed["results"]) == analysed["run_dirs"]
    assert wandb_sync.analysis_run_dirs("depth_bn", analysed["results"]) == []


def test_the_results_table_holds_the_reports_numbers(analysed):
    run_dir, read = analysed["run_dirs"][-1], analysed["reads"][-1]
    rows = logged_table(run_dir, read, "results")
    assert [row["value"] for row in rows] == ["allconv5", "allconv6", "allconv7_1", "allconv7_2"]
    assert list(rows[0]) == list(wandb_run.RESULT_COLUMNS)
    # Each value's seeds are its accuracy -0.5, +0, +0.5 points at its middle LR: the t interval is known.
    half = stats.t.ppf(0.975, 2) * 0.005 / 3**0.5
    for row in rows:
        model = row["value"]
        depth, acc = ACCS[model]
        assert (row["x"], row["setting"], row["seeds"], row["series"]) == (depth, "optim.lr=0.01", 3, "synthetic/smoke")
        assert (row["test_acc"], row["ci_low"], row["ci_high"]) == pytest.approx((acc, acc - half, acc + half))
        assert row["val_acc"] == pytest.approx(acc)
        assert row["on_curve"] is (model != "allconv7_2"), "at depth 7 the curve takes allconv7_1, better on val"
    # ... and every number is the one report.md prints (percent, two decimals, the CI clipped to [0, 100]).
    report = report_results(analysed["report"])
    for row in rows:
        cells = report[row["value"]]
        interval = f"{100 * row['test_acc']:.2f} [{100 * row['ci_low']:.2f}, {100 * row['ci_high']:.2f}]"
        assert interval in cells, (interval, cells)
        assert f"{100 * row['val_acc']:.2f}" in cells and str(row["seeds"]) in cells and "0.01" in cells


def test_the_claims_table_holds_the_reports_verdicts_and_the_figures_are_logged(analysed):
    run_dir, read = analysed["run_dirs"][-1], analysed["reads"][-1]
    claims = logged_table(run_dir, read, "claims")
    verdicts = {row["claim"]: row["verdict"] for row in claims}
    answer = analysed["report"][analysed["report"].index("## The answer") : analysed["report"].index("## What")]
    assert verdicts == dict(re.findall(r"`(\w+)` (supported|contradicted|inconclusive)", answer))
    assert verdicts == {"five_worse": "supported", "six_like_seven": "contradicted"}
    assert read["summary"]["claims/supported"] == 1 and read["summary"]["best/value"] == "allconv7_1"
    [history] = read["history"]
    figures = sorted(key.removesuffix("._type") for key, value in history.items() if value == "image-file")
    drawn = sorted(f"figures/{png.stem}" for png in (analysed["results"] / "depth" / "figures").glob("*.png"))
    assert figures == drawn and "figures/accuracy_vs_depth" in figures, "every figure of the report, under its name"
    for key in figures:
        assert (run_dir / "files" / history[f"{key}.path"]).is_file()
        assert history[f"{key}.caption"] in analysed["report"]


def test_a_wandb_failure_is_one_warning_and_the_report_is_still_written(analysed, tmp_path, monkeypatch, capsys):
    from ablate.tracking import wandb as tracking

    def start(*args, **kwargs):
        raise RuntimeError("wandb-core service crashed")

    monkeypatch.setattr(tracking, "start", start)
    out = tmp_path / "out"
    arguments = ["depth", "--results", str(analysed["results"]), "--out", str(out), "--wandb", "online"]
    assert main([*arguments, "--conf", str(analysed["results"].parent / "conf")]) == 0
    err = capsys.readouterr().err
    assert "warning: the W&B analysis run was not logged (set-up failed: RuntimeError: wandb-core service" in err
    assert (out / "report.md").is_file() and not (out / "wandb").exists()
