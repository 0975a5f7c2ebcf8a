r"""Optimisers, learning-rate schedules and the decay / no-decay split, written out.

* :class:`AdamW` — Adam with decoupled weight decay (Loshchilov & Hutter, 2019), step for step as
  ``torch.optim.AdamW`` computes it, so the two give the same trajectory.
* :class:`SGD` — plain stochastic gradient descent with optional momentum, the baseline.
* :func:`clip_grad_norm_` — rescale all gradients together when their global L2 norm is too large.
* :func:`param_groups` — weight decay for the weight matrices, none for biases, norms and embeddings.
* :func:`warmup_cosine`, :func:`constant_with_warmup`, :func:`slanted_triangular` — learning-rate schedules as
  plain functions ``step -> multiplier of the base lr``, to be used with ``torch.optim.lr_scheduler.LambdaLR``::

      from functools import partial
      schedule = partial(warmup_cosine, warmup_steps=100, total_steps=1000)
      scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
      for step in range(1000):
          ...; optimizer.step(); scheduler.step()   # optimizer step k uses lr = base_lr * schedule(k)

  ``LambdaLR`` calls the function with 0 when it is built and with k after its k-th ``step()``, so the
  multiplier at ``step`` is the one used by the optimizer step numbered ``step`` (counting from 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from minipt.errors import MiniptError

__all__ = [
    "OptimizerConfigError",
    "AdamW",
    "SGD",
    "clip_grad_norm_",
    "param_groups",
    "warmup_cosine",
    "constant_with_warmup",
    "slanted_triangular",
]


OptimizerConfigError = MiniptError  # a hyper-parameter out of range: minipt's one error class, under this module's name


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise OptimizerConfigError(message)


# ----------------------------------------------------------------------------------------------------------
# AdamW
# ----------------------------------------------------------------------------------------------------------


class AdamW(torch.optim.Optimizer):
    r"""Adam with decoupled weight decay, the optimiser of GPT and BERT pretraining.

    At step :math:`t = 1, 2, \dots`, for every parameter :math:`\theta` with gradient :math:`g_t`
    (learning rate :math:`\gamma`, weight decay :math:`\lambda`, moments starting at :math:`m_0 = v_0 = 0`):

    .. math::
        \theta &\leftarrow \theta\,(1 - \gamma\lambda)
            && \text{decoupled weight decay: shrink the weight, outside the moments} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g_t
            && \text{first moment: running mean of the gradient} \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2
            && \text{second moment: running mean of its square} \\
        \hat m_t &= \frac{m_t}{1 - \beta_1^t}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t}
            && \text{bias correction (the moments start at 0)} \\
        \theta &\leftarrow \theta - \gamma\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    All products and the square root are elementwise. Because :math:`\hat m_t / \sqrt{\hat v_t}` has the size of
    :math:`g / |g| = \pm 1` at the first step, every weight first moves by about :math:`\gamma`, whatever the
    gradient's scale. "Decoupled" means the decay is not added to the gradient (that would be Adam with L2,
    whose decay gets divided by :math:`\sqrt{\hat v}` and so shrinks large-gradient weights less).

    The weight decay is applied before the moments, as ``torch.optim.AdamW`` does, so both agree step for
    step (``tests/test_optim.py`` checks 1e-9 in float64 over 100 steps).

    Arguments (as torch): ``params`` an iterable of tensors or of dicts (param groups, each with its own
    ``lr``, ``betas``, ``eps``, ``weight_decay``); ``lr`` :math:`\gamma`; ``betas``
    :math:`(\beta_1, \beta_2)`; ``eps`` :math:`\epsilon`; ``weight_decay`` :math:`\lambda`.

    State per parameter (the keys of torch's AdamW, so ``state_dict()`` files load into either):
    ``step`` (a float32 scalar tensor, :math:`t`), ``exp_avg`` (:math:`m_t`), ``exp_avg_sq`` (:math:`v_t`).

    ``fast=True`` (the switch the CLI's training jobs turn on) runs the same update once over all of a group's
    parameters with torch's multi-tensor ``torch._foreach_*`` operations, instead of once per parameter, with
    fewer passes over memory (:meth:`_step_fast`): the same numbers up to rounding (``tests/test_optim.py``
    checks 1e-12 in float64 over 20 steps), the same state, so a checkpoint resumes on either path.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        fast: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.fast = fast  # readable per-parameter loop (False) or the multi-tensor one (True): the same numbers
        for group in self.param_groups:  # check every group, including their own overrides
            _check(group["lr"] >= 0.0, f"AdamW: lr must be >= 0, got {group['lr']}")
            beta1, beta2 = group["betas"]
            _check(0.0 <= beta1 < 1.0, f"AdamW: betas[0] must be in [0, 1), got {beta1}")
            _check(0.0 <= beta2 < 1.0, f"AdamW: betas[1] must be in [0, 1), got {beta2}")
            _check(group["eps"] >= 0.0, f"AdamW: eps must be >= 0, got {group['eps']}")
            _check(group["weight_decay"] >= 0.0, f"AdamW: weight_decay must be >= 0, got {group['weight_decay']}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One AdamW update of every parameter that has a gradient. ``closure`` (optional, as torch)
        re-computes the loss with gradients enabled and returns it; ``step`` then returns that loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if self.fast:
                self._step_fast(group)
                continue
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue  # not used in this step's loss (or frozen): no update, no decay
                grad = param.grad
                state = self._state_of(param)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]  # m, v: the shape of param
                state["step"] += 1
                t = state["step"].item()

                param.mul_(1.0 - lr * weight_decay)  # theta <- theta (1 - lr lambda)
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)  # m = beta1 m + (1 - beta1) g
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)  # v = beta2 v + (1 - beta2) g^2
                exp_avg_hat = exp_avg / (1.0 - beta1**t)  # m_hat = m / (1 - beta1^t)
                exp_avg_sq_hat = exp_avg_sq / (1.0 - beta2**t)  # v_hat = v / (1 - beta2^t)
                param.addcdiv_(exp_avg_hat, exp_avg_sq_hat.sqrt().add_(eps), value=-lr)  # -lr m_hat/(sqrt(v_hat)+eps)
        return loss

    def _state_of(self, param: Tensor) -> dict:
        """``param``'s state, created at its first step: ``step`` 0, ``exp_avg`` and ``exp_avg_sq`` zeros."""
        if param.grad.is_sparse:
            raise OptimizerConfigError("AdamW: sparse gradients are not supported")
        state = self.state[param]
        if not state:  # first step of this parameter
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _step_fast(self, group: dict) -> None:
        r"""The update of :meth:`step` over lists of tensors: ``torch._foreach_mul_(ps, c)`` is ``p.mul_(c)`` for
        every ``p`` in ``ps``, in one call. Two rewrites save passes over memory:

        * :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g` is ``lerp``: :math:`m + (1 - \beta_1)(g - m)`;
        * the bias corrections :math:`c_1 = 1 - \beta_1^t`, :math:`c_2 = 1 - \beta_2^t` move out of the tensors
          into two scalars, since :math:`\dfrac{m / c_1}{\sqrt{v / c_2} + \epsilon}
          = \dfrac{\sqrt{c_2}}{c_1} \cdot \dfrac{m}{\sqrt{v} + \epsilon \sqrt{c_2}}` (multiply above and below
          by :math:`\sqrt{c_2}`), so :math:`\hat m` and :math:`\hat v` are never stored.

        Parameters that have taken different numbers of steps (one skipped a step without gradient) have
        different bias corrections, so they go in separate lists. The step counts are read back once per group.
        """
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        params = [param for param in group["params"] if param.grad is not None]  # no gradient: no update, no decay
        if not params:
            return
        states = [self._state_of(param) for param in params]
        counts = [state["step"] for state in states]
        torch._foreach_add_(counts, 1.0)
        by_step: dict[float, list[int]] = {}  # t -> the positions of the parameters at their t-th step
        for position, t in enumerate(torch.stack(counts).tolist()):  # one read-back for the whole group
            by_step.setdefault(t, []).append(position)
        for t, positions in by_step.items():
            param = [params[i] for i in positions]
            grad = [params[i].grad for i in positions]
            exp_avg = [states[i]["exp_avg"] for i in positions]
            exp_avg_sq = [states[i]["exp_avg_sq"] for i in positions]
            root_c2 = math.sqrt(1.0 - beta2**t)  # sqrt(c2)
            step_size = lr * root_c2 / (1.0 - beta1**t)  # lr sqrt(c2) / c1

            torch._foreach_mul_(param, 1.0 - lr * weight_decay)  # theta <- theta (1 - lr lambda)
            torch._foreach_lerp_(exp_avg, grad, 1.0 - beta1)  # m = beta1 m + (1 - beta1) g
            torch._foreach_mul_(exp_avg_sq, beta2)  # v = beta2 v + (1 - beta2) g^2
            torch._foreach_addcmul_(exp_avg_sq, grad, grad, value=1.0 - beta2)
            denominator = torch._foreach_sqrt(exp_avg_sq)  # sqrt(v) + eps sqrt(c2)
            torch._foreach_add_(denominator, eps * root_c2)
            torch._foreach_addcdiv_(param, exp_avg, denominator, value=-step_size)  # -lr m_hat / (sqrt(v_hat) + eps)


