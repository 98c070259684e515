"""One run end to end: the record it writes, determinism, resuming, divergence, and bad input before training."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from torch import nn

from ablate import record
from ablate import train as train_module
from ablate.errors import ConfigError
from ablate.tracking import NullLogger
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
    assert on_disk["precision"] == record.precision("auto", on_disk["device"])  # fp32 on a CPU
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


@pytest.mark.parametrize(("every", "killed_in"), [(1, 3), (2, 2)])
def test_resumed_run_matches_an_uninterrupted_one(run_here, monkeypatch, every, killed_in):
    settings = ("trainer.epochs=3", f"trainer.eval_every_epochs={every}")
    straight, record_dir = run_here(*settings, "resume=false")
    straight_rows = record.read_metrics(record_dir)
    # Crash in epoch `killed_in`, after the previous epoch's checkpoint (evaluated or not), as a killed run leaves it.
    epochs_started = []
    real_steps = train_module.train_steps

    def crashing_steps(*args):
        epochs_started.append(1)
        if len(epochs_started) == killed_in:
            raise RuntimeError("killed")
        return real_steps(*args)

    monkeypatch.setattr(train_module, "train_steps", crashing_steps)
    with pytest.raises(RuntimeError, match="killed"):
        run_here(*settings, "resume=false")
    monkeypatch.setattr(train_module, "train_steps", real_steps)
    assert json.loads((record_dir / record.SUMMARY).read_text())["status"] == "failed"
    assert (record_dir / record.CHECKPOINT).exists()
    resumed, _ = run_here(*settings)
    assert resumed["outcome"] == "completed"
    assert resumed["final"] == straight["final"]
    assert strip_times(record.read_metrics(record_dir)) == strip_times(straight_rows)
    assert [row["epoch"] for row in straight_rows] == [1, 2, 3]


def test_a_stopped_then_continued_run_is_bit_identical_to_one_trained_in_one_go(run_here):
    """Successive halving's contract: a run paused at a rung and continued later is the same run."""
    settings = ("trainer.epochs=3", "trainer.checkpoint=false")
    straight, record_dir = run_here(*settings, "resume=false")
    straight_rows = record.read_metrics(record_dir)
    stopped, _ = run_here(*settings, "resume=false", "++trainer.stop_after_epochs=1")
    assert stopped["status"] == "stopped" and stopped["epochs_completed"] == 1
    assert (record_dir / record.CHECKPOINT).exists(), "a stopped run keeps its checkpoint even with checkpoint=false"
    assert "val/acc" in record.read_metrics(record_dir)[-1], "the rung's epoch is evaluated, for the ranking"
    again, _ = run_here(*settings, "++trainer.stop_after_epochs=1")
    assert again["outcome"] == "skipped", "a rerun of the same rung does not train again"
    continued, _ = run_here(*settings)
    assert continued["outcome"] == "completed" and continued["identity"] == straight["identity"]
    assert continued["final"] == straight["final"]
    assert strip_times(record.read_metrics(record_dir)) == strip_times(straight_rows)
    assert not (record_dir / record.CHECKPOINT).exists()


def test_stop_after_epochs_must_fall_inside_the_run(run_here):
    with pytest.raises(ConfigError, match=r"trainer.stop_after_epochs=3: must be null or an integer in \[1"):
        run_here("trainer.epochs=3", "++trainer.stop_after_epochs=3")


def test_trainer_updates_ends_the_run_inside_its_last_epoch_as_caffes_max_iter(run_here):
    # 320 images at batch 64: 5 updates an epoch; 12 updates = two whole epochs and 2 updates of a third.
    summary, record_dir = run_here("trainer.updates=12")
    rows = record.read_metrics(record_dir)
    assert summary["status"] == "completed" and summary["steps"] == 12 and summary["total_steps"] == 12
    assert [row["step"] for row in rows] == [5, 10, 12] and "test/acc" in rows[-1]


def test_a_key_added_at_its_old_behaviour_keeps_every_earlier_records_identity(compose):
    cfg = compose()
    before = record.identity(cfg)
    with open_dict(cfg):
        # A record filed before these keys existed, with the one they replaced.
        del cfg.trainer["updates"]
        for key in ("momentum_form", "bias_lr_mult", "bias_decay", "bias_layers", "bn_decay"):
            del cfg.optim[key]
        cfg.optim.decay_bn_and_bias = True
        for key in ("bn_momentum", "bn_average", "pretrained"):
            del cfg.model[key]
        del cfg.data["eval_resize"]
        del cfg.data["resize_short_side"]
        del cfg.batch["hold"]
    assert record.identity(cfg) == before
    assert record.identity(compose("batch.hold=updates")) != before
    assert record.identity(compose("trainer.updates=100")) != before


