"""The W&B report of each study, built from code without a server (--dry-run)."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.analysis.wandb_run import RESULT_COLUMNS

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


def training_grids(report: dict) -> list[dict]:
    """The panel grids below the main one: the training runs' panels."""
    return panel_grids(report)[1:]


def filters(grid: dict) -> list[tuple]:
    return [
        (f["key"]["section"], f["key"]["name"], f["op"], f["value"]) for f in grid["runSets"][0]["filters"]["filters"]
    ]


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
    for grid in training_grids(report):
        [runset] = grid["runSets"]
        # The study's training runs that completed: crashed, diverged and interrupted runs never feed a mean,
        # and the analysis run is no setting.
        assert filters(grid) == [
            ("run", "group", "=", study),
            ("run", "jobType", "!=", "analysis"),
            ("summary", "status", "=", "completed"),
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
    assert panels(report, "Vega2")[0]["stringSettings"]["x-axis-title"] == "depth (layers)"


def test_a_study_without_template_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dashboard.main(["--study", "resnet_depth", "--dry-run"])
    assert exit_info.value.code == 2
    assert "--study=resnet_depth: no template for this study; pass --template" in capsys.readouterr().err


# The main chart's x per template: the results table's column and the axis scale.
MAIN_AXES = {
    "capacity_depth": ("x", "linear"),
    "capacity_width": ("x", "log"),
    "batch_size": ("x", "log"),
    "lr_policy": ("value", "nominal"),
    "optimizer": ("value", "nominal"),
    "lr_range": ("value", "nominal"),
}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_the_main_panel_comes_first_and_charts_the_analysis_runs_results_table(study, capsys):
    report = dry_run(capsys, "--study", study)
    blocks = report["spec"]["blocks"]
    first_grid = next(i for i, block in enumerate(blocks) if block["type"] == "panel-grid")
    assert [block["type"] for block in blocks[:first_grid]] == ["paragraph", "paragraph", "heading", "paragraph"]
    assert blocks[first_grid - 2]["children"][0]["text"] == "Test accuracy at the best LR"
    main = panel_grids(report)[0]
    # Its runset is the study's analysis run (every one of the study's; --data and --budget pick one).
    assert filters(main) == [("run", "group", "=", study), ("run", "jobType", "=", "analysis")]
    assert main["runSets"][0]["grouping"] == []
    chart, figures, results, claims = main["panelBankSectionConfig"]["panels"]
    assert (chart["viewType"], chart["layout"]["x"], chart["layout"]["y"]) == ("Vega2", 0, 0), "first, top left"
    column, scale = MAIN_AXES[STUDIES[study]]
    config = chart["config"]
    assert config["panelDefId"] == f"E/ablate-accuracy-ci-v1-{scale}"
    [query] = config["userQuery"]["queryFields"][0]["fields"][:1]
    assert query == {"name": "summaryTable", "args": [{"name": "tableKey", "value": "results"}], "fields": []}
    assert config["fieldSettings"] == {
        "x": column,
        "y": "test_acc",
        "low": "ci_low",
        "high": "ci_high",
        "color": "series",
        "label": "value",
        "setting": "setting",
        "seeds": "seeds",
        **({} if scale == "nominal" else {"curve": "on_curve"}),
    }
    assert set(config["fieldSettings"].values()) <= set(RESULT_COLUMNS), "columns the analysis run logs"
    # Every field and string the preset's spec asks for is set, and nothing else.
    spec = json.dumps(dashboard.accuracy_ci_spec(scale))
    assert set(re.findall(r"\$\{field:([\w-]+)\}", spec)) == set(config["fieldSettings"])
    assert set(re.findall(r"\$\{string:([\w-]+)\}", spec)) == set(config["stringSettings"])
    layers = [
        layer["mark"] if isinstance(layer["mark"], str) else layer["mark"]["type"]
        for layer in json.loads(spec)["layer"]
    ]
    assert layers == (["rule", "point"] if scale == "nominal" else ["line", "rule", "point"])
    assert figures["viewType"] == "Media Browser" and "figures/accuracy" in figures["config"]["mediaKeys"]
    assert results["viewType"] == claims["viewType"] == "Weave"
    assert ['"results"' in json.dumps(results), '"claims"' in json.dumps(claims)] == [True, True]


def test_data_and_budget_pick_one_analysis_run_and_the_width_axis_follows_the_claims_file(capsys):
    report = dry_run(capsys, "--study", "mobilenet_width", "--data", "imagefolder", "--budget", "gpu")
    assert filters(panel_grids(report)[0])[2:] == [
        ("config", "data", "=", "imagefolder"),
        ("config", "budget", "=", "gpu"),
    ]
    # mobilenet_width's saturation key is the width multiplier: the axis the analysis logs as x.
    assert panels(report, "Vega2")[0]["stringSettings"]["x-axis-title"] == "width multiplier"
    assert "figures/accuracy_vs_width_mult" in panels(report, "Media Browser")[0]["mediaKeys"]


def test_the_chart_preset_is_saved_once_and_a_refusal_falls_back_to_the_builtin_line(capsys):
    class Api:
        def __init__(self, error=None):
            self.error, self.calls = error, []

        def create_custom_chart(self, **kwargs):
            self.calls.append(kwargs)
            if self.error:
                raise self.error
            return f"{kwargs['entity']}/{kwargs['name']}"

    api = Api()
    assert dashboard.save_chart_preset(api, "me", "log") == "me/ablate-accuracy-ci-v1-log"
    [call] = api.calls
    assert (call["spec_type"], call["spec"]) == ("vega2", dashboard.accuracy_ci_spec("log"))
    exists = Api(RuntimeError("chart ablate-accuracy-ci-v1-log already exists"))
    assert dashboard.save_chart_preset(exists, "me", "log") == "me/ablate-accuracy-ci-v1-log"
    refused = Api(RuntimeError("server does not support custom charts"))
    assert dashboard.save_chart_preset(refused, "me", "log") == "wandb/line/v0"
    assert "the main panel uses wandb/line/v0 (means without the CI bars)" in capsys.readouterr().err
    fallback = dashboard.report_spec(
        dashboard.build_report("depth", "me", "P", chart_id="wandb/line/v0", runset_project=False)
    )
    [chart] = panels(fallback, "Vega2")
    assert (chart["panelDefId"], chart["fieldSettings"]) == (
        "wandb/line/v0",
        {"x": "x", "y": "test_acc", "stroke": "series"},
    )


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
