"""recipe=articles updates as Caffe's solvers do: each optimizer against Caffe's equations written out on plain
tensors (caffe/src/caffe/solvers/*.cpp), 50 updates with the LR cut 10x in the middle, to 1e-6."""

import pytest
import torch

from ablate import caffe

STEPS, CUT_AT, BASE_LR = 50, 25, 0.05


def caffe_reference(rule: str, w0: torch.Tensor, grads: list[torch.Tensor], lrs: list[float], **hp) -> torch.Tensor:
    """Caffe's ComputeUpdateValue + Update for one blob; weight decay enters the gradient (Regularize)."""
    w = w0.clone().double()
    history = torch.zeros_like(w)
    history_update = torch.zeros_like(w)  # AdaDelta's and Adam's second history
    m, wd, delta = hp.get("momentum", 0.0), hp.get("weight_decay", 0.0), hp.get("delta", 1e-8)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g.double() + wd * w
        if rule == "sgd":
            history = m * history + lr * g
            diff = history
        elif rule == "nesterov":
            previous = history.clone()
            history = m * history + lr * g
            diff = (1 + m) * history - m * previous
        elif rule == "adagrad":
            history = history + g**2
            diff = lr * g / (history.sqrt() + delta)
        elif rule == "rmsprop":
            history = hp["rms_decay"] * history + (1 - hp["rms_decay"]) * g**2
            diff = lr * g / (history.sqrt() + delta)
        elif rule == "adadelta":
            history = m * history + (1 - m) * g**2
            update = g * ((history_update + delta) / (history + delta)).sqrt()
            history_update = m * history_update + (1 - m) * update**2
            diff = lr * update
        elif rule == "adam":
            b1, b2 = hp["betas"]
            history = b1 * history + (1 - b1) * g
            history_update = b2 * history_update + (1 - b2) * g**2
            correction = (1 - b2**t) ** 0.5 / (1 - b1**t)
            diff = lr * correction * history / (history_update.sqrt() + delta)
        else:
            raise ValueError(rule)
        w = w - diff
    return w


def run_torch(optimizer_class, w0: torch.Tensor, grads: list[torch.Tensor], lrs: list[float], **kwargs):
    w = torch.nn.Parameter(w0.clone().double())
    optimizer = optimizer_class([w], lr=lrs[0], **kwargs)
    for g, lr in zip(grads, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        w.grad = g.double().clone()
        optimizer.step()
    return w.detach()


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    w0 = torch.randn(64, generator=generator)
    grads = [torch.randn(64, generator=generator) for _ in range(STEPS)]
    lrs = [BASE_LR if t < CUT_AT else BASE_LR * 0.1 for t in range(STEPS)]
    return w0, grads, lrs


CASES = {
    # rule: (ablate's optimizer under recipe=articles, its arguments, Caffe's hyperparameters)
    "sgd": (caffe.SGD, {"momentum": 0.9, "weight_decay": 0.005}, {"momentum": 0.9, "weight_decay": 0.005}),
    "sgd_m0.99": (caffe.SGD, {"momentum": 0.99, "weight_decay": 0.005}, {"momentum": 0.99, "weight_decay": 0.005}),
    "nesterov": (
        caffe.SGD,
        {"momentum": 0.9, "weight_decay": 0.005, "nesterov": True},
        {"momentum": 0.9, "weight_decay": 0.005},
    ),
    "adagrad": (torch.optim.Adagrad, {"eps": 1e-8, "weight_decay": 0.005}, {"weight_decay": 0.005}),
    "rmsprop": (
        torch.optim.RMSprop,
        {"alpha": 0.9, "eps": 1e-8, "weight_decay": 0.005},
        {"rms_decay": 0.9, "weight_decay": 0.005},
    ),
    "adadelta": (
        torch.optim.Adadelta,
        {"rho": 0.95, "eps": 1e-8, "weight_decay": 0.005},
        {"momentum": 0.95, "weight_decay": 0.005},
    ),
    "adam": (
        caffe.Adam,
        {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.005},
        {"betas": (0.9, 0.999), "weight_decay": 0.005},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_caffe_over_an_lr_cut(case, problem):
    w0, grads, lrs = problem
    optimizer_class, kwargs, hp = CASES[case]
    rule = case.split("_")[0]
    expected = caffe_reference(rule, w0, grads, lrs, **hp)
    got = run_torch(optimizer_class, w0, grads, lrs, **kwargs)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_sgd_is_not_caffe_after_an_lr_cut(nesterov, problem):
    """The reason momentum_form exists: torch's SGD leaves Caffe's path at the cut (and matches it before)."""
    w0, grads, lrs = problem
    kwargs = {"momentum": 0.9, "weight_decay": 0.005, "nesterov": nesterov}
    expected = caffe_reference("nesterov" if nesterov else "sgd", w0, grads, lrs, momentum=0.9, weight_decay=0.005)
    got = run_torch(torch.optim.SGD, w0, grads, lrs, **kwargs)
    assert (got - expected).abs().max() > 1e-3
    before = run_torch(torch.optim.SGD, w0, grads[:CUT_AT], lrs[:CUT_AT], **kwargs)
    expected_before = caffe_reference(
        "nesterov" if nesterov else "sgd", w0, grads[:CUT_AT], lrs[:CUT_AT], momentum=0.9, weight_decay=0.005
    )
    assert torch.allclose(before, expected_before, atol=1e-9)


def test_first_update_after_a_cut_is_9x_torchs():
    """The issue's figure: at m=0.9, Caffe's first update after a 10x cut is (0.9+0.1)/(0.09+0.1)... of torch's."""
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    steps = {}
    for name, cls in (("caffe", caffe.SGD), ("torch", torch.optim.SGD)):
        w.data.zero_()
        optimizer = cls([w], lr=0.01, momentum=0.9)
        for _ in range(200):  # steady state at the old LR
            w.grad = torch.ones(1, dtype=torch.float64)
            optimizer.step()
        optimizer.param_groups[0]["lr"] = 0.001
        before = w.item()
        w.grad = torch.ones(1, dtype=torch.float64)
        optimizer.step()
        steps[name] = before - w.item()
    assert steps["caffe"] / steps["torch"] == pytest.approx(9.1, abs=0.05)


def test_torch_adam_is_not_caffe():
    """Why recipe=articles has its own Adam: torch adds eps after the bias correction."""
    w0 = torch.randn(64, generator=torch.Generator().manual_seed(0))
    grads = [torch.randn(64, generator=torch.Generator().manual_seed(t)) * 1e-3 for t in range(STEPS)]
    lrs = [BASE_LR] * STEPS
    hp = {"betas": (0.9, 0.999), "weight_decay": 0.005}
    expected = caffe_reference("adam", w0, grads, lrs, **hp)
    got = run_torch(torch.optim.Adam, w0, grads, lrs, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.005)
    assert (got - expected).abs().max() > 1e-6


def test_dampening_is_refused():
    with pytest.raises(ValueError, match="dampening"):
        caffe.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, dampening=0.5)
