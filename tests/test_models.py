"""Tests of minipt.models: TransformerLM, GRULM, SequenceClassifier and their shared helpers.

Tiny sizes throughout (vocabulary 20, widths 16-32, at most 16 positions) so the file runs in seconds.
torch's own layers appear here only as reference oracles.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minipt.fast import FastSwitch
from minipt.models import (
    GRULM,
    MODEL_CLASSES,
    MaskedLMWithNextSentenceHead,
    ModelInputError,
    SequenceClassifier,
    TransformerLM,
    build_model,
)
from minipt.models.heads import first_token_pool, last_token_pool, mean_pool, pool
from minipt.models.language_model import cross_entropy, language_model_loss, next_token_probabilities
from minipt.nn import set_fast
from minipt.training.strategies import freeze

try:  # the project's own optimizer once it exists; torch's is only a stand-in for this test file
    from minipt.optim import AdamW
except ImportError:
    from torch.optim import AdamW

VOCAB = 20


def make_transformer(seed: int = 0, **overrides) -> TransformerLM:
    torch.manual_seed(seed)
    config = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64, "max_len": 16}
    config.update(overrides)
    return TransformerLM(**config)


def make_gru(seed: int = 0, **overrides) -> GRULM:
    torch.manual_seed(seed)
    config = {"vocab_size": VOCAB, "d_embed": 16, "hidden_size": 32, "n_layers": 2}
    config.update(overrides)
    return GRULM(**config)


def make_model(kind: str, seed: int = 0, **overrides) -> nn.Module:
    if kind == "transformer":
        return make_transformer(seed, **overrides)
    if kind == "encoder":
        return make_transformer(seed, causal=False, **overrides)
    if kind == "post-norm":  # BERT's arrangement (minipt.interop): post-norm, segments, an embedding norm
        return make_transformer(seed, causal=False, norm_first=False, type_vocab_size=2, activation="gelu_tanh",
                                layer_norm_eps=1e-12, **overrides)
    return make_gru(seed, **overrides)


def random_tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    """Ids in [1, VOCAB): 0 is the padding id and never appears as a real token."""
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


CAUSAL = ["transformer", "gru"]
ALL_KINDS = ["transformer", "encoder", "gru"]
WITH_POST_NORM = [*ALL_KINDS, "post-norm"]  # the fast-path and split checks cover BERT's arrangement too


# --------------------------------------------------------------------------------------------------------
# Shapes and the common interface
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_shapes_of_logits_loss_and_features(kind):
    model = make_model(kind)
    idx = random_tokens(3, 10)
    logits, loss = model(idx, targets=idx)
    hidden = 32  # d_model of the Transformer, hidden_size of the GRU
    assert logits.shape == (3, 10, VOCAB)
    assert loss.shape == ()
    assert model.features(idx).shape == (3, 10, hidden)
    assert model.hidden_size == hidden
    logits_only, no_loss = model(idx)
    assert no_loss is None and logits_only.shape == (3, 10, VOCAB)
    assert isinstance(model.layers, nn.ModuleList) and len(model.layers) == 2


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_build_model_rebuilds_from_architecture_and_config(kind):
    model = make_model(kind).eval()
    rebuilt = build_model(model.architecture, **model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    idx = random_tokens(2, 8)
    assert type(rebuilt) is type(model)
    assert torch.equal(rebuilt(idx)[0], model(idx)[0])
    assert set(MODEL_CLASSES) == {"transformer", "gru"}


def test_bad_configuration_and_inputs_raise_clear_errors():
    with pytest.raises(ModelInputError, match="unknown model architecture 'lstm'"):
        build_model("lstm", vocab_size=VOCAB)
    with pytest.raises(ModelInputError, match="d_model=30 must be divisible by n_heads=4"):
        make_transformer(d_model=30)
    with pytest.raises(ModelInputError, match="GRULM: hidden_size must be a positive integer"):
        make_gru(hidden_size=0)
    with pytest.raises(ModelInputError, match="pad_id must be in"):
        make_gru(pad_id=VOCAB)
    with pytest.raises(ModelInputError, match="bad config"):
        build_model("gru", vocab_size=VOCAB, d_embed=16, hidden=32, n_layers=1)
    with pytest.raises(ModelInputError, match="exceeds max_len=16"):
        make_transformer()(random_tokens(1, 17))
    with pytest.raises(ModelInputError, match="token id 20 is outside the vocabulary"):
        make_gru()(torch.tensor([[1, 20]]))
    with pytest.raises(ModelInputError, match="attention_mask must have the shape of idx"):
        make_transformer()(random_tokens(2, 4), attention_mask=torch.ones(2, 5))
    left_padded = torch.tensor([[0, 1, 1, 1]])
    with pytest.raises(ModelInputError, match="right-padded"):
        make_gru()(random_tokens(1, 4), attention_mask=left_padded)


# --------------------------------------------------------------------------------------------------------
# Causality and padding
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CAUSAL)
def test_causal_models_never_look_ahead(kind):
    model = make_model(kind).eval()
    idx = random_tokens(2, 12)
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] % (VOCAB - 1)) + 1  # a different real token at every position >= 7
    assert not torch.equal(idx[:, 7:], changed[:, 7:])
    logits, _ = model(idx)
    changed_logits, _ = model(changed)
    assert torch.equal(logits[:, :7], changed_logits[:, :7])  # exactly: the future is masked out, not damped
    assert not torch.allclose(logits[:, 7:], changed_logits[:, 7:])


def test_bidirectional_encoder_looks_ahead():
    model = make_model("encoder").eval()
    idx = random_tokens(1, 12)
    changed = idx.clone()
    changed[0, 11] = idx[0, 11] % (VOCAB - 1) + 1
    first_position = model(idx)[0][0, 0]
    assert (first_position - model(changed)[0][0, 0]).abs().max() > 1e-4  # position 0 saw position 11


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_padding_never_changes_real_positions(kind):
    model = make_model(kind).eval()
    short, long = random_tokens(1, 7, seed=2), random_tokens(1, 12, seed=3)
    batch = torch.zeros(2, 12, dtype=torch.long)  # pad id 0
    batch[0, :7], batch[1] = short[0], long[0]
    attention_mask = torch.tensor([[1] * 7 + [0] * 5, [1] * 12])
    padded_logits, _ = model(batch, attention_mask=attention_mask)
    # garbage in the padding must not matter either
    noisy_batch = batch.clone()
    noisy_batch[0, 7:] = torch.tensor([5, 9, 13, 2, 7])
    noisy_logits, _ = model(noisy_batch, attention_mask=attention_mask)
    alone_short, _ = model(short)
    alone_long, _ = model(long)
    torch.testing.assert_close(padded_logits[0, :7], alone_short[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(padded_logits[1], alone_long[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(noisy_logits[0, :7], padded_logits[0, :7], atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------------
# Equivalence with models assembled from torch's own layers
# --------------------------------------------------------------------------------------------------------


def test_transformer_matches_a_reference_built_from_torch_layers():
    model = make_transformer().eval()
    reference_layers = []
    for layer in model.layers:
        reference = nn.TransformerEncoderLayer(
            32, 4, dim_feedforward=64, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        reference.load_state_dict(layer.state_dict())  # same parameter names as torch
        reference_layers.append(reference.eval())
    reference_norm = nn.LayerNorm(32)
    reference_norm.load_state_dict(model.norm.state_dict())

    idx = random_tokens(2, 9)
    attention_mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    token_embedding = model.embedding.token.weight  # (V, C), also the LM head
    x = F.embedding(idx, token_embedding) + model.embedding.position.weight[:9]  # (B, T, C)
    causal_mask = torch.ones(9, 9, dtype=torch.bool).triu(1)
    with torch.no_grad():
        for reference in reference_layers:
            x = reference(x, src_mask=causal_mask, src_key_padding_mask=attention_mask == 0)
        expected = reference_norm(x) @ token_embedding.T  # (B, T, V)
        logits, _ = model(idx, attention_mask=attention_mask)
    torch.testing.assert_close(logits[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1, :6], expected[1, :6], atol=1e-5, rtol=1e-5)  # real positions


def test_gru_matches_a_reference_built_from_torch_gru():
    model = make_gru().eval()  # d_embed 16 != hidden 32 with tying: the head projects first
    idx = random_tokens(2, 9)
    x = model.embedding.token(idx)  # (B, T, 16)
    with torch.no_grad():
        for layer in model.layers:
            reference = nn.GRU(layer.input_size, 32, batch_first=True)
            reference.load_state_dict(layer.state_dict())  # same names: weight_ih_l0, ...
            x, _ = reference(x)
        expected = model.lm_head.projection(x) @ model.embedding.token.weight.T  # (B, T, V)
        logits, _ = model(idx)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_loss_ignores_minus_100_and_matches_torch_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, VOCAB)
    targets = torch.tensor([[4, -100, 7], [-100, -100, 1]])
    expected = F.cross_entropy(logits.reshape(6, VOCAB), targets.reshape(6), ignore_index=-100)
    torch.testing.assert_close(language_model_loss(logits, targets), expected)
    # by hand: the mean over the 3 kept positions of -log softmax at the target
    kept = [(0, 0, 4), (0, 2, 7), (1, 2, 1)]
    by_hand = sum(-(logits[b, t, y] - logits[b, t].exp().sum().log()) for b, t, y in kept) / 3
    torch.testing.assert_close(language_model_loss(logits, targets), by_hand)


# --------------------------------------------------------------------------------------------------------
# Weight tying and parameter counts
# --------------------------------------------------------------------------------------------------------


def test_transformer_weight_tying_and_hand_counted_parameters():
    tied, untied = make_transformer(), make_transformer(tie_weights=False)
    assert tied.lm_head.weight.data_ptr() == tied.embedding.token.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.embedding.token.weight.data_ptr()
    C, F_, V, L, T = 32, 64, VOCAB, 2, 16
    per_layer = (3 * C * C + 3 * C) + (C * C + C) + (C * F_ + F_) + (F_ * C + C) + 2 * (2 * C)
    # embeddings V*C + T*C, layers, final norm 2C; the tied head adds nothing
    expected = V * C + T * C + L * per_layer + 2 * C  # 640 + 512 + 2 * 8544 + 64 = 18304
    assert expected == 18304
    assert tied.num_parameters() == expected
    assert untied.num_parameters() == expected + V * C


def test_gru_weight_tying_and_hand_counted_parameters():
    tied = make_gru()  # d_embed 16, hidden 32: projection 32 -> 16, decoder tied to the embedding
    assert tied.lm_head.decoder.weight.data_ptr() == tied.embedding.token.weight.data_ptr()
    E, H, V = 16, 32, VOCAB
    layer0 = 3 * H * E + 3 * H * H + 2 * 3 * H  # 1536 + 3072 + 192 = 4800
    layer1 = 3 * H * H + 3 * H * H + 2 * 3 * H  # 3072 + 3072 + 192 = 6336
    expected = V * E + layer0 + layer1 + (H * E + E)  # 320 + 4800 + 6336 + 528 = 11984
    assert tied.num_parameters() == expected == 11984
    same_width = make_gru(d_embed=32)  # no projection needed
    assert isinstance(same_width.lm_head, nn.Linear)
    assert same_width.lm_head.weight is same_width.embedding.token.weight
    untied = make_gru(tie_weights=False)
    assert untied.num_parameters() == V * E + layer0 + layer1 + V * H


def test_num_parameters_trainable_only_after_freezing_through_a_classifier():
    classifier = SequenceClassifier(make_transformer(), num_classes=3)
    assert classifier.embedding is classifier.backbone.embedding
    assert classifier.layers is classifier.backbone.layers
    total = classifier.num_parameters()
    assert total == 18304 + 32 * 3 + 3  # backbone + head
    freeze(classifier, "all")  # embedding and both layers frozen: final norm and head train
    assert classifier.num_parameters(trainable_only=True) == 2 * 32 + 32 * 3 + 3
    assert classifier.num_parameters() == total


# --------------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_initial_loss_is_close_to_log_vocab_size(kind):
    model = make_model(kind).eval()
    tokens = random_tokens(8, 16)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    _, loss = model(inputs, targets=targets)
    # nearly equal logits: the uniform guess costs ln 20 = 2.9957
    assert abs(loss.item() - math.log(VOCAB)) < 0.1


def test_transformer_initialisation_follows_gpt2():
    model = make_transformer(n_layers=2, d_model=32, d_ff=64)
    layer = model.layers[0]
    # residual projections: 0.02 / sqrt(2 * n_layers) = 0.02 / 2 = 0.01; the others 0.02
    assert abs(layer.self_attn.out_proj.weight.std().item() - 0.01) < 0.0015  # 1024 draws
    assert abs(layer.linear2.weight.std().item() - 0.01) < 0.0015  # 2048 draws
    assert abs(layer.self_attn.in_proj_weight.std().item() - 0.02) < 0.002  # 3072 draws
    assert abs(layer.linear1.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(layer.linear1.bias) == 0 and torch.count_nonzero(layer.self_attn.in_proj_bias) == 0
    assert torch.equal(layer.norm1.weight, torch.ones(32)) and torch.equal(model.norm.bias, torch.zeros(32))
    assert torch.count_nonzero(model.embedding.token.weight[0]) == 0  # the padding row


def test_gru_initialisation_draws_a_wider_embedding_and_torchs_uniform_layers():
    model = GRULM(vocab_size=500, d_embed=64, hidden_size=32, n_layers=1)
    embedding = model.embedding.token.weight[1:]  # 499 x 64 draws, the padding row left out
    assert abs(embedding.std().item() - 0.1) < 0.005  # N(0, 0.1^2): a GRU has no layer norm to scale it up
    assert torch.count_nonzero(model.embedding.token.weight[0]) == 0  # the padding row
    bound = 1 / math.sqrt(32)  # torch's GRU init: uniform in [-1/sqrt(H), 1/sqrt(H)]
    weights = model.layers[0].weight_hh_l0
    assert weights.abs().max().item() <= bound and weights.abs().max().item() > 0.9 * bound


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_init_layer_is_reproducible_with_a_generator(kind):
    model = make_model(kind)
    top = model.layers[-1]
    model.init_layer(top, generator=torch.Generator().manual_seed(7))
    first = {name: value.clone() for name, value in top.state_dict().items()}
    model.init_layer(top, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(first[name], value) for name, value in top.state_dict().items())


# --------------------------------------------------------------------------------------------------------
# Intermediates for the notebooks
# --------------------------------------------------------------------------------------------------------


def test_transformer_intermediates_shapes_and_attention_rows():
    model = make_transformer().eval()
    idx = random_tokens(2, 10)
    attention_mask = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
    logits, loss, intermediates = model(idx, targets=idx, attention_mask=attention_mask, return_intermediates=True)
    assert loss is not None and logits.shape == (2, 10, VOCAB)
    hidden_states, attention_weights = intermediates["hidden_states"], intermediates["attention_weights"]
    assert [tuple(h.shape) for h in hidden_states] == [(2, 10, 32)] * 3  # embedding, layer 1, layer 2
    assert [tuple(w.shape) for w in attention_weights] == [(2, 4, 10, 10)] * 2
    for weights in attention_weights:
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 4, 10))  # each row is a distribution
        assert torch.count_nonzero(weights.triu(diagonal=1)) == 0  # no weight on a future key
        assert torch.count_nonzero(weights[1, :, :, 7:]) == 0  # no weight on a padding key
    # the intermediates are those of the plain forward pass
    torch.testing.assert_close(model(idx, attention_mask=attention_mask)[0], logits)
    torch.testing.assert_close(model.norm(hidden_states[-1]), model.features(idx, attention_mask))


def test_gru_intermediates_shapes_and_gates():
    model = make_gru().eval()
    idx = random_tokens(2, 10)
    _, _, intermediates = model(idx, return_intermediates=True)
    assert [tuple(h.shape) for h in intermediates["hidden_states"]] == [(2, 10, 16), (2, 10, 32), (2, 10, 32)]
    for name in ("reset_gates", "update_gates"):
        gates = intermediates[name]
        assert [tuple(g.shape) for g in gates] == [(2, 10, 32)] * 2
        assert all(((g > 0) & (g < 1)).all() for g in gates)  # sigmoid outputs
    torch.testing.assert_close(intermediates["hidden_states"][-1], model.features(idx))


# --------------------------------------------------------------------------------------------------------
# Sampling and generation
# --------------------------------------------------------------------------------------------------------


def test_next_token_probabilities_worked_example():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    # temperature 2 halves the logits: (1, 0.5, 0); top_k=2 drops the 0.
    # p = (e^1, e^0.5) / (e^1 + e^0.5) = (2.71828, 1.64872) / 4.36700 = (0.622459, 0.377541)
    probabilities = next_token_probabilities(logits, temperature=2.0, top_k=2)
    torch.testing.assert_close(probabilities, torch.tensor([[0.622459, 0.377541, 0.0]]), atol=1e-6, rtol=0)
    # without top-k it is torch's softmax of logits / temperature
    torch.manual_seed(0)
    many = torch.randn(4, VOCAB)
    torch.testing.assert_close(next_token_probabilities(many, temperature=0.7), F.softmax(many / 0.7, dim=-1))


def test_top_p_worked_example():
    # probabilities (0.5, 0.3, 0.15, 0.05); the mass ranked above each is (0, 0.5, 0.8, 0.95)
    # top_p = 0.75: keep the tokens with less than 0.75 above them, the first two -> (0.5, 0.3) / 0.8
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()[:, [2, 0, 3, 1]]  # shuffled: the order must not matter
    probabilities = next_token_probabilities(logits, top_p=0.75)
    torch.testing.assert_close(probabilities, torch.tensor([[0.0, 0.625, 0.0, 0.375]]), atol=1e-6, rtol=0)
    # top_p = 0.4: the most probable token alone holds 0.5 >= 0.4 -> greedy
    assert next_token_probabilities(logits, top_p=0.4).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    # top_p = 0.96: the last has 0.95 above it -> every token stays, as with top_p = 1
    torch.testing.assert_close(next_token_probabilities(logits, top_p=0.96), logits.softmax(dim=-1))
    torch.testing.assert_close(next_token_probabilities(logits, top_p=1.0), logits.softmax(dim=-1))


def test_top_p_applies_after_temperature_and_top_k():
    # temperature 0.5 doubles the log-probabilities: (0.5, 0.3, 0.15, 0.05)^2 / sum = (0.25, 0.09, 0.0225, 0.0025)
    # / 0.365 = (0.684932, 0.246575, 0.061644, 0.006849); mass above (0, 0.685, 0.932, 0.993): top_p = 0.9
    # keeps two. With top_k = 1 first, only the largest is left, whatever top_p.
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    probabilities = next_token_probabilities(logits, temperature=0.5, top_p=0.9)
    torch.testing.assert_close(probabilities, torch.tensor([[0.25, 0.09, 0.0, 0.0]]) / 0.34, atol=1e-6, rtol=0)
    assert next_token_probabilities(logits, top_k=1, top_p=0.99).tolist() == [[1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("kind", CAUSAL)
def test_generate_respects_top_p(kind):
    model = make_model(kind).eval()
    prompt = random_tokens(3, 2)
    generated = model.generate(prompt, 12, top_p=0.3, generator=torch.Generator().manual_seed(0))
    logits, _ = model(generated[:, :-1])  # logits[:, t] is the distribution token t + 1 was drawn from
    allowed = next_token_probabilities(logits[:, 1:].reshape(-1, VOCAB), top_p=0.3) > 0  # (B * 12, V)
    drawn = generated[:, 2:].reshape(-1)  # (B * 12,)
    assert allowed[torch.arange(len(drawn)), drawn].all()
    assert (allowed.sum(dim=-1) < VOCAB).all()  # the nucleus left tokens out at every step


def test_sampling_arguments_are_checked():
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        make_transformer().generate(random_tokens(1, 3), 2, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        make_gru().generate(random_tokens(1, 3), 2, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be a number > 0, got inf"):
        make_gru().generate(random_tokens(1, 3), 2, temperature=float("inf"))
    with pytest.raises(ValueError, match="top_k must be between 1 and the vocabulary size 20"):
        make_gru().generate(random_tokens(1, 3), 2, top_k=21)
    for top_p in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
            make_transformer().generate(random_tokens(1, 3), 2, top_p=top_p)
    with pytest.raises(ValueError, match="generate needs a causal model"):
        make_model("encoder").generate(random_tokens(1, 3), 2)


@pytest.mark.parametrize("kind", CAUSAL)
def test_generate_is_deterministic_with_a_seeded_generator(kind):
    model = make_model(kind)  # left in training mode: generate turns dropout off by itself
    prompt = random_tokens(2, 4)
    first = model.generate(prompt, 20, generator=torch.Generator().manual_seed(3))
    second = model.generate(prompt, 20, generator=torch.Generator().manual_seed(3))
    other = model.generate(prompt, 20, generator=torch.Generator().manual_seed(4))
    assert first.shape == (2, 24)  # more than max_len=16 for the Transformer: the context is cropped
    assert torch.equal(first[:, :4], prompt)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert model.training and all(module.training for module in model.modules())  # modes restored


@pytest.mark.parametrize("kind", CAUSAL)
def test_generate_with_top_k_one_is_greedy_decoding(kind):
    model = make_model(kind).eval()
    prompt = random_tokens(2, 3)
    generated = model.generate(prompt, 8, top_k=1)
    expected = prompt
    for _ in range(8):  # re-read the whole sequence every step and take the argmax
        logits, _ = model(expected)
        expected = torch.cat([expected, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    assert torch.equal(generated, expected)  # for the GRU: the carried state equals re-reading


@pytest.mark.parametrize("kind", CAUSAL)
def test_generate_respects_top_k(kind):
    model = make_model(kind).eval()
    prompt = random_tokens(3, 2)
    generated = model.generate(prompt, 12, top_k=3, generator=torch.Generator().manual_seed(0))
    logits, _ = model(generated[:, :-1])  # logits[:, t] is the distribution token t + 1 was drawn from
    allowed = logits.topk(3, dim=-1).indices  # (B, T, 3)
    drawn = generated[:, 2:].unsqueeze(-1)  # (B, 12, 1)
    assert (allowed[:, 1:] == drawn).any(dim=-1).all()


@pytest.mark.parametrize("kind", CAUSAL)
def test_frozen_modules_stay_in_eval_mode_after_generate(kind):
    model = make_model(kind).train()
    model.embedding.eval()  # as the training loop keeps frozen modules
    model.layers[0].eval()
    model.generate(random_tokens(1, 2), 3, generator=torch.Generator().manual_seed(0))
    assert not model.embedding.training and not model.layers[0].training
    assert model.layers[1].training and model.training


# --------------------------------------------------------------------------------------------------------
# Training: overfitting a batch, reproducibility
# --------------------------------------------------------------------------------------------------------


def train_steps(model: nn.Module, tokens: torch.Tensor, steps: int, lr: float) -> list[float]:
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    losses = []
    for _ in range(steps):
        _, loss = model(inputs, targets=targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("kind", "steps"), [("transformer", 100), ("gru", 200)])
def test_overfits_a_64_token_batch(kind, steps):
    # The GRU must squeeze each sequence's history into its state, so it needs more steps to memorise.
    # fast=True, as the training jobs run (the same numbers as the readable path, in less time).
    model = make_model(kind, dropout=0.0, fast=True)
    tokens = random_tokens(4, 17)  # 4 x 16 = 64 next-token predictions
    losses = train_steps(model, tokens, steps=steps, lr=2e-2)
    assert losses[0] > 2.5  # about ln 20 = 3.0 at the start
    assert losses[-1] < 0.1


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_gives_identical_training(kind):
    tokens = random_tokens(2, 9)
    runs = []
    for _ in range(2):
        model = make_model(kind, seed=5)  # dropout 0.1 on: the global seed also fixes the dropout masks
        runs.append((train_steps(model, tokens, steps=3, lr=1e-3), model.state_dict()))
    (losses_a, state_a), (losses_b, state_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(state_a[name], state_b[name]) for name in state_a)
    different_seed = make_model(kind, seed=6).state_dict()
    assert not torch.equal(different_seed["embedding.token.weight"], state_a["embedding.token.weight"])


# --------------------------------------------------------------------------------------------------------
# Classification head
# --------------------------------------------------------------------------------------------------------


# Two sequences of T = 3 positions with H = 2 features; the first has one padding position.
FEATURES = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [50.0, 60.0]],  # the padding vector is huge: it must not leak in
        [[0.0, 0.0], [2.0, -2.0], [4.0, 2.0]],
    ]
)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])


def test_mean_pooling_averages_real_tokens_only():
    # row 0: ((1, 2) + (3, 4)) / 2 = (2, 3);  row 1: ((0, 0) + (2, -2) + (4, 2)) / 3 = (2, 0)
    torch.testing.assert_close(mean_pool(FEATURES, MASK), torch.tensor([[2.0, 3.0], [2.0, 0.0]]))
    # without a mask every position counts: row 0 becomes (54 / 3, 66 / 3) = (18, 22)
    torch.testing.assert_close(mean_pool(FEATURES)[0], torch.tensor([18.0, 22.0]))


def test_last_and_first_token_pooling():
    # last real token: position 1 in row 0, position 2 in row 1
    torch.testing.assert_close(last_token_pool(FEATURES, MASK), torch.tensor([[3.0, 4.0], [4.0, 2.0]]))
    torch.testing.assert_close(first_token_pool(FEATURES, MASK), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close(pool(FEATURES, None, "last"), FEATURES[:, 2])
    with pytest.raises(ModelInputError, match="pooling must be one of"):
        pool(FEATURES, MASK, "max")


@pytest.mark.parametrize("pooling", ["mean", "first", "last"])
@pytest.mark.parametrize("kind", ["encoder", "gru"])
def test_sequence_classifier_is_head_of_pooled_features(kind, pooling):
    classifier = SequenceClassifier(make_model(kind), num_classes=3, pooling=pooling).eval()
    idx = random_tokens(2, 6)
    attention_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    labels = torch.tensor([2, 0])
    logits, loss = classifier(idx, attention_mask=attention_mask, labels=labels)
    features = classifier.backbone.features(idx, attention_mask)
    expected_logits = classifier.head(pool(features, attention_mask, pooling))
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(loss, F.cross_entropy(expected_logits, labels))
    # padding never changes the shorter sequence's prediction
    alone, _ = classifier(idx[1:, :4])
    torch.testing.assert_close(logits[1:], alone, atol=1e-6, rtol=0)


def test_sequence_classifier_checks_its_arguments():
    with pytest.raises(ModelInputError, match="pooling must be one of"):
        SequenceClassifier(make_gru(), num_classes=2, pooling="cls")
    with pytest.raises(ModelInputError, match="labels must be one class per sequence"):
        SequenceClassifier(make_gru(), num_classes=2)(random_tokens(2, 3), labels=torch.tensor([[0], [1]]))


def test_pooling_and_sampling_gradients_pass_gradcheck():
    features = torch.randn(2, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    features.requires_grad_(True)
    for pool_function in (mean_pool, first_token_pool, last_token_pool):
        assert torch.autograd.gradcheck(lambda h, f=pool_function: f(h, MASK), (features,))
    logits = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: next_token_probabilities(z, temperature=0.5, top_k=3), (logits,))


# --------------------------------------------------------------------------------------------------------
# The fast switch, the mask convention and the lower/upper split
# --------------------------------------------------------------------------------------------------------

PADDED = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5])  # right padding, three lengths
SAME = dict(atol=1e-10, rtol=1e-10)  # fast vs readable in float64


def forward_and_gradients(model: nn.Module, idx: torch.Tensor, seed: int = 3):
    """Logits, loss and every parameter's gradient of one training-style step (dropout draws fixed by seed)."""
    model.zero_grad()
    torch.manual_seed(seed)
    logits, loss = model(idx, targets=idx.masked_fill(PADDED == 0, -100), attention_mask=PADDED)
    loss.backward()
    return [logits, loss, *(p.grad for p in model.parameters())]


