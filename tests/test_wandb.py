"""The W&B mirror: offline runs read back with wandb's own tooling, never fatal, and readable back as records."""

import importlib.util
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from ablate.tracking import wandb as wandb_logging
from ablate.tracking import wandb_sync
from ablate.tracking.wandb import WandbLogger, resolve_mode
from ablate.tracking.wandb_source import records_from_wandb

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3


def isolate_wandb(monkeypatch, root: Path) -> None:
    """Keep W&B off the network and out of the home folder."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("NETRC", str(root / "no-netrc"))
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(root / name.lower()))


def make_run(runs_root: Path, model: str, depth: int, seed: int) -> dict:
    """A run dict as the loop builds it, for a depth-study job."""
    identity = f"{depth:02d}{seed:02d}" + "c0ffee12"
    config = {
        "seed": seed,
        "model": {
            "_target_": "ablate.models.allconv.build",
            "_partial_": True,
            "channels": [64, 64, 128],
            "dropout": None,
        },
        "optim": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.005},
        "batch": {"size": 64, "rule": "none", "base_size": 64},
        "trainer": {"epochs": EPOCHS, "device": "cpu"},
        "study": {"name": "depth", "scientific": ["model"], "nuisance": ["optim.lr"], "seeds": [1, 2]},
    }
    derived = {
        "lr_effective": 0.01,
        "depth": depth,
        "params": 1000 * depth,
        "macs": 10**6 * depth,
        "identity": identity,
        "choices": {"model": model, "optim": "sgd"},
    }
    return {
        "identity": identity,
        "name": f"depth/{model}/lr0.01/s{seed}",
        "group": "depth",
        "job_type": "model",
        "tags": ["depth", model],
        "config": {**config, "derived": derived},
        "record_dir": str(runs_root / "depth" / identity),
    }


def epoch_metrics(epoch: int, seed: int) -> dict:
    return {
        "train/loss": 2.0 / epoch + seed,
        "train/acc": 0.2 * epoch,
        "val/loss": 2.5 / epoch,
        "val/acc": 0.1 * epoch + 0.01 * seed,
        "lr": 0.01 * 0.1 ** (epoch // 2),
        "seconds": 1.5 * epoch,
    }


def make_summary(run: dict, status: str) -> dict:
    """A summary.json in the loop's schema."""
    final = epoch_metrics(EPOCHS, run["config"]["seed"])
    return {
        "identity": run["identity"],
        "study": "depth",
        "status": status,
        "error": None if status == "completed" else "loss is nan at epoch 3",
        "seed": run["config"]["seed"],
        "epochs_completed": EPOCHS,
        "steps": 420,
        "final": {key: final[key] for key in ("train/loss", "train/acc", "val/loss", "val/acc")}
        | {"test/loss": math.nan if status == "diverged" else 0.9, "test/acc": 0.31},
        "best": {"val/acc": final["val/acc"], "test/acc": 0.31, "epoch": EPOCHS},
        "model": {
            "name": run["config"]["derived"]["choices"]["model"],
            "depth": run["config"]["derived"]["depth"],
            "params": 6000,
            "macs": 6 * 10**6,
            "total_stride": 32,
        },
        "lr": {"base": 0.01, "effective": 0.01, "batch_size": 64, "base_batch_size": 64, "rule": "none"},
        "wall_seconds": 12.5,
        "images_per_s": 700.0,
        "device": "cpu",
        "threads": 1,
        "choices": {"model": run["config"]["derived"]["choices"]["model"], "optim": "sgd", "hydra/launcher": "basic"},
        "git": {"commit": "0123abc", "dirty": False},
        "versions": {"torch": "2.5.0", "wandb": "0.31.0"},
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:12+00:00",
    }


def leet(run_dir: Path) -> dict:
    """What wandb's own reader finds in an offline run: its run record, history rows, final summary and exit code."""
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = {}
    for record in records:
        if record["type"] == "summary":
            summary.update(record["summary"].get("update", {}))
    return {
        "run": next(record["run"] for record in records if record["type"] == "run"),
        "history": [record["history"]["item"] for record in records if record["type"] == "history"],
        "metrics": [record["metric"] for record in records if record["type"] == "metric"],
        "summary": summary,
        "exit_code": next(record["exit"].get("exit_code", 0) for record in records if record["type"] == "exit"),
    }


