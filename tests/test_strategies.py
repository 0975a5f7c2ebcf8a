"""The finetuning strategies of minipt.training.strategies, on tiny real models."""

from __future__ import annotations

import pytest
import torch

from minipt.errors import MiniptError
from minipt.models import GRULM, SequenceClassifier, TransformerLM
from minipt.models.modes import train_mode
from minipt.optim import AdamW
from minipt.training import strategies

VOCAB, T, B = 20, 8, 4


def tiny_transformer(seed: int = 0, n_layers: int = 3) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(VOCAB, d_model=16, n_layers=n_layers, n_heads=2, d_ff=32, max_len=T, dropout=0.1)


def tiny_gru(seed: int = 0) -> GRULM:
    torch.manual_seed(seed)
    return GRULM(VOCAB, d_embed=16, hidden_size=16, n_layers=3, dropout=0.1)


def classifier(backbone) -> SequenceClassifier:
    return SequenceClassifier(backbone, num_classes=2, pooling="mean", dropout=0.1)


def batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (B, T), generator=generator)
    labels = torch.tensor([0, 1, 0, 1])
    return input_ids, labels


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("make_backbone", [tiny_transformer, tiny_gru])
def test_freeze_k_leaves_frozen_tensors_bit_identical_and_without_optimizer_state(make_backbone):
    model = classifier(make_backbone())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    frozen = strategies.freeze(model, 2)
    assert frozen == [model.embedding, model.layers[0], model.layers[1]]
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    input_ids, labels = batch()
    for _ in range(5):
        optimizer.zero_grad()
        _, loss = model(input_ids, labels=labels)
        loss.backward()
        optimizer.step()
    frozen_ids = {id(p) for module in frozen for p in module.parameters()}
    for name, p in model.named_parameters():
        if id(p) in frozen_ids:
            assert torch.equal(p, before[name]), f"{name} changed although frozen"
            assert p not in optimizer.state, f"{name} has optimizer state although frozen"
            assert p.grad is None
    # the top layer and the head did train
    assert not torch.equal(model.head.weight, before["head.weight"])
    top_layer_params = list(model.layers[2].parameters())
    assert any(p in optimizer.state for p in top_layer_params)


def test_freeze_counts_match_the_strategy():
    model = classifier(tiny_transformer())
    parts = [model.embedding, *model.layers]
    size = [sum(p.numel() for p in part.parameters()) for part in parts]
    total = model.num_parameters()
    for k in range(0, 4):
        strategies.freeze(model, k)
        # frozen = embedding + lowest k layers (k = 0: nothing, full finetuning)
        expected_frozen = 0 if k == 0 else size[0] + sum(size[1 : 1 + k])
        assert model.num_parameters(trainable_only=True) == total - expected_frozen
    strategies.freeze(model, "all")  # linear probe: only final norm and heads train
    assert all(not name.startswith(("backbone.embedding", "backbone.layers")) for name in trainable_names(model))
    strategies.freeze(model, "none")
    assert model.num_parameters(trainable_only=True) == total


def test_freeze_rejects_bad_values_with_a_clear_message():
    model = tiny_transformer()
    with pytest.raises(MiniptError, match="between 0 and 3"):
        strategies.freeze(model, 4)
    with pytest.raises(MiniptError, match="'all' or 'none'"):
        strategies.freeze(model, "some")


def test_freezing_sets_requires_grad_only_and_the_loop_owns_the_modes():
    model = classifier(tiny_transformer())
    strategies.freeze(model, 1)
    assert all(module.training for module in model.modules())  # freeze() leaves the modes alone ...
    train_mode(model)  # ... the training loop sets them at every step
    assert not model.embedding.training and not model.layers[0].training
    assert model.layers[1].training and model.head.training


def test_gradual_unfreezing_schedule_is_exact():
    # 3 layers, a stage every 10 steps: head only, then one more layer from the top per stage
    steps = (0, 9, 10, 19, 20, 29, 30, 99)
    schedule = {step: strategies.gradual_unfreezing_k(step, every=10, n_layers=3) for step in steps}
    assert schedule == {0: 3, 9: 3, 10: 2, 19: 2, 20: 1, 29: 1, 30: 0, 99: 0}
    # which layers train at each stage
    model = tiny_transformer()
    expected_trainable_layers = {0: [], 1: [2], 2: [1, 2], 3: [0, 1, 2]}
    for stage, layers in expected_trainable_layers.items():
        strategies.freeze(model, strategies.gradual_unfreezing_k(stage * 10, every=10, n_layers=3))
        trainable = [i for i, layer in enumerate(model.layers) if all(p.requires_grad for p in layer.parameters())]
        assert trainable == layers, f"stage {stage}"
        assert all(p.requires_grad for p in model.embedding.parameters()) == (stage == 3)
    with pytest.raises(MiniptError):
        strategies.gradual_unfreezing_k(0, every=0, n_layers=3)


