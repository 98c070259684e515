"""LR policies from conf/sched/*.yaml, stepped once per optimizer update, with an optional linear warm-up.

Every option file names one policy function below as its `_target_`. Lengths (stepsize, stepvalues, T_0, the
cyclical half cycle) are written in `sched.unit`; rates (the gamma of exp, inv, sigmoid and exp_range) are per
one `sched.unit`, so the articles' per-iteration values carry over with sched.unit=iters and a short run keeps
their shape with sched.unit=fraction. `to_updates` is the one place where a length becomes optimizer updates.

Adding a policy is one function `name(optimizer, clock, *, <its keys>) -> LRScheduler` below and one
conf/sched/<name>.yaml with `_target_: ablate.schedules.<name>`, `_partial_: true`, every keyword of the function
and the COMPOSITION_KEYS; `check_keys` holds the file to the function, and there is no other list to edit.
"""

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    SequentialLR,
    StepLR,
)

from ablate.errors import ConfigError
from ablate.optim import build_optimizer
from ablate.record import RANGE_TEST_SUGGESTION

UNITS = ("fraction", "epochs", "iters")
# Keys of every conf/sched file that build_scheduler consumes; the rest are the policy function's arguments.
COMPOSITION_KEYS = ("unit", "warmup_epochs", "warmup_start_factor")
# The file an LR range test record holds its suggested bounds in (ablate.record owns the format); bounds_from reads it.
RANGE_TEST_JSON = RANGE_TEST_SUGGESTION
CYCLICAL_MODES = ("triangular", "triangular2", "exp_range")


def to_updates(length: float, unit: str, *, steps_per_epoch: int, total_steps: int, key: str = "sched.length") -> int:
    """`length` in `unit` as a whole number of optimizer updates.

    iters: as written (the articles' solver files); epochs: times steps_per_epoch, so a milestone stays at the
    same epoch when the batch size changes; fraction: of total_steps.
    """
    if unit not in UNITS:
        raise ConfigError(f"sched.unit={unit}: unknown unit; use one of {', '.join(UNITS)}")
    if isinstance(length, bool) or not isinstance(length, (int, float)) or not length > 0:
        raise ConfigError(f"{key}={length}: a length must be a positive number (in sched.unit={unit})")
    per_unit = {"iters": 1, "epochs": steps_per_epoch, "fraction": total_steps}[unit]
    # Half rounds up (Python's round() would send 12.5 to 12 but 13.5 to 14).
    updates = math.floor(length * per_unit + 0.5)
    if updates < 1:
        raise ConfigError(f"{key}={length}: shorter than one update in sched.unit={unit}; give a longer length")
    return updates


@dataclass(frozen=True)
class Clock:
    """The updates a policy runs over (the run after warm-up) and the unit its lengths and rates are written in."""

    unit: str
    steps_per_epoch: int
    total_steps: int

    def updates(self, key: str, length: float) -> int:
        """A length key of the policy in updates; past the end of the run is an error, not a silent no-op."""
        updates = to_updates(
            length, self.unit, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps, key=f"sched.{key}"
        )
        if updates > self.total_steps:
            raise ConfigError(
                f"sched.{key}={length}: {updates} updates is past the end of the run ({self.total_steps} updates "
                f"after warm-up) in sched.unit={self.unit}; give a shorter length or use sched.unit=fraction"
            )
        return updates

    @property
    def updates_per_unit(self) -> int:
        return to_updates(1, self.unit, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps)