def fresh_wandb_session() -> None:
    """End W&B's session: its settings read the environment once per session, at its first run."""
    import wandb

    wandb.teardown()


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Two jobs of a depth multirun logged offline in this one process: the first completes, the second diverges."""
    root = tmp_path_factory.mktemp("wandb")
    jobs = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_wandb(monkeypatch, root)
        fresh_wandb_session()
        for seed, status in ((1, "completed"), (2, "diverged")):
            run = make_run(root / "runs", "allconv7_1", depth=7, seed=seed)
            Path(run["record_dir"]).mkdir(parents=True)
            logger = WandbLogger(run=run, mode="auto")
            assert logger.wandb_run is not None
            for epoch in range(1, EPOCHS + 1):
                logger.log(epoch_metrics(epoch, seed), step=epoch)
            summary = make_summary(run, status)
            logger.finish(summary)
            run_dirs = list(Path(run["record_dir"]).glob("wandb/offline-run-*"))
            jobs.append({"run": run, "summary": summary, "run_dirs": run_dirs, "leet": leet(run_dirs[0])})
    return {"root": root, "jobs": jobs}


def test_offline_run_holds_name_group_job_type_tags_and_resolved_config(logged):
    job = logged["jobs"][0]
    assert len(job["run_dirs"]) == 1, "W&B files go inside the run's record folder"
    run_record = job["leet"]["run"]
    assert run_record["display_name"] == "depth/allconv7_1/lr0.01/s1"
    assert run_record["run_group"] == "depth"
    assert run_record["job_type"] == "model"
    assert run_record["tags"] == ["depth", "allconv7_1"]
    config = run_record["config"]["update"]
    assert config["optim"] == job["run"]["config"]["optim"]
    assert config["model"] == job["run"]["config"]["model"]
    # the labels the dashboards group by: the scientific value (the model choice) and the nuisance value (the LR)
    assert config["derived"] == job["run"]["config"]["derived"] | {"scientific": "allconv7_1", "nuisance": "0.01"}


def test_offline_run_holds_every_epoch_with_epoch_as_step(logged):
    job = logged["jobs"][0]
    rows = job["leet"]["history"]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    for row, epoch in zip(rows, range(1, EPOCHS + 1)):
        expected = epoch_metrics(epoch, seed=1)
        assert {key: row[key] for key in expected} == pytest.approx(expected)
    assert any(
        metric.get("glob_name") == "*" and metric.get("step_metric") == "epoch" for metric in job["leet"]["metrics"]
    )


def test_offline_run_holds_the_record_summary_flattened_and_exact(logged):
    job = logged["jobs"][0]
    summary = job["leet"]["summary"]
    assert summary["status"] == "completed"
    assert summary["best/val/acc"] == pytest.approx(job["summary"]["best"]["val/acc"])
    assert summary["model/depth"] == 7
    assert summary["lr/effective"] == 0.01
    assert summary["choices/hydra/launcher"] == "basic"
    assert json.loads(summary["summary_json"]) == job["summary"]
    assert job["leet"]["exit_code"] == 0


def test_two_jobs_in_one_process_are_two_wandb_runs_and_a_diverged_one_exits_1(logged):
    first, second = logged["jobs"]
    assert first["leet"]["run"]["run_id"] != second["leet"]["run"]["run_id"]
    assert second["leet"]["run"]["display_name"] == "depth/allconv7_1/lr0.01/s2"
    assert [row["train/loss"] for row in second["leet"]["history"]] == pytest.approx(
        [2.0 / epoch + 2 for epoch in (1, 2, 3)]
    )
    assert second["leet"]["summary"]["status"] == "diverged"
    assert second["leet"]["exit_code"] == 1


def test_wandb_source_gives_the_same_records_and_table_as_local_folders(logged, tmp_path):
    from ablate import collect

    class ApiRun:  # the public API's Run fields, filled from what wandb's reader found in the offline run
        def __init__(self, read):
            self.config = {key: value for key, value in read["run"]["config"]["update"].items() if key != "_wandb"}
            self.summary = read["summary"]
            self.name, self.group, self.id = (
                read["run"]["display_name"],
                read["run"]["run_group"],
                read["run"]["run_id"],
            )
            self.state = "finished" if read["exit_code"] == 0 else "failed"
            self.tags = read["run"]["tags"]

    for job in logged["jobs"]:  # the record folders as the loop writes them
        record_dir = tmp_path / "depth" / job["run"]["identity"]
        record_dir.mkdir(parents=True)
        resolved = {key: value for key, value in job["run"]["config"].items() if key != "derived"}
        (record_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        (record_dir / "summary.json").write_text(json.dumps(job["summary"]))
    local = collect.local_records(tmp_path / "depth")

    from_wandb = records_from_wandb([ApiRun(job["leet"]) for job in logged["jobs"]])

    assert [record["record_dir"] for record in from_wandb] == [None, None]
    # through JSON, where the diverged run's NaN test/loss reads back as the same token on both sides
    without_dir = lambda records: json.dumps([{**record, "record_dir": None} for record in records], sort_keys=True)  # noqa: E731
    assert without_dir(from_wandb) == without_dir(local)
    tables = [collect.table(records).drop(columns="record_dir") for records in (local, from_wandb)]
    assert tables[0].equals(tables[1])
    assert list(tables[1]["status"]) == ["completed", "diverged"]


def test_dashboard_axes_name_keys_the_logger_writes(logged):
    spec = importlib.util.spec_from_file_location("wandb_dashboard", REPO / "scripts" / "wandb_dashboard.py")
    dashboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dashboard)
    read = logged["jobs"][0]["leet"]
    config, summary, history_keys = read["run"]["config"]["update"], read["summary"], set(read["history"][0])
    for template in dashboard.TEMPLATES:
        report = dashboard.report_spec(dashboard.build_report("depth", "E", "P", template, runset_project=False))
        for block in report["spec"]["blocks"]:
            if block["type"] != "panel-grid":
                continue
            for group_key in block["metadata"]["runSets"][0]["grouping"]:
                top, _, rest = group_key["name"].partition(".value.")
                assert rest in config[top], group_key
            for panel in block["metadata"]["panelBankSectionConfig"]["panels"]:
                panel_config = panel["config"]
                axes = [panel_config.get("xAxis"), panel_config.get("yAxis"), *panel_config.get("metrics", [])]
                for axis in filter(None, axes):
                    if axis.startswith("config:"):
                        top, _, rest = axis.removeprefix("config:").partition(".value.")
                        assert rest in config[top], axis
                    elif axis.startswith(("summary:", "summary_metrics.")):
                        assert axis.split(":", 1)[-1].removeprefix("summary_metrics.") in summary, axis
                    else:
                        assert axis in history_keys, axis


def test_sync_finds_a_studys_offline_runs_through_its_records(logged, capfd):
    runs_root = logged["root"] / "runs"
    for job in logged["jobs"]:  # only folders holding a record count
        (Path(job["run"]["record_dir"]) / "config.yaml").write_text("seed: 1\n")
    found = wandb_sync.offline_run_dirs("depth", runs_root)
    assert found == sorted(run_dir for job in logged["jobs"] for run_dir in job["run_dirs"])
    assert wandb_sync.offline_run_dirs("width", runs_root) == []

    assert wandb_sync.main(["depth", "--root", str(runs_root), "--dry-run"]) == 0
    assert "Would sync 2 run(s)" in capfd.readouterr().err


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.setattr(wandb_logging, "_online_failure", None)
    return tmp_path


def broken_by_unwritable_dir(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    return {"dir": str(tmp_path / "a-file" / "wandb")}, "set-up failed"


def broken_by_bogus_mode(tmp_path, monkeypatch):
    return {"mode": "ofline"}, "logger.mode=ofline"


def broken_by_init_raising(tmp_path, monkeypatch):
    import wandb

    def init(**kwargs):
        raise RuntimeError("wandb-core service crashed")

    monkeypatch.setattr(wandb, "init", init)
    return {}, "wandb-core service crashed"


def broken_by_import(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    return {}, "import of wandb halted"


@pytest.mark.parametrize(
    "break_wandb", [broken_by_unwritable_dir, broken_by_bogus_mode, broken_by_init_raising, broken_by_import]
)
def test_broken_wandb_set_up_is_one_warning_and_the_run_goes_on(break_wandb, wandb_env, monkeypatch, caplog):
    kwargs, cause = break_wandb(wandb_env, monkeypatch)
    run = make_run(wandb_env / "runs", "allconv6", depth=6, seed=1)
    with caplog.at_level(logging.WARNING, logger="ablate.tracking.wandb"):
        logger = WandbLogger(run=run, **{"mode": "offline", **kwargs})
        logger.log(epoch_metrics(1, seed=1), step=1)
        logger.finish(make_summary(run, "completed"))
    assert logger.wandb_run is None
    [warning] = [record for record in caplog.records if record.name == "ablate.tracking.wandb"]
    assert cause in warning.getMessage()
    assert "\n" not in warning.getMessage()


def test_a_wandb_crash_while_logging_turns_the_logger_off(wandb_env, monkeypatch, caplog):
    run = make_run(wandb_env / "runs", "allconv6", depth=6, seed=1)
    logger = WandbLogger(run=run, mode="offline", dir=str(wandb_env / "w"))
    assert logger.wandb_run is not None

    def log(*args, **kwargs):
        raise ConnectionError("service went away")

    monkeypatch.setattr(logger.wandb_run, "log", log)
    with caplog.at_level(logging.WARNING, logger="ablate.tracking.wandb"):
        logger.log(epoch_metrics(1, seed=1), step=1)
        logger.log(epoch_metrics(2, seed=1), step=2)
        logger.finish(make_summary(run, "completed"))
    assert logger.wandb_run is None
    assert [
        "log failed" in record.getMessage() for record in caplog.records if record.name == "ablate.tracking.wandb"
    ] == [True]
    # logger.dir puts W&B's files in <dir>/<study>/<identity>, where wandb_sync --wandb-dir finds them
    assert list((wandb_env / "w" / "depth" / run["identity"]).glob("wandb/offline-run-*"))


def test_unreachable_server_falls_back_to_offline_within_the_init_timeout(wandb_env, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: refused, never the internet
    run = make_run(wandb_env / "runs", "allconv6", depth=6, seed=1)
    fresh_wandb_session()
    try:
        with caplog.at_level(logging.WARNING, logger="ablate.tracking.wandb"):
            logger = WandbLogger(run=run, mode="auto", init_timeout_s=2)
            logger.finish(make_summary(run, "completed"))
    finally:
        fresh_wandb_session()  # later tests must not inherit this session's server and key
    [warning] = [record for record in caplog.records if record.name == "ablate.tracking.wandb"]
    assert "logging offline" in warning.getMessage()
    assert list(Path(run["record_dir"]).glob("wandb/offline-run-*"))
    assert wandb_logging._online_failure is not None, "later jobs of the multirun skip the wait"


def test_auto_mode_is_online_only_with_credentials(wandb_env, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("disabled") == "disabled"

    (wandb_env / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(wandb_env / "netrc"))
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # the netrc entry is for another host
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment still wins, as in plain W&B
    assert resolve_mode("auto") == "disabled"
    assert resolve_mode("offline") == "offline"


def test_wandb_source_keeps_the_last_finished_run_of_an_identity_and_reads_unfinished_ones(caplog):
    class ApiRun:
        def __init__(self, name, summary, state="finished", identity="abc"):
            self.name, self.group, self.id, self.state, self.tags = name, "depth", name, state, []
            self.config = {"seed": 1, "derived": {"identity": identity, "choices": {"model": "allconv6"}}}
            self.summary = {} if summary is None else {"summary_json": json.dumps(summary), "status": summary["status"]}

    first = {"identity": "abc", "status": "failed", "finished_at": "2026-01-01T00:00:00"}
    resumed = {"identity": "abc", "status": "completed", "finished_at": "2026-01-02T00:00:00"}
    with caplog.at_level(logging.WARNING):
        records = records_from_wandb(
            [
                ApiRun("resumed", resumed),
                ApiRun("first", first),
                ApiRun("killed-then-resumed", None, "crashed"),
                ApiRun("killed", None, "crashed", identity="def"),
                ApiRun("now", None, "running", identity="0a1"),
            ]
        )
    assert [record["summary"] for record in records] == [
        resumed,
        {
            "identity": "def",
            "study": "depth",
            "status": "failed",
            "error": "the W&B run crashed before the run finished",
            "seed": 1,
            "choices": {"model": "allconv6"},
            "finished_at": None,
        },
        {
            "identity": "0a1",
            "study": "depth",
            "status": "running",
            "error": None,
            "seed": 1,
            "choices": {"model": "allconv6"},
            "finished_at": None,
        },
    ]
    assert all(record["config"] == {"seed": 1} and record["record_dir"] is None for record in records)
    assert "killed (crashed) has no summary" in caplog.text


def test_conf_logger_wandb_builds_the_logger_the_loop_completes(wandb_env, monkeypatch):
    from hydra.utils import instantiate

    conf = OmegaConf.load(REPO / "ablate" / "conf" / "logger" / "wandb.yaml")
    assert (conf.mode, conf.project, conf.entity, conf.dir) == ("auto", "ablate", None, None)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = make_run(wandb_env / "runs", "allconv6", depth=6, seed=1)
    logger = instantiate(conf, tags=["extra"])(run=run)
    assert isinstance(logger, WandbLogger)
    assert logger.wandb_run is None, "WANDB_MODE=disabled turns logging off without starting W&B"
    logger.log(epoch_metrics(1, seed=1), step=1)
    logger.finish(make_summary(run, "completed"))
    assert not Path(run["record_dir"]).exists()


@pytest.mark.parametrize("wandb_works", [True, False], ids=["offline", "unwritable-dir"])
def test_the_loop_mirrors_its_record_and_goes_on_when_wandb_is_broken(wandb_works, compose, wandb_env, caplog):
    from hydra.core.hydra_config import HydraConfig

    from ablate import record
    from ablate.train import run

    (wandb_env / "a-file").write_text("")
    broken = [] if wandb_works else [f"logger.dir={wandb_env / 'a-file' / 'wandb'}"]
    tiny = ["data.train_size=320", "data.val_size=64", "data.test_size=64", "trainer.epochs=2", "trainer.threads=1"]
    cfg = compose(
        *tiny,
        "logger=wandb",
        "logger.mode=offline",
        *broken,
        f"paths.cache={wandb_env / 'cache'}",
        return_hydra_config=True,
    )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    record_dir = wandb_env / "record"
    record_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="ablate.tracking.wandb"):
        run(cfg, record_dir)

    summary = json.loads((record_dir / record.SUMMARY).read_text())
    assert summary["status"] == "completed"
    warnings = [r.getMessage() for r in caplog.records if r.name == "ablate.tracking.wandb"]
    run_dirs = list(record_dir.glob("wandb/offline-run-*"))
    if not wandb_works:
        assert len(warnings) == 1 and "set-up failed" in warnings[0]
        assert run_dirs == []
        return
    assert warnings == []
    read = leet(run_dirs[0])
    metrics = record.read_metrics(record_dir)
    assert [row["epoch"] for row in read["history"]] == [row["epoch"] for row in metrics] == [1, 2]
    assert [row["val/acc"] for row in read["history"]] == [row["val/acc"] for row in metrics]
    assert json.loads(read["summary"]["summary_json"]) == summary
    assert read["run"]["config"]["update"]["derived"]["identity"] == summary["identity"]


def test_dashboard_labels_name_the_scientific_and_nuisance_values_as_the_run_name_does():
    from ablate.tracking.wandb import wandb_config

    def labels(study, derived, **config):
        derived = wandb_config({"config": {"study": study, "derived": derived, **config}})["derived"]
        return derived["scientific"], derived["nuisance"]

    depth = {"scientific": ["model"], "nuisance": ["optim.lr"]}
    model = {"_target_": "ablate.models.allconv.allconv", "name": "allconv7_1"}
    assert labels(depth, {"choices": {"model": "allconv7_1"}}, model=model, optim={"lr": 0.01}) == (
        "allconv7_1",
        "0.01",
    )
    assert labels(depth, {}, model=model, optim={"lr": 0.01}) == ("allconv7_1", "0.01"), "the option file's name"
    batch = {"scientific": ["batch.size", "batch.rule"], "nuisance": []}
    assert labels(batch, {}, batch={"size": 256, "rule": "linear"}) == ("256+linear", "")
    optimizer = {"scientific": ["optim", "optim.momentum"], "nuisance": ["lr_factor"]}
    assert labels(optimizer, {"choices": {"optim": "sgd"}}, optim={"momentum": 0.9}, lr_factor=3) == ("sgd+0.9", "3")
    assert labels(depth, {"scientific": "set by the loop", "nuisance": "too"}, model=model) == (
        "set by the loop",
        "too",
    )


def test_reading_a_study_back_without_access_is_a_one_line_config_error(monkeypatch):
    import wandb

    from ablate.errors import ConfigError
    from ablate.tracking.wandb_source import fetch_study_runs

    def api(**kwargs):
        raise wandb.errors.UsageError("No API key configured.\nUse `wandb login` to log in.")

    monkeypatch.setattr(wandb, "Api", api)
    with pytest.raises(
        ConfigError, match=r"^--source=wandb: reading me/ablate failed \(No API key configured\. Use"
    ) as error:
        fetch_study_runs("me", "ablate", "depth")
    assert "\n" not in str(error.value)
