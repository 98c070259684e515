"""Measure the embedded dataset after re-tuning its generator: render time, the mean/std that
conf/data/synthetic.yaml needs, and a preview sheet (one row per class).

    python scripts/measure_synthetic.py                                   # the yaml's settings
    python scripts/measure_synthetic.py texture=1.0 distractors=4 --preview /tmp/synthetic.png
"""

import argparse
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torchvision.utils import save_image

from ablate.data.synthetic import load

CONFIG = Path(__file__).parents[1] / "ablate/conf/data/synthetic.yaml"
# Read by the data builder, not by the source.
COMMON_KEYS = (
    "name",
    "_target_",
    "resolution",
    "resize",
    "pad",
    "flip",
    "mean",
    "std",
    "val_fraction",
    "split_seed",
    "in_memory",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="key=value for conf/data/synthetic.yaml, e.g. texture=1.0")
    parser.add_argument("--preview", type=Path, help="PNG of 10 train images per class, 3x enlarged")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = OmegaConf.merge(OmegaConf.load(CONFIG), OmegaConf.from_dotlist(args.overrides))
    source = {key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items() if key not in COMMON_KEYS}
    start = time.perf_counter()
    data = load(image_size=cfg.resize or cfg.resolution, **source)
    seconds = time.perf_counter() - start
    sizes = {split: len(data[split][1]) for split in ("train", "val", "test")}
    print(f"rendered {sizes} in {seconds:.2f} s ({sum(sizes.values()) / seconds:.0f} images/s, 1 thread)")

    images, labels = data["train"]
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).float()
    print(f"mean: {[round(v, 1) for v in pixels.mean(1).tolist()]}  # train split, 0-255")
    print(f"std: {[round(v, 1) for v in pixels.std(1).tolist()]}")
    print(f"train images per class: {labels.bincount().min().item()} to {labels.bincount().max().item()}")

    if args.preview:
        rows = [images[labels == label][:10] for label in range(len(data["classes"]))]
        sheet = torch.nn.functional.interpolate(torch.cat(rows).float() / 255, scale_factor=3, mode="nearest")
        save_image(sheet, args.preview, nrow=10, padding=2)
        print(f"preview: {args.preview} (rows: {', '.join(data['classes'])})")


if __name__ == "__main__":
    main()
