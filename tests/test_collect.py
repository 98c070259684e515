"""The results table from run records: what each column holds, whatever the source (local folders or W&B)."""

import json

import pandas as pd
import pytest
import yaml

from ablate import collect, record
from ablate.errors import ConfigError


def summary(**changes) -> dict:
    """A completed depth-study record's summary, as ablate.train writes it."""
    base = {
        "identity": "a1b2c3d4e5f6",
        "study": "depth",
        "status": "completed",
        "error": None,
        "seed": 1,
        "choices": {
            "model": "allconv7_1",
            "data": "synthetic",
            "optim": "sgd",
            "sched": "step",
            "logger": "none",
            "launcher": "parallel",
            "sweep": "depth",
        },
        "overrides": [
            "model=allconv7_1",
            "optim.lr=0.03",
            "seed=1",
            "+sweep=depth",
            "launcher=parallel",
            "paths.runs=/tmp/runs",
            "trainer.threads=1",
            "++optim.betas=[0.9,0.99]",
        ],
        "model": {"name": "allconv7_1", "depth": 7, "params": 1150000, "macs": 20000000, "total_stride": 32},
        "lr": {
            **{"base": 0.03, "factor": 1.0, "batch_scale": 1.0, "effective": 0.03},
            **{"batch_size": 64, "base_batch_size": 64, "rule": "none"},
        },
        "final": {
            "train/loss": 0.5,
            "train/acc": 0.8,
            "val/loss": 0.7,
            "val/acc": 0.75,
            "test/loss": 0.72,
            "test/acc": 0.74,
        },
        "best": {"val/acc": 0.76, "test/acc": 0.73, "epoch": 5},
        "steps": 180,
        "wall_seconds": 12.5,
        "images_per_s": 900.0,
        "git": {"commit": "deadbeef", "dirty": False},
    }
    return {**base, **changes}


def config(**changes) -> dict:
    base = {
        "seed": 1,
        "model": {"name": "allconv7_1", "batch_norm": False},
        "data": {"name": "synthetic", "resolution": 32},
        "optim": {"lr": 0.03, "momentum": 0.9, "betas": [0.9, 0.99]},
        "trainer": {"epochs": 6, "threads": 1},
        "study": {
            "name": "depth",
            "scientific": {"model": ["allconv5", "allconv7_1"]},
            "nuisance": {"optim.lr": [0.03, 0.01]},
            "fixed": {},
        },
    }
    return {**base, **changes}


def rec(summary_: dict, config_: dict, record_dir: str = "/runs/depth/a1b2c3d4e5f6") -> dict:
    return {"summary": summary_, "config": config_, "record_dir": record_dir}


def test_a_row_holds_the_swept_keys_and_the_records_numbers():
    (row,) = collect.table([rec(summary(), config())]).to_dict("records")
    assert row["identity"] == "a1b2c3d4e5f6" and row["study"] == "depth" and row["status"] == "completed"
    assert row["seed"] == 1
    assert row["model"] == "allconv7_1"  # a config group: the option name, not the node
    assert row["optim.lr"] == 0.03  # a plain key: the resolved config value
    assert json.loads(row["optim.betas"]) == [0.9, 0.99]  # an override with ++; a list is one JSON cell
    assert row["data"] == "synthetic" and row["data.resolution"] == 32 and row["trainer.epochs"] == 6
    assert (row["depth"], row["params"], row["macs"]) == (7, 1150000, 20000000)
    assert (row["lr_base"], row["lr_effective"]) == (0.03, 0.03)
    assert row["final/test/acc"] == 0.74 and row["final/train/loss"] == 0.5
    assert (row["best/val/acc"], row["best/test/acc"], row["best/epoch"]) == (0.76, 0.73, 5)
    assert (row["steps"], row["wall_seconds"], row["images_per_s"]) == (180, 12.5, 900.0)
    assert row["git_commit"] == "deadbeef" and row["record_dir"] == "/runs/depth/a1b2c3d4e5f6"


def test_the_data_root_and_the_split_sizes_the_run_saw_are_columns():
    # A subset of a dataset is a different experiment: the table (and the report) must say which one.
    sizes = {"name": "imagefolder", "classes": 10, "train": 1800, "val": 200, "test": 1000}
    data = {"name": "imagefolder", "root": "/data/cifar10-ref", "resolution": 32}
    (row,) = collect.table([rec(summary(data=sizes), config(data=data))]).to_dict("records")
    assert row["data.root"] == "/data/cifar10-ref"
    assert (row["data.train"], row["data.val"], row["data.test"]) == (1800, 200, 1000)


def test_an_image_folder_given_its_own_name_is_that_dataset_in_the_table():
    # Two image folders are both data=imagefolder; data.name files them apart (runs/<study>/<name>/...) and the
    # table, the report and its figures name the dataset the same way.
    choices = {**summary()["choices"], "data": "imagefolder"}
    data = {"name": "cifar10jpg", "root": "/data/cifar10-jpg", "resolution": 32}
    (row,) = collect.table([rec(summary(choices=choices), config(data=data))]).to_dict("records")
    assert row["data"] == "cifar10jpg"
    (plain,) = collect.table([rec(summary(choices=choices), config(data={"resolution": 32}))]).to_dict("records")
    assert plain["data"] == "imagefolder"  # a record without a name: the data option's