def build_scheduler(
    cfg_sched: DictConfig, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_steps: int
) -> LRScheduler:
    """The policy over `optimizer`, after `sched.warmup_epochs` of linear warm-up; step it once per update."""
    if not (steps_per_epoch > 0 and total_steps > 0):
        raise ValueError(f"steps_per_epoch={steps_per_epoch} and total_steps={total_steps} must be positive")
    options = OmegaConf.to_container(cfg_sched, resolve=True)
    check_keys(options)
    unit, warmup_epochs, start_factor = (options.pop(key) for key in COMPOSITION_KEYS)
    warmup_updates = warmup_length(warmup_epochs, start_factor, steps_per_epoch, total_steps)
    # Unit errors must name sched.unit even for policies without lengths (fixed, cosine).
    to_updates(1, unit, steps_per_epoch=steps_per_epoch, total_steps=total_steps)

    clock = Clock(unit, steps_per_epoch, total_steps - warmup_updates)
    main = instantiate(options, _convert_="all")(optimizer, clock)
    if not isinstance(main, LRScheduler):
        raise TypeError(f"sched._target_={options['_target_']}: returned {type(main).__name__}, not an LRScheduler")
    if not warmup_updates:
        return main
    # The warm-up climbs to the policy's first LR: the optimizer's LR for the decays, base_lr for cyclical.
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_updates)
    # The policy starts at its own update 0 when the warm-up ends, as in torchvision's reference recipes.
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_updates])


def validate_sched(
    cfg_sched: DictConfig, cfg_optim: DictConfig, lr: float, *, steps_per_epoch: int, total_steps: int
) -> None:
    """Raise ConfigError for a bad schedule before the model exists.

    It builds the schedule on the configured optimizer over a stand-in parameter at the run's effective `lr`, so the
    checks cannot disagree with build_scheduler (cycle_momentum needs an optimizer with momentum or betas)."""
    stand_in = build_optimizer(cfg_optim, torch.nn.Linear(1, 1), lr)
    build_scheduler(cfg_sched, stand_in, steps_per_epoch=steps_per_epoch, total_steps=total_steps)


def check_keys(options: dict):
    """The policy function named by `_target_`, after checking the file's keys against its arguments."""
    target = options.get("_target_")
    try:
        policy = get_method(str(target))
    except (ImportError, AttributeError, ValueError, TypeError):
        raise ConfigError(f"sched._target_={target}: not a policy function; e.g. ablate.schedules.step") from None
    parameters = inspect.signature(policy).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 2:
        raise ConfigError(
            f"sched._target_={target}: a policy function takes (optimizer, clock, *, <its keys>), not "
            f"({', '.join(p.name for p in positional)}); make its keys keyword-only"
        )
    # The builder passes the optimizer and the clock: without _partial_ Hydra would call the policy without them.
    if options.get("_partial_") is not True:
        raise ConfigError(f"sched._partial_: missing from the {policy.__name__} policy's config; add _partial_: true")
    accepted = [p.name for p in parameters if p.kind == p.KEYWORD_ONLY]
    for key in options:
        if not key.startswith("_") and key not in accepted and key not in COMPOSITION_KEYS:
            raise ConfigError(
                f"sched.{key}={options[key]}: the {policy.__name__} policy has no such option; "
                f"use one of {', '.join([*accepted, *COMPOSITION_KEYS])}"
            )
    for key in [*accepted, *COMPOSITION_KEYS]:
        if key not in options:
            raise ConfigError(f"sched.{key}: missing from the {policy.__name__} policy's config; add it (conf/sched)")
    return policy


def warmup_length(warmup_epochs: float, start_factor: float, steps_per_epoch: int, total_steps: int) -> int:
    """Warm-up updates; 0 when off."""
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
        raise ConfigError(f"sched.warmup_epochs={warmup_epochs}: must be >= 0 (0 = no warm-up)")
    if not (isinstance(start_factor, (int, float)) and 0 < start_factor <= 1):
        raise ConfigError(f"sched.warmup_start_factor={start_factor}: must be in (0, 1]; e.g. 0.01")
    if warmup_epochs == 0:
        return 0
    updates = to_updates(
        warmup_epochs, "epochs", steps_per_epoch=steps_per_epoch, total_steps=total_steps, key="sched.warmup_epochs"
    )
    if updates >= total_steps:
        raise ConfigError(
            f"sched.warmup_epochs={warmup_epochs}: {updates} updates is not shorter than the run ({total_steps} "
            "updates); use fewer warm-up epochs or a longer run"
        )
    return updates


