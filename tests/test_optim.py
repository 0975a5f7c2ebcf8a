"""minipt.optim against torch.optim: AdamW and SGD trajectories, state_dict resume, gradient clipping,
learning-rate schedules and the decay / no-decay split.

The trajectories run in float64 on a small least-squares problem: both optimisers start from the same
weights, see the same gradients, and must stay within 1e-9 of each other after every one of 100 steps.
"""

from __future__ import annotations

import copy
import io
from functools import partial

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from minipt.optim import (
    SGD,
    AdamW,
    OptimizerConfigError,
    clip_grad_norm_,
    constant_with_warmup,
    param_groups,
    slanted_triangular,
    warmup_cosine,
)

FLOAT64 = dict(atol=1e-9, rtol=1e-9)


class Regression(nn.Module):
    """``y = (W2 relu(W1 x + b1) + b2) * scale``, plus one parameter that the loss never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 5)
        self.output = nn.Linear(5, 2)
        self.scale = nn.Parameter(torch.ones(2))
        self.unused = nn.Parameter(torch.ones(3))  # never gets a gradient: must not move, not even by decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.hidden(x))) * self.scale


def make_model() -> Regression:
    torch.manual_seed(0)
    return Regression().double()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    return x, y


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> list[list[torch.Tensor]]:
    """Run ``steps``; return the parameters (cloned) after each step."""
    trajectory = []
    for step in steps:
        x, y = batch(step)
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory


def groups_of(model: Regression, layout: str, **hidden_overrides) -> list:
    if layout == "one":
        return list(model.parameters())
    # two groups, each with its own lr and weight decay
    return [
        {"params": list(model.hidden.parameters()), **hidden_overrides},
        {"params": [*model.output.parameters(), model.scale, model.unused]},
    ]


ADAMW_CASES = {
    "defaults": ("one", {}, {}),
    "non_default": ("one", dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3), {}),
    "two_groups": ("two", dict(lr=1e-2, weight_decay=0.05), dict(lr=5e-2, weight_decay=0.5)),
}


@pytest.mark.parametrize("case", list(ADAMW_CASES))
def test_adamw_trajectory_equals_torch(case):
    layout, options, hidden_overrides = ADAMW_CASES[case]
    theirs_model, mine_model = make_model(), make_model()
    theirs = torch.optim.AdamW(groups_of(theirs_model, layout, **hidden_overrides), **options, foreach=False)
    mine = AdamW(groups_of(mine_model, layout, **hidden_overrides), **options)
    start = {name: p.detach().clone() for name, p in mine_model.named_parameters()}
    for step, (their_params, my_params) in enumerate(
        zip(train(theirs_model, theirs, range(100)), train(mine_model, mine, range(100)), strict=True)
    ):
        for their_param, my_param in zip(their_params, my_params, strict=True):
            assert_close(my_param, their_param, **FLOAT64, msg=lambda m, s=step: f"step {s}: {m}")
    # the weights really moved (a test where nothing happens would pass trivially) ...
    assert (mine_model.hidden.weight - start["hidden.weight"]).abs().max() > 1e-2
    # ... except the parameter without a gradient, which is bit-identical (no decay either)
    assert torch.equal(mine_model.unused, start["unused"])


def test_adamw_state_matches_torch_layout():
    model = make_model()
    optimizer = AdamW(model.parameters())
    train(model, optimizer, range(3))
    state = optimizer.state[model.hidden.weight]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    assert isinstance(state["step"], torch.Tensor) and state["step"].item() == 3.0
    assert state["exp_avg"].shape == model.hidden.weight.shape
    assert model.unused not in optimizer.state  # never stepped, so no state


@pytest.mark.parametrize("saved_fast,resumed_fast", [(False, False), (True, True), (False, True), (True, False)])
def test_adamw_state_dict_round_trip_resumes_identically(saved_fast, resumed_fast):
    # uninterrupted: 40 steps
    model = make_model()
    optimizer = AdamW(model.parameters(), lr=2e-2, weight_decay=0.1, fast=resumed_fast)
    train(model, optimizer, range(40))

    # interrupted: 25 steps, save model and optimizer through a file's bytes, rebuild both, 15 more steps; the
    # file is the same for both paths, so a run saved by one resumes in the other
    first_model = make_model()
    first_optimizer = AdamW(first_model.parameters(), lr=2e-2, weight_decay=0.1, fast=saved_fast)
    train(first_model, first_optimizer, range(25))
    buffer = io.BytesIO()
    torch.save({"model": first_model.state_dict(), "optimizer": first_optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = make_model()
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer = AdamW(resumed_model.parameters(), lr=2e-2, weight_decay=0.1, fast=resumed_fast)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    assert resumed_optimizer.state[resumed_model.hidden.weight]["step"].item() == 25.0
    train(resumed_model, resumed_optimizer, range(25, 40))

    for name, parameter in model.named_parameters():
        if saved_fast == resumed_fast:
            assert torch.equal(resumed_model.get_parameter(name), parameter), name  # bit-identical
        else:
            assert_close(resumed_model.get_parameter(name), parameter, atol=1e-12, rtol=0, msg=name)


def clipped_scheduled_run(fast: bool, steps: int = 20) -> tuple[list[list[torch.Tensor]], AdamW]:
    """``steps`` AdamW steps over decay / no-decay groups, with gradient clipping and a warmup + cosine schedule;
    ``scale`` has no gradient at every third step, so its step count falls behind the others'."""
    model = make_model()
    optimizer = AdamW(param_groups(model, weight_decay=0.3), lr=5e-2, betas=(0.9, 0.99), fast=fast)
    schedule = partial(warmup_cosine, warmup_steps=4, total_steps=steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    trajectory = []
    for step in range(steps):
        x, y = batch(step)
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        clip_grad_norm_(model.parameters(), max_norm=0.5)
        if step % 3 == 2:
            model.scale.grad = None  # skipped: no update, no decay, no step counted
        optimizer.step()
        scheduler.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory, optimizer


def test_fast_adamw_equals_the_readable_one_over_20_steps():
    readable, readable_optimizer = clipped_scheduled_run(fast=False)
    fast, fast_optimizer = clipped_scheduled_run(fast=True)
    for step, (readable_params, fast_params) in enumerate(zip(readable, fast, strict=True)):
        for readable_param, fast_param in zip(readable_params, fast_params, strict=True):
            assert_close(fast_param, readable_param, atol=1e-12, rtol=0, msg=lambda m, s=step: f"step {s}: {m}")
    assert (readable[-1][0] - readable[0][0]).abs().max() > 1e-2  # the weights moved
    # the same state, including the step counts that differ from parameter to parameter
    for readable_state, fast_state in zip(readable_optimizer.state_dict()["state"].values(),
                                          fast_optimizer.state_dict()["state"].values(), strict=True):
        assert readable_state.keys() == fast_state.keys()
        for key in readable_state:
            assert_close(fast_state[key], readable_state[key], atol=1e-12, rtol=0)
    steps = sorted({state["step"].item() for state in fast_optimizer.state.values()})
    assert steps == [14.0, 20.0]  # scale skipped 6 of 20 steps


def test_adamw_continues_from_a_torch_adamw_state_dict():
    # same per-parameter state keys as torch: a torch AdamW checkpoint resumes in minipt's AdamW
    model = make_model()
    theirs = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)
    train(model, theirs, range(10))
    mine_model = copy.deepcopy(model)
    mine = AdamW(mine_model.parameters(), lr=1e-2)
    # deepcopy as a file would: load_state_dict keeps tensors that already have the right dtype, and the two
    # optimisers must not share their moment buffers
    mine.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for their_params, my_params in zip(
        train(model, theirs, range(10, 30)), train(mine_model, mine, range(10, 30)), strict=True
    ):
        for their_param, my_param in zip(their_params, my_params, strict=True):
            assert_close(my_param, their_param, **FLOAT64)