@pytest.mark.parametrize("kind", WITH_POST_NORM)
def test_fast_model_equals_the_readable_model(kind):
    readable = make_model(kind).double()
    fast = make_model(kind, fast=True).double()
    assert fast.fast and not readable.fast
    fast.load_state_dict(readable.state_dict())
    idx = random_tokens(3, 9) * PADDED  # pad id 0 at the padded positions
    for mode in ("train", "eval"):  # dropout 0.1 everywhere (the same draws on both paths), then off
        getattr(readable, mode)(), getattr(fast, mode)()
        expected, actual = forward_and_gradients(readable, idx), forward_and_gradients(fast, idx)
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, e, **SAME)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_classifier_loss_follows_the_switch_and_equals_the_readable_one(kind):
    readable = SequenceClassifier(make_model(kind), num_classes=3).double()
    fast = set_fast(SequenceClassifier(make_model(kind), num_classes=3).double(), True)
    fast.load_state_dict(readable.state_dict())
    idx, labels = random_tokens(3, 9) * PADDED, torch.tensor([0, 2, 1])
    results = []
    for model in (readable, fast):
        model.zero_grad()
        torch.manual_seed(3)  # the same dropout draws
        logits, loss = model(idx, PADDED, labels)
        loss.backward()
        results.append([logits, loss, *(p.grad for p in model.parameters() if p.grad is not None)])
        assert ("CrossEntropy" in type(loss.grad_fn).__name__) == bool(model.fast)  # the loss's own path
    for a, e in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(a, e, **SAME)