def check_decay_factor(key: str, gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):
        raise ConfigError(
            f"sched.{key}={gamma}: must be in (0, 1]; a negative factor flips the LR's sign and one above 1 "
            "grows it without bound"
        )


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The run's LR: the first parameter group's, the weights' (ablate.optim.param_groups)."""
    return optimizer.param_groups[0]["lr"]


def per_group(optimizer: torch.optim.Optimizer, lr: float) -> list[float]:
    """An absolute LR bound for each parameter group, times the group's lr_mult (a Caffe bias at 2x stays at 2x).

    The multiplicative policies (LambdaLR, StepLR, ...) scale each group's own LR already; the ones that take
    absolute bounds (CyclicLR, OneCycleLR) need them per group."""
    return [lr * group.get("lr_mult", 1.0) for group in optimizer.param_groups]


# The policies. Each takes the optimizer, the clock, and exactly the keys of its conf/sched file.


def fixed(optimizer, clock: Clock) -> LRScheduler:
    """Caffe fixed: the optimizer's LR throughout."""
    return LambdaLR(optimizer, lambda update: 1.0)


def step(optimizer, clock: Clock, *, stepsize: float, gamma: float) -> LRScheduler:
    """Caffe step: lr * gamma^floor(iter / stepsize)."""
    check_decay_factor("gamma", gamma)
    return StepLR(optimizer, step_size=clock.updates("stepsize", stepsize), gamma=gamma)


def multistep(optimizer, clock: Clock, *, stepvalues: list[float], gamma: float) -> LRScheduler:
    """Caffe multistep: lr * gamma^(number of stepvalues passed)."""
    check_decay_factor("gamma", gamma)
    if not stepvalues or any(b <= a for a, b in zip(stepvalues, stepvalues[1:])):
        raise ConfigError(f"sched.stepvalues={stepvalues}: must be non-empty and increasing; e.g. [0.1,0.3,0.6]")
    milestones = [clock.updates("stepvalues", value) for value in stepvalues]
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ConfigError(
            f"sched.stepvalues={stepvalues}: two values fall on the same update ({milestones}); space them apart"
        )
    return MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def exp(optimizer, clock: Clock, *, gamma: float) -> LRScheduler:
    """Caffe exp: lr * gamma^iter, with gamma per sched.unit (per iteration in Caffe)."""
    check_decay_factor("gamma", gamma)
    return ExponentialLR(optimizer, gamma=gamma ** (1 / clock.updates_per_unit))


def inv(optimizer, clock: Clock, *, gamma: float, power: float) -> LRScheduler:
    """Caffe inv: lr * (1 + gamma * iter)^(-power), with gamma per sched.unit."""
    if not (isinstance(gamma, (int, float)) and gamma >= 0):
        raise ConfigError(f"sched.gamma={gamma}: must be >= 0; a negative gamma drives the LR to infinity")
    if not (isinstance(power, (int, float)) and power >= 0):
        raise ConfigError(f"sched.power={power}: must be >= 0; a negative power grows the LR without bound")
    gamma_per_update = gamma / clock.updates_per_unit
    return LambdaLR(optimizer, lambda update: (1 + gamma_per_update * update) ** -power)


def poly(optimizer, clock: Clock, *, power: float) -> LRScheduler:
    """Caffe poly: lr * (1 - iter / max_iter)^power, reaching 0 after the last update."""
    if not (isinstance(power, (int, float)) and power >= 0):
        raise ConfigError(f"sched.power={power}: must be >= 0; a negative power makes the LR infinite at the end")
    return PolynomialLR(optimizer, total_iters=clock.total_steps, power=power)