def test_what_the_run_length_held_is_a_column_and_a_record_from_before_batch_hold_held_epochs():
    held = config(batch={"size": 1024, "hold": "updates"}, trainer={"epochs": 10, "updates": None})
    (row,) = collect.table([rec(summary(), held)]).to_dict("records")
    assert row["batch.hold"] == "updates" and pd.isna(row["trainer.updates"])
    (old,) = collect.table([rec(summary(), config(batch={"size": 64}))]).to_dict("records")
    assert old["batch.hold"] == "epochs"
    caffe = config(batch={"size": 64, "hold": "epochs"}, trainer={"epochs": 10, "updates": 100000})
    (row,) = collect.table([rec(summary(), caffe)]).to_dict("records")
    assert row["trainer.updates"] == 100000


def test_the_plan_a_study_was_launched_with_is_a_column_so_the_table_judges_claims_without_its_records():
    plan = {"seeds": [0, 1, 2], "halving": {"rungs": [0.3], "eta": 3}, "more_seeds": {"max": 16, "per_look": 3}}
    study = {**config()["study"], **plan}
    (row,) = collect.table([rec(summary(), config(study=study))]).to_dict("records")
    assert json.loads(row["plan"]) == plan  # and not the axes: those are columns of their own
    (single,) = collect.table([rec(summary(), {k: v for k, v in config().items() if k != "study"})]).to_dict("records")
    assert pd.isna(single["plan"])  # a run outside a study
    # A null key is off, as an absent one: a key added to the budgets later keeps older records at the same plan.
    later = {**plan, "more_seeds": {**plan["more_seeds"], "futility": None}, "minutes": None}
    (row,) = collect.table([rec(summary(), config(study={**config()["study"], **later}))]).to_dict("records")
    assert json.loads(row["plan"]) == plan


def test_keys_that_do_not_change_a_result_are_not_columns():
    columns = collect.table([rec(summary(), config())]).columns
    for key in ("sweep", "launcher", "paths.runs", "trainer.threads"):
        assert key not in columns
    swept = [c for c in columns if c not in collect.HEAD_COLUMNS and c not in collect.RECORD_COLUMNS]
    assert swept == ["model", "optim.lr", "optim.betas"]  # the study's axes first, then other overrides


def test_study_axes_and_fixed_keys_are_columns_even_when_not_overridden():
    """A record lists the study's axes and fixed keys in its config: each is a column, whatever its overrides say."""
    study = {
        "name": "optimizer",
        "scientific": {"optim": ["sgd_momentum0.9", "adam"]},
        "nuisance": {"optim.lr_factor": [3, 1]},
        "fixed": {"model.batch_norm": True},
    }
    sgd = rec(
        summary(choices={"optim": "sgd_momentum0.9"}, overrides=[]),
        config(study=study, optim={"lr": 0.01, "momentum": 0.9, "lr_factor": 3}, model={"batch_norm": True}),
    )
    adam = rec(
        summary(identity="0123456789ab", choices={"optim": "adam"}, overrides=[]),
        config(study=study, optim={"lr": 0.001, "lr_factor": 1}, model={"batch_norm": True}),
    )
    runs = collect.table([sgd, adam])
    swept = [c for c in runs.columns if c not in collect.HEAD_COLUMNS and c not in collect.RECORD_COLUMNS]
    assert swept == ["optim", "optim.lr_factor", "model.batch_norm"]
    runs = runs.set_index("optim")
    assert runs.loc["sgd_momentum0.9", "optim.lr_factor"] == 3 and runs.loc["adam", "optim.lr_factor"] == 1
    assert runs["model.batch_norm"].tolist() == [True, True]


def test_records_of_older_sweep_files_name_their_axes_in_lists():
    old = {"name": "depth", "scientific": ["model"], "nuisance": ["optim.lr"]}
    columns = collect.table([rec(summary(overrides=[]), config(study=old))]).columns
    assert [c for c in columns if c not in collect.HEAD_COLUMNS and c not in collect.RECORD_COLUMNS] == [
        "model",
        "optim.lr",
    ]


def test_a_killed_run_appears_as_running_and_a_failed_one_with_its_error():
    running = rec(summary(identity="111111111111", status="running", final={}, best={}, steps=None), config())
    failed = rec(
        summary(
            identity="222222222222",
            status="failed",
            error="batch.size=100000: larger than the training split",
            overrides=["model=allconv5", "optim.lr=1e6", "batch.size=100000"],
            model=None,
            lr=None,
            final=None,
            best=None,
        ),
        {},  # it failed before writing its config
    )
    runs = collect.table([running, failed]).set_index("identity")
    assert runs.loc["111111111111", "status"] == "running"
    assert pd.isna(runs.loc["111111111111", "final/test/acc"])
    assert runs.loc["222222222222", "status"] == "failed"
    assert runs.loc["222222222222", "error"].startswith("batch.size=100000")
    assert runs.loc["222222222222", "optim.lr"] == 1e6 and runs.loc["222222222222", "batch.size"] == 100000


