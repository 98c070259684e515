"""The W&B report of each study, built from code without a server (--dry-run)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "wandb_dashboard.py"

spec = importlib.util.spec_from_file_location("wandb_dashboard", SCRIPT)
dashboard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dashboard)

BEST_ACCURACIES = ["summary_metrics.best/val/acc", "summary_metrics.best/test/acc"]
LEARNING_CURVES = [("epoch", ["val/acc"]), ("epoch", ["train/loss"]), ("epoch", ["val/loss"]), ("epoch", ["train/acc"])]
LR_CURVE = [("epoch", ["lr"])]
# Per template: (x, y, log x) of its scatter plots, (x, metrics) of its line plots, and whether it has the bar chart.
EXPECTED = {
    "capacity_depth": (
        [
            ("config:derived.value.depth", "summary:best/val/acc", False),
            ("config:derived.value.depth", "summary:best/test/acc", False),
        ],
        LEARNING_CURVES + LR_CURVE,
        True,
    ),
    "capacity_width": (
        [
            ("config:derived.value.params", "summary:best/val/acc", True),
            ("config:derived.value.params", "summary:best/test/acc", True),
        ],
        LEARNING_CURVES + LR_CURVE,
        True,
    ),
    "lr_policy": ([], LR_CURVE + LEARNING_CURVES, True),
    "optimizer": ([], LEARNING_CURVES + LR_CURVE, True),
    "batch_size": (
        [
            ("config:batch.value.size", "summary:best/val/acc", True),
            ("config:batch.value.size", "summary:best/test/acc", True),
            ("config:derived.value.lr_effective", "summary:best/val/acc", True),
        ],
        LEARNING_CURVES + LR_CURVE,
        True,
    ),
    "lr_range": ([], [("lr", ["train/loss"]), ("lr", ["train/acc", "val/acc"])] + LR_CURVE, False),
}


def dry_run(capsys, *args) -> dict:
    assert dashboard.main([*args, "--entity", "E", "--project", "P", "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def panel_grids(report: dict) -> list[dict]:
    return [block["metadata"] for block in report["spec"]["blocks"] if block["type"] == "panel-grid"]


def panels(report: dict, view_type: str) -> list[dict]:
    return [
        panel["config"]
        for grid in panel_grids(report)
        for panel in grid["panelBankSectionConfig"]["panels"]
        if panel["viewType"] == view_type
    ]


STUDIES = dashboard.study_templates()


def test_every_study_of_conf_sweep_names_a_template_and_a_new_sweep_file_is_found(tmp_path):
    assert set(STUDIES) == {path.stem for path in (REPO / "ablate" / "conf" / "sweep").glob("*.yaml")}
    assert {study: template in dashboard.TEMPLATES for study, template in STUDIES.items()} == dict.fromkeys(
        STUDIES, True
    )
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "resnet_depth.yaml").write_text("study:\n  dashboard: capacity_depth\n")
    assert dashboard.study_templates(tmp_path) == {"resnet_depth": "capacity_depth"}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_each_study_gets_its_templates_panels_and_axes(study, capsys):
    report = dry_run(capsys, "--study", study)
    scatters, lines, has_bars = EXPECTED[STUDIES[study]]

    assert report["project"] == {"name": "P", "entityName": "E"}
    assert [(p["xAxis"], p["yAxis"], p.get("xAxisLogScale")) for p in panels(report, "Scatter Plot")] == scatters
    assert [(p["xAxis"], p["metrics"]) for p in panels(report, "Run History Line Plot")] == lines
    bars = panels(report, "Bar Chart")
    assert bars == (
        [{**bars[0], "metrics": BEST_ACCURACIES, "vertical": True, "groupAgg": "mean", "groupArea": "stderr"}]
        if has_bars
        else []
    )
    # spread over seeds: every line is a mean with its standard error
    assert all((p["groupAgg"], p["groupArea"]) == ("mean", "stderr") for p in panels(report, "Run History Line Plot"))
    for grid in panel_grids(report):
        [runset] = grid["runSets"]
        # The study's runs that completed: crashed, diverged and interrupted runs never feed a mean.
        assert runset["filters"]["filters"] == [
            {"key": {"section": "run", "name": "group"}, "op": "=", "value": study, "disabled": False},
            {
                "key": {"section": "summary", "name": "status"},
                "op": "=",
                "value": "completed",
                "disabled": False,
                "connector": "AND",
            },
        ]
        assert runset["grouping"] == [
            {"section": "config", "name": "derived.value.scientific"},
            {"section": "config", "name": "derived.value.nuisance"},
        ]
        assert "project" not in runset, "a dry run never looks the project up on a server"


def test_template_option_covers_a_study_of_a_new_name(capsys):
    report = dry_run(capsys, "--study", "resnet_depth", "--template", "capacity_depth")
    assert panels(report, "Scatter Plot")[0]["xAxis"] == "config:derived.value.depth"
    assert panel_grids(report)[0]["runSets"][0]["filters"]["filters"][0]["value"] == "resnet_depth"


def test_a_study_without_template_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dashboard.main(["--study", "resnet_depth", "--dry-run"])
    assert exit_info.value.code == 2
    assert "--study=resnet_depth: no template for this study; pass --template" in capsys.readouterr().err


def test_the_script_runs_from_the_command_line():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--study", "lr_policy", "--entity", "E", "--project", "P", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["displayName"] == "ablate: lr_policy (lr_policy)"
