"""`make bench`: how fast ablate is against what a user writes by hand, measured in one run on this machine.

Every figure is a ratio to a baseline measured in the same run (never to stored timings):

1. images/s of ablate's loop (ablate.loop.build + train_steps, composed from conf/) against a hand-written loop
   (ImageFolder or a Dataset of PIL images + DataLoader workers + per-sample torchvision transforms + plain SGD):
   same model, data, batch size and number of updates, on CIFAR-10 JPEGs and on the embedded dataset. Target >= 2x.
2. the framework's fixed cost per run (Hydra, record, summary, model description, W&B offline init and finish),
   timed inside `python -m ablate` in this process, as a share of a 60-second run. Target <= 5%.
3. a 12-run study's wall time with launcher=parallel against launcher=basic (`python -m ablate -m`). Target >= 1.6x.
4. ablate's loop in the memory layout trainer.channels_last=auto picks on this device (NHWC on CPU and CUDA) against
   the contiguous layout, for allconv6 and MobileNet (depthwise convs) on the embedded dataset. Target >= 1x: auto
   must not slow a run down where it chooses NHWC.

Run: python scripts/bench.py [--quick] [--updates N] [--model allconv6] [--device auto|cpu|cuda] [--threads N]
     [--repeats N] [--skip-cifar] [--skip-study] [--skip-layout] [--json PATH] [--override KEY=VALUE ...]
A throughput figure is updates x batch / seconds from nothing to the last update: data set-up (decode, cache,
render), model and optimizer included, imports and composition excluded; "loop only" leaves out the set-up too.
"""

import argparse
import importlib.util
import json
import math
import os
import platform
import runpy
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "ablate" / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_TARBALL = SHARED_DATA / "cifar10-jpg.tar.gz"
BENCH_DATA = ROOT / ".cache" / "data" / "bench"

TARGET_THROUGHPUT_RATIO = 2.0  # ablate warm / reference images/s
TARGET_FIXED_SHARE = 0.05  # fixed cost per run / RUN_SECONDS
TARGET_STUDY_SPEEDUP = 1.6  # basic wall time / parallel wall time
TARGET_LAYOUT_RATIO = 1.0  # loop images/s in auto's layout / in the contiguous one
RUN_SECONDS = 60.0
REFERENCE_WORKERS = 2  # DataLoader workers, as a user would write it

