"""One run end to end: the record it writes, determinism, resuming, divergence, and bad input before training."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ablate import record
from ablate import train as train_module
from ablate.errors import ConfigError
from ablate.train import run

TINY = ("data.train_size=320", "data.val_size=64", "data.test_size=64", "trainer.epochs=2", "logger=none")


@pytest.fixture
def run_here(compose, tmp_path):
    """Run a config in this process, as the Hydra entry point would, into tmp_path/record."""

    def _run(*overrides: str):
        cfg = compose(*TINY, f"paths.cache={tmp_path / 'cache'}", *overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        record_dir = tmp_path / "record"
        record_dir.mkdir(exist_ok=True)
        with open_dict(cfg):  # the task function never sees the hydra node
            del cfg["hydra"]
        return run(cfg, record_dir), record_dir

    _run.record_dir = tmp_path / "record"
    return _run


def test_two_epoch_run_writes_a_valid_record(run_here):
    summary, record_dir = run_here("seed=3")
    assert summary["status"] == "completed"
    on_disk = json.loads((record_dir / record.SUMMARY).read_text())
    assert on_disk["status"] == "completed" and on_disk["seed"] == 3
    for key in (
        "identity",
        "final",
        "best",
        "model",
        "lr",
        "wall_seconds",
        "images_per_s",
        "device",
        "git",
        "versions",
        "choices",
        "started_at",
        "finished_at",
    ):
        assert key in on_disk, key
    assert on_disk["model"] == {"name": "allconv6", "depth": 6, "params": 560468, "macs": 4871168, "total_stride": 32}
    assert on_disk["lr"] == {
        **{"base": 0.01, "factor": 1.0, "batch_scale": 1.0, "effective": 0.01},
        **{"batch_size": 64, "base_batch_size": 64, "rule": "none"},
    }
    assert set(on_disk["versions"]) >= {"python", "torch", "torchvision", "hydra-core"}
    lines = record.read_metrics(record_dir)
    assert [row["epoch"] for row in lines] == [1, 2]
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "test/acc",
        "lr",
        "epoch",
        "step",
        "seconds",
        "images_per_s",
    ):
        assert key in lines[0], key
    assert lines[-1]["step"] == 2 * (320 // 64)  # synthetic makes its own val split; drop_last
    assert on_disk["final"]["test/acc"] == lines[-1]["test/acc"]
    assert "model:" in (record_dir / record.CONFIG).read_text()
    assert not (record_dir / record.CHECKPOINT).exists()  # removed once complete


def test_same_config_and_seed_give_identical_metrics(run_here):
    first, _ = run_here("seed=1", "resume=false")
    second, _ = run_here("seed=1", "resume=false")
    assert first["final"] == second["final"]
    other, _ = run_here("seed=2", "resume=false")
    assert other["final"] != first["final"]


def test_completed_run_is_skipped_then_retrained_with_resume_false(run_here):
    run_here()
    again, _ = run_here()
    assert again["outcome"] == "skipped"
    fresh, _ = run_here("resume=false")
    assert fresh["outcome"] == "completed"


def test_resumed_run_matches_an_uninterrupted_one(run_here, monkeypatch):
    straight, _ = run_here("trainer.epochs=3", "resume=false")
    # Crash in the third epoch, after the second epoch's checkpoint, as a killed run would leave it.
    epochs_started = []
    real_epoch = train_module.train_epoch

    def crashing_epoch(*args):
        epochs_started.append(1)
        if len(epochs_started) == 3:
            raise RuntimeError("killed")
        return real_epoch(*args)

    monkeypatch.setattr(train_module, "train_epoch", crashing_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        run_here("trainer.epochs=3", "resume=false")
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    record_dir = run_here.record_dir
    assert json.loads((record_dir / record.SUMMARY).read_text())["status"] == "failed"
    assert (record_dir / record.CHECKPOINT).exists()
    resumed, _ = run_here("trainer.epochs=3")
    assert resumed["outcome"] == "completed"
    assert resumed["final"] == straight["final"]
    assert [row["epoch"] for row in record.read_metrics(record_dir)] == [1, 2, 3]


def test_diverging_run_says_diverged(run_here):
    summary, record_dir = run_here("optim.lr=1e6", "model.init=kaiming")
    assert summary["status"] == "diverged"
    assert "train/loss" in summary["error"]
    assert json.loads((record_dir / record.SUMMARY).read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("trainer.epochs=0",), "trainer.epochs=0"),
        (("batch.size=0",), "batch.size=0"),
        (("batch.size=100000",), "batch.size=100000"),
        (("data.resolution=16",), "data.resolution=16: allconv6 has total stride 32"),
        (("model.width_mult=0",), "model.width_mult=0"),
        (("optim.lr=-0.1",), "optim.lr"),
        (("trainer.device=tpu",), "trainer.device=tpu"),
    ],
)
def test_bad_input_fails_before_training_naming_the_key(run_here, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        run_here(*overrides)
    assert "\n" not in str(error.value)


def ablate(*args: str, cwd, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_command_line_run_files_its_record_under_its_identity(tmp_path):
    result = ablate(*TINY, f"paths.runs={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    (record_dir,) = (tmp_path / "runs" / "single").iterdir()
    summary = json.loads((record_dir / record.SUMMARY).read_text())
    assert summary["status"] == "completed" and record_dir.name == summary["identity"]


def test_command_line_bad_input_is_one_line_and_exit_2(tmp_path):
    result = ablate(*TINY, "trainer.epochs=-1", f"paths.runs={tmp_path / 'runs'}", cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "trainer.epochs=-1" in result.stderr and "positive" in result.stderr


def test_command_line_value_that_does_not_resolve_is_one_line_naming_the_key(tmp_path):
    result = ablate(*TINY, "optim.lr=${oops}", f"paths.runs={tmp_path / 'runs'}", cwd=ROOT)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "ablate: error: optim.lr: Interpolation key 'oops' not found; fix the interpolation in that value"
    )


def test_unknown_preset_is_hydras_one_error(tmp_path):
    result = ablate("model=allconv9", f"paths.runs={tmp_path / 'runs'}", cwd=ROOT)
    assert result.returncode != 0
    assert "allconv9" in result.stderr and "model" in result.stderr