def test_cross_entropy_takes_the_path_of_the_switch():
    logits, targets = torch.randn(5, 4, dtype=torch.float64, requires_grad=True), torch.tensor([0, 3, -100, 1, 2])
    readable = cross_entropy(logits, targets, fast=FastSwitch(False))
    fast = cross_entropy(logits, targets, fast=FastSwitch(True))
    assert torch.equal(fast, readable)  # the same bits forward
    readable_node, fast_node = type(readable.grad_fn).__name__, type(fast.grad_fn).__name__
    assert fast_node == "CrossEntropyBackward" and readable_node != fast_node  # minipt.fast's backward pass
    (readable_grad,), (fast_grad,) = torch.autograd.grad(readable, logits), torch.autograd.grad(fast, logits)
    torch.testing.assert_close(fast_grad, readable_grad, **SAME)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_models_are_readable_by_default_and_one_switch_turns_the_whole_model(kind):
    model = make_model(kind)
    switchable = [m for m in model.modules() if hasattr(m, "fast")]
    assert len(switchable) > 1 and all(m.fast is model.fast for m in switchable)  # one switch, stored once
    assert isinstance(model.fast, FastSwitch) and not model.fast and "fast" not in model.config
    classifier = SequenceClassifier(model, num_classes=2)
    assert classifier.fast is model.fast and MaskedLMWithNextSentenceHead(model).fast is model.fast
    assert set_fast(classifier, True) is classifier
    assert model.fast and all(m.fast for m in switchable)
    assert not build_model(model.architecture, **model.config).fast  # how a model computes is not its config
    set_fast(model, False)
    assert not any(m.fast for m in switchable)
    assert "fast" not in "".join(model.state_dict())  # a switch, not a parameter: state_dict keys unchanged


