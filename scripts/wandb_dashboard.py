"""Build the W&B report of a study from code.

    python scripts/wandb_dashboard.py --study depth --entity E --project P            # saves the report
    python scripts/wandb_dashboard.py --study depth --entity E --project P --dry-run  # prints its spec as JSON

The report opens with its main panel, built on the study's analysis run (`python -m ablate.analyze <study>
--wandb`, job type `analysis` in the study's W&B group; ablate/analysis/wandb_run.py): test accuracy against the
scientific value (depth, parameters, batch size; or one point per value) at each value's best LR chosen on val,
with its 95% interval over seeds as error bars, from the run's `results` table; beside it the analysis's figures,
its results table and the claims' verdicts. The chart is a W&B custom chart whose Vega-Lite spec (accuracy_ci_spec)
this script saves as a chart preset of the entity; where the server refuses, the panel falls back to W&B's built-in
line (means only) with one warning line.

Below it, one template per kind of study: capacity (depth or width: the saturation plot against a
numeric scientific value), lr_policy, optimizer, batch_size and lr_range; a study's sweep file
(conf/sweep/<study>.yaml) names its template in `study.dashboard`. Runs are the completed training runs
of the study's W&B group (the analysis run left out), grouped by the scientific value and the nuisance value
(usually the LR) that WandbLogger writes to `derived.scientific` and `derived.nuisance`, so every line and
bar is one setting: the mean over its seeds, with the standard error as its band.
"""

import argparse
import json
import sys
from pathlib import Path

import wandb_workspaces.reports.v2 as wr
from omegaconf import OmegaConf
from wandb_workspaces import expr

from ablate.tracking.wandb import ANALYSIS_JOB_TYPE, CLAIMS_TABLE, RESULTS_TABLE

CONF = Path(__file__).resolve().parents[1] / "ablate" / "conf"

GROUP_KEYS = ["config.derived.scientific", "config.derived.nuisance"]
SPREAD = dict(groupby_aggfunc="mean", groupby_rangefunc="stderr")
BEST_ACCURACIES = ["best/val/acc", "best/test/acc"]
CURVES = ["val/acc", "train/loss", "val/loss", "train/acc"]


def saturation_panels(x_key: str, x_title: str, log_x: bool) -> list:
    """Scientific value against best val and test accuracy: every run, then the mean over seeds of each setting."""
    scatter = [
        wr.ScatterPlot(title=f"{metric} against {x_title}", x=wr.Config(x_key), y=wr.SummaryMetric(metric), log_x=log_x)
        for metric in BEST_ACCURACIES
    ]
    return scatter + [accuracy_bars()]


def accuracy_bars() -> wr.BarPlot:
    return wr.BarPlot(
        title="best accuracy per setting (mean ± stderr over seeds)",
        metrics=[wr.SummaryMetric(metric) for metric in BEST_ACCURACIES],
        orientation="v",
        **SPREAD,
    )


def learning_curve_panels() -> list:
    return [wr.LinePlot(title=f"{metric} per epoch", x="epoch", y=[metric], **SPREAD) for metric in CURVES]


def lr_panels() -> list:
    return [wr.LinePlot(title="learning rate per epoch", x="epoch", y=["lr"], log_y=True, **SPREAD)]


def capacity(x_key: str, x_title: str, log_x: bool):
    """Depth or width: does accuracy saturate as the network grows?"""

    def sections():
        return [
            ("Saturation", f"Best val/test accuracy against {x_title}.", saturation_panels(x_key, x_title, log_x)),
            ("Learning curves", "Grouped by the scientific value and the LR.", learning_curve_panels()),
            ("Learning rate", "The LR each run followed.", lr_panels()),
        ]

    return sections


def lr_policy():
    return [
        ("Learning-rate schedules", "The LR of each policy, and where it ends.", lr_panels() + [accuracy_bars()]),
        ("Learning curves", "Grouped by policy and base LR.", learning_curve_panels()),
    ]


def optimizer():
    return [
        ("Optimizers", "Best accuracy of each optimizer setting.", [accuracy_bars()]),
        ("Learning curves", "Grouped by optimizer and LR.", learning_curve_panels()),
        ("Learning rate", "The LR each run followed.", lr_panels()),
    ]


def batch_size():
    return [
        (
            "Batch size",
            "Best accuracy against the batch size, and against the LR its scaling rule gave.",
            saturation_panels("batch.size", "batch size", log_x=True)
            + [
                wr.ScatterPlot(
                    title="best/val/acc against effective LR",
                    x=wr.Config("derived.lr_effective"),
                    y=wr.SummaryMetric("best/val/acc"),
                    log_x=True,
                )
            ],
        ),
        ("Learning curves", "Grouped by batch size (and rule) and LR.", learning_curve_panels()),
        ("Learning rate", "The LR each run followed.", lr_panels()),
    ]