# Sizes: full (`make bench`) and --quick (what the test runs).
FULL = {
    "updates": 200,
    "cifar_train_per_class": 500,
    "cifar_test_per_class": 100,
    "synthetic_train_size": 5000,
    "eval_size": 256,
    "study_models": ["allconv6_1", "allconv6_2", "allconv6_3", "allconv6_4"],
    "study_seeds": [0, 1, 2],
    "study_train_size": 5000,
    "study_epochs": 3,
    "startup_repeats": 2,
    "layout_models": ["allconv6", "mobilenet20"],
}
QUICK = {
    "updates": 10,
    "cifar_train_per_class": 64,
    "cifar_test_per_class": 16,
    "synthetic_train_size": 640,
    "eval_size": 64,
    "study_models": ["allconv6_1", "allconv6_2"],
    "study_seeds": [0, 1],
    "study_train_size": 320,
    "study_epochs": 1,
    "startup_repeats": 1,
    "layout_models": ["allconv6", "mobilenet10"],
}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    updates = args.updates or sizes["updates"]
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        "machine": machine(device),
        "settings": {
            "model": args.model,
            "batch_size": args.batch_size,
            "updates": updates,
            "device": str(device),
            "quick": args.quick,
            "repeats": args.repeats,
            "threads": args.threads,
            "reference_workers": args.workers,
            "overrides": args.override,
        },
    }
    print(header(results))

    # The fixed cost first: its first run then meets this process as `python -m ablate` meets a fresh one.
    results["fixed_cost"] = fixed_cost(args, device)
    results["startup"] = startup(sizes["startup_repeats"])

    results["throughput"] = {}
    warm_up(args, device)
    if args.skip_cifar:
        results["throughput"]["cifar10_jpg"] = {"skipped": "--skip-cifar"}
    elif not CIFAR_TARBALL.exists():
        print(f"bench: {CIFAR_TARBALL} is absent; skipping the CIFAR-10 JPEG throughput")
        results["throughput"]["cifar10_jpg"] = {"skipped": f"{CIFAR_TARBALL} absent"}
    else:
        root = cifar_subset(sizes["cifar_train_per_class"], sizes["cifar_test_per_class"])
        results["throughput"]["cifar10_jpg"] = throughput(
            args,
            device,
            updates,
            ["data=imagefolder", "data.name=cifar10_jpg", f"data.root={root}", "data.resize=32"],
            reference_dataset=lambda cfg: imagefolder_dataset(root / "train", cfg),
        )
    results["throughput"]["synthetic"] = throughput(
        args,
        device,
        updates,
        [
            "data=synthetic",
            f"data.train_size={sizes['synthetic_train_size']}",
            f"data.val_size={sizes['eval_size']}",
            f"data.test_size={sizes['eval_size']}",
        ],
        reference_dataset=synthetic_dataset,
    )

    if args.skip_study:
        results["study"] = {"skipped": "--skip-study"}
    else:
        results["study"] = study(args, device, sizes)
    if args.skip_layout:
        results["layout"] = {"skipped": "--skip-layout"}
    else:
        results["layout"] = layout(args, device, updates, sizes)

    results["targets"] = targets(results)
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"bench: figures in {args.json}")
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (what the test runs, under a minute)")
    parser.add_argument(
        "--updates", type=int, default=None, help="optimizer updates per throughput loop (default 200; --quick 10)"
    )
    parser.add_argument("--model", default="allconv6", help="conf/model option for every loop (default allconv6)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per update (default 64)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where both loops train (trainer.device); auto: CUDA when visible",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every loop and run (trainer.threads); default: torch's own",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=REFERENCE_WORKERS,
        help=f"DataLoader workers of the hand-written loop (default {REFERENCE_WORKERS})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure each throughput loop this many times and keep the fastest (default 1)",
    )
    parser.add_argument("--skip-cifar", action="store_true", help="skip the CIFAR-10 JPEG throughput")
    parser.add_argument("--skip-study", action="store_true", help="skip the 12-run study")
    parser.add_argument("--skip-layout", action="store_true", help="skip the memory-layout comparison")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for every ablate config composed here (repeatable)",
    )
    parser.add_argument("--json", default=None, help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)
    if args.updates is not None and args.updates <= 0:
        parser.error(f"--updates={args.updates}: must be a positive number of updates")
    if args.repeats <= 0:
        parser.error(f"--repeats={args.repeats}: must be at least 1")
    if args.threads is not None and args.threads <= 0:
        parser.error(f"--threads={args.threads}: must be a positive number of threads")
    return args


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("bench: --device=cuda: no CUDA device is visible here; use --device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def machine(device: torch.device) -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
        # Without .pyc files every process compiles every module it imports: start-up figures grow several-fold.
        # They exist when the install byte-compiled (make install) or Python may write them on import.
        "bytecode_cache": Path(importlib.util.cache_from_source(torch.__file__)).exists()
        or not os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------------------------
# 1. Throughput


def compose(overrides: list[str]):
    """The config `python -m ablate <overrides>` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ablate.resolvers import register_resolvers

    register_resolvers()

    GlobalHydra.instance().clear()  # `python -m ablate` run in this process leaves its Hydra set up
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


# The schedule does not change a loop's speed, and the default warm-up epoch can be the whole of a bench's short run
# (--quick: one epoch of 5 or 10 updates), which a run refuses before it starts.
NO_WARMUP = "sched.warmup_epochs=0"


def ablate_overrides(args, device: torch.device, data_overrides: list[str], cache_dir: Path | None) -> list[str]:
    return [
        f"model={args.model}",
        *data_overrides,
        f"batch.size={args.batch_size}",
        f"trainer.device={device.type}",
        f"paths.cache={cache_dir or 'null'}",
        "logger=none",
        NO_WARMUP,
        *thread_override(args),
        *args.override,
    ]


def thread_override(args) -> list[str]:
    """--threads for the runs in this process (the study leaves threads to its launchers)."""
    return [f"trainer.threads={args.threads}"] if args.threads else []


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ablate_loop(cfg) -> dict:
    """ablate's own path: build (data decode or cache load, model, optimizer) then whole epochs of train_steps."""
    from ablate.loop import build, train_steps

    started = time.perf_counter()
    setup = build(cfg)
    built = time.perf_counter()
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.trainer.epochs):
        train_steps(setup, setup.data.train_batches(setup.batch_size, generator))
    synchronize(setup.device)
    finished = time.perf_counter()
    images = setup.steps_per_epoch * cfg.trainer.epochs * cfg.batch.size
    return {
        "seconds": finished - started,
        "setup_s": built - started,
        "loop_s": finished - built,
        "images_per_s": images / (finished - started),
        "loop_images_per_s": images / (finished - built),
    }