@pytest.mark.parametrize("causal", [True, False])
def test_transformer_builds_one_additive_mask(causal):
    model = make_transformer(causal=causal)
    x = torch.zeros(3, 9, 32)
    mask = model.layer_mask(PADDED, x)  # 0 = may attend, -inf = may not
    assert mask.shape == ((3, 1, 9, 9) if causal else (3, 1, 1, 9)) and mask.dtype == x.dtype
    assert set(mask.unique().tolist()) == {0.0, float("-inf")}
    assert torch.equal(mask[1, 0, -1].isinf(), torch.arange(9) >= 6)  # the last query of row 1: padding keys
    if causal:
        assert torch.equal(mask[0, 0].isinf(), torch.ones(9, 9, dtype=torch.bool).triu(1))  # the future
        assert torch.equal(model.layer_mask(None, x).isinf(), torch.ones(9, 9, dtype=torch.bool).triu(1))
    else:
        assert model.layer_mask(None, x) is None  # nothing to mask


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("kind", WITH_POST_NORM)
def test_upper_of_lower_layers_is_features_bit_for_bit(kind, fast):
    model = make_model(kind, n_layers=3, fast=fast)  # dropout 0.1: train mode draws masks
    idx = random_tokens(3, 9) * PADDED
    for mode in ("train", "eval"):
        getattr(model, mode)()
        torch.manual_seed(11)
        expected = model.features(idx, PADDED)
        for k in range(len(model.layers) + 1):
            torch.manual_seed(11)  # the same draws, in the same order
            hidden = model.lower_layers(idx, PADDED, k)
            width = model.embedding.token.embedding_dim if k == 0 else model.hidden_size
            assert hidden.shape == (3, 9, width)
            assert torch.equal(model.upper_layers(hidden, PADDED, k), expected), (mode, k)
    with pytest.raises(ModelInputError, match="k must be an integer"):
        model.lower_layers(idx, PADDED, 4)
    with pytest.raises(ModelInputError, match="attention_mask must have the shape"):
        model.upper_layers(hidden, PADDED[:, :5], 1)