def lr_range():
    """The LR range test: each point the loop logs is one LR of the test (its `epoch` is the point's index)."""
    return [
        (
            "LR range test",
            "Loss and accuracy against the LR, one curve per setting; a cyclical LR takes the LR of the best accuracy "
            "as its upper bound and a third of it as its lower.",
            [
                wr.LinePlot(title="train/loss against LR", x="lr", y=["train/loss"], log_x=True, **SPREAD),
                wr.LinePlot(title="accuracy against LR", x="lr", y=["train/acc", "val/acc"], log_x=True, **SPREAD),
            ],
        ),
        ("Learning rate", "The LR at each point of the test.", lr_panels()),
    ]


# The main chart's x axis for a template with a numeric one: the study's saturation key (conf/claims/<study>.yaml,
# as the analysis takes it) else this one; the other templates draw one point per value.
TEMPLATE_AXES = {"capacity_depth": "depth", "capacity_width": "params", "batch_size": "batch.size"}
AXIS_TITLES = {
    "depth": ("depth (layers)", "linear"),
    "params": ("parameters", "log"),
    "macs": ("MACs per image", "log"),
    "model.width_mult": ("width multiplier", "log"),
    "batch.size": ("batch size", "log"),
}
# The figures the main section shows besides the chart (the analysis run logs each as figures/<file name>).
TEMPLATE_FIGURES = {
    "lr_policy": ["val_acc_vs_iteration"],
    "optimizer": ["learning_curves"],
    "lr_range": ["lr_range"],
}
# The chart preset: a Vega-Lite spec saved in the entity under this name (one per x scale), versioned so that a
# changed spec is a new preset rather than a silent change to every report that uses the old one.
PRESET = "ablate-accuracy-ci-v1"
FALLBACK_PRESET = "wandb/line/v0"  # W&B's built-in line: the means, without the bars
CI_TITLE = "test accuracy (mean, 95% CI over seeds)"


def axis_key(study: str, template: str, conf_dir: Path = CONF) -> str | None:
    """The analysis's numeric axis for this study (None: one point per value)."""
    if template not in TEMPLATE_AXES:
        return None
    claims = Path(conf_dir) / "claims" / f"{study}.yaml"
    declared = OmegaConf.select(OmegaConf.load(claims), "saturation") if claims.is_file() else None
    if declared:
        return declared if isinstance(declared, str) else declared[0]
    return TEMPLATE_AXES[template]


def main_axis(study: str, template: str, conf_dir: Path = CONF) -> tuple[str, str, str]:
    """The main chart's x: (results table column, axis title, scale linear|log|nominal)."""
    key = axis_key(study, template, conf_dir)
    if key is None:
        return "value", "value (best setting on val)", "nominal"
    title, scale = AXIS_TITLES.get(key, (key, "linear"))
    return "x", title, scale


def accuracy_ci_spec(scale: str) -> dict:
    """The main chart's Vega-Lite spec: per value, test accuracy as a point with its CI as a bar; on a numeric x, a
    line through the values on the curve (the best on val where several share an x), one line per series."""
    x = {"field": "${field:x}", "title": "${string:x-axis-title}"}
    if scale == "nominal":
        x.update(type="nominal", sort=None)  # the table's order: the sweep file's
    else:
        x.update(type="quantitative", scale={"type": scale} if scale == "log" else {"type": scale, "zero": False})
        if scale == "linear":
            x["axis"] = {"tickMinStep": 1}  # depth: whole layers
    y = {"field": "${field:y}", "type": "quantitative", "title": CI_TITLE, "axis": {"format": "%"}}
    color = {"field": "${field:color}", "type": "nominal", "title": None}
    tooltip = [
        {"field": "${field:label}", "type": "nominal", "title": "value"},
        {"field": "${field:setting}", "type": "nominal", "title": "setting (best on val)"},
        {"field": "${field:y}", "type": "quantitative", "format": ".1%", "title": "test acc"},
        {"field": "${field:low}", "type": "quantitative", "format": ".1%", "title": "95% CI low"},
        {"field": "${field:high}", "type": "quantitative", "format": ".1%", "title": "95% CI high"},
        {"field": "${field:seeds}", "type": "quantitative", "title": "seeds"},
    ]
    layers = [
        {
            "mark": {"type": "rule", "strokeWidth": 2},
            "encoding": {
                "x": x,
                "y": {"field": "${field:low}", "type": "quantitative", "title": CI_TITLE},
                "y2": {"field": "${field:high}"},
                "color": color,
            },
        },
        {
            "mark": {"type": "point", "filled": True, "size": 60},
            "encoding": {"x": x, "y": y, "color": color, "tooltip": tooltip},
        },
    ]
    if scale != "nominal":
        curve = {"filter": {"field": "${field:curve}", "equal": True}}
        layers.insert(0, {"transform": [curve], "mark": "line", "encoding": {"x": x, "y": y, "color": color}})
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v4.json",
        "description": "ablate: test accuracy per value at its best setting on val, with its 95% CI over seeds",
        "data": {"name": "wandb"},
        "title": "${string:title}",
        "layer": layers,
    }


