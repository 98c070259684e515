"""Draw LR against iteration for every policy with the articles' solver settings into results/figures/lr_policies.png.

Run from anywhere: python scripts/plot_schedules.py [--out PATH]. Each policy is built by ablate.schedules from its
conf/sched file with the articles' per-iteration values (sched.unit=iters), 100,000 iterations, base LR 0.01, and
stepped exactly as the training loop steps it, so the picture is of the code, not of the formulas. A conf/sched
option that PANELS does not name (a policy added later) gets a panel of its own at its file's settings.
"""

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import FuncFormatter
from omegaconf import OmegaConf

from ablate.analysis.figures import save
from ablate.config import load_option
from ablate.schedules import build_scheduler

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "ablate" / "conf"
ITERS = 100_000
BASE_LR = 0.01
STEPS_PER_EPOCH = 140  # 9000 GHIM-10K training images / batch 64

# (panel title, [(line label, conf/sched option, overrides, base LR)]), drawn with sched.unit=iters unless an
# override says otherwise. The Caffe policies use the exact settings of STUDIES.md; sigmoid (not run by the
# articles), SGDR, cyclical and 1cycle use article-like ones.
PANELS = [
    ("fixed", [("base 0.01", "fixed", {}, BASE_LR), ("base 0.001", "fixed", {}, 0.001)]),
    ("step: stepsize 10k, gamma 0.1", [("", "step", {"stepsize": 10_000, "gamma": 0.1}, BASE_LR)]),
    (
        "multistep: 10k, 30k, 60k, gamma 0.5",
        [("", "multistep", {"stepvalues": [10_000, 30_000, 60_000], "gamma": 0.5}, BASE_LR)],
    ),
    ("exp: gamma 0.9999", [("", "exp", {"gamma": 0.9999}, BASE_LR)]),
    ("inv: gamma 0.001, power 0.75", [("", "inv", {"gamma": 0.001, "power": 0.75}, BASE_LR)]),
    ("poly: power 2", [("", "poly", {"power": 2.0}, BASE_LR)]),
    ("sigmoid: gamma -0.0005, stepsize 50k", [("", "sigmoid", {"gamma": -0.0005, "stepsize": 50_000}, BASE_LR)]),
    ("cosine", [("", "cosine", {"eta_min": 0.0}, BASE_LR)]),
    ("SGDR: T_0 6,667, T_mult 2", [("", "sgdr", {"T_0": 6667, "T_mult": 2, "eta_min": 0.0}, BASE_LR)]),
    (
        "cyclical: 0.01/3 .. 0.01, stepsize 12.5k",
        [
            (mode, "cyclical", {"mode": mode, "stepsize": 12_500, "gamma": gamma}, BASE_LR)
            for mode, gamma in (("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.99998))
        ],
    ),
    ("1cycle: max 0.01, pct_start 0.3", [("", "onecycle", {}, BASE_LR)]),
    (
        "step + 5-epoch linear warm-up (first 30k)",
        [("", "step", {"stepsize": 10_000, "gamma": 0.1, "warmup_epochs": 5}, BASE_LR)],
    ),
]


def panels() -> list:
    """PANELS, then one panel for each conf/sched option they leave out, in its own file's sched.unit."""
    drawn = {option for _, lines in PANELS for _, option, _, _ in lines}
    extra = []
    for path in sorted((CONF / "sched").glob("*.yaml")):
        if path.stem not in drawn:
            unit = OmegaConf.load(path).unit  # its lengths are written in it; iters would misread fractions
            extra.append((f"{path.stem}: as in conf/sched", [("", path.stem, {"unit": unit}, BASE_LR)]))
    return PANELS + extra


def lr_curve(option: str, overrides: dict, base_lr: float) -> list[float]:
    """The LR of every update, from the real scheduler stepped once per update."""
    cfg = OmegaConf.merge(load_option("sched", option, CONF), {"unit": "iters", **overrides})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr, momentum=0.9)
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=STEPS_PER_EPOCH, total_steps=ITERS)
    lrs = []
    for _ in range(ITERS):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "figures" / "lr_policies.png")
    args = parser.parse_args()
    torch.set_num_threads(1)

    drawn = panels()
    columns = 4
    rows = math.ceil(len(drawn) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(16, 3.2 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(drawn) :]:
        ax.set_visible(False)
    for ax, (title, lines) in zip(axes.flat, drawn):
        for label, option, overrides, base_lr in lines:
            lrs = lr_curve(option, overrides, base_lr)
            if overrides.get("warmup_epochs"):
                lrs = lrs[:30_000]
            ax.plot(range(len(lrs)), lrs, label=label or None, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, len(lrs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.grid(alpha=0.3)
        if any(label for label, *_ in lines):
            ax.legend(fontsize=8, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("iteration (optimizer update)")
    for ax in axes[:, 0]:
        ax.set_ylabel("learning rate")
    fig.suptitle(f"LR policies with the articles' settings: {ITERS:,} iterations, base LR {BASE_LR}", fontsize=12)
    fig.tight_layout()
    save(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