def sigmoid(optimizer, clock: Clock, *, gamma: float, stepsize: float) -> LRScheduler:
    """Caffe sigmoid: lr / (1 + exp(-gamma * (iter - stepsize))); gamma < 0 decays, gamma > 0 rises to lr."""
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma)):
        raise ConfigError(f"sched.gamma={gamma}: must be a finite number (negative decays, positive rises)")
    gamma_per_update = gamma / clock.updates_per_unit
    midpoint = clock.updates("stepsize", stepsize)

    def factor(update: int) -> float:
        z = gamma_per_update * (update - midpoint)
        # Two forms of the logistic so that exp never overflows, however steep the curve.
        return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))

    return LambdaLR(optimizer, factor)


def cosine(optimizer, clock: Clock, *, eta_min: float) -> LRScheduler:
    """Cosine annealing from the optimizer's LR to eta_min over the run."""
    if not (isinstance(eta_min, (int, float)) and eta_min >= 0):
        raise ConfigError(f"sched.eta_min={eta_min}: must be >= 0 (an LR)")
    return CosineAnnealingLR(optimizer, T_max=clock.total_steps, eta_min=eta_min)


def sgdr(optimizer, clock: Clock, *, T_0: float, T_mult: int, eta_min: float) -> LRScheduler:
    """SGDR (Loshchilov & Hutter): cosine annealing restarted after T_0, then T_0*T_mult, ... and the last cycle
    ends with the run's last update.

    Cycle ends are the cumulative lengths T_0 (1 + T_mult + ...) in sched.unit, each rounded once (not each cycle's
    rounded length added up); the cycle whose end is nearest the run's end is moved onto it and later ones dropped.
    With T_0 = 1/15 and T_mult = 2 over 124 updates torch's CosineAnnealingWarmRestarts (T_0 rounded to 8) would
    restart at update 120 and end at the full LR; here the cycles are 8, 17, 33 and 66 updates."""
    if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
        raise ConfigError(f"sched.T_mult={T_mult}: must be an integer >= 1 (1 = cycles of equal length)")
    if not (isinstance(eta_min, (int, float)) and eta_min >= 0):
        raise ConfigError(f"sched.eta_min={eta_min}: must be >= 0 (an LR)")
    clock.updates("T_0", T_0)  # checks that the first cycle fits the run
    first, total = T_0 * clock.updates_per_unit, clock.total_steps
    exact_ends = [first]
    while exact_ends[-1] < total:
        exact_ends.append(exact_ends[-1] + first * T_mult ** len(exact_ends))
    if len(exact_ends) > 1 and total - exact_ends[-2] < exact_ends[-1] - total:
        exact_ends.pop()  # the cycle before ends nearer the run's end: it is stretched to it
    ends = []
    for end in exact_ends[:-1]:
        ends.append(max(math.floor(end + 0.5), ends[-1] + 1 if ends else 1))
    ends = [end for end in ends if end < total] + [total]
    starts = [0, *ends[:-1]]
    ratio = eta_min / current_lr(optimizer)

    def factor(update: int) -> float:
        # The cycle holding `update`; past the end (the LR after the last update) the last cycle's end.
        cycle = next((i for i, end in enumerate(ends) if update < end), len(ends) - 1)
        progress = min(update - starts[cycle], ends[cycle] - starts[cycle]) / (ends[cycle] - starts[cycle])
        return ratio + (1 - ratio) * (1 + math.cos(math.pi * progress)) / 2

    return LambdaLR(optimizer, factor)