def reference_loop(make_dataset, cfg, device: torch.device, updates: int, workers: int) -> dict:
    """A training loop as a user writes it by hand: Dataset + DataLoader workers + per-sample transforms + SGD."""
    from ablate.models import build_model

    started = time.perf_counter()
    dataset, num_classes = make_dataset(cfg)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch.size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=num_classes, in_channels=3).to(device)
    # Plain SGD with the config's settings (the same solver as ablate's default optim=sgd).
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.optim.lr,
        momentum=cfg.optim.get("momentum", 0.0),
        weight_decay=cfg.optim.get("weight_decay", 0.0),
    )
    model.train()
    done = 0
    while done < updates:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == updates:
                break
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "images_per_s": updates * cfg.batch.size / seconds}


def per_sample_transform(cfg_data):
    """torchvision's per-sample version of the config's augmentation: pad + random crop, flip, to [0, 1], normalise."""
    from torchvision import transforms

    std = cfg_data.std if cfg_data.std is not None else [1.0] * len(cfg_data.mean)  # 0-255 scale, as the config
    steps = [transforms.RandomCrop(cfg_data.resolution, padding=cfg_data.pad)]
    if cfg_data.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize([m / 255 for m in cfg_data.mean], [s / 255 for s in std])]
    return transforms.Compose(steps)


def imagefolder_dataset(train_dir: Path, cfg):
    from torchvision import datasets

    dataset = datasets.ImageFolder(str(train_dir), transform=per_sample_transform(cfg.data))
    return dataset, len(dataset.classes)


class PILImages(torch.utils.data.Dataset):
    """A hand-written Dataset over in-memory PIL images with a per-sample transform."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


def synthetic_dataset(cfg):
    """The embedded dataset's training images (rendered by its own source, as ablate does) as PIL images."""
    import hydra.utils
    from omegaconf import OmegaConf
    from PIL import Image

    from ablate.data import COMMON_DEFAULTS

    settings = OmegaConf.to_container(cfg.data, resolve=True)
    source = hydra.utils.get_method(settings.pop("_target_"))
    knobs = {key: value for key, value in settings.items() if key not in COMMON_DEFAULTS}
    image_size = cfg.data.resize if cfg.data.resize is not None else cfg.data.resolution
    loaded = source(**knobs, image_size=image_size)
    images, labels = loaded["train"]
    pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    return PILImages(pil_images, labels.tolist(), per_sample_transform(cfg.data)), len(loaded["classes"])


def warm_up(args, device: torch.device) -> None:
    """One-time costs of the process (lazy imports in torch.optim, worker start, kernels) before any timed loop."""
    from ablate.config import load_option
    from ablate.models import build_model

    model = build_model(load_option("model", args.model), num_classes=10, in_channels=3).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    batches = torch.utils.data.TensorDataset(
        torch.randn(2 * args.batch_size, 3, 32, 32), torch.randint(0, 10, (2 * args.batch_size,))
    )
    for x, y in torch.utils.data.DataLoader(batches, batch_size=args.batch_size, num_workers=args.workers):
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    synchronize(device)