def test_discriminative_learning_rates():
    model = classifier(tiny_transformer())
    groups = strategies.discriminative_param_groups(model, lr=1.0, decay=0.5, weight_decay=0.1)
    # top level T = 3 layers + 1 = 4: embedding 0.5^4, layers 0.5^3, 0.5^2, 0.5^1, top 1
    lr_by_level = {group["name"]: group["lr"] for group in groups}
    assert lr_by_level == {"embedding": 0.0625, "layers.0": 0.125, "layers.1": 0.25, "layers.2": 0.5, "top": 1.0}
    listed = [p for g in groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == len(list(model.parameters()))
    # weight decay only on weight matrices: embeddings, biases and norm gains get none
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.layers[0].linear1.weight) in decayed and id(model.head.weight) in decayed
    assert id(model.layers[0].linear1.bias) not in decayed and id(model.layers[0].norm1.weight) not in decayed
    assert not decayed & {id(p) for p in model.embedding.parameters()}
    # frozen parts are left out
    strategies.freeze(model, 2)
    names = {g["name"] for g in strategies.discriminative_param_groups(model, lr=1.0, decay=0.5)}
    assert names == {"layers.2", "top"}


def test_reinit_top_layers_changes_only_the_top():
    model = tiny_transformer(n_layers=3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    strategies.reinit_top_layers(model, 1, generator=torch.Generator().manual_seed(5))
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        if name.startswith("layers.2.") and name.endswith("weight") and "norm" not in name:
            assert changed, name
        if not name.startswith("layers.2."):
            assert not changed, name
    with pytest.raises(MiniptError):
        strategies.reinit_top_layers(model, 4)


def test_l2sp_penalty_value_and_pull():
    model = classifier(tiny_transformer())
    reference = strategies.snapshot(model.backbone)
    reference = {f"backbone.{name}": value for name, value in reference.items()}
    assert strategies.l2sp_penalty(model, reference, strength=0.1).item() == 0.0
    # move one weight by +0.5 in two entries: penalty = 0.1 * (0.5^2 + 0.5^2) = 0.05
    with torch.no_grad():
        model.backbone.layers[0].linear1.weight[0, :2] += 0.5
    penalty = strategies.l2sp_penalty(model, reference, strength=0.1)
    assert penalty.item() == pytest.approx(0.05, abs=1e-6)
    # its gradient 2 * lambda * (w - w0) = 0.1 points back to the reference
    penalty.backward()
    assert model.backbone.layers[0].linear1.weight.grad[0, :2].tolist() == pytest.approx([0.1, 0.1], abs=1e-6)
    # frozen parameters do not count
    strategies.freeze(model, "all")
    assert strategies.l2sp_penalty(model, reference, strength=0.1).item() == 0.0


def test_trainable_parameter_table_adds_up():
    model = classifier(tiny_gru())
    strategies.freeze(model, 2)
    rows = strategies.trainable_parameter_table(model)
    assert [row[0] for row in rows] == ["embedding", "layers.0", "layers.1", "layers.2", "top (norm + heads)"]
    assert sum(row[2] for row in rows) == model.num_parameters()
    assert sum(row[1] for row in rows) == model.num_parameters(trainable_only=True)
    assert rows[0][1] == rows[1][1] == rows[2][1] == 0 and rows[3][1] == rows[3][2]


def test_format_parameter_table_totals():
    rows = [("embedding", 0, 100), ("layers.0", 0, 30), ("top (norm + heads)", 20, 20)]
    text = strategies.format_parameter_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["part", "trainable", "total"]
    assert lines[1].split() == ["embedding", "0", "100"]
    # 20 of 150 trainable: 13.3%
    assert lines[-1].split() == ["all", "20", "150", "(13.3%", "trainable)"]


def test_the_training_loop_keeps_frozen_modules_in_eval_mode():
    model = classifier(tiny_transformer())
    strategies.freeze(model, 2)
    train_mode(model)  # what the loop does at every step: model.train(), then the frozen modules back to eval()
    assert not model.embedding.training and not model.embedding.dropout.training
    assert not model.layers[0].training and not model.layers[1].training
    assert model.layers[2].training and model.head.training and model.dropout.training


def test_gradual_unfreezing_with_one_optimizer_gives_frozen_layers_no_state_and_no_decay():
    from minipt.optim import param_groups

    model = classifier(tiny_transformer(n_layers=3))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    strategies.freeze(model, 0)
    optimizer = AdamW(param_groups(model, weight_decay=0.5), lr=1e-2, weight_decay=0.5)  # every parameter
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters()}
    input_ids, labels = batch()

    def layer_state(i: int) -> tuple[bool, bool]:
        """(has optimizer state, is bit-identical to the start) for every tensor of layer i."""
        params = dict(model.named_parameters())
        names = [name for name in params if name.startswith(f"backbone.layers.{i}.")]
        return (all(params[n] in optimizer.state for n in names),
                all(torch.equal(params[n], before[n]) for n in names))

    seen = {}
    for step in range(8):  # stages of 2 steps: k = 3, 3, 2, 2, 1, 1, 0, 0
        strategies.freeze(model, strategies.gradual_unfreezing_k(step, every=2, n_layers=3))
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(input_ids, labels=labels)
        loss.backward()
        optimizer.step()
        seen[step] = [layer_state(i) for i in range(3)]
    untouched, trained = (False, True), (True, False)
    assert seen[1] == [untouched, untouched, untouched]  # head only
    assert seen[3] == [untouched, untouched, trained]  # + the top layer
    assert seen[5] == [untouched, trained, trained]
    assert seen[7] == [trained, trained, trained]
    # the embedding trained only in the last stage (steps 6, 7): 2 AdamW steps
    assert optimizer.state[model.embedding.token.weight]["step"].item() == 2.0


