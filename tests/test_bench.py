"""The benchmark (scripts/bench.py, `make bench`) runs end to end at a tiny size and reports every figure."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BENCH = ROOT / "scripts" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(tmp_path, *flags: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--skip-cifar",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--json",
            str(out),
            *flags,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out.read_text()), done.stdout


def test_quick_benchmark_measures_throughput_and_fixed_cost(tmp_path):
    results, stdout = run_bench(tmp_path, "--skip-study")

    assert results["machine"]["cores"] >= 1 and results["machine"]["torch_threads"] == 1
    assert results["machine"]["device"] == "cpu"
    assert results["throughput"]["cifar10_jpg"] == {"skipped": "--skip-cifar"}
    assert results["study"] == {"skipped": "--skip-study"}

    synthetic = results["throughput"]["synthetic"]
    assert synthetic["data"] == "synthetic" and synthetic["batch_size"] == 64
    # Whole epochs for ablate, at least the 10 updates --quick asks for, and the reference runs as many.
    assert synthetic["updates"] >= 10 and synthetic["updates"] % (synthetic["images_per_epoch"] // 64) == 0
    for key in (
        "reference_images_per_s",
        "ablate_cold_images_per_s",
        "ablate_warm_images_per_s",
        "ablate_loop_images_per_s",
        "ablate_cold_setup_s",
        "ablate_warm_setup_s",
    ):
        assert synthetic[key] > 0, key
    # Setting the data up is part of a run's time, so the whole run is slower than its loop alone.
    assert synthetic["ablate_loop_images_per_s"] > synthetic["ablate_warm_images_per_s"]
    assert synthetic["ratio_warm"] == pytest.approx(
        synthetic["ablate_warm_images_per_s"] / synthetic["reference_images_per_s"], rel=1e-2
    )

    fixed = results["fixed_cost"]
    assert fixed["per_run_s"] > 0 and fixed["first_run_s"] > 0 and fixed["data_setup_s"] > 0
    assert fixed["share_of_60s"] == pytest.approx(fixed["per_run_s"] / 60, abs=1e-4)
    assert fixed["wandb_offline_run"] is True  # W&B offline really started and finished: its cost is in the figure
    assert results["startup"]["import_s"] > 0

    figures = [row["figure"] for row in results["targets"]]
    assert figures == ["throughput synthetic: ablate warm / reference", "fixed cost per run / 60 s run"]
    assert all(row["pass"] in (True, False) for row in results["targets"])
    for row in results["targets"]:
        assert ("PASS" if row["pass"] else "MISS") in stdout
    assert results["machine"]["cpu"] in stdout


@pytest.mark.slow
def test_quick_benchmark_times_a_study_with_both_launchers(tmp_path):
    results, stdout = run_bench(tmp_path)
    study = results["study"]
    assert study["runs"] == 4 and study["jobs"] >= 1
    assert study["basic_s"] > 0 and study["parallel_s"] > 0
    assert study["speedup"] == pytest.approx(study["basic_s"] / study["parallel_s"], rel=1e-2)
    assert "launcher=parallel" in stdout


def test_targets_pass_at_their_bounds_and_miss_beyond():
    bench = load_bench()

    def verdicts(ratio_warm, share, speedup, jobs=2):
        results = {
            "throughput": {
                "synthetic": {"data": "synthetic", "ratio_warm": ratio_warm},
                "cifar10_jpg": {"skipped": "--skip-cifar"},
            },
            "fixed_cost": {"share_of_60s": share},
            "study": {"speedup": speedup, "jobs": jobs},
        }
        return [row["pass"] for row in bench.targets(results)]

    assert verdicts(2.0, 0.05, 1.6) == [True, True, True]
    assert verdicts(1.99, 0.051, 1.59) == [False, False, False]
    assert verdicts(3.0, 0.01, 1.0, jobs=1)[2] is None  # one job cannot run in parallel: no verdict


def test_reference_transform_is_the_configs_augmentation(compose):
    from torchvision import transforms

    bench = load_bench()
    cfg = compose("data=imagefolder", "data.root=/nowhere", "data.pad=4", "data.flip=true")
    steps = bench.per_sample_transform(cfg.data).transforms
    assert [type(step) for step in steps] == [
        transforms.RandomCrop,
        transforms.RandomHorizontalFlip,
        transforms.ToTensor,
        transforms.Normalize,
    ]
    assert steps[0].size == (32, 32) and steps[0].padding == 4
    assert steps[3].mean == pytest.approx([m / 255 for m in cfg.data.mean])
    assert steps[3].std == pytest.approx([s / 255 for s in cfg.data.std])
    no_flip = bench.per_sample_transform(compose("data=imagefolder", "data.root=/nowhere", "data.flip=false").data)
    assert transforms.RandomHorizontalFlip not in [type(step) for step in no_flip.transforms]