def test_batch_hold_updates_gives_every_batch_size_the_updates_of_trainer_epochs_at_the_base_size(run_here):
    # 320 images: 5 updates a pass at the base size 64, so 2 epochs are 10 updates at any batch size. Batch 128 makes
    # 2 a pass and needs 5 passes; it is evaluated where the clock's epochs end (updates 5 and 10), not every pass.
    summary, record_dir = run_here("batch.hold=updates", "batch.size=128")
    rows = record.read_metrics(record_dir)
    assert summary["status"] == "completed" and summary["steps"] == 10
    assert [row["step"] for row in rows] == [2, 4, 6, 8, 10]
    assert [row["step"] for row in rows if "val/acc" in row] == [6, 10]
    # Batch 32 makes 10 updates a pass: the same 10 updates are one pass, evaluated after it.
    summary, record_dir = run_here("batch.hold=updates", "batch.size=32")
    assert summary["steps"] == 10 and [row["step"] for row in record.read_metrics(record_dir)] == [10]
    # Held as epochs (the default), batch 128 makes its own 2 passes: 4 updates.
    summary, _ = run_here("batch.size=128")
    assert summary["steps"] == 4


def test_batch_hold_updates_counts_the_warm_up_in_base_size_epochs(run_here):
    # A 1-epoch warm-up is 5 updates at the base size: batch 128 (2 updates a pass) warms up over 5 updates too.
    _, record_dir = run_here("batch.hold=updates", "batch.size=128", "sched=fixed", "sched.warmup_epochs=1")
    lrs = [row["lr"] for row in record.read_metrics(record_dir)]
    assert lrs[0] < lrs[1] < lrs[2] == lrs[-1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["batch.hold=iterations"], r"batch.hold=iterations: unknown; use batch.hold=epochs or batch.hold=updates"),
        (["batch.hold=updates", "++trainer.stop_after_epochs=1"], r"trainer.stop_after_epochs=1: .*batch.hold=epochs"),
        (["batch.hold=updates", "batch.base_size=1000"], r"batch.base_size=1000: batch.hold=updates counts epochs"),
    ],
)
def test_bad_batch_hold_settings_fail_before_training(run_here, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_here(*overrides)


@pytest.mark.parametrize("value", ["0", "-5", "1.5"])
def test_trainer_updates_must_be_a_positive_integer(run_here, value):
    with pytest.raises(ConfigError, match=rf"trainer.updates={value}: must be a positive integer or null"):
        run_here(f"trainer.updates={value}")


@pytest.mark.parametrize(("typed", "read"), [("-1", "-1"), ("1.5", "1.5"), ("null", "None"), ("true", "True")])
def test_the_seed_must_be_an_integer_from_zero(run_here, typed, read):
    with pytest.raises(ConfigError, match=rf"seed={read}: must be an integer >= 0"):
        run_here(f"seed={typed}")


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


def test_every_epoch_gets_a_row_and_evaluated_epochs_add_val_and_test(run_here, monkeypatch):
    logged = []
    monkeypatch.setattr(NullLogger, "log", lambda self, metrics, step: logged.append((step, metrics)))
    summary, record_dir = run_here("trainer.epochs=3", "trainer.eval_every_epochs=2")
    rows = record.read_metrics(record_dir)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert {"train/loss", "train/acc", "lr", "epoch", "step", "seconds", "images_per_s"} <= set(row)
    # Evaluated every 2 epochs and after the last.
    assert [("val/acc" in row, "test/acc" in row) for row in rows] == [(False, False), (True, True), (True, True)]
    assert [step for step, _ in logged] == [1, 2, 3] and [metrics for _, metrics in logged] == rows
    assert summary["final"]["test/acc"] == rows[-1]["test/acc"] and summary["best"]["epoch"] in (2, 3)


def test_the_identity_holds_the_precision_amp_resolves_to(compose, monkeypatch):
    def identity(*overrides):
        return record.identity(compose(*TINY, *overrides))

    fp32, bf16 = identity("trainer.amp=false"), identity("trainer.amp=true")
    assert fp32 != bf16
    assert identity("trainer.amp=false") == fp32  # stable between reruns
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert identity() == identity("trainer.amp=auto", "trainer.device=cpu") == fp32
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # the same config on a GPU machine trains in bf16
    assert identity() == identity("trainer.device=cuda") == bf16
    assert identity("trainer.device=cpu") == fp32


def test_auto_trains_in_channels_last_on_cpu_and_the_memory_format_is_not_part_of_the_identity(compose):
    from ablate.loop import build

    def conv_weight(setup):
        return next(module.weight for module in setup.model.modules() if isinstance(module, nn.Conv2d))

    auto = build(compose(*TINY, "trainer.device=cpu"))
    assert auto.channels_last and conv_weight(auto).is_contiguous(memory_format=torch.channels_last)
    off = build(compose(*TINY, "trainer.device=cpu", "trainer.channels_last=false"))
    assert not off.channels_last and conv_weight(off).is_contiguous()
    # A layout changes the speed, not the experiment: records made in either serve the other.
    assert record.identity(compose(*TINY, "trainer.channels_last=false")) == record.identity(compose(*TINY))


def test_a_bf16_run_is_not_the_fp32_record_and_says_its_precision(run_here):
    fp32, _ = run_here("trainer.epochs=1", "sched.warmup_epochs=0", "trainer.amp=false")
    bf16, record_dir = run_here("trainer.epochs=1", "sched.warmup_epochs=0", "trainer.amp=true")
    assert bf16["outcome"] == "completed"  # not skipped as the completed fp32 run
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert json.loads((record_dir / record.SUMMARY).read_text())["precision"] == "bf16"
    assert fp32["identity"] != bf16["identity"]


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
    (record_dir,) = [p for p in (tmp_path / "runs" / "single" / "synthetic" / "default").iterdir() if p.is_dir()]
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


FAMILY = '''
"""tinynet: one strided conv, pooling and a classifier (a family added by the recipe in CONTRIBUTING.md)."""
from torch import nn


def tinynet(*, name: str, channels: int, stride: int, num_classes: int, in_channels: int = 3) -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, stride, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )
    model.name, model.depth, model.total_stride = name, 2, stride  # ablate.models.CONTRACT
    return model
'''
PRESET = """# tinynet8 — the recipe's example family. Run: python -m ablate model=tinynet8
_target_: tinyfamily.tinynet
_partial_: true  # completed with num_classes and in_channels from the data
name: tinynet8
channels: 8
stride: 4
"""


def test_a_new_model_family_is_one_python_file_and_its_preset_yamls(run_here, tmp_path, monkeypatch):
    # The recipe: a builder in an importable module + conf/model/<preset>.yaml on Hydra's search path.
    (tmp_path / "tinyfamily.py").write_text(FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tinynet8.yaml").write_text(PRESET)
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    summary, record_dir = run_here(searchpath, "model=tinynet8", "trainer.epochs=1", "sched.warmup_epochs=0")
    assert summary["status"] == "completed" and summary["choices"]["model"] == "tinynet8"
    params = (3 * 9 + 1) * 8 + 8 * 20 + 20  # conv + FC on the embedded dataset's 20 classes
    macs = 8 * 8 * 8 * 3 * 9 + 8 * 20  # 32 px at stride 4 is 8x8 outputs
    assert summary["model"] == {"name": "tinynet8", "depth": 2, "params": params, "macs": macs, "total_stride": 4}
    assert [row["epoch"] for row in record.read_metrics(record_dir)] == [1]
    # The resolution check reads the family's stride too.
    with pytest.raises(ConfigError, match=r"^data\.resolution=2: tinynet8 has total stride 4"):
        run_here(searchpath, "model=tinynet8", "data.resolution=2")


def test_a_plugged_in_model_without_the_contract_is_one_line_naming_the_attribute(run_here, tmp_path, monkeypatch):
    # A module name of its own: Python keeps the first test's tinyfamily imported.
    (tmp_path / "nocontract.py").write_text(FAMILY.replace("model.name, model.depth, model.total_stride", "_, _, _"))
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = ("model._target_=nocontract.tinynet", "~model.layers", "~model.batch_norm", "~model.dropout")
    overrides += ("~model.width_mult", "~model.init", "~model.bn_momentum", "~model.bn_average")
    overrides += ("+model.channels=8", "+model.stride=4")
    expected = r"^model\._target_=nocontract\.tinynet: the built model has no valid \.name \(str: "
    with pytest.raises(ConfigError, match=expected) as error:
        run_here(*overrides)
    assert "\n" not in str(error.value) and "set model.name in the builder" in str(error.value)