# ----------------------------------------------------------------------------------------------------------
# SGD
# ----------------------------------------------------------------------------------------------------------


class SGD(torch.optim.Optimizer):
    r"""Stochastic gradient descent with optional momentum and (L2) weight decay, as ``torch.optim.SGD``.

    .. math::
        g &\leftarrow g + \lambda\,\theta && \text{weight decay added to the gradient (L2 penalty)} \\
        b_t &= \mu\, b_{t-1} + g, \quad b_1 = g && \text{momentum buffer (only when } \mu > 0) \\
        \theta &\leftarrow \theta - \gamma\, b_t && \text{(} \theta - \gamma g \text{ when } \mu = 0)

    Arguments: ``lr`` :math:`\gamma`, ``momentum`` :math:`\mu`, ``weight_decay`` :math:`\lambda`; param groups
    as for :class:`AdamW`. State per parameter (with momentum): ``momentum_buffer`` :math:`b_t`, as torch.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        for group in self.param_groups:
            _check(group["lr"] >= 0.0, f"SGD: lr must be >= 0, got {group['lr']}")
            _check(group["momentum"] >= 0.0, f"SGD: momentum must be >= 0, got {group['momentum']}")
            _check(group["weight_decay"] >= 0.0, f"SGD: weight_decay must be >= 0, got {group['weight_decay']}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One SGD update of every parameter that has a gradient; ``closure`` as in :meth:`AdamW.step`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if weight_decay != 0.0:
                    grad = grad.add(param, alpha=weight_decay)  # g + lambda theta
                if momentum != 0.0:
                    state = self.state[param]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = grad.clone()  # b_1 = g
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(grad)  # b = mu b + g
                    grad = state["momentum_buffer"]
                param.add_(grad, alpha=-lr)  # theta <- theta - lr b
        return loss


# ----------------------------------------------------------------------------------------------------------
# Gradient clipping
# ----------------------------------------------------------------------------------------------------------


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float) -> Tensor:
    r"""Scale all gradients by one factor so that their global L2 norm is at most ``max_norm``, in place.

    .. math::
        \lVert g \rVert = \sqrt{\textstyle\sum_{p} \sum_i g_{p,i}^2}, \qquad
        g \leftarrow g \cdot \min\!\Bigl(1, \frac{\text{max\_norm}}{\lVert g \rVert + 10^{-6}}\Bigr)

    The norm runs over every gradient together (one vector of all parameters), so clipping keeps the
    gradient's direction and only shortens it. The ``1e-6`` guards against dividing by zero, as in
    ``torch.nn.utils.clip_grad_norm_``. Parameters without a gradient are skipped.

    Returns the norm *before* clipping (a scalar tensor; 0 when no parameter has a gradient), handy to log.
    """
    _check(max_norm > 0.0, f"clip_grad_norm_: max_norm must be > 0, got {max_norm}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    squared_norms = torch.stack([(grad * grad).sum() for grad in grads])  # (number of tensors,)
    total_norm = squared_norms.sum().sqrt()  # the global L2 norm
    clip_coefficient = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)  # 1 when the norm is already small
    for grad in grads:
        grad.mul_(clip_coefficient)
    return total_norm


# ----------------------------------------------------------------------------------------------------------
# Decay / no-decay parameter groups
# ----------------------------------------------------------------------------------------------------------


def _exempt_from_decay(module: nn.Module, parameter: Tensor) -> bool:
    """Embeddings, norm layers' weights and every vector (biases, gains) are not decayed."""
    return isinstance(module, nn.Embedding) or "Norm" in type(module).__name__ or parameter.ndim < 2


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    r"""Split ``model``'s trainable parameters into ``[decay group, no-decay group]`` for the optimiser.

    Weight decay pulls weights toward 0. That suits the weight matrices of linear layers, but not biases
    (shifts), the gains of norm layers (which should stay near 1) nor embeddings (rare tokens' rows would
    be shrunk at every step while rarely receiving gradient). A parameter goes to the no-decay group when
    it belongs to an ``nn.Embedding``, to a module whose class name contains ``"Norm"`` (``LayerNorm``,
    ``BatchNorm1d``, ``RMSNorm``, ...), or has fewer than 2 dimensions.

    * Parameters with ``requires_grad=False`` (frozen) are left out.
    * A tensor shared by several modules (tied input embedding and output layer) is listed once; it is
      exempt from decay when any of its modules makes it so (a tied embedding stays an embedding).
    * Order follows ``model.named_modules()``, so the groups are the same at every run.

    Returns ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``;
    either list may be empty. Usage: ``AdamW(param_groups(model, 0.1), lr=3e-4)``.
    """
    _check(weight_decay >= 0.0, f"param_groups: weight_decay must be >= 0, got {weight_decay}")
    order: dict[int, Tensor] = {}  # id -> parameter, in first-seen order (dicts keep insertion order)
    exempt: dict[int, bool] = {}
    for module in model.modules():  # each module once, even when it appears under several names
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            key = id(parameter)
            order.setdefault(key, parameter)
            exempt[key] = exempt.get(key, False) or _exempt_from_decay(module, parameter)
    decay = [parameter for key, parameter in order.items() if not exempt[key]]
    no_decay = [parameter for key, parameter in order.items() if exempt[key]]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------------------------------------