def preset_name(scale: str) -> str:
    return f"{PRESET}-{scale}"


def main_chart(study: str, template: str, chart_id: str, conf_dir: Path = CONF) -> wr.CustomChart:
    """The main panel: the analysis run's results table through the chart preset `chart_id`."""
    column, title, scale = main_axis(study, template, conf_dir)
    fields = {
        "x": column,
        "y": "test_acc",
        "low": "ci_low",
        "high": "ci_high",
        "color": "series",
        "label": "value",
        "setting": "setting",
        "seeds": "seeds",
        **({} if scale == "nominal" else {"curve": "on_curve"}),  # the line's values (no line on a nominal x)
    }
    if chart_id == FALLBACK_PRESET:
        fields = {"x": column, "y": "test_acc", "stroke": "series"}
    return wr.CustomChart(
        query={"summaryTable": {"tableKey": RESULTS_TABLE}},
        chart_name=chart_id,
        chart_fields=fields,
        chart_strings={"title": f"{study}: test accuracy at the best LR, 95% CI over seeds", "x-axis-title": title},
        layout=wr.Layout(x=0, y=0, w=12, h=9),
    )


def analysis_panels(study: str, template: str, chart_id: str, conf_dir: Path = CONF) -> list:
    """The main section: the chart, the analysis's figures, its results table and the claims' verdicts."""
    key = axis_key(study, template, conf_dir)
    figures = ["accuracy", *TEMPLATE_FIGURES.get(template, [])]
    if key is not None:  # the file name ablate.analysis.pipeline gives the figure against the key
        figures.insert(0, f"accuracy_vs_{key.split('.')[-1] if key.startswith('model.') else key.replace('.', '_')}")
    return [
        main_chart(study, template, chart_id, conf_dir),
        wr.MediaBrowser(
            title="the analysis's figures",
            media_keys=[f"figures/{name}" for name in figures],
            layout=wr.Layout(x=12, y=0, w=12, h=9),
        ),
        wr.WeavePanelSummaryTable(table_name=RESULTS_TABLE, layout=wr.Layout(x=0, y=9, w=24, h=8)),
        wr.WeavePanelSummaryTable(table_name=CLAIMS_TABLE, layout=wr.Layout(x=0, y=17, w=24, h=8)),
    ]


TEMPLATES = {
    "capacity_depth": capacity("derived.depth", "depth (layers)", log_x=False),
    "capacity_width": capacity("derived.params", "parameters", log_x=True),
    "lr_policy": lr_policy,
    "optimizer": optimizer,
    "batch_size": batch_size,
    "lr_range": lr_range,
}


def study_templates(conf_dir: Path = CONF) -> dict[str, str | None]:
    """Every study (a conf/sweep/<study>.yaml) and the template its file names in study.dashboard, or None."""
    return {
        path.stem: OmegaConf.select(OmegaConf.load(path), "study.dashboard")
        for path in sorted((Path(conf_dir) / "sweep").glob("*.yaml"))
    }