def test_local_records_read_summary_and_config_from_each_record_folder(tmp_path):
    study_dir = tmp_path / "runs" / "depth"
    for identity, seed in (("aaaaaaaaaaaa", 0), ("bbbbbbbbbbbb", 1)):
        folder = study_dir / identity
        record.atomic_write_json(folder / record.SUMMARY, summary(identity=identity, seed=seed))
        record.atomic_write_text(folder / record.CONFIG, yaml.safe_dump(config(seed=seed)))
    (study_dir / ".submitit").mkdir()  # launcher logs and Hydra's multirun.yaml are not records
    (study_dir / "multirun.yaml").write_text("hydra: {}\n")
    path = collect.write_study_table(study_dir, tmp_path / "results" / "depth")
    assert path == tmp_path / "results" / "depth" / "runs.csv"
    runs = pd.read_csv(path)
    assert list(runs["identity"]) == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"] and list(runs["seed"]) == [0, 1]
    # Relative to the table's folder: no machine's absolute path in a committed table, and found from any folder.
    assert list(runs["record_dir"]) == ["../../runs/depth/aaaaaaaaaaaa", "../../runs/depth/bbbbbbbbbbbb"]
    assert (path.parent / runs["record_dir"][0]).resolve() == (study_dir / "aaaaaaaaaaaa").resolve()
    index = pd.read_csv(study_dir / "index.csv")  # the human index: a readable name for each hash folder
    assert list(index["folder"]) == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"] and list(index.columns)[:2] == ["name", "status"]
    assert not list((tmp_path / "results" / "depth").glob(".*"))  # no temp file left behind


def test_collect_keeps_each_completed_runs_curve_beside_the_table(tmp_path):
    # A clone of the committed results has no runs/: the report's learning curves are redrawn from this copy.
    study_dir = tmp_path / "runs" / "depth"
    curves = {
        "aaaaaaaaaaaa": ("completed", [{"epoch": 1, "val/acc": 0.25, "lr": 0.03}, {"epoch": 2, "val/acc": 0.5}]),
        "bbbbbbbbbbbb": ("stopped", [{"epoch": 1, "val/acc": 0.125, "lr": 0.03}]),
    }
    for identity, (status, rows) in curves.items():
        folder = study_dir / identity
        record.atomic_write_json(folder / record.SUMMARY, summary(identity=identity, status=status))
        record.atomic_write_text(folder / record.CONFIG, yaml.safe_dump(config()))
        record.write_metrics(folder, rows)
    collect.write_study_table(study_dir, tmp_path / "results" / "depth")
    saved = pd.read_csv(tmp_path / "results" / "depth" / collect.CURVES_CSV)
    assert list(saved.columns) == ["identity", "epoch", "lr", "val/acc"]
    assert list(saved["identity"]) == ["aaaaaaaaaaaa"] * 2  # the stopped run's curve stays in its record
    assert list(saved["val/acc"]) == [0.25, 0.5] and saved["lr"].isna().tolist() == [False, True]


def test_missing_study_folder_is_one_line_naming_it_and_the_command(tmp_path):
    with pytest.raises(ConfigError) as error:
        collect.write_study_table(tmp_path / "runs" / "width", tmp_path / "results" / "width")
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "runs" / "width") in message and "python -m ablate +sweep=width" in message
    assert "did you mean" not in message  # no records at all: nothing to mean
    (tmp_path / "runs" / "depth").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"runs/depht does not exist; did you mean depth \(.*runs/depth\)\?"):
        collect.write_study_table(tmp_path / "runs" / "depht", tmp_path / "results" / "depht")


def test_wandb_source_feeds_the_same_table(monkeypatch, tmp_path):
    calls = {}

    def fake_records(study, entity, project):
        calls.update(study=study, entity=entity, project=project)
        return [rec(summary(), config(), record_dir="wandb:team/ablate/abc123")]

    monkeypatch.setattr(collect, "wandb_records", fake_records)
    assert (
        collect.main(
            ["depth", "--source", "wandb", "--entity", "team", "--project", "ablate", "--results", str(tmp_path)]
        )
        == 0
    )
    assert calls == {"study": "depth", "entity": "team", "project": "ablate"}
    runs = pd.read_csv(tmp_path / "depth" / "runs.csv")
    local = collect.table([rec(summary(), config(), record_dir="wandb:team/ablate/abc123")])
    assert list(runs.columns) == list(local.columns) and len(runs) == 1


def test_wandb_source_needs_a_project(tmp_path, capsys):
    assert collect.main(["depth", "--source", "wandb", "--results", str(tmp_path)]) == 2
    assert "--project" in capsys.readouterr().err


def test_wandb_source_refuses_the_local_folder_filters_rather_than_ignoring_them(tmp_path, capsys):
    args = ["depth", "--source", "wandb", "--project", "ablate", "--results", str(tmp_path), "--data", "ghim12"]
    assert collect.main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--where data=" in error