# Learning-rate schedules: step -> multiplier of the base learning rate
# ----------------------------------------------------------------------------------------------------------


def _linear_warmup(step: int, warmup_steps: int) -> float:
    """``(step + 1) / warmup_steps``: the first step uses ``1/warmup_steps`` (not 0, which would waste a step),
    the last warmup step ``step = warmup_steps - 1`` uses the full rate."""
    return (step + 1) / warmup_steps


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    r"""Linear warmup, then a cosine decay from 1 to ``min_ratio`` at ``total_steps``, flat after.

    .. math::
        f(s) = \begin{cases}
            \dfrac{s + 1}{W} & s < W \\[1ex]
            r + (1 - r)\,\tfrac12\bigl(1 + \cos(\pi\, p)\bigr), \quad
            p = \min\!\Bigl(1, \dfrac{s - W}{T - W}\Bigr) & s \ge W
        \end{cases}

    with :math:`W` = ``warmup_steps``, :math:`T` = ``total_steps``, :math:`r` = ``min_ratio``. So
    :math:`f(W - 1) = f(W) = 1`, :math:`f` is halfway, :math:`(1 + r)/2`, at :math:`s = (W + T)/2`, and
    :math:`f(s) = r` for :math:`s \ge T`. ``warmup_steps=0`` starts the cosine at once.
    """
    _check(warmup_steps >= 0, f"warmup_cosine: warmup_steps must be >= 0, got {warmup_steps}")
    _check(
        total_steps > warmup_steps,
        f"warmup_cosine: total_steps ({total_steps}) must be greater than warmup_steps ({warmup_steps})",
    )
    _check(0.0 <= min_ratio <= 1.0, f"warmup_cosine: min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup_steps:
        return _linear_warmup(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))  # p in [0, 1]
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_with_warmup(step: int, *, warmup_steps: int) -> float:
    r"""Linear warmup, then the base learning rate: :math:`f(s) = \min\bigl(1, (s + 1) / W\bigr)`.

    ``warmup_steps=0`` is a constant schedule, :math:`f(s) = 1`.
    """
    _check(warmup_steps >= 0, f"constant_with_warmup: warmup_steps must be >= 0, got {warmup_steps}")
    if step < warmup_steps:
        return _linear_warmup(step, warmup_steps)
    return 1.0


