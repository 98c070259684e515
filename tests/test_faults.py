"""Faults injected into tiny sweeps and runs: nothing lost, nothing done twice (issue 14).

Two identical sweeps at once, a corrupt checkpoint, a killed parallel worker, a full disk, SIGINT and SIGTERM,
SLURM's pre-timeout signal, diverged runs, damaged records, leftovers, and W&B's one run per record. Each test
asserts the figures the README's reliability section promises."""

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ablate import collect, record, sweep
from ablate import train as train_module
from ablate.__main__ import last_line
from ablate.data import cache
from ablate.train import run

# A few seconds a job on one core.
TINY = (
    "budget=smoke",  # no successive halving, no adaptive seeds: each scenario launches exactly its grid
    "sched.warmup_epochs=0",
    # The synthetic data rendered at its tiny size (not rendered whole, then limited).
    "data.train_size=200",
    "data.val_size=100",
    "data.test_size=100",
    "data.limit.train=200",
    "data.limit.val=100",
    "data.limit.test=100",
    "trainer.epochs=2",
    "logger=none",
    "optim.lr=0.01",
    "seed=0",
    "trainer.threads=1",
)
STUDY = ("+sweep=depth", "model=allconv5,allconv6_1", *TINY)
HERE = (*TINY, "model=allconv5")  # a run in this process
COUNTS = re.compile(r"sweep (\w+): ((?:\d+ [a-z ]+(?:, )?)+)  \(records")


def command(root: Path, *args: str) -> list[str]:
    paths = (f"paths.runs={root / 'runs'}", f"paths.results={root / 'results'}", f"paths.cache={root / 'cache'}")
    return [sys.executable, "-m", "ablate", *args, *paths]


def environment() -> dict:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def start(root: Path, *args: str, **kwargs) -> subprocess.Popen:
    # Output to files, not pipes: a process whose pipe nobody drains (the second of two sweeps) would block on it.
    out = tempfile.TemporaryFile("w+")  # noqa: SIM115 — open for the process's whole life, read by output()
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen(
        command(root, *args), cwd=ROOT, env=environment(), stdout=out, stderr=err, text=True, **kwargs
    )
    process.output = (out, err)
    return process


def output(process: subprocess.Popen) -> tuple[str, str]:
    texts = []
    for file in process.output:
        file.seek(0)
        texts.append(file.read())
    return texts[0], texts[1]


def finish(process: subprocess.Popen, timeout_s: int = 600) -> tuple[int, str, str]:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        out, err = output(process)
        raise AssertionError(f"timed out:\n{out[-3000:]}\n{err[-3000:]}") from None
    return process.returncode, *output(process)


def counts(out: str) -> dict[str, int]:
    """`sweep depth: 1 completed, 0 skipped, ...` as {outcome: n}, for every outcome the line names."""
    (match,) = COUNTS.findall(out)
    return {outcome: int(n) for n, outcome in (part.split(" ", 1) for part in match[1].split(", "))}


def summaries(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(runs.glob(f"*/{record.SUMMARY}"))}