def test_frozen_gru_layers_get_no_dropout_on_their_inputs():
    # GRULM applies dropout between layers; the dropout in front of a frozen layer belongs to that layer and is off
    torch.manual_seed(0)
    model = GRULM(VOCAB, d_embed=16, hidden_size=16, n_layers=3, dropout=0.5)
    strategies.freeze(model, 2)  # embedding, layers 0 and 1 frozen; layer 2 trains
    train_mode(model)  # as the training loop does: the frozen part in eval mode
    input_ids, _ = batch()
    _, _, first = model(input_ids, return_intermediates=True)
    _, _, second = model(input_ids, return_intermediates=True)
    # hidden_states = [embedding, layer 0, layer 1, layer 2]: the frozen part is deterministic ...
    for index in range(3):
        assert torch.equal(first["hidden_states"][index], second["hidden_states"][index])
    # ... while the trainable top layer still sees dropout (p = 0.5) on its input
    assert not torch.equal(first["hidden_states"][3], second["hidden_states"][3])


# ----------------------------------------------------------------------------------------------------------
# Optimizer groups and the gradual-unfreezing callback
# ----------------------------------------------------------------------------------------------------------


def test_l2sp_takes_weight_decay_off_the_backbone_only():
    model = classifier(tiny_transformer(n_layers=2))
    groups = strategies.optimizer_groups(model, "plain", frozen_k=1, lr=1e-3, weight_decay=0.1, l2sp=0.01)
    head = {id(model.head.weight), id(model.head.bias)}
    for group in groups:
        for p in group["params"]:
            if id(p) in head:
                assert group["weight_decay"] == (0.1 if p.ndim == 2 else 0.0)
            else:
                assert group["weight_decay"] == 0.0
    # frozen parts (embedding, layers.0) are not in the optimizer
    listed = {id(p) for g in groups for p in g["params"]}
    assert listed.isdisjoint(id(p) for p in [*model.embedding.parameters(), *model.layers[0].parameters()])


def test_gradual_groups_hold_every_parameter_and_start_with_the_top_only():
    model = classifier(tiny_transformer(n_layers=2))
    groups = strategies.optimizer_groups(model, "gradual", frozen_k=0, lr=1e-3, weight_decay=0.01)
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert trainable_names(model) == {"backbone.norm.weight", "backbone.norm.bias", "head.weight", "head.bias"}


def test_gradual_unfreezing_callback_freezes_to_the_stage_of_each_step():
    model = classifier(tiny_transformer(n_layers=3))
    callback = strategies.GradualUnfreezing(every=2, floor=1)  # stages k = 3, 2, 1, then never below 1
    frozen_layers = []
    for step in range(8):
        callback.on_step_start(step, model, optimizer=None)
        frozen_layers.append(sum(not any(p.requires_grad for p in layer.parameters()) for layer in model.layers))
    assert frozen_layers == [3, 3, 2, 2, 1, 1, 1, 1]