def throughput(args, device: torch.device, updates: int, data_overrides: list[str], reference_dataset) -> dict:
    """The hand-written loop, then ablate with an empty cache (decode included), then with the cache filled;
    --repeats times, keeping the fastest of each (the least disturbed by other load on the machine)."""
    from ablate.data import build as build_data

    cfg = compose(ablate_overrides(args, device, data_overrides, cache_dir=None))
    # Whole epochs for ablate, and exactly as many updates for the reference. The probe builds the data without
    # a cache (cache_dir=None), so ablate's first run below starts from an empty one.
    steps_per_epoch = build_data(cfg.data, cache_dir=None, device="cpu").steps_per_epoch(cfg.batch.size)
    epochs = math.ceil(updates / steps_per_epoch)
    updates = epochs * steps_per_epoch
    print(f"bench: throughput on {cfg.data.name}: {updates} updates of {cfg.batch.size} images ...", flush=True)
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="ablate-bench-cache-") as cache_dir:
            cfg = compose(
                [*ablate_overrides(args, device, data_overrides, Path(cache_dir)), f"trainer.epochs={epochs}"]
            )
            measured = {
                "reference": reference_loop(reference_dataset, cfg, device, updates, args.workers),
                "cold": ablate_loop(cfg),
                "warm": ablate_loop(cfg),
            }
        for kind, figures in measured.items():
            if kind not in best or figures["images_per_s"] > best[kind]["images_per_s"]:
                best[kind] = figures
    reference, cold, warm = best["reference"], best["cold"], best["warm"]
    return {
        "data": cfg.data.name,
        "updates": updates,
        "batch_size": cfg.batch.size,
        "images_per_epoch": steps_per_epoch * cfg.batch.size,
        "reference_images_per_s": round(reference["images_per_s"], 1),
        "ablate_cold_images_per_s": round(cold["images_per_s"], 1),
        "ablate_warm_images_per_s": round(warm["images_per_s"], 1),
        "ablate_loop_images_per_s": round(warm["loop_images_per_s"], 1),
        "ablate_cold_setup_s": round(cold["setup_s"], 3),
        "ablate_warm_setup_s": round(warm["setup_s"], 3),
        "ratio_warm": round(warm["images_per_s"] / reference["images_per_s"], 3),
        "ratio_cold": round(cold["images_per_s"] / reference["images_per_s"], 3),
    }


def cifar_subset(train_per_class: int, test_per_class: int) -> Path:
    """The first N train and M test JPEGs of each class, extracted once into .cache/data/bench (git-ignored)."""
    root = BENCH_DATA / f"cifar10-jpg-{train_per_class}-{test_per_class}"
    if (root / ".complete").exists():
        return root
    print(
        f"bench: extracting {train_per_class}+{test_per_class} images per class from {CIFAR_TARBALL} "
        f"into {root} (once)",
        flush=True,
    )
    limits = {"train": train_per_class, "test": test_per_class}
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=BENCH_DATA, prefix=f".{root.name}."))
    try:
        with tarfile.open(CIFAR_TARBALL) as tar:
            for member in tar:
                parts = Path(member.name).parts  # split/class/NNNN.jpg
                if (
                    member.isfile()
                    and len(parts) == 3
                    and parts[0] in limits
                    and int(Path(parts[2]).stem) < limits[parts[0]]
                ):
                    tar.extract(member, staging, filter="data")
        (staging / ".complete").touch()
        staging.chmod(0o755)  # mkdtemp makes it private
        # Rename into place: a killed extraction never leaves a half-filled folder that looks complete.
        staging.rename(root)
    except OSError:
        if not (root / ".complete").exists():  # else another benchmark finished the same extraction first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


# ---------------------------------------------------------------------------------------------------------------
# 2. Fixed cost per run


