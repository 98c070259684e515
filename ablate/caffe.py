"""Caffe's update rules where torch's differ (`optim.momentum_form=caffe`): SGD, Nesterov momentum and Adam.
SOLVERS maps each torch class to the class that updates as Caffe's solver (ablate.optim.build_optimizer).

Caffe folds the learning rate into the velocity, torch applies it after:

    Caffe:  v = m*v + lr*(g + wd*w);  w -= v
    torch:  b = m*b + (g + wd*w);     w -= lr*b

With a constant LR the two are the same (v = lr*b). When the LR changes, Caffe's velocity still carries the old LR
for about 1/(1-m) updates while torch's rescales at once: right after a step from 0.01 to 0.001 Caffe's first update is
(m + 0.1)/(0.1m + 0.1) = 9.1x torch's at m = 0.9. Over the articles' 100,000 updates this washes out; in a compressed
schedule it does not. Caffe's Nesterov (NesterovSolver) updates by (1+m)*v_new - m*v_old with the same velocity.
"""

import torch


class CaffeSolver(torch.optim.Optimizer):
    """The loop Caffe's solvers share: each parameter's gradient, with L2 decay in it, goes to the subclass's update."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                # Caffe's Regularize: L2 decay enters the gradient, scaled by the parameter's decay_mult (the group's).
                decay = group["weight_decay"]
                grad = param.grad.add(param, alpha=decay) if decay else param.grad
                self.update(param, grad, self.state[param], group)
        return loss

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class SGD(CaffeSolver):
    """torch.optim.SGD's arguments, Caffe's SGDSolver / NesterovSolver update (the LR inside the velocity)."""

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        if dampening:
            raise ValueError("Caffe's SGD has no dampening; use dampening=0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": 0.0,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def update(self, param, grad, state, group):
        lr, momentum = group["lr"], group["momentum"]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(param)
        velocity = state["velocity"]
        if group["nesterov"]:
            previous = velocity.clone()
            velocity.mul_(momentum).add_(grad, alpha=lr)
            param.sub_(velocity * (1 + momentum) - previous * momentum)
        else:
            velocity.mul_(momentum).add_(grad, alpha=lr)
            param.sub_(velocity)


class Adam(CaffeSolver):
    """torch.optim.Adam's arguments, Caffe's AdamSolver update: eps is added to sqrt(v) before the bias correction.

    torch adds eps after correcting v, i.e. an eps sqrt(1 - beta2^t) times Caffe's: 3e-6 apart after 50 updates in
    tests/test_caffe.py, so the articles' recipe uses this one."""

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def update(self, param, grad, state, group):
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["m"] = torch.zeros_like(param)
            state["v"] = torch.zeros_like(param)
        state["step"] += 1
        t = state["step"]
        state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction = (1 - beta2**t) ** 0.5 / (1 - beta1**t)
        param.sub_(state["m"] / (state["v"].sqrt() + group["eps"]), alpha=group["lr"] * correction)


# momentum_form=caffe: torch's class name -> the class that updates as Caffe's solver of that name. torch's AdaGrad,
# RMSProp (momentum 0) and AdaDelta already compute Caffe's update, given Caffe's delta as eps (tests/test_caffe.py).
SOLVERS = {
    "SGD": "ablate.caffe.SGD",
    "Adam": "ablate.caffe.Adam",
    "Adagrad": "torch.optim.Adagrad",
    "RMSprop": "torch.optim.RMSprop",
    "Adadelta": "torch.optim.Adadelta",
}
