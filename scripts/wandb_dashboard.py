"""Build the W&B report of a study from code.

    python scripts/wandb_dashboard.py --study depth --entity E --project P            # saves the report
    python scripts/wandb_dashboard.py --study depth --entity E --project P --dry-run  # prints its spec as JSON

One template per kind of study: capacity (depth or width: the saturation plot against a
numeric scientific value), lr_policy, optimizer, batch_size and lr_range; a study's sweep file
(conf/sweep/<study>.yaml) names its template in `study.dashboard`. Runs are those
of the study's W&B group, grouped by the scientific value and the nuisance value (usually the LR)
that WandbLogger writes to `derived.scientific` and `derived.nuisance`, so every line and
bar is one setting: the mean over its seeds, with the standard error as its band.
"""

import argparse
import json
import sys
from pathlib import Path

import wandb_workspaces.reports.v2 as wr
from omegaconf import OmegaConf
from wandb_workspaces import expr

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
    study: str, entity: str, project: str, template: str | None = None, runset_project: bool = True
) -> wr.Report:
    """The report of a study; runset_project=False leaves the runsets unbound, so it builds without a server."""
    template = template or study_templates()[study]
    blocks = [
        wr.P(
            f"Runs of W&B group `{study}` in {entity}/{project}. Each line and bar is one setting "
            "(scientific value × LR): the mean over its seeds, with the standard error as its band. "
            f"The isolation plot (best LR per value, chosen on val) is in results/{study}/report.md."
        )
    ]
    for heading, text, panels in TEMPLATES[template]():
        runset = wr.Runset(
            entity=entity if runset_project else "",
            project=project if runset_project else "",
            name=study,
            # Completed runs only: a crashed, diverged or interrupted run would pull a setting's mean down.
            filters=expr.And(expr.Metric("Group") == study, expr.Summary("status") == "completed"),
            groupby=GROUP_KEYS,
        )
        blocks += [wr.H2(heading), wr.P(text), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(entity=entity, project=project, title=f"ablate: {study} ({template})", blocks=blocks)


def report_spec(report: wr.Report) -> dict:
    """The report's specification, as W&B stores it."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the W&B report of a study.")
    studies = {study: template for study, template in study_templates().items() if template}
    parser.add_argument("--study", required=True, help=f"study name: {', '.join(studies)}, or any with --template")
    parser.add_argument("--entity", default=None, help="W&B entity (default: that of your credentials)")
    parser.add_argument("--project", default="ablate", help="W&B project (logger.project)")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default=None, help="override the study's template")
    parser.add_argument("--dry-run", action="store_true", help="print the report's spec as JSON; no server needed")
    args = parser.parse_args(argv)
    if args.template is None and args.study not in studies:
        parser.error(
            f"--study={args.study}: no template for this study; pass --template ({'|'.join(sorted(TEMPLATES))})"
        )

    if args.dry_run:
        report = build_report(args.study, args.entity or "ENTITY", args.project, args.template, runset_project=False)
        print(json.dumps(report_spec(report), indent=2))
        return 0
    import wandb

    entity = args.entity or wandb.Api().default_entity
    report = build_report(args.study, entity, args.project, args.template).save()
    print(report.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