def test_gru_upper_layers_drop_out_a_layers_input_only_when_that_layer_trains():
    model = make_gru(n_layers=3, dropout=0.5).train()
    idx = random_tokens(2, 6)
    hidden = model.lower_layers(idx, None, 1)  # (B, T, H): layer 0's output, no dropout applied yet
    model.layers[1].eval()  # frozen layers 1 and 2 (kept in eval by the training loop): no dropout before them
    model.layers[2].eval()
    expected = model.layers[2](model.layers[1](hidden)[0])[0]
    assert torch.equal(model.upper_layers(hidden, None, 1), expected)  # although model.dropout is training
    model.layers[1].train()
    assert not torch.equal(model.upper_layers(hidden, None, 1), expected)  # layer 1's input is dropped out


def test_post_norm_transformer_has_segment_vectors_an_embedding_norm_and_no_final_norm():
    model = make_model("post-norm").eval()
    assert model.embedding.token_type.weight.shape == (2, 32) and model.embedding.norm.eps == 1e-12
    assert isinstance(model.norm, nn.Identity) and not model.layers[0].norm_first
    assert model.layers[0].activation == "gelu_tanh"
    idx = random_tokens(2, 7)
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    embedding = model.embedding
    by_hand = embedding.norm(embedding.token(idx) + embedding.token_type(types) + embedding.position.weight[:7])
    torch.testing.assert_close(model.lower_layers(idx, None, 0, token_type_ids=types), by_hand)
    # no token_type_ids means segment 0 everywhere; segment 1 changes the features
    assert torch.equal(model.features(idx), model.features(idx, token_type_ids=torch.zeros_like(idx)))
    assert not torch.allclose(model.features(idx, token_type_ids=types)[0], model.features(idx)[0])
    hidden = model.features(idx, token_type_ids=types)  # post-norm: the last layer's norm2 output, no final norm
    _, _, intermediates = model(idx, return_intermediates=True, token_type_ids=types)
    assert torch.equal(intermediates["hidden_states"][-1], hidden)
    with pytest.raises(ModelInputError, match="token_type_ids"):
        model(idx, token_type_ids=types + 1)  # segment 2 does not exist
    with pytest.raises(ModelInputError, match="type_vocab_size=0"):
        make_model("encoder")(idx, token_type_ids=types)  # a model without segment vectors


# --------------------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CAUSAL)
def test_forward_compiles_without_graph_breaks(kind):
    """The data-dependent input checks (``int(idx.min())``, the right-padding check) are skipped while
    torch.compile traces, so a forward pass with a loss and padding is one graph, on the jobs' fast path
    (the hand-written backward passes are traced too)."""
    torch._dynamo.reset()
    model = make_model(kind, n_layers=1, fast=True)
    idx = random_tokens(2, 6)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    explanation = torch._dynamo.explain(model)(idx, idx.masked_fill(mask == 0, -100), mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    with pytest.raises(ModelInputError, match="outside the vocabulary"):  # the checks still run eagerly
        model(idx + 100)
