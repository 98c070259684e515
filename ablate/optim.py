"""Optimizers from conf/optim/*.yaml, and the effective learning rate (base x factor x the batch-size rule)."""

import inspect
import math
from dataclasses import dataclass

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from ablate.errors import ConfigError

SCALING_RULES = ("none", "linear", "sqrt")

# conf/optim keys that are not arguments of the torch class; build_optimizer consumes them.
NOT_TORCH_KEYS = ("decay_bn_and_bias", "lr_factor")


@dataclass(frozen=True)
class EffectiveLR:
    """The LR a run trains at and every factor of it; the run's summary stores it as `lr` (asdict)."""

    base: float  # optim.lr: the LR tuned at batch.base_size
    factor: float  # optim.lr_factor: a study's relative LR grid (the optimizer study), 1 elsewhere
    batch_scale: float  # from batch.rule: 1 (none), k (linear) or sqrt(k) (sqrt), k = batch.size / batch.base_size
    effective: float  # base * factor * batch_scale, what the optimizer gets
    batch_size: int
    base_batch_size: int
    rule: str


def effective_lr(cfg_optim, cfg_batch) -> EffectiveLR:
    """The one place an LR multiplier is applied: optim.lr x optim.lr_factor x the batch-size rule.

    With k = batch.size / batch.base_size: rule linear gives k (Goyal et al. 2017), sqrt gives sqrt(k) (Hoffer et
    al. 2017), none gives 1.
    """
    base, factor = cfg_optim["lr"], cfg_optim["lr_factor"]
    batch_size, base_batch_size, rule = cfg_batch["size"], cfg_batch["base_size"], cfg_batch["rule"]
    if rule not in SCALING_RULES:
        raise ConfigError(f"batch.rule={rule}: unknown scaling rule; use one of {', '.join(SCALING_RULES)}")
    if not (isinstance(base, int | float) and base > 0):
        raise ConfigError(f"optim.lr={base}: the learning rate must be positive; e.g. optim.lr=0.01")
    if not (isinstance(factor, int | float) and factor > 0):
        raise ConfigError(f"optim.lr_factor={factor}: must be positive; e.g. optim.lr_factor=1")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise ConfigError(f"batch.size={batch_size}: must be a positive integer; e.g. batch.size=64")
    if not (isinstance(base_batch_size, int) and base_batch_size > 0):
        raise ConfigError(f"batch.base_size={base_batch_size}: must be a positive integer; e.g. batch.base_size=64")
    k = batch_size / base_batch_size
    batch_scale = {"none": 1.0, "linear": k, "sqrt": math.sqrt(k)}[rule]
    return EffectiveLR(
        base=float(base),
        factor=float(factor),
        batch_scale=batch_scale,
        # 12 significant digits: 0.01 x 3 is 0.03 in the record, not 0.030000000000000002.
        effective=float(f"{base * factor * batch_scale:.12g}"),
        batch_size=batch_size,
        base_batch_size=base_batch_size,
        rule=rule,
    )


def build_optimizer(cfg_optim: DictConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """The optimizer over `model`'s parameters at the effective `lr` (effective_lr(...).effective, not optim.lr)."""
    options = OmegaConf.to_container(cfg_optim, resolve=True)
    check_optim(options, lr)
    decay_bn_and_bias = options.pop("decay_bn_and_bias")
    options.pop("lr_factor", None)  # already in `lr`
    make = instantiate(options, _convert_="all")
    return make(param_groups(model, options.get("weight_decay", 0.0), decay_bn_and_bias), lr=lr)


def validate_optim(cfg_optim: DictConfig, lr: float) -> None:
    """Raise ConfigError for a bad optimizer config, without the real model (for checks before data is built)."""
    build_optimizer(cfg_optim, torch.nn.Linear(1, 1), lr)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_bn_and_bias: bool) -> list[dict]:
    """One group, or two where BN and bias parameters (the 1-D ones) are exempt from weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_bn_and_bias or not weight_decay:
        return [{"params": params}]
    # Conv and linear weights are >= 2-D; biases and BN scales and shifts are 1-D.
    decayed = [p for p in params if p.ndim > 1]
    exempt = [p for p in params if p.ndim <= 1]
    groups = [{"params": decayed}, {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def check_optim(options: dict, lr: float) -> None:
    """One-line ConfigErrors for what torch would reject late or not at all."""
    target = options.get("_target_")
    try:
        optimizer_class = get_class(target)
    except (ImportError, AttributeError, ValueError, TypeError):
        raise ConfigError(f"optim._target_={target}: not an importable class; e.g. torch.optim.SGD") from None
    accepted = set(inspect.signature(optimizer_class).parameters) - {"params"}
    for key in options:
        if key.startswith("_") or key in NOT_TORCH_KEYS:
            continue
        if key not in accepted:
            raise ConfigError(
                f"optim.{key}={options[key]}: {optimizer_class.__name__} has no such option; "
                f"use one of {', '.join(sorted(accepted))}"
            )
    if "decay_bn_and_bias" not in options or not isinstance(options["decay_bn_and_bias"], bool):
        raise ConfigError(
            f"optim.decay_bn_and_bias={options.get('decay_bn_and_bias')}: must be true (decay every parameter, "
            "as Caffe) or false (exempt BN and bias)"
        )
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"optim.lr={lr}: the learning rate must be positive; e.g. optim.lr=0.01")
    if options.get("weight_decay", 0.0) < 0:
        raise ConfigError(f"optim.weight_decay={options['weight_decay']}: must be >= 0; e.g. optim.weight_decay=0.005")
    momentum = options.get("momentum", 0.0)
    if not 0 <= momentum < 1:
        raise ConfigError(f"optim.momentum={momentum}: must be in [0, 1); e.g. optim.momentum=0.9")
    if options.get("nesterov") and momentum == 0:
        raise ConfigError("optim.momentum=0: Nesterov momentum needs momentum > 0; e.g. optim.momentum=0.9")
    for key in ("alpha", "rho"):
        if key in options and not 0 <= options[key] < 1:
            raise ConfigError(f"optim.{key}={options[key]}: a decay rate must be in [0, 1); e.g. optim.{key}=0.9")
    betas = options.get("betas", (0.9, 0.999))
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise ConfigError(f"optim.betas={betas}: needs two values in [0, 1); e.g. optim.betas=[0.9,0.999]")