def cyclical(
    optimizer,
    clock: Clock,
    *,
    mode: str,
    base_lr: float | None,
    max_lr: float | None,
    bounds_from: str | None,
    stepsize: float,
    gamma: float,
    cycle_momentum: bool,
    base_momentum: float,
    max_momentum: float,
) -> LRScheduler:
    """Cyclical LR (Smith 2017) between base_lr and max_lr, `stepsize` per half cycle.

    Bounds: given, or from an LR range test record (bounds_from), or else max = the optimizer's LR and
    base = max / 3 (the articles' rule).
    """
    if mode not in CYCLICAL_MODES:
        raise ConfigError(f"sched.mode={mode}: unknown cyclical mode; use one of {', '.join(CYCLICAL_MODES)}")
    if bounds_from is not None:
        if base_lr is not None or max_lr is not None:
            raise ConfigError(
                f"sched.bounds_from={bounds_from}: give either the bounds (sched.base_lr, sched.max_lr) or "
                "bounds_from, not both"
            )
        base_lr, max_lr = read_bounds(bounds_from)
    elif base_lr is None and max_lr is None:
        max_lr = current_lr(optimizer)
        base_lr = max_lr / 3
    elif base_lr is None or max_lr is None:
        raise ConfigError(
            f"sched.base_lr={base_lr}, sched.max_lr={max_lr}: give both bounds, or neither "
            "(then max = optim.lr, base = max/3)"
        )
    if not base_lr > 0:
        raise ConfigError(f"sched.base_lr={base_lr}: must be positive")
    if not max_lr > base_lr:
        raise ConfigError(f"sched.max_lr={max_lr}: must be above sched.base_lr={base_lr}; swap or raise it")
    check_decay_factor("gamma", gamma)
    check_cycle_momentum(optimizer, cycle_momentum, base_momentum, max_momentum)
    return CyclicLR(
        optimizer,
        base_lr=per_group(optimizer, base_lr),
        max_lr=per_group(optimizer, max_lr),
        step_size_up=clock.updates("stepsize", stepsize),
        mode=mode,
        gamma=gamma ** (1 / clock.updates_per_unit),
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )


def onecycle(
    optimizer,
    clock: Clock,
    *,
    max_lr: float | None,
    pct_start: float,
    anneal_strategy: str,
    div_factor: float,
    final_div_factor: float,
    three_phase: bool,
    cycle_momentum: bool,
    base_momentum: float,
    max_momentum: float,
) -> LRScheduler:
    """1cycle (Smith & Topin): up from max_lr/div_factor to max_lr over pct_start of the run, then down."""
    max_lr = current_lr(optimizer) if max_lr is None else max_lr
    if not max_lr > 0:
        raise ConfigError(f"sched.max_lr={max_lr}: must be positive, or null for the optimizer's LR")
    if not (isinstance(pct_start, (int, float)) and 0 < pct_start < 1):
        raise ConfigError(f"sched.pct_start={pct_start}: must be in (0, 1), the share of the run spent rising")
    if anneal_strategy not in ("cos", "linear"):
        raise ConfigError(f"sched.anneal_strategy={anneal_strategy}: unknown; use cos or linear")
    for key, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
        if not value >= 1:
            raise ConfigError(f"sched.{key}={value}: must be >= 1 (it divides the LR)")
    check_cycle_momentum(optimizer, cycle_momentum, base_momentum, max_momentum)
    return OneCycleLR(
        optimizer,
        max_lr=per_group(optimizer, max_lr),
        total_steps=clock.total_steps,
        pct_start=float(pct_start),
        anneal_strategy=anneal_strategy,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
    )


def check_cycle_momentum(optimizer, cycle_momentum: bool, base_momentum: float, max_momentum: float) -> None:
    if not cycle_momentum:
        return
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ConfigError(
            f"sched.cycle_momentum=true: {type(optimizer).__name__} has no momentum or betas to cycle; "
            "set sched.cycle_momentum=false"
        )
    if not 0 <= base_momentum <= max_momentum < 1:
        raise ConfigError(
            f"sched.base_momentum={base_momentum}, sched.max_momentum={max_momentum}: need 0 <= base <= max < 1"
        )


def read_bounds(bounds_from: str | Path) -> tuple[float, float]:
    """(base_lr, max_lr) suggested by an LR range test: its record folder or its lr_range.json."""
    path = Path(bounds_from)
    if path.is_dir():
        path = path / RANGE_TEST_JSON
    try:
        suggestion = json.loads(path.read_text())
        return float(suggestion["base_lr"]), float(suggestion["max_lr"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"sched.bounds_from={bounds_from}: no readable {RANGE_TEST_JSON} there; run "
            "`python -m ablate mode=lr_range` first and pass its record folder"
        ) from None
