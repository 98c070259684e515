"""Optimizers from conf/optim/*.yaml, and the effective learning rate (base x factor x the batch-size rule).

The keys every optimizer shares live once, in conf/config.yaml's `optim` block: lr_factor, momentum_form (torch's
update or Caffe's, ablate.caffe) and the parameter multipliers of Caffe's prototxts (bias_lr_mult, bias_decay,
bias_layers, bn_decay), which become parameter groups here. Each group carries its `lr_mult`; the LR policies scale
every group's LR by the same factor (ablate.schedules), so a bias at 2x stays at 2x through the schedule.
"""

import inspect
import math
from dataclasses import dataclass

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from ablate import caffe
from ablate.errors import ConfigError

SCALING_RULES = ("none", "linear", "sqrt")
MOMENTUM_FORMS = ("torch", "caffe")
BIAS_LAYERS = ("conv", "fc")
# conf/optim keys that are not arguments of the torch class; build_optimizer consumes them.
NOT_TORCH_KEYS = ("lr_factor", "momentum_form", "bias_lr_mult", "bias_decay", "bias_layers", "bn_decay")
# Removed keys and the knobs that replaced them. conf/config.yaml still declares each as null, so that setting one
# reaches check_optim's one-line error instead of Hydra's "not in struct".
REMOVED_KEYS = {
    "decay_bn_and_bias": "optim.bias_decay=false optim.bn_decay=false (false) or leave both true (true)",
}


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
    shared = {key: options.pop(key) for key in NOT_TORCH_KEYS if key in options}
    if shared["momentum_form"] == "caffe":
        options["_target_"] = caffe_form(options["_target_"], options)
    make = instantiate(options, _convert_="all")
    groups = param_groups(
        model,
        lr=lr,
        weight_decay=options.get("weight_decay", 0.0),
        bias_lr_mult=shared["bias_lr_mult"],
        bias_decay=shared["bias_decay"],
        bias_layers=shared["bias_layers"],
        bn_decay=shared["bn_decay"],
    )
    return make(groups, lr=lr)


def caffe_form(target: str, options: dict) -> str:
    """The class that updates as Caffe's solver of the same name (momentum_form=caffe)."""
    name = get_class(target).__name__
    if name not in caffe.SOLVERS:
        raise ConfigError(
            f"optim.momentum_form=caffe: Caffe has no {name} solver (it has {', '.join(caffe.SOLVERS)}); "
            "use optim.momentum_form=torch"
        )
    # Caffe's RMSProp and AdaGrad have no momentum term (RMSPropSolver refuses one).
    if options.get("momentum", 0.0) and name in ("RMSprop", "Adagrad"):
        raise ConfigError(f"optim.momentum={options['momentum']}: Caffe's {name} has no momentum; use optim.momentum=0")
    target = caffe.SOLVERS[name]
    accepted = set(inspect.signature(get_class(target)).parameters)
    for key, value in options.items():
        if not key.startswith("_") and key not in accepted:
            raise ConfigError(f"optim.{key}={value}: Caffe's {name} has no such option; use optim.momentum_form=torch")
    if options.get("dampening"):
        raise ConfigError(f"optim.dampening={options['dampening']}: Caffe's SGD has none; use optim.dampening=0")
    return target


def validate_optim(cfg_optim: DictConfig, lr: float) -> None:
    """Raise ConfigError for a bad optimizer config, without the real model (for checks before data is built)."""
    build_optimizer(cfg_optim, torch.nn.Linear(1, 1), lr)


def param_groups(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float,
    bias_lr_mult: float = 1.0,
    bias_decay: bool = True,
    bias_layers: tuple[str, ...] = BIAS_LAYERS,
    bn_decay: bool = True,
) -> list[dict]:
    """Parameter groups with Caffe's per-parameter multipliers: the biases of `bias_layers` (conv, fc) at
    `bias_lr_mult` x lr and decayed only if `bias_decay`; BN scale and shift decayed only if `bn_decay`.

    The first group holds the weights (lr_mult 1), so param_groups[0]["lr"] is the run's LR. Every group records
    its lr_mult; parameters of layers that are neither conv, FC nor BN count as weights."""
    kinds = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                kinds[param] = "bn"
            elif name == "bias" and isinstance(module, torch.nn.modules.conv._ConvNd):
                kinds[param] = "conv"
            elif name == "bias" and isinstance(module, torch.nn.Linear):
                kinds[param] = "fc"
            else:
                kinds[param] = "weight"
    settings = {  # kind: (lr_mult, decayed)
        "weight": (1.0, True),
        "conv": (bias_lr_mult, bias_decay) if "conv" in bias_layers else (1.0, True),
        "fc": (bias_lr_mult, bias_decay) if "fc" in bias_layers else (1.0, True),
        "bn": (1.0, bn_decay),
    }
    groups: dict[tuple[float, bool], list] = {(1.0, True): []}  # the weights' group first
    for param, kind in kinds.items():
        if param.requires_grad:
            groups.setdefault(settings[kind], []).append(param)
    return [
        {"params": params, "lr": lr * lr_mult, "lr_mult": lr_mult, "weight_decay": weight_decay if decayed else 0.0}
        for (lr_mult, decayed), params in groups.items()
        if params
    ]


def check_optim(options: dict, lr: float) -> None:
    """One-line ConfigErrors for what torch would reject late or not at all."""
    target = options.get("_target_")
    try:
        optimizer_class = get_class(target)
    except (ImportError, AttributeError, ValueError, TypeError):
        raise ConfigError(f"optim._target_={target}: not an importable class; e.g. torch.optim.SGD") from None
    accepted = set(inspect.signature(optimizer_class).parameters) - {"params"}
    for key, replacement in REMOVED_KEYS.items():
        if options.get(key) is not None:
            raise ConfigError(f"optim.{key}={options[key]}: removed; use {replacement}")
        options.pop(key, None)
    for key in options:
        if key.startswith("_") or key in NOT_TORCH_KEYS:
            continue
        if key not in accepted:
            raise ConfigError(
                f"optim.{key}={options[key]}: {optimizer_class.__name__} has no such option; "
                f"use one of {', '.join(sorted(accepted))}"
            )
    check_shared(options)
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


def check_shared(options: dict) -> None:
    """The keys conf/config.yaml's optim block gives every optimizer."""
    for key in NOT_TORCH_KEYS:
        if key not in options:
            raise ConfigError(f"optim.{key}: missing; conf/config.yaml's optim block sets it for every optimizer")
    if options["momentum_form"] not in MOMENTUM_FORMS:
        raise ConfigError(
            f"optim.momentum_form={options['momentum_form']}: unknown; use torch (w -= lr*v) or caffe (w -= v, "
            "the LR inside the velocity)"
        )
    mult = options["bias_lr_mult"]
    if isinstance(mult, bool) or not isinstance(mult, int | float) or mult < 0:
        raise ConfigError(f"optim.bias_lr_mult={mult}: must be a number >= 0; the prototxts' is 2")
    for key in ("bias_decay", "bn_decay"):
        if not isinstance(options[key], bool):
            raise ConfigError(f"optim.{key}={options[key]}: must be true (decayed) or false (decay_mult 0)")
    layers = options["bias_layers"]
    if not isinstance(layers, list) or not set(layers) <= set(BIAS_LAYERS):
        raise ConfigError(
            f"optim.bias_layers={layers}: a list of {' and '.join(BIAS_LAYERS)}; e.g. optim.bias_layers=[conv]"
        )