@contextmanager
def timed(module, name: str, spent: dict):
    """Wrap `module.name` so that the seconds spent inside it add up in spent[name]."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextmanager
def environment(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fixed_cost(args, device: torch.device) -> dict:
    """Two tiny runs of `python -m ablate` with W&B offline in this process; everything but the epochs is fixed."""
    import ablate.loop
    import ablate.train

    print("bench: fixed cost per run (python -m ablate in this process, logger=wandb offline) ...", flush=True)
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="ablate-bench-fixed-") as tmp,
        environment(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=tmp),
    ):
        for index in range(2):
            runs_dir = Path(tmp) / f"runs{index}"
            spent: dict[str, float] = {}
            argv = [
                "ablate",
                f"model={args.model}",
                "data=synthetic",
                "data.train_size=640",
                "data.val_size=64",
                "data.test_size=64",
                "trainer.epochs=2",
                f"batch.size={args.batch_size}",
                f"trainer.device={device.type}",
                "logger=wandb",
                "logger.mode=offline",
                f"paths.runs={runs_dir}",
                f"paths.cache={Path(tmp) / 'cache'}",
                f"paths.results={Path(tmp) / 'results'}",
                "study.name=bench",
                NO_WARMUP,
                *thread_override(args),
                *args.override,
            ]
            with (
                timed(ablate.train, "train_steps", spent),
                timed(ablate.train, "evaluate", spent),
                timed(ablate.loop, "build_data", spent),
                replaced_argv(argv),
            ):
                started = time.perf_counter()
                try:
                    runpy.run_module("ablate", run_name="__main__", alter_sys=True)
                except SystemExit as exit_:
                    if exit_.code not in (0, None):
                        raise RuntimeError(
                            f"bench: python -m ablate {' '.join(argv[1:])} exited {exit_.code}"
                        ) from None
                total = time.perf_counter() - started
            summaries = [json.loads(path.read_text()) for path in runs_dir.rglob("summary.json")]
            if [summary["status"] for summary in summaries] != ["completed"]:
                raise RuntimeError(f"bench: the fixed-cost run did not complete: {summaries}")
            epochs = spent.get("train_steps", 0.0) + spent.get("evaluate", 0.0)
            runs.append(
                {
                    "total_s": total,
                    "epochs_s": epochs,
                    "data_s": spent.get("build_data", 0.0),
                    "fixed_s": total - epochs - spent.get("build_data", 0.0),
                    "wandb_offline_run": any(runs_dir.rglob("offline-run-*")),
                }
            )
    first, further = runs
    return {
        "per_run_s": round(further["fixed_s"], 3),
        "share_of_60s": round(further["fixed_s"] / RUN_SECONDS, 4),
        "first_run_s": round(first["fixed_s"], 3),
        "first_run_extra_s": round(first["fixed_s"] - further["fixed_s"], 3),
        "data_setup_s": round(further["data_s"], 3),
        "epochs": 2,
        "wandb_offline_run": all(run["wandb_offline_run"] for run in runs),
    }


@contextmanager
def replaced_argv(argv: list[str]):
    saved = sys.argv
    sys.argv = list(argv)
    try:
        yield
    finally:
        sys.argv = saved


def startup(repeats: int) -> dict:
    """Seconds for `python -c "import ablate.train"`: paid once per process (per worker in a parallel sweep)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ablate.train"], cwd=ROOT, check=True)
        seconds.append(time.perf_counter() - started)
    return {"import_s": round(min(seconds), 3)}


# ---------------------------------------------------------------------------------------------------------------
# 3. A study: parallel launcher against one run after another


def study(args, device: torch.device, sizes: dict) -> dict:
    models, seeds = sizes["study_models"], sizes["study_seeds"]
    run_count = len(models) * len(seeds)
    jobs = torch.cuda.device_count() if device.type == "cuda" else len(os.sched_getaffinity(0))
    print(f"bench: a {run_count}-run study, launcher=basic then launcher=parallel ({jobs} jobs) ...", flush=True)
    walls = {}
    with tempfile.TemporaryDirectory(prefix="ablate-bench-study-") as tmp:
        for launcher in ("basic", "parallel"):
            command = [
                sys.executable,
                "-m",
                "ablate",
                "-m",
                f"launcher={launcher}",
                f"model={','.join(models)}",
                f"seed={','.join(map(str, seeds))}",
                f"trainer.epochs={sizes['study_epochs']}",
                "data=synthetic",
                f"data.train_size={sizes['study_train_size']}",
                f"data.val_size={sizes['eval_size']}",
                f"data.test_size={sizes['eval_size']}",
                f"batch.size={args.batch_size}",
                "logger=none",
                f"study.name=bench-{launcher}",
                NO_WARMUP,
                f"paths.runs={tmp}/runs",
                f"paths.results={tmp}/results",
                f"paths.cache={tmp}/cache",
                *args.override,
            ]
            if args.device == "cpu":  # launcher=parallel sizes itself by GPUs when it sees one
                command += ["trainer.device=cpu"] + (
                    [f"hydra.launcher.n_jobs={jobs}"] if launcher == "parallel" else []
                )
            started = time.perf_counter()
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"}
            )
            walls[launcher] = time.perf_counter() - started
            statuses = [
                json.loads(path.read_text())["status"]
                for path in Path(tmp, "runs", f"bench-{launcher}").rglob("summary.json")  # <data>/<budget>/<id>/
            ]
            if done.returncode != 0 or statuses.count("completed") != run_count:
                raise RuntimeError(
                    f"bench: the launcher={launcher} study did not complete its {run_count} runs "
                    f"(exit {done.returncode}, statuses {statuses}):\n{done.stderr[-3000:]}"
                )
    return {
        "runs": run_count,
        "jobs": jobs,
        "basic_s": round(walls["basic"], 2),
        "parallel_s": round(walls["parallel"], 2),
        "speedup": round(walls["basic"] / walls["parallel"], 3),
    }


