"""The benchmark (scripts/bench.py, `make bench`): its verdicts and table, and (slow) an end-to-end --quick run."""

import importlib.util
import json
import math
import re
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


def table_row(stdout: str, label: str) -> list[str]:
    """The printed table's row whose first column is `label`, as [label, value, target, result]."""
    rows = [line for line in stdout.splitlines() if line.strip().startswith(label)]
    assert len(rows) == 1, (label, rows)
    return re.split(r"\s{2,}", rows[0].strip())


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    """One `bench.py --quick` run of every part but CIFAR: its JSON and what it printed."""
    return run_bench(tmp_path_factory.mktemp("bench"))


@pytest.mark.slow
def test_quick_benchmark_measures_throughput_and_fixed_cost(quick_bench):
    results, stdout = quick_bench
    assert results["machine"]["torch_threads"] == 1 and results["machine"]["device"] == "cpu"  # the flags took
    assert results["machine"]["cpu"] in stdout
    assert results["throughput"]["cifar10_jpg"] == {"skipped": "--skip-cifar"}

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
        "ratio_warm",
        "ratio_cold",
    ):
        assert math.isfinite(synthetic[key]) and synthetic[key] > 0, key
    # Setting the data up is part of a run's time, so the whole run is slower than its loop alone.
    assert synthetic["ablate_loop_images_per_s"] > synthetic["ablate_warm_images_per_s"]

    fixed = results["fixed_cost"]
    assert fixed["per_run_s"] > 0 and fixed["first_run_s"] > 0 and fixed["data_setup_s"] > 0
    assert 0 < fixed["share_of_60s"] < 1
    assert fixed["wandb_offline_run"] is True  # W&B offline really started and finished: its cost is in the figure
    assert results["startup"]["import_s"] > 0


@pytest.mark.slow
def test_quick_benchmark_times_a_study_and_prints_each_target_with_its_figure(quick_bench):
    results, stdout = quick_bench
    study = results["study"]
    assert study["runs"] == 4 and study["jobs"] >= 1  # --device cpu: one job per core
    assert study["basic_s"] > 0 and study["parallel_s"] > 0 and study["speedup"] > 0
    assert "launcher=parallel" in stdout
    passed = {row["figure"]: row["pass"] for row in results["targets"]}
    ratio, share = results["throughput"]["synthetic"]["ratio_warm"], results["fixed_cost"]["share_of_60s"]
    printed = {
        "throughput synthetic: ablate warm / reference": ("ablate warm / reference", f"{ratio:.2f}x", ">= 2.0x"),
        "fixed cost per run / 60 s run": ("share of a 60 s run", f"{share:.1%}", "<= 5%"),
        "study: basic / parallel wall time": ("basic / parallel", f"{study['speedup']:.2f}x", ">= 1.6x"),
    }
    for model, part in results["layout"].items():  # --device cpu: auto trains in NHWC
        assert part["auto_layout"] == "channels_last" and part["contiguous_images_per_s"] > 0
        assert part["ratio"] == round(part["auto_images_per_s"] / part["contiguous_images_per_s"], 3)
        label = f"{model}: auto / contiguous"
        printed[f"layout {label}"] = (label, f"{part['ratio']:.2f}x", ">= 1x")
    assert list(results["layout"]) == ["allconv6", "mobilenet10"]
    assert list(passed) == list(printed)
    for figure, (label, value, target) in printed.items():
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[passed[figure]]
        assert table_row(stdout, label) == [label, value, target, verdict]
    # One job cannot run anything in parallel: then, and only then, the study has no verdict.
    assert (passed["study: basic / parallel wall time"] is None) == (study["jobs"] == 1)


def test_the_table_prints_each_target_with_its_value_and_verdict():
    bench = load_bench()
    part = {
        "data": "synthetic",
        "images_per_epoch": 640,
        "updates": 10,
        "reference_images_per_s": 929.0,
        "ablate_cold_images_per_s": 1877.0,
        "ablate_warm_images_per_s": 2126.0,
        "ablate_loop_images_per_s": 2300.0,
        "ratio_cold": 2.02,
        "ratio_warm": 2.289,
    }
    results = {
        "settings": {"reference_workers": 2},
        "throughput": {"cifar10_jpg": {"skipped": "--skip-cifar"}, "synthetic": part},
        "fixed_cost": {"per_run_s": 0.67, "share_of_60s": 0.0112, "first_run_extra_s": 3.1, "wandb_offline_run": False},
        "startup": {"import_s": 3.1},
        "study": {"runs": 12, "jobs": 2, "basic_s": 40.7, "parallel_s": 33.8, "speedup": 1.204},
        "layout": {
            "mobilenet20": {
                "updates": 234,
                "auto_layout": "channels_last",
                "contiguous_images_per_s": 590.0,
                "auto_images_per_s": 905.0,
                "ratio": 1.534,
            }
        },
    }
    results["targets"] = bench.targets(results)
    stdout = bench.table(results)
    assert table_row(stdout, "1. throughput (skipped)") == ["1. throughput (skipped)", "--skip-cifar"]
    assert table_row(stdout, "ablate warm / reference") == ["ablate warm / reference", "2.29x", ">= 2.0x", "PASS"]
    assert table_row(stdout, "ablate cold / reference") == ["ablate cold / reference", "2.02x"]
    assert table_row(stdout, "share of a 60 s run") == ["share of a 60 s run", "1.1%", "<= 5%", "PASS"]
    assert table_row(stdout, "basic / parallel") == ["basic / parallel", "1.20x", ">= 1.6x", "MISS"]
    assert "W&B offline run NOT created" in stdout
    assert table_row(stdout, "trainer.channels_last=auto") == [
        "trainer.channels_last=auto (channels_last)",
        "905 img/s",
    ]
    assert table_row(stdout, "mobilenet20: auto") == ["mobilenet20: auto / contiguous", "1.53x", ">= 1x", "PASS"]
    results["layout"] = {"skipped": "--skip-layout"}
    results["targets"] = bench.targets(results)
    assert table_row(bench.table(results), "4. memory layout") == ["4. memory layout (skipped)", "--skip-layout"]
    results["study"]["jobs"] = 1
    results["targets"] = bench.targets(results)
    assert table_row(bench.table(results), "basic / parallel")[-1] == "n/a"


def test_targets_pass_at_their_bounds_and_miss_beyond():
    bench = load_bench()

    def verdicts(ratio_warm, share, speedup, jobs=2, layout=1.0):
        results = {
            "throughput": {
                "synthetic": {"data": "synthetic", "ratio_warm": ratio_warm},
                "cifar10_jpg": {"skipped": "--skip-cifar"},
            },
            "fixed_cost": {"share_of_60s": share},
            "study": {"speedup": speedup, "jobs": jobs},
            "layout": {"allconv6": {"ratio": layout}},
        }
        return [row["pass"] for row in bench.targets(results)]

    assert verdicts(2.0, 0.05, 1.6) == [True, True, True, True]
    assert verdicts(1.99, 0.051, 1.59, layout=0.99) == [False, False, False, False]
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