def slanted_triangular(step: int, *, total_steps: int, cut_frac: float = 0.1, ratio: float = 32) -> float:
    r"""ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, eq. 3): a short rise, a long fall.

    .. math::
        \text{cut} = \lfloor T \cdot \text{cut\_frac} \rfloor, \qquad
        p = \begin{cases}
            s / \text{cut} & s < \text{cut} \\
            1 - \dfrac{s - \text{cut}}{\text{cut} \cdot (1 / \text{cut\_frac} - 1)} & \text{otherwise}
        \end{cases}, \qquad
        f(s) = \frac{1 + p\,(\text{ratio} - 1)}{\text{ratio}}

    with :math:`T` = ``total_steps``. The multiplier rises linearly from ``1/ratio`` at step 0 to 1 at step
    ``cut``, then falls linearly back to ``1/ratio`` at about step :math:`T`. The paper's :math:`\eta_{max}`
    is the base learning rate. Past the end, :math:`p` is held at 0 (flat at ``1/ratio``) instead of turning
    negative.
    """
    _check(0.0 < cut_frac < 1.0, f"slanted_triangular: cut_frac must be in (0, 1), got {cut_frac}")
    _check(ratio >= 1.0, f"slanted_triangular: ratio must be >= 1, got {ratio}")
    cut = math.floor(total_steps * cut_frac)
    _check(
        cut >= 1,
        f"slanted_triangular: total_steps * cut_frac must be >= 1, got {total_steps} * {cut_frac}",
    )
    rising = step / cut
    falling = 1.0 - (step - cut) / (cut * (1.0 / cut_frac - 1.0))
    p = rising if step < cut else max(0.0, falling)
    return (1.0 + p * (ratio - 1.0)) / ratio