def build_report(
    study: str,
    entity: str,
    project: str,
    template: str | None = None,
    runset_project: bool = True,
    chart_id: str | None = None,
    data: str | None = None,
    budget: str | None = None,
) -> wr.Report:
    """The report of a study; runset_project=False leaves the runsets unbound, so it builds without a server.

    `chart_id` is the main chart's preset (default: <entity>/<PRESET>-<scale>, which main() saves); `data` and
    `budget` pick the analysis run of that dataset and budget (default: every analysis run of the study)."""
    template = template or study_templates()[study]
    chart_id = chart_id or f"{entity}/{preset_name(main_axis(study, template)[2])}"
    where = "".join(f", {name} `{value}`" for name, value in (("data", data), ("budget", budget)) if value)
    blocks = [
        wr.P(
            f"Study `{study}` in {entity}/{project} (W&B group `{study}`). First its analysis "
            f"(`python -m ablate.analyze {study} --wandb`{where}): per value, test accuracy at its best LR chosen on "
            "val, the mean and 95% confidence interval over seeds, as in the study's report.md. Then its training "
            "runs: each line and bar is one setting (scientific value × LR), the mean over its seeds with the "
            "standard error as its band."
        )
    ]

    def runset(name: str, groupby: list, *filters) -> wr.Runset:
        return wr.Runset(
            entity=entity if runset_project else "",
            project=project if runset_project else "",
            name=name,
            filters=expr.And(expr.Metric("Group") == study, *filters),
            groupby=groupby,
        )

    picked = [expr.Config(name) == value for name, value in (("data", data), ("budget", budget)) if value]
    analysis = runset(f"{study} {ANALYSIS_JOB_TYPE}", [], expr.Metric("JobType") == ANALYSIS_JOB_TYPE, *picked)
    blocks += [
        wr.H2("Test accuracy at the best LR"),
        wr.P(
            "Each point is one value at its best LR on val; its bar is the 95% confidence interval of the test "
            "accuracy over seeds (no bar: one seed). On a numeric axis the line joins the values on the curve "
            "(the best on val where several share an x). From the analysis run's `results` table; its claims "
            "table holds each claim's verdict."
        ),
        wr.PanelGrid(runsets=[analysis], panels=analysis_panels(study, template, chart_id)),
    ]
    for heading, text, panels in TEMPLATES[template]():
        # Completed training runs only: a crashed, diverged or interrupted run would pull a setting's mean down,
        # and the analysis run is no setting.
        training = runset(
            study, GROUP_KEYS, expr.Metric("JobType") != ANALYSIS_JOB_TYPE, expr.Summary("status") == "completed"
        )
        blocks += [wr.H2(heading), wr.P(text), wr.PanelGrid(runsets=[training], panels=panels)]
    return wr.Report(entity=entity, project=project, title=f"ablate: {study} ({template})", blocks=blocks)


def report_spec(report: wr.Report) -> dict:
    """The report's specification, as W&B stores it."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))


def save_chart_preset(api, entity: str, scale: str) -> str:
    """Save the main chart's Vega-Lite spec as a preset of the entity; its id, or W&B's built-in line where the
    server refuses (one warning line)."""
    name = preset_name(scale)
    try:
        return api.create_custom_chart(
            entity=entity,
            name=name,
            display_name=f"ablate: accuracy with 95% CI ({scale} x)",
            spec_type="vega2",
            access="private",
            spec=accuracy_ci_spec(scale),
        )
    except Exception as error:  # noqa: BLE001 (the report is still worth saving)
        text = " ".join(str(error).split())
        if "exist" in text.lower():  # saved by an earlier report: the same versioned spec
            return f"{entity}/{name}"
        print(
            f"wandb_dashboard: warning: could not save the chart preset {entity}/{name} ({text[:200]}); "
            f"the main panel uses {FALLBACK_PRESET} (means without the CI bars)",
            file=sys.stderr,
        )
        return FALLBACK_PRESET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the W&B report of a study.")
    studies = {study: template for study, template in study_templates().items() if template}
    parser.add_argument("--study", required=True, help=f"study name: {', '.join(studies)}, or any with --template")
    parser.add_argument("--entity", default=None, help="W&B entity (default: that of your credentials)")
    parser.add_argument("--project", default="ablate", help="W&B project (logger.project)")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default=None, help="override the study's template")
    parser.add_argument("--data", default=None, help="the main panel shows the analysis of this dataset (data.name)")
    parser.add_argument("--budget", default=None, help="the main panel shows the analysis of this budget")
    parser.add_argument("--dry-run", action="store_true", help="print the report's spec as JSON; no server needed")
    args = parser.parse_args(argv)
    if args.template is None and args.study not in studies:
        parser.error(
            f"--study={args.study}: no template for this study; pass --template ({'|'.join(sorted(TEMPLATES))})"
        )
    template = args.template or studies[args.study]
    picked = dict(data=args.data, budget=args.budget)

    if args.dry_run:
        report = build_report(
            args.study, args.entity or "ENTITY", args.project, template, runset_project=False, **picked
        )
        print(json.dumps(report_spec(report), indent=2))
        return 0
    import wandb

    api = wandb.Api()
    entity = args.entity or api.default_entity
    chart_id = save_chart_preset(api, entity, main_axis(args.study, template)[2])
    report = build_report(args.study, entity, args.project, template, chart_id=chart_id, **picked).save()
    print(report.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