# ---------------------------------------------------------------------------------------------------------------
# Report


def layout(args, device: torch.device, updates: int, sizes: dict) -> dict:
    """ablate's loop (set-up left out) with trainer.channels_last=false and =auto, per model, on the embedded data:
    the two layouts alternate --repeats times and the fastest of each counts."""
    from ablate.data import build as build_data
    from ablate.loop import uses_channels_last

    data = [
        "data=synthetic",
        f"data.train_size={sizes['synthetic_train_size']}",
        "data.val_size=64",
        "data.test_size=64",
    ]
    figures = {}
    cache = Path(tempfile.mkdtemp(prefix="ablate-bench-layout-"))  # the data's cache, built once, then loaded
    for model in sizes["layout_models"]:
        overrides = ablate_overrides(argparse.Namespace(**{**vars(args), "model": model}), device, data, cache)
        steps_per_epoch = build_data(compose(overrides).data, cache_dir=None, device="cpu").steps_per_epoch(
            args.batch_size
        )
        epochs = math.ceil(updates / steps_per_epoch)
        print(
            f"bench: memory layout, {model}: {epochs * steps_per_epoch} updates, contiguous then auto ...", flush=True
        )
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for setting in ("false", "auto"):
                cfg = compose([*overrides, f"trainer.channels_last={setting}", f"trainer.epochs={epochs}"])
                speed = ablate_loop(cfg)["loop_images_per_s"]
                best[setting] = max(best.get(setting, 0.0), speed)
        figures[model] = {
            "updates": epochs * steps_per_epoch,
            "auto_layout": "channels_last" if uses_channels_last("auto", device.type) else "contiguous",
            "contiguous_images_per_s": round(best["false"], 1),
            "auto_images_per_s": round(best["auto"], 1),
            "ratio": round(best["auto"] / best["false"], 3),
        }
    shutil.rmtree(cache, ignore_errors=True)
    return figures


def targets(results: dict) -> list[dict]:
    rows = []
    for part in results["throughput"].values():
        if "skipped" not in part:
            rows.append(
                {
                    "figure": f"throughput {part['data']}: ablate warm / reference",
                    "value": part["ratio_warm"],
                    "target": f">= {TARGET_THROUGHPUT_RATIO}x",
                    "pass": part["ratio_warm"] >= TARGET_THROUGHPUT_RATIO,
                }
            )
    share = results["fixed_cost"]["share_of_60s"]
    rows.append(
        {
            "figure": "fixed cost per run / 60 s run",
            "value": share,
            "target": f"<= {TARGET_FIXED_SHARE:.0%}",
            "pass": share <= TARGET_FIXED_SHARE,
        }
    )
    if "skipped" not in results["study"]:
        speedup = results["study"]["speedup"]
        rows.append(
            {
                "figure": "study: basic / parallel wall time",
                "value": speedup,
                "target": f">= {TARGET_STUDY_SPEEDUP}x",
                # One job (one GPU) cannot run anything in parallel: the target does not apply.
                "pass": speedup >= TARGET_STUDY_SPEEDUP if results["study"]["jobs"] > 1 else None,
            }
        )
    if "skipped" not in results["layout"]:
        for model, part in results["layout"].items():
            rows.append(
                {
                    "figure": f"layout {model}: auto / contiguous",
                    "value": part["ratio"],
                    "target": f">= {TARGET_LAYOUT_RATIO:g}x",
                    "pass": part["ratio"] >= TARGET_LAYOUT_RATIO,
                }
            )
    return rows