def test_step_with_a_closure_returns_the_loss_and_equals_a_plain_step():
    x, y = batch(0)
    plain_model, closure_model = make_model(), make_model()
    plain = AdamW(plain_model.parameters(), lr=0.1)
    with_closure = AdamW(closure_model.parameters(), lr=0.1)
    train(plain_model, plain, range(1))

    def closure():
        with_closure.zero_grad()
        loss = ((closure_model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    loss = with_closure.step(closure)
    assert_close(loss, ((make_model()(x) - y) ** 2).mean())
    for mine, theirs in zip(closure_model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 0.999)), r"betas\[0\]"),
        (dict(betas=(0.9, -0.1)), r"betas\[1\]"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_adamw_rejects_bad_hyper_parameters(options, field):
    with pytest.raises(OptimizerConfigError, match=f"AdamW: {field}"):
        AdamW(make_model().parameters(), **options)


def test_adamw_checks_each_group_own_values():
    model = make_model()
    with pytest.raises(OptimizerConfigError, match="AdamW: lr must be >= 0, got -0.5"):
        AdamW([{"params": model.hidden.parameters(), "lr": -0.5}, {"params": model.output.parameters()}])


# ----------------------------------------------------------------------------------------------------------
# SGD
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sgd_trajectory_equals_torch(momentum, weight_decay):
    theirs_model, mine_model = make_model(), make_model()
    options = dict(lr=0.05, momentum=momentum, weight_decay=weight_decay)
    theirs = torch.optim.SGD(theirs_model.parameters(), **options, foreach=False)
    mine = SGD(mine_model.parameters(), **options)
    for their_params, my_params in zip(
        train(theirs_model, theirs, range(50)), train(mine_model, mine, range(50)), strict=True
    ):
        for their_param, my_param in zip(their_params, my_params, strict=True):
            assert_close(my_param, their_param, atol=1e-12, rtol=1e-12)
    if momentum:
        assert set(mine.state[mine_model.hidden.weight]) == {"momentum_buffer"}


def test_sgd_rejects_bad_hyper_parameters():
    with pytest.raises(OptimizerConfigError, match="SGD: momentum"):
        SGD(make_model().parameters(), lr=0.1, momentum=-0.5)
    with pytest.raises(OptimizerConfigError, match="SGD: lr"):
        SGD(make_model().parameters(), lr=-0.1)


# ----------------------------------------------------------------------------------------------------------
# Gradient clipping
# ----------------------------------------------------------------------------------------------------------


def parameters_with_grads(*grads):
    parameters = []
    for grad in grads:
        parameter = nn.Parameter(torch.zeros(len(grad), dtype=torch.float64))
        parameter.grad = torch.tensor(grad, dtype=torch.float64)
        parameters.append(parameter)
    return parameters


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_grad_norm_equals_torch(max_norm):
    grads = ([1.0, -2.0, 0.5], [3.0, 0.25])
    mine, theirs = parameters_with_grads(*grads), parameters_with_grads(*grads)
    no_grad = nn.Parameter(torch.zeros(2, dtype=torch.float64))  # skipped by both
    my_norm = clip_grad_norm_([*mine, no_grad], max_norm)
    their_norm = torch.nn.utils.clip_grad_norm_([*theirs, no_grad], max_norm)
    assert_close(my_norm, their_norm, atol=1e-12, rtol=0)
    for my_param, their_param in zip(mine, theirs, strict=True):
        assert_close(my_param.grad, their_param.grad, atol=1e-12, rtol=0)


def test_clip_grad_norm_by_hand():
    # grads [3] and [4]: global norm sqrt(9 + 16) = 5 (the norm of the concatenated vector, not 3 + 4)
    first, second = parameters_with_grads([3.0], [4.0])
    norm = clip_grad_norm_([first, second], max_norm=1.0)
    assert norm.item() == 5.0  # returned before clipping
    # scaled by 1 / (5 + 1e-6): [0.6, 0.8] up to the 1e-6 guard (relative change 2e-7)
    assert_close(first.grad, torch.tensor([0.6], dtype=torch.float64), atol=1e-6, rtol=0)
    assert_close(second.grad, torch.tensor([0.8], dtype=torch.float64), atol=1e-6, rtol=0)
    # below the threshold nothing changes: the factor is min(1, 10 / (5 + 1e-6)) = 1
    small = parameters_with_grads([3.0, 4.0])
    clip_grad_norm_(small, max_norm=10.0)
    assert torch.equal(small[0].grad, torch.tensor([3.0, 4.0], dtype=torch.float64))
    # a single tensor works too, and bad max_norm is refused
    single = parameters_with_grads([0.0, 2.0])[0]
    assert clip_grad_norm_(single, 1.0).item() == 2.0
    with pytest.raises(OptimizerConfigError, match="max_norm"):
        clip_grad_norm_(single, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Learning-rate schedules
# ----------------------------------------------------------------------------------------------------------


def test_warmup_cosine_values():
    schedule = partial(warmup_cosine, warmup_steps=4, total_steps=12, min_ratio=0.1)
    # warmup (step + 1) / 4
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0  # p = 0: cos 0 = 1
    # step 6: p = (6 - 4) / (12 - 4) = 0.25; cos(pi/4) = 0.7071068; 0.1 + 0.9 * (1 + 0.7071068) / 2 = 0.8681981
    assert schedule(6) == pytest.approx(0.8681981, abs=1e-7)
    assert schedule(8) == pytest.approx(0.55, abs=1e-12)  # p = 0.5, cos = 0: 0.1 + 0.9 * 0.5
    assert schedule(12) == pytest.approx(0.1, abs=1e-12)  # p = 1, cos = -1
    assert schedule(50) == pytest.approx(0.1, abs=1e-12)  # flat after total_steps
    assert warmup_cosine(0, warmup_steps=0, total_steps=10) == 1.0  # no warmup: the cosine starts at 1


def test_constant_with_warmup_values():
    assert [constant_with_warmup(s, warmup_steps=4) for s in (0, 1, 2, 3, 4, 100)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert constant_with_warmup(0, warmup_steps=0) == 1.0


def test_slanted_triangular_values():
    schedule = partial(slanted_triangular, total_steps=100, cut_frac=0.1, ratio=32)
    # cut = floor(100 * 0.1) = 10; f = (1 + p * 31) / 32
    assert schedule(0) == 1 / 32  # p = 0
    assert schedule(5) == pytest.approx(16.5 / 32)  # p = 5/10 = 0.5: (1 + 15.5) / 32 = 0.515625
    assert schedule(10) == 1.0  # p = 1 at the peak
    # step 55: p = 1 - (55 - 10) / (10 * (1/0.1 - 1)) = 1 - 45 / 90 = 0.5
    assert schedule(55) == pytest.approx(16.5 / 32)
    assert schedule(100) == pytest.approx(1 / 32)  # p = 1 - 90 / 90 = 0
    assert schedule(150) == pytest.approx(1 / 32)  # held at p = 0 past the end


def test_schedules_drive_lambda_lr():
    model = make_model()
    optimizer = SGD(model.parameters(), lr=0.2)
    schedule = partial(warmup_cosine, warmup_steps=3, total_steps=10, min_ratio=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    used = []
    for _ in range(12):
        used.append(optimizer.param_groups[0]["lr"])  # the lr the next optimizer step uses
        optimizer.step()
        scheduler.step()
    # step k uses 0.2 * schedule(k): warmup 0.2/3, 0.4/3, 0.2, then cosine down to 0 at step 10
    assert used[:3] == pytest.approx([0.2 / 3, 0.4 / 3, 0.2])
    assert used[3] == pytest.approx(0.2)
    assert used[10] == pytest.approx(0.0, abs=1e-15)
    assert used == pytest.approx([0.2 * schedule(k) for k in range(12)])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: warmup_cosine(0, warmup_steps=10, total_steps=10), "total_steps"),
        (lambda: warmup_cosine(0, warmup_steps=-1, total_steps=10), "warmup_steps"),
        (lambda: warmup_cosine(0, warmup_steps=1, total_steps=10, min_ratio=1.5), "min_ratio"),
        (lambda: constant_with_warmup(0, warmup_steps=-2), "warmup_steps"),
        (lambda: slanted_triangular(0, total_steps=5, cut_frac=0.1), "total_steps"),
        (lambda: slanted_triangular(0, total_steps=100, cut_frac=1.0), "cut_frac"),
        (lambda: slanted_triangular(0, total_steps=100, ratio=0.5), "ratio"),
    ],
)
def test_schedules_reject_bad_settings(call, message):
    with pytest.raises(OptimizerConfigError, match=message):
        call()


# ----------------------------------------------------------------------------------------------------------
# Decay / no-decay parameter groups
# ----------------------------------------------------------------------------------------------------------


class TinyNorm(nn.Module):
    """LayerNorm-like: a gain and a shift over a 2-D normalized shape (the gain has 2 dims on purpose)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 10, bias=False)  # registered first: the tied tensor is first seen here
        self.embedding = nn.Embedding(10, 4)
        self.head.weight = self.embedding.weight  # tied input / output embedding
        self.hidden = nn.Linear(4, 4)
        self.norm = TinyNorm((2, 2))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.mixing = nn.Parameter(torch.eye(4))  # a matrix owned directly by the model: decayed


def test_param_groups_split():
    model = TinyLM()
    decay_group, no_decay_group = param_groups(model, weight_decay=0.1)
    assert decay_group["weight_decay"] == 0.1 and no_decay_group["weight_decay"] == 0.0
    same = lambda got, want: len(got) == len(want) and all(g is w for g, w in zip(got, want, strict=True))  # noqa: E731
    assert same(decay_group["params"], [model.mixing, model.hidden.weight])
    assert same(
        no_decay_group["params"],
        [model.embedding.weight, model.hidden.bias, model.norm.weight, model.norm.bias],
    )
    # every trainable tensor exactly once (the tied one is not listed twice), the frozen layer not at all
    listed = decay_group["params"] + no_decay_group["params"]
    assert len({id(p) for p in listed}) == len(listed) == len(list(model.parameters())) - 2


def test_param_groups_feed_adamw_and_decay_only_the_decay_group():
    model = TinyLM()
    optimizer = AdamW(param_groups(model, weight_decay=0.5), lr=0.1)
    before = {name: p.detach().clone() for name, p in model.named_parameters(remove_duplicate=False)}
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter) if parameter.requires_grad else None
    optimizer.step()  # zero gradients: only the decay moves anything, by a factor 1 - 0.1 * 0.5 = 0.95
    assert torch.equal(model.hidden.weight, before["hidden.weight"] * 0.95)
    assert torch.equal(model.embedding.weight, before["embedding.weight"])
    assert torch.equal(model.norm.weight, before["norm.weight"])
    assert torch.equal(model.frozen.weight, before["frozen.weight"])


def test_param_groups_rejects_negative_decay():
    with pytest.raises(OptimizerConfigError, match="weight_decay"):
        param_groups(TinyLM(), weight_decay=-1.0)