def wait_for(predicate, process: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, (
            "the process ended before the fault could be injected: " + "".join(output(process))[-3000:]
        )
        time.sleep(0.05)
    raise AssertionError("the moment to inject the fault never came")


def session_processes(session: int) -> dict[int, str]:
    """The live processes of a session, pid: command line, read from /proc. A sweep started in a session of its own
    has there every process it started (job controllers, jobs, workers, resource trackers), wherever they were
    reparented once it exited."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended meanwhile
            continue
        state, _, _, sid = text[text.rindex(")") + 2 :].split()[:4]  # after "pid (comm) ": state ppid pgrp session
        if int(sid) == session and state != "Z":
            found[int(stat.parent.name)] = command
    return found


def left_behind(session: int, timeout_s: float = 15) -> dict[int, str]:
    """The session's processes still alive after timeout_s (a process that is ending gets that long); then killed,
    so that a failing test leaves none behind either."""
    deadline = time.monotonic() + timeout_s
    while (alive := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return alive


def wait_for_line(process: subprocess.Popen, text: str, timeout_s: float = 120) -> float:
    """Seconds until a line containing `text` shows on the process's stderr."""
    started = time.monotonic()
    while text not in output(process)[1]:
        assert time.monotonic() - started < timeout_s and process.poll() is None, "".join(output(process))[-3000:]
        time.sleep(0.05)
    return time.monotonic() - started


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


@pytest.fixture
def run_in(compose, tmp_path):
    """Run a config in this process, as the Hydra entry point would, into tmp_path/<folder>."""

    def _run(*overrides: str, folder: str = "record"):
        cfg = compose(*HERE, f"paths.cache={tmp_path / 'cache'}", *overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        record_dir = tmp_path / folder
        record_dir.mkdir(exist_ok=True)
        with open_dict(cfg):
            del cfg["hydra"]
        return run(cfg, record_dir), record_dir

    return _run


# ---- two identical sweeps at once: each run trained once, no failure ----------------------------------------


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_sweeps")
    first, second = start(root, *STUDY), start(root, *STUDY)
    return root, finish(first), finish(second)


def test_two_identical_sweeps_at_once_train_each_run_exactly_once(two_sweeps):
    root, first, second = two_sweeps
    for code, out, err in (first, second):
        assert code == 0, out[-3000:] + err[-3000:]
    a, b = counts(first[1]), counts(second[1])
    # A run trained by both would be counted completed twice; a clash would be a failure.
    assert a["completed"] + b["completed"] == 2
    assert a["failed"] == b["failed"] == 0
    assert a["skipped"] + a["running elsewhere"] + b["skipped"] + b["running elsewhere"] == 2
    found = summaries(root / "runs" / "depth" / "synthetic" / "smoke")
    assert len(found) == 2 and {s["status"] for s in found.values()} == {"completed"}
    for identity in found:
        assert [
            row["epoch"] for row in record.read_metrics(root / "runs" / "depth" / "synthetic" / "smoke" / identity)
        ] == [1, 2]
        assert not list((root / "runs" / "depth" / "synthetic" / "smoke" / identity).glob(".*.tmp"))
    assert len(pd.read_csv(root / "results" / "synthetic" / "smoke" / "depth" / "runs.csv")) == 2
    assert not (root / "runs" / "depth" / "synthetic" / "smoke" / sweep.OUTCOMES_DIR).exists() or not any(
        (root / "runs" / "depth" / "synthetic" / "smoke" / sweep.OUTCOMES_DIR).iterdir()
    ), "each sweep removes its outcome notes once counted"


def test_a_record_locked_by_another_process_is_left_alone(run_in, tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'w'); fcntl.flock(f, fcntl.LOCK_EX);"
         "f.write('pid elsewhere'); f.flush(); print('locked', flush=True); time.sleep(60)",
         str(tmp_path / "record" / record.LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        (tmp_path / "record").mkdir()
        assert holder.stdout.readline().strip() == "locked"
        summary, record_dir = run_in()
    finally:
        holder.kill()
        holder.wait()
    assert summary["outcome"] == "running elsewhere"
    assert "running elsewhere (pid elsewhere holds" in capsys.readouterr().out
    assert not (record_dir / record.SUMMARY).exists()  # nothing written into a record another process trains
    again, _ = run_in()  # the holder is gone: its lock went with it
    assert again["outcome"] == "completed"


# ---- a corrupt checkpoint ------------------------------------------------------------------------------------


def test_a_truncated_checkpoint_is_set_aside_and_the_run_starts_over_bit_identical(run_in, capsys):
    straight, straight_dir = run_in("resume=false", folder="straight")
    stopped, record_dir = run_in("++trainer.stop_after_epochs=1")
    assert stopped["status"] == "stopped"
    checkpoint = record_dir / record.CHECKPOINT
    with checkpoint.open("r+b") as file:  # as `truncate -s` leaves it
        file.truncate(checkpoint.stat().st_size // 2)
    capsys.readouterr()
    resumed, _ = run_in()
    out = capsys.readouterr().out
    (warning,) = [line for line in out.splitlines() if "warning" in line]
    (aside,) = record_dir.glob(f"{record.CHECKPOINT}.corrupt-*")
    assert str(checkpoint) in warning and str(aside) in warning and "from epoch 0" in warning
    assert resumed["status"] == "completed" and not checkpoint.exists()
    assert strip_times(record.read_metrics(record_dir)) == strip_times(record.read_metrics(straight_dir))
    assert resumed["final"] == straight["final"]


# ---- a killed parallel worker --------------------------------------------------------------------------------


@pytest.mark.slow  # two sets of loky workers start (a minute and more on 2 busy cores)
def test_a_killed_parallel_worker_costs_one_retry_and_the_sweep_writes_its_table(tmp_path):
    jobs = ("+sweep=depth", "model=allconv5", *TINY, "seed=0,1,2", "trainer.epochs=3")
    process = start(tmp_path, *jobs, "launcher=parallel", "hydra.launcher.n_jobs=2", start_new_session=True)
    runs = tmp_path / "runs" / "depth" / "synthetic" / "smoke"
    killed = {}

    def one_mid_run() -> bool:
        # A run past its first epoch (checkpoint written) whose lock names its worker's pid.
        for folder in runs.glob("*/"):
            lock_text = (folder / record.LOCK).read_text() if (folder / record.LOCK).exists() else ""
            summary = record.read_json(folder / record.SUMMARY) or {}
            if summary.get("status") == "running" and (folder / record.CHECKPOINT).exists() and "pid" in lock_text:
                killed.update(folder=folder, pid=int(lock_text.split()[1]))
                return True
        return False

    try:
        wait_for(one_mid_run, process)
        os.kill(killed["pid"], signal.SIGKILL)
        code, out, err = finish(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "a worker process died" in out
    assert counts(out) == {"completed": 3, "stopped": 0, "skipped": 0, "diverged": 0, "failed": 0, "interrupted": 0,
                           "running elsewhere": 0}  # fmt: skip
    assert {s["status"] for s in summaries(runs).values()} == {"completed"} and len(summaries(runs)) == 3
    assert [row["epoch"] for row in record.read_metrics(killed["folder"])] == [1, 2, 3]
    table = pd.read_csv(tmp_path / "results" / "synthetic" / "smoke" / "depth" / "runs.csv")
    assert len(table) == 3 and set(table["status"]) == {"completed"}


def test_a_retried_job_that_finds_its_run_finished_still_counts_as_trained_by_the_sweep(tmp_path, monkeypatch):
    # A worker that dies takes the pool down, results of finished jobs with it; the launcher launches those again and
    # each finds its record complete. The sweep trained them: its counts must say completed, not skipped. (The slow
    # test above meets this when a job finishes just before the kill, on about half of its runs.)
    monkeypatch.setenv(sweep.SWEEP_ID, "the-sweep")
    record_dir = tmp_path / "runs" / "3f2a9c0d1e2b"
    record_dir.mkdir(parents=True)
    sweep.note_outcome(record_dir, "completed")
    sweep.note_outcome(record_dir, "skipped")  # the retry
    counts = sweep.count_outcomes(tmp_path / "runs", "the-sweep")
    assert (counts["completed"], counts["skipped"]) == (1, 0)
    # A record this sweep had not noted yet is skipped, as a sweep that finds an earlier sweep's run says.
    other = tmp_path / "runs" / "0601c0ffee12"
    other.mkdir()
    sweep.note_outcome(other, "skipped")
    assert sweep.count_outcomes(tmp_path / "runs", "the-sweep")["skipped"] == 1


# ---- a full disk ----------------------------------------------------------------------------------------------


class FullDisk:
    """A file on a disk with `free` bytes left: a write past them writes what fits and fails with ENOSPC."""

    def __init__(self, file, free: int):
        self.file, self.free = file, free

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.free:
            self.file.write(data[: self.free])
            self.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic_write from now on finds 4 KB of free space."""
    real = os.fdopen
    monkeypatch.setattr(record.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode), 4096))


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    earlier = record.atomic_write_text(tmp_path / "earlier.json", "{}\n")
    before = folder_digest(tmp_path)
    real = os.fdopen
    monkeypatch.setattr(record.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode), 4096))
    target = tmp_path / record.CHECKPOINT
    with pytest.raises(record.DiskFull) as raised:
        # torch.save reports a failed write as `unexpected pos` naming no file; the DiskFull names it.
        record.atomic_write(target, lambda file: torch.save({"weights": torch.zeros(100_000)}, file))
    message = str(raised.value)
    assert str(target) in message and "\n" not in message and raised.value.errno == errno.ENOSPC
    assert folder_digest(tmp_path) == before and earlier.exists() and not target.exists()


def test_a_run_on_a_full_disk_fails_in_one_line_and_earlier_records_stay_byte_identical(run_in, tmp_path, monkeypatch):
    done, earlier = run_in(folder="earlier")
    before = folder_digest(earlier)
    real = os.fdopen
    # Room for the config and a summary, not for a checkpoint.
    monkeypatch.setattr(record.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode), 8192))
    with pytest.raises(record.DiskFull) as raised:
        run_in("seed=1", folder="full")
    assert "checkpoint.pt" in str(raised.value) and "\n" not in str(raised.value)
    monkeypatch.setattr(record.os, "fdopen", real)
    full = tmp_path / "full"
    assert not list(full.glob(".*.tmp"))
    assert json.loads((full / record.SUMMARY).read_text())["status"] == "failed"
    assert folder_digest(earlier) == before
    assert run_in(folder="earlier")[0]["outcome"] == "skipped"


def unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && echo ok"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() == "ok"


@pytest.mark.slow  # two sweeps in a namespace; the full disk of a run is tested in this process above
@pytest.mark.skipif(not unshare_works(), reason="needs unprivileged user and mount namespaces for a tiny tmpfs")
def test_a_sweep_on_a_really_full_disk(tmp_path):
    """A real ENOSPC: the runs folder on a tmpfs that a filler file fills up after the first record."""
    disk = tmp_path / "disk"
    disk.mkdir()
    first = " ".join(command(disk, "+sweep=depth", "model=allconv5", *TINY))
    second = " ".join(command(disk, "+sweep=depth", "model=allconv6_1", *TINY))
    script = f"""
        set -e
        mount -t tmpfs -o size=24m tmpfs {disk}
        {first} > {tmp_path}/first.out 2>&1
        # The records' files only (runs/depth/<data>/<budget>/<identity>/...): the second sweep rewrites the study's
        # own multirun.yaml and index.csv beside them, as every sweep does.
        digest() {{ cd {disk}/runs/depth && find . -mindepth 4 -type f ! -name outcome.json ! -name '*.log' \
            -exec sha256sum {{}} + | sort; cd {ROOT}; }}
        digest > {tmp_path}/before.sha
        avail=$(df -k --output=avail {disk} | tail -1)
        dd if=/dev/zero of={disk}/filler bs=1k count=$((avail - 96)) 2>/dev/null || true
        {second} > {tmp_path}/second.out 2> {tmp_path}/second.err || echo "exit $?" >> {tmp_path}/second.err
        digest > {tmp_path}/after.sha
        find {disk} -name '.*.tmp' > {tmp_path}/temps
        cat {disk}/runs/depth/*/summary.json > {tmp_path}/summaries || true
    """
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=environment(), timeout=300)
    assert result.returncode == 0, (tmp_path / "first.out").read_text()[-3000:]
    before = (tmp_path / "before.sha").read_text().splitlines()
    after = set((tmp_path / "after.sha").read_text().splitlines())
    assert before and set(before) <= after, "the earlier record changed"
    assert (tmp_path / "temps").read_text() == "", "temp files left behind"
    errors = [line for line in (tmp_path / "second.err").read_text().splitlines() if "No space left" in line]
    assert len(errors) == 1 and str(disk) in errors[0], (tmp_path / "second.err").read_text()[-3000:]
    assert "Traceback" not in (tmp_path / "second.err").read_text()
    out = (tmp_path / "second.out").read_text()
    assert counts(out)["failed"] == 1, out[-3000:]


def test_a_cache_write_on_a_full_disk_warns_and_the_run_goes_on_without_it(tmp_path, full_disk, caplog):
    tensors = {"images": torch.arange(100_000, dtype=torch.uint8).reshape(-1, 10)}
    got = cache.load_or_build(tmp_path, "tiny", {"files": "x"}, lambda: tensors)
    assert got is tensors
    (warning,) = [r.getMessage() for r in caplog.records if "data cache" in r.getMessage()]
    assert str(tmp_path) in warning and "training without it" in warning and "\n" not in warning
    assert list(tmp_path.iterdir()) == []  # no entry, no temp file


# ---- SIGINT, SIGTERM, SLURM's pre-timeout signal -----------------------------------------------------------


def test_sigterm_ends_a_run_as_interrupted_in_one_line_and_a_rerun_resumes_it(tmp_path):
    args = ("model=allconv5", *TINY, "trainer.epochs=4", "data.train_size=400", "data.limit.train=400")
    process = start(tmp_path, *args)
    records = tmp_path / "runs" / "single" / "synthetic" / "smoke"
    wait_for(lambda: any(records.glob(f"*/{record.CHECKPOINT}")), process)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)
    assert code == 143
    assert "Traceback" not in out + err
    (line,) = [line for line in err.splitlines() if "interrupted" in line]
    (summary,) = summaries(records).values()
    epoch = summary["epochs_completed"]
    assert summary["status"] == "interrupted" and epoch >= 1 and f"SIGTERM after epoch {epoch} of 4" in line
    assert summary["error"] == f"SIGTERM after epoch {epoch} of 4" and summary["finished_at"]
    assert (records / summary["identity"] / record.CHECKPOINT).exists() and "checkpoint kept" in line
    code, out, err = finish(start(tmp_path, *args))
    assert code == 0, err[-3000:]
    assert re.search(r"resuming .* after epoch \d", out)
    (summary,) = summaries(records).values()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 4


def test_sigint_stops_a_sweep_records_the_run_interrupted_and_writes_the_table(tmp_path):
    process = start(tmp_path, *STUDY, "trainer.epochs=4", "data.train_size=400", "data.limit.train=400")
    runs = tmp_path / "runs" / "depth" / "synthetic" / "smoke"
    wait_for(lambda: any(runs.glob(f"*/{record.CHECKPOINT}")), process)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130 and "Traceback" not in out + err
    assert len([line for line in err.splitlines() if "interrupted by SIGINT" in line]) == 1
    assert counts(out)["interrupted"] == 1 and counts(out)["failed"] == 0
    (summary,) = summaries(runs).values()  # the second job never started, and left no folder
    assert summary["status"] == "interrupted" and (runs / summary["identity"] / record.CHECKPOINT).exists()
    assert [p.name for p in runs.iterdir() if not p.name.startswith(".") and p.is_dir()] == [summary["identity"]]
    table = pd.read_csv(tmp_path / "results" / "synthetic" / "smoke" / "depth" / "runs.csv")
    assert list(table["status"]) == ["interrupted"]


@pytest.mark.slow  # two job processes start on 2 busy cores, then a rerun (3 to 4 minutes)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts the sweep's processes in /proc")
def test_sigterm_to_a_submitit_local_sweep_ends_its_jobs_interrupted_and_leaves_no_process(tmp_path):
    args = (*STUDY, "launcher=submitit_local", "trainer.epochs=20", "data.train_size=400", "data.limit.train=400")
    # A session of its own: every process the sweep starts is found there, even once reparented.
    process = start(tmp_path, *args, start_new_session=True)
    runs = tmp_path / "runs" / "depth" / "synthetic" / "smoke"
    try:
        wait_for(lambda: any(runs.glob(f"*/{record.CHECKPOINT}")), process)  # a job trains, past its first epoch
        jobs = [command for command in session_processes(process.pid).values() if "submitit.core._submit" in command]
        assert len(jobs) == 2, jobs  # both jobs' processes run (each under its submitit controller)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)  # to the sweep's process alone
        stopped_s = wait_for_line(process, "SIGTERM: stopped the sweep's")
        code, out, err = finish(process, timeout_s=180)
        exit_s = time.monotonic() - signalled
    finally:
        alive = left_behind(process.pid)
    assert alive == {}, alive
    print(f"SIGTERM to the jobs stopped: {stopped_s:.1f} s, to exit: {exit_s:.1f} s")
    assert code == 143 and "Traceback" not in out + err
    assert stopped_s < 30 and exit_s < 120
    (line,) = [line for line in err.splitlines() if "SIGTERM" in line]
    assert "stopped the sweep's 2 running jobs" in line and "run the same command again" in line
    # A job still starting when the signal came leaves no record; every record there is ends interrupted.
    found = summaries(runs)
    assert found and {s["status"] for s in found.values()} == {"interrupted"}
    assert all(s["error"].startswith("SIGTERM after epoch") for s in found.values())
    trained = [identity for identity, s in found.items() if (runs / identity / record.CHECKPOINT).exists()]
    assert trained and all(found[identity]["epochs_completed"] >= 1 for identity in trained)
    assert_interrupted_then_resumed(tmp_path, args, runs, found, out, trained)


def assert_interrupted_then_resumed(tmp_path, args, runs, found, out, trained) -> None:
    """The stopped sweep counted and tabled its runs as interrupted; the same command then finishes both, each
    epoch trained once (the interrupted runs resumed after their last)."""
    assert counts(out)["interrupted"] == len(found) and counts(out)["failed"] == 0
    table = pd.read_csv(tmp_path / "results" / "synthetic" / "smoke" / "depth" / "runs.csv")
    assert len(table) == len(found) and set(table["status"]) == {"interrupted"}
    code, out, err = finish(start(tmp_path, *args), timeout_s=600)
    assert code == 0, out[-3000:] + err[-3000:]
    assert counts(out)["completed"] == 2
    assert {s["status"] for s in summaries(runs).values()} == {"completed"} and len(summaries(runs)) == 2
    for identity in summaries(runs):
        assert [row["epoch"] for row in record.read_metrics(runs / identity)] == list(range(1, 21))
    assert all("resuming" in (runs / identity / "__main__.log").read_text() for identity in trained)


@pytest.mark.slow  # two loky workers start on 2 busy cores, then a rerun (3 to 4 minutes)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts the sweep's processes in /proc")
def test_ctrl_c_stops_a_parallel_sweep_with_its_running_jobs_interrupted_and_no_worker_left(tmp_path):
    args = (*STUDY, "launcher=parallel", "hydra.launcher.n_jobs=2", "trainer.epochs=20", "data.train_size=400",
            "data.limit.train=400")  # fmt: skip
    process = start(tmp_path, *args, start_new_session=True)
    runs = tmp_path / "runs" / "depth" / "synthetic" / "smoke"
    try:
        wait_for(lambda: any(runs.glob(f"*/{record.CHECKPOINT}")), process)
        workers = [command for command in session_processes(process.pid).values() if "LokyProcess" in command]
        assert len(workers) == 2, workers
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the sweep's process and every worker
        code, out, err = finish(process, timeout_s=180)
        exit_s = time.monotonic() - signalled
    finally:
        alive = left_behind(process.pid)
    assert alive == {}, alive  # no loky worker, no resource tracker
    print(f"SIGINT to exit: {exit_s:.1f} s")
    assert code == 130 and "Traceback" not in out + err
    assert exit_s < 120
    # A job still setting up when the signal came starts no run and leaves no record; every record there is, its
    # run in flight, ends interrupted (none left `running`), each in one line of its own.
    found = summaries(runs)
    assert found and {s["status"] for s in found.values()} == {"interrupted"}
    lines = [line for line in err.splitlines() if "interrupted by SIGINT" in line]
    assert sorted(line.split()[1] for line in lines) == sorted(s["name"] for s in found.values())
    assert all(s["error"].startswith("SIGINT after epoch") for s in found.values())
    trained = [identity for identity in found if (runs / identity / record.CHECKPOINT).exists()]
    assert trained and all(found[identity]["epochs_completed"] >= 1 for identity in trained)
    assert "a worker process died" not in out
    assert_interrupted_then_resumed(tmp_path, args, runs, found, out, trained)


@contextlib.contextmanager
def logging_as_it_was():
    """Every logger's level, handlers, propagation and disabled flag put back after the block: Hydra configures
    logging for an app it runs in this process (the root at INFO, handlers on this test's captured streams), which
    later tests would otherwise log through."""

    def loggers() -> list[logging.Logger]:  # placeholders in the registry are not loggers
        return [logging.root, *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger))]

    saved = {logger: (logger.level, logger.handlers[:], logger.propagate, logger.disabled) for logger in loggers()}
    try:
        yield
    finally:
        for logger in loggers():  # a logger made in the block goes back to a new logger's defaults
            level, handlers, logger.propagate, logger.disabled = saved.get(logger, (logging.NOTSET, [], True, False))
            logger.setLevel(level)
            logger.handlers[:] = handlers


@pytest.mark.parametrize("when", ["during rung 1 (to epoch 1 of 2)", "before the survivors to the end"])
def test_a_ctrl_c_during_or_between_the_steps_of_an_adaptive_sweep_starts_no_later_step(
    when, tmp_path, monkeypatch, capfd
):
    # The whole app in this process, its launcher replaced by one that runs no job. "during": a Ctrl-C while the
    # first step (halving's rung 1) runs, noted as launcher=parallel notes it, every job of the step interrupted.
    # "before": a real SIGINT to this process while halving scores the rung, between two steps. Either way the
    # survivors' step, the grid extension and the seed looks that the plan holds must not start, and the log says
    # why the sweep ended.
    from ablate import adaptive, launcher
    from ablate.__main__ import main

    steps = []

    def launch(launcher_, job_overrides, initial_job_idx):
        steps.append(len(job_overrides))
        if when.startswith("during"):
            sweep.interrupted_by = "SIGINT"
        outcome = "interrupted" if sweep.interrupted_by else "completed"
        return [launcher._returned(overrides, outcome) for overrides in job_overrides]

    real_survivors = adaptive.survivors

    def ctrl_c_then_survivors(*args, **kwargs):
        if when.startswith("before"):
            os.kill(os.getpid(), signal.SIGINT)
        return real_survivors(*args, **kwargs)

    monkeypatch.setattr(launcher, "launch", launch)
    monkeypatch.setattr(adaptive, "survivors", ctrl_c_then_survivors)
    monkeypatch.setattr(sweep, "interrupted_by", None)
    for key in [*sweep.WORKER_ENVIRONMENT, sweep.SWEEP_ID]:  # set by the sweep's callbacks: restored after the test
        monkeypatch.delenv(key, raising=False)
    plan = ("study.halving={rungs:[0.5],eta:3}", "study.extend_grid=2", "study.more_seeds={max:4,per_look:1}")
    args = ("+sweep=depth", *TINY, "model=allconv5", "optim.lr=0.1,0.03,0.01", "seed=0,1", *plan)
    monkeypatch.setattr(sys, "argv", [sys.argv[0], *command(tmp_path, *args, "launcher=parallel")[3:]])
    try:
        with logging_as_it_was():
            main()
    except SystemExit as exit_:
        code = exit_.code
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped the sweep as a KeyboardInterrupt: no table, the later steps unplanned")
    out, err = capfd.readouterr()
    assert code == 130
    assert steps == [6]  # the rung's six jobs, then nothing
    assert f"sweep stopped by SIGINT {when}: no later step starts" in out + err
    assert "adaptive seeds" not in out + err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the sweep's handler is gone with it


def test_slurms_pre_timeout_signal_ends_the_run_interrupted_for_submitit_to_requeue(run_in, tmp_path, monkeypatch):
    # What submitit does on SLURM: SIGTERM bypassed, USR2 (the pre-timeout signal) requeues then sys.exit(-1).
    requeued = []

    def checkpoint_and_requeue(signum, frame):
        requeued.append(signum)
        sys.exit(-1)

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGUSR2, checkpoint_and_requeue)
    real_steps, epochs = train_module.train_steps, []

    def steps_then_signal(*args):
        epochs.append(1)
        if len(epochs) == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_steps(*args)

    monkeypatch.setattr(train_module, "train_steps", steps_then_signal)
    try:
        with pytest.raises(SystemExit):
            run_in("trainer.epochs=3")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert requeued == [signal.SIGUSR2]
    summary = json.loads((tmp_path / "record" / record.SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    assert "submitit requeues" in summary["error"] and (tmp_path / "record" / record.CHECKPOINT).exists()
    # The requeued job resumes from that checkpoint.
    assert run_in("trainer.epochs=3")[0]["status"] == "completed"


# ---- diverged runs, damaged records ---------------------------------------------------------------------------


def test_a_diverged_run_is_not_retrained_unless_asked(run_in):
    diverging = ("optim.lr=1e6", "model.init=kaiming")
    first, _ = run_in(*diverging)
    assert first["outcome"] == "diverged"
    again, record_dir = run_in(*diverging)
    assert again["outcome"] == "skipped"
    assert "skipped (already diverged; retry_diverged=true trains again)" in last_line(again, "skipped", record_dir)
    retried, _ = run_in(*diverging, "retry_diverged=true")
    assert retried["outcome"] == "diverged"


def test_a_finished_record_with_a_cut_metrics_file_is_retrained_and_a_lost_config_rewritten(run_in, capsys):
    done, record_dir = run_in()
    metrics = (record_dir / record.METRICS).read_text()
    (record_dir / record.METRICS).write_text(metrics[: len(metrics) // 2])
    repaired, _ = run_in()
    assert "training it again to repair the record" in capsys.readouterr().out
    assert repaired["outcome"] == "completed" and repaired["final"] == done["final"]
    assert strip_times(record.read_metrics(record_dir)) == strip_times([json.loads(x) for x in metrics.splitlines()])
    config = (record_dir / record.CONFIG).read_text()
    (record_dir / record.CONFIG).unlink()
    assert run_in()[0]["outcome"] == "skipped" and (record_dir / record.CONFIG).read_text() == config


def test_collect_of_one_dataset_leaves_the_other_datasets_table_alone(two_sweeps, tmp_path, capsys):
    source, _, _ = two_sweeps
    runs, results = tmp_path / "runs" / "depth", tmp_path / "results"
    for data in ("synthetic", "ghim12"):
        shutil.copytree(source / "runs" / "depth" / "synthetic" / "smoke", runs / data / "smoke")
    kept = results / "synthetic" / "smoke" / "depth" / "runs.csv"
    kept.parent.mkdir(parents=True)
    kept.write_text("a table committed earlier\n")
    args = ["depth", "--runs", str(tmp_path / "runs"), "--results", str(results)]
    assert collect.main([*args, "--data", "ghim12", "--budget", "smoke"]) == 0
    assert len(pd.read_csv(results / "ghim12" / "smoke" / "depth" / "runs.csv")) == 2
    assert kept.read_text() == "a table committed earlier\n"
    capsys.readouterr()
    assert collect.main([*args, "--data", "cifar10jpg"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--data cifar10jpg" in error and "ghim12/smoke" in error


def test_collect_and_analyze_name_every_record_they_skip_and_the_report_counts_them(two_sweeps, tmp_path):
    source, _, _ = two_sweeps
    runs, results = tmp_path / "runs" / "depth" / "synthetic" / "smoke", tmp_path / "results"
    shutil.copytree(source / "runs" / "depth" / "synthetic" / "smoke", runs)
    first, second = sorted(p for p in runs.iterdir() if (p / record.SUMMARY).exists())
    config = (second / record.CONFIG).read_text()
    (second / record.CONFIG).unlink()  # rebuilt from Hydra's copy
    (runs / "garbled").mkdir()
    (runs / "garbled" / record.SUMMARY).write_text('{"identity": "garbl')
    (runs / "empty" / ".hydra").mkdir(parents=True)

    def collect() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ablate.collect", "depth", "--runs", str(tmp_path / "runs"), "--results",
             str(results)], cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    collected = collect()
    assert collected.returncode == 0, collected.stderr
    skipped_lines = [line for line in collected.stderr.splitlines() if "skipping" in line]
    assert len(skipped_lines) == 2
    assert any(f"{runs / 'garbled'}: {runs / 'garbled' / record.SUMMARY} is not valid JSON" in x for x in skipped_lines)
    assert any(f"{runs / 'empty'}: no summary.json" in x for x in skipped_lines)
    assert "2 records skipped" in collected.stdout
    assert (second / record.CONFIG).read_text() == config
    assert len(pd.read_csv(results / "synthetic" / "smoke" / "depth" / "runs.csv")) == 2

    metrics = (first / record.METRICS).read_text()
    (first / record.METRICS).write_text(metrics[:-20])  # cut after collect: analyze finds it
    analyzed = subprocess.run(
        [sys.executable, "-m", "ablate.analyze", "depth", "--results", str(results)],
        cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert analyzed.returncode == 0, analyzed.stderr[-3000:]
    assert f"skipping {first}: {first / record.METRICS}: line" in analyzed.stderr
    report = (results / "synthetic" / "smoke" / "depth" / "report.md").read_text()
    assert "3 records skipped" in report and "garbled" in report and first.name in report

    again = collect()
    assert any(f"skipping {first}: {first / record.METRICS}: line" in x for x in again.stderr.splitlines())
    assert len(pd.read_csv(results / "synthetic" / "smoke" / "depth" / "runs.csv")) == 1


# ---- leftovers ------------------------------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".cifar10-32px-abc.pt.{record.HOST}.{dead_pid()}.k3j_x.tmp"
    alive = tmp_path / f".cifar10-32px-abc.pt.{record.HOST}.{os.getpid()}.a8b2c.tmp"
    elsewhere = tmp_path / ".cifar10-32px-abc.pt.otherhost.1.zz9.tmp"
    for path in (dead, alive, elsewhere):
        path.write_bytes(b"half a dataset")
    assert record.remove_stale_temps(tmp_path) == [dead]
    old = time.time() - record.STALE_TEMP_AFTER_S - 60
    os.utime(elsewhere, (old, old))
    assert record.remove_stale_temps(tmp_path) == [elsewhere] and alive.exists()
    # The cache clears them before it writes a new entry.
    dead.write_bytes(b"half a dataset")
    cache.load_or_build(tmp_path, "tiny", {"files": "y"}, lambda: {"images": torch.zeros(3)})
    assert not dead.exists() and alive.exists()


def test_a_run_clears_temp_files_in_its_record_and_a_failed_attempt_leaves_no_folder(run_in, tmp_path, monkeypatch):
    record_dir = tmp_path / "record"
    (record_dir / ".hydra").mkdir(parents=True)
    (record_dir / f".{record.CHECKPOINT}.{record.HOST}.{dead_pid()}.abc.tmp").write_bytes(b"880 KB once")
    done, _ = run_in()
    assert done["status"] == "completed" and not list(record_dir.glob(".*.tmp"))

    (tmp_path / "nothing" / ".hydra").mkdir(parents=True)  # what Hydra makes for every job
    (tmp_path / "nothing" / "__main__.log").write_text("")

    def no_space(path, obj):
        raise record.DiskFull(errno.ENOSPC, f"no space left to write {path}")

    monkeypatch.setattr(record, "atomic_write_json", no_space)
    with pytest.raises(record.DiskFull):
        run_in("seed=5", folder="nothing")
    assert not (tmp_path / "nothing").exists()


# ---- W&B -----------------------------------------------------------------------------------------------------


def test_a_resumed_run_is_the_same_wandb_run(tmp_path, monkeypatch):
    from ablate.tracking.wandb import WandbLogger, run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = {"identity": "0123456789ab", "name": "depth/allconv5/s0", "group": "depth", "job_type": "model",
           "tags": ["depth"], "config": {"seed": 0}, "record_dir": str(tmp_path)}  # fmt: skip
    ids = []
    for attempt in ("killed", "resumed"):
        logger = WandbLogger(run=run, mode="offline")
        assert logger.wandb_run is not None
        ids.append(logger.wandb_run.id)
        logger.log({"train/loss": 1.0}, step=1)
        logger.finish({"status": "completed" if attempt == "resumed" else "interrupted"})
    assert ids == [run_id(run)] * 2 == ["depth-0123456789ab"] * 2
    # Two offline folders of one W&B run: `wandb sync` uploads them into that run, oldest first.
    folders = list((tmp_path / "wandb").glob("offline-run-*"))
    # Two inits within one second share a folder name; W&B then tells the folders apart after the run id.
    assert len(folders) == 2 and all(f"-{run_id(run)}" in p.name for p in folders)