def header(results: dict) -> str:
    m, s = results["machine"], results["settings"]
    device = m["device"] + (f" ({m['gpu']})" if m["gpu"] else "")
    lines = [
        f"ablate benchmark, {m['date']}",
        f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
        f"device {device}, python {m['python']}, load average {m['load_average_1min']}",
        f"model {s['model']}, batch {s['batch_size']}, {s['updates']} updates per loop"
        + (", --quick" if s["quick"] else ""),
    ]
    if m["device"].startswith("cuda"):
        lines.append(
            "note: on CUDA ablate runs its defaults (bf16 autocast, channels_last, data on the GPU); the "
            "hand-written loop runs fp32 from pinned DataLoader batches"
        )
    if not m["bytecode_cache"]:
        lines.append(
            "note: PYTHONDONTWRITEBYTECODE is set and the environment is not byte-compiled (make install does it): "
            "every process compiles its modules, so start-up figures are several times what they are with .pyc files"
        )
    return "\n".join(lines)


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: "n/a"}[passed]


def table(results: dict) -> str:
    rows: list[tuple[str, str, str, str]] = []
    target_rows = iter(results["targets"])

    def next_target() -> tuple[str, str]:
        row = next(target_rows)
        return row["target"], verdict(row["pass"])

    for part in results["throughput"].values():
        if "skipped" in part:
            rows.append(("1. throughput (skipped)", part["skipped"], "", ""))
            continue
        rows.append(
            (
                f"1. throughput, {part['data']} ({part['images_per_epoch']} images per epoch, "
                f"{part['updates']} updates)",
                "",
                "",
                "",
            )
        )
        workers = results["settings"]["reference_workers"]
        rows.append(
            (
                f"   reference: DataLoader ({workers} workers) + per-sample transforms",
                f"{part['reference_images_per_s']:.0f} img/s",
                "",
                "",
            )
        )
        rows.append(
            ("   ablate, cold cache (decode included)", f"{part['ablate_cold_images_per_s']:.0f} img/s", "", "")
        )
        rows.append(("   ablate, warm cache", f"{part['ablate_warm_images_per_s']:.0f} img/s", "", ""))
        rows.append(("   ablate, loop only (data set up)", f"{part['ablate_loop_images_per_s']:.0f} img/s", "", ""))
        rows.append(("   ablate cold / reference", f"{part['ratio_cold']:.2f}x", "", ""))
        rows.append(("   ablate warm / reference", f"{part['ratio_warm']:.2f}x", *next_target()))
    fixed, start = results["fixed_cost"], results["startup"]
    rows.append(("2. fixed cost per run (Hydra, record, W&B offline)", f"{fixed['per_run_s']:.2f} s", "", ""))
    rows.append(("   share of a 60 s run", f"{fixed['share_of_60s']:.1%}", *next_target()))
    rows.append(("   first run in a process: one-time extra", f"{fixed['first_run_extra_s']:.2f} s", "", ""))
    rows.append(("   python + import ablate.train, once per process/worker", f"{start['import_s']:.2f} s", "", ""))
    if not fixed["wandb_offline_run"]:
        rows.append(("   W&B offline run NOT created: see the warnings above", "", "", ""))
    study_part = results["study"]
    if "skipped" in study_part:
        rows.append(("3. study (skipped)", study_part["skipped"], "", ""))
    else:
        rows.append((f"3. {study_part['runs']}-run study, launcher=basic", f"{study_part['basic_s']:.1f} s", "", ""))
        rows.append((f"   launcher=parallel ({study_part['jobs']} jobs)", f"{study_part['parallel_s']:.1f} s", "", ""))
        rows.append(("   basic / parallel", f"{study_part['speedup']:.2f}x", *next_target()))
    if "skipped" in results["layout"]:
        rows.append(("4. memory layout (skipped)", results["layout"]["skipped"], "", ""))
    for model, part in ({} if "skipped" in results["layout"] else results["layout"]).items():
        rows.append((f"4. memory layout, {model} ({part['updates']} updates, loop only)", "", "", ""))
        rows.append(("   contiguous", f"{part['contiguous_images_per_s']:.0f} img/s", "", ""))
        rows.append(
            (f"   trainer.channels_last=auto ({part['auto_layout']})", f"{part['auto_images_per_s']:.0f} img/s", "", "")
        )
        rows.append((f"   {model}: auto / contiguous", f"{part['ratio']:.2f}x", *next_target()))
    width = max(len(row[0]) for row in rows)
    lines = [f"{'figure':<{width}}  {'value':>12}  {'target':>8}  result", "-" * (width + 32)]
    lines += [f"{a:<{width}}  {b:>12}  {c:>8}  {d}".rstrip() for a, b, c, d in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
