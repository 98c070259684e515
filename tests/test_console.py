"""What `python -m ablate` prints: a line per epoch and a last line, at most one W&B line, Ctrl-C and bad input as
one line without a traceback, typos answered with the key that exists (issue 15, sections 1 and 5)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from ablate.__main__ import expand_home, flags_first
from ablate.hints import closest

# No warm-up: a test's one- or two-epoch run would be all warm-up (sched.warmup_epochs=1 is the default).
TINY = ("data.train_size=320", "data.val_size=64", "data.test_size=64", "batch.size=32", "sched.warmup_epochs=0")


def environment(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("HYDRA_FULL_ERROR", None)  # as a user runs it
    return env


def ablate(tmp_path, *args: str, env=None, timeout=900) -> subprocess.CompletedProcess:
    paths = (f"paths.runs={tmp_path / 'runs'}", f"paths.cache={tmp_path / 'cache'}")
    return subprocess.run(
        [sys.executable, "-m", "ablate", *paths, *args],  # a test's own paths.runs comes later and wins
        cwd=tmp_path,
        env=env or environment(WANDB_MODE="disabled"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_run_prints_a_line_per_epoch_a_last_line_and_at_most_one_wandb_line(tmp_path):
    env = environment(WANDB_DIR=str(tmp_path / "wandb"))
    env.pop("WANDB_MODE", None)
    result = ablate(tmp_path, *TINY, "trainer.epochs=2", "logger.mode=offline", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    epochs = [line for line in out.splitlines() if re.search(r"\bepoch \d/2\b", line)]
    assert len(epochs) == 2
    for field in ("train loss", "acc", "val acc", "top-5", "lr ", "img/s", "ETA"):
        assert field in epochs[0], field
    last = out.strip().splitlines()[-1]
    assert re.search(r"single/allconv6/s0 completed: test acc [\d.]+% \(top-5 [\d.]+%\) in \d+ s; record ", last)
    record_dir = tmp_path / last.rsplit("record ", 1)[1]
    assert (record_dir / "summary.json").is_file()
    assert len([line for line in out.splitlines() if "wandb" in line.lower() or "W&B" in line]) <= 1
    # Not a terminal: no progress bar in a log or a pipe.
    assert "\r" not in out and "it/s" not in out and "step/s" not in out
    # The human index of the run folders: name -> hash folder.
    index = (record_dir.parent / "index.csv").read_text()
    assert "single/allconv6/s0,completed" in index and record_dir.name in index


def test_ctrl_c_is_one_line_without_a_traceback(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "ablate", *TINY, "trainer.epochs=200", "logger=none", f"paths.runs={tmp_path}/runs"],
        cwd=tmp_path,
        env=environment(WANDB_MODE="disabled"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        # Interrupt once training runs (the record's metrics exist), as a user would after watching a few epochs.
        while time.monotonic() < deadline and not list((tmp_path / "runs").glob("**/metrics.jsonl")):
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    # The run's own line (ablate.train: its epoch, the checkpoint kept, how to resume), and nothing else.
    assert len(lines) == 1 and lines[0].startswith("ablate: single/allconv6/s0 interrupted by SIGINT after epoch")
    assert "resume" in lines[0]
    assert process.returncode == 130


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.learning_rate=0.1"], "optim.learning_rate: no such key; did you mean optim.lr? (pass optim.lr=0.1)"),
        (["trainer.epoch=3"], "trainer.epoch: no such key; did you mean trainer.epochs? (pass trainer.epochs=3)"),
        (["optim=adam", "optim.betas0=0.9"], "optim.betas0: no such key; did you mean optim.betas?"),
        (["model=allconv9"], "model=allconv9: no such option; did you mean model=allconv6? options in conf/model/:"),
        (["optim.lr=abc"], "optim.lr=abc: must be a number, not text; e.g. optim.lr=0.01"),
        (["seed=abc"], "seed=abc: must be a number, not text; e.g. seed=0"),
        (["batch.hold=bogus"], "batch.hold=bogus: unknown; use batch.hold=epochs or batch.hold=updates"),
        # Under budget=smoke study.halving is null: the nearest key is the node itself, which is no answer.
        (
            ["+sweep=depth", "budget=smoke", "study.halving.eta=1"],
            "study.halving.eta: study.halving has no keys in this config (null or a value); "
            "set it whole: 'study.halving={eta: 1}'",
        ),
        # -m in the middle, as the README's `+sweep=depth -m` invites: the overrides after it are read too.
        (["+sweep=depth", "-m", "budget=smoke", "optim.lrr=0.1"], "optim.lrr: no such key; did you mean optim.lr?"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(tmp_path, overrides, message):
    result = ablate(tmp_path, *overrides, "logger=none")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ablate: error: {message}"), result.stderr
    # No run started, so no record folder is left behind for collect to count as a killed run.
    assert not list((tmp_path / "runs").glob("*/*/*/*"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("batch.hold=updates", "batch.hold=updates: successive halving pauses runs after whole epochs"),
        ("trainer.updates=500", "trainer.updates=500: successive halving pauses runs after whole epochs"),
    ],
)
def test_a_study_that_halves_runs_counted_in_updates_stops_before_any_job(tmp_path, override, message):
    # The cpu tier halves the LR grid after 3 of 10 epochs; a run counted in updates has no such epoch to pause at,
    # so the sweep says so once, and no job starts (each would fail on the same line).
    result = ablate(tmp_path, "+sweep=width", override, "study.scientific.model=[allconv6]", "logger=none")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ablate: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"ablate: error: {message}") and "study.halving=null" in errors[0]
    assert not list((tmp_path / "runs").glob("width/*/*/*"))


def test_an_unwritable_runs_folder_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = ablate(tmp_path, *TINY, "logger=none", f"paths.runs={tmp_path / 'a_file' / 'runs'}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"ablate: error: cannot write {tmp_path / 'a_file' / 'runs'}") and "paths.runs" in line


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has SLURM")
def test_launcher_slurm_without_slurm_is_one_line(tmp_path):
    result = ablate(tmp_path, "+sweep=depth", "launcher=slurm", "logger=none")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "launcher=slurm: sbatch (SLURM) is not on this machine's PATH" in line and "submitit_local" in line


def test_trainer_settings_are_checked_even_when_the_run_would_be_skipped(tmp_path):
    run = (*TINY, "trainer.epochs=1", "logger=none")
    assert ablate(tmp_path, *run).returncode == 0
    again = ablate(tmp_path, *run)
    assert again.returncode == 0 and "skipped" in again.stdout
    threads = ablate(tmp_path, *run, "trainer.threads=0")  # not part of the identity: the same record
    assert threads.returncode == 2 and "trainer.threads=0: must be a positive integer" in threads.stderr
    if not torch.cuda.is_available():
        cuda = ablate(tmp_path, *run, "trainer.device=cuda")
        assert cuda.returncode == 2 and "trainer.device=cuda: no CUDA device is visible here" in cuda.stderr


def test_help_names_the_app_and_how_to_run_a_study(tmp_path):
    result = ablate(tmp_path, "--help")
    assert result.returncode == 0 and "__main__" not in result.stdout
    assert "python -m ablate +sweep=depth" in result.stdout and "sweep: batch_size, depth," in result.stdout


def test_hydra_bare_flags_go_before_the_overrides_wherever_they_were_typed():
    argv = ["+sweep=depth", "-m", "budget=smoke", "--cfg", "job", "--resolve"]
    assert flags_first(argv) == ["-m", "--resolve", "+sweep=depth", "budget=smoke", "--cfg", "job"]


def test_a_tilde_after_the_equals_sign_is_the_home_folder():
    # The shell leaves `data.root=~/data` alone and Hydra's grammar has no ~ in values.
    assert expand_home("data.root=~/data") == f"data.root={os.path.expanduser('~')}/data"
    assert expand_home("~trainer.compile") == "~trainer.compile"  # Hydra's delete syntax is left alone
    assert expand_home("optim.lr=0.1") == "optim.lr=0.1"


def test_the_closest_key_is_an_abbreviation_or_a_close_spelling():
    keys = ["optim.lr", "optim.momentum", "optim.weight_decay", "trainer.epochs", "data.resolution"]
    assert closest("optim.learning_rate", keys) == "optim.lr"
    assert closest("optim.wd", keys) == "optim.weight_decay"
    assert closest("trainer.epoch", keys) == "trainer.epochs"
    assert closest("data.resolutoin", keys) == "data.resolution"
    assert closest("optim.nothing_like_it", keys) is None


def test_slurm_jobs_are_named_after_the_study_and_sized_for_small_runs(compose):
    launcher = compose("+sweep=depth", "launcher=slurm", "data=imagefolder", return_hydra_config=True).hydra.launcher
    assert launcher.name == "depth-imagefolder"
    assert launcher.gpus_per_node == 0 and launcher.cpus_per_task <= 2 and launcher.mem_gb <= 4
    assert list(launcher.setup) == []
