"""Training: the vector equals the mean difference recomputed by hand from run_with_cache."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import PAIRS, make_model, make_tokenizer

from steerlens import (
    SteeringVectorTrainingSample,
    aggregate_activations,
    extract_activations,
    logistic_aggregator,
    mean_aggregator,
    pca_aggregator,
    train_steering_vector,
)
from steerlens.errors import LayerError, TokenIndexError, TokenizerError


def manual_reads(model, prompts, layer, layer_type="resid_post", index=-1):
    """Activation at token `index` of each prompt, one unpadded forward per prompt."""
    rows = []
    for p in prompts:
        _, cache = model.run_with_cache(model.to_tokens(p))
        rows.append(cache[f"blocks.{layer}.hook_{layer_type}"][0, index])
    return torch.stack(rows)


def manual_mean_diff(model, pairs, layer, layer_type="resid_post", index=-1):
    pos = manual_reads(model, [p for p, _ in pairs], layer, layer_type, index)
    neg = manual_reads(model, [n for _, n in pairs], layer, layer_type, index)
    return (pos - neg).mean(dim=0)


@pytest.mark.parametrize("layer_type", ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"])
def test_vector_is_mean_difference_at_last_token(model, layer_type):
    vec = train_steering_vector(model, None, PAIRS, layers=[1, 3], layer_type=layer_type, batch_size=4)
    assert vec.layer_type == layer_type and vec.layers == [1, 3]
    for layer in (1, 3):
        expected = manual_mean_diff(model, PAIRS, layer, layer_type)
        torch.testing.assert_close(vec.layer_activations[layer], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("fixture", ["model", "rotary_model"])
def test_batch_sizes_agree_with_padding(request, fixture, padding_side):
    model = request.getfixturevalue(fixture)
    lengths = {len(model.to_tokens(p)[0]) for pair in PAIRS for p in pair}
    assert len(lengths) > 3, "the fixture pairs must have different lengths"
    one = train_steering_vector(model, None, PAIRS, layers=[0, 2], batch_size=1, padding_side=padding_side)
    eight = train_steering_vector(model, None, PAIRS, layers=[0, 2], batch_size=8, padding_side=padding_side)
    for layer in (0, 2):
        expected = manual_mean_diff(model, PAIRS, layer)
        torch.testing.assert_close(eight.layer_activations[layer], one.layer_activations[layer], atol=1e-5, rtol=0)
        torch.testing.assert_close(eight.layer_activations[layer], expected, atol=1e-5, rtol=0)


def test_padding_side_defaults_to_the_tokenizer():
    left = make_model(padding_side="left")
    assert left.tokenizer.padding_side == "left"
    vec = train_steering_vector(left, None, PAIRS, layers=[2], batch_size=8)
    torch.testing.assert_close(vec.layer_activations[2], manual_mean_diff(left, PAIRS, 2), atol=1e-5, rtol=0)


def test_read_token_index_int_callable_and_per_sample(model):
    pairs = PAIRS[:4]
    vec = train_steering_vector(model, None, pairs, layers=[2], read_token_index=1, batch_size=3)
    torch.testing.assert_close(vec.layer_activations[2], manual_mean_diff(model, pairs, 2, index=1), atol=1e-5, rtol=0)
    vec = train_steering_vector(model, None, pairs, layers=[2], read_token_index=-2, batch_size=3)
    torch.testing.assert_close(vec.layer_activations[2], manual_mean_diff(model, pairs, 2, index=-2), atol=1e-5, rtol=0)
    # A callable picks a position per prompt: here the middle token.
    mid = lambda prompt: len(model.to_tokens(prompt)[0]) // 2  # noqa: E731
    vec = train_steering_vector(model, None, pairs, layers=[2], read_token_index=mid, batch_size=3)
    pos = torch.stack([manual_reads(model, [p], 2, index=mid(p))[0] for p, _ in pairs])
    neg = torch.stack([manual_reads(model, [n], 2, index=mid(n))[0] for _, n in pairs])
    torch.testing.assert_close(vec.layer_activations[2], (pos - neg).mean(0), atol=1e-5, rtol=0)
    # Per-sample indices override the default for that sample only.
    samples = [SteeringVectorTrainingSample(p, n, read_positive_token_index=0) for p, n in pairs[:2]] + pairs[2:]
    vec = train_steering_vector(model, None, samples, layers=[2], batch_size=4)
    pos = torch.cat(
        [manual_reads(model, [p for p, _ in pairs[:2]], 2, index=0), manual_reads(model, [p for p, _ in pairs[2:]], 2)]
    )
    neg = manual_reads(model, [n for _, n in pairs], 2)
    torch.testing.assert_close(vec.layer_activations[2], (pos - neg).mean(0), atol=1e-5, rtol=0)


def test_read_token_index_outside_prompt_is_clear(model):
    with pytest.raises(TokenIndexError, match="outside prompt"):
        train_steering_vector(model, None, [("a b", "c d")], layers=[0], read_token_index=50)


def test_layers_none_negative_and_out_of_range(model):
    vec = train_steering_vector(model, None, PAIRS[:2], layers=None)
    assert vec.layers == [0, 1, 2, 3]
    vec = train_steering_vector(model, None, PAIRS[:2], layers=[-1, -4])
    assert vec.layers == [0, 3]
    torch.testing.assert_close(vec.layer_activations[3], manual_mean_diff(model, PAIRS[:2], 3), atol=1e-5, rtol=0)
    with pytest.raises(LayerError, match="out of range"):
        train_steering_vector(model, None, PAIRS[:2], layers=[4])
    with pytest.raises(LayerError, match="twice"):
        train_steering_vector(model, None, PAIRS[:2], layers=[1, -3])


def test_no_work_past_the_deepest_layer(model):
    calls = {i: 0 for i in range(model.cfg.n_layers)}
    handles = [
        block.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, block in enumerate(model.blocks)
    ]
    try:
        train_steering_vector(model, None, PAIRS[:4], layers=[1], batch_size=2)
    finally:
        for h in handles:
            h.remove()
    assert calls[0] == calls[1] >= 2  # every batch (and every shared start) ran layers 0 and 1
    assert calls[2] == 0 and calls[3] == 0


def widths_seen(model, **kwargs) -> list[tuple[int, int]]:
    """(rows, columns) of every token batch a training run feeds the model."""
    shapes: list[tuple[int, int]] = []
    handle = model.embed.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    try:
        train_steering_vector(model, None, PAIRS, layers=[1], **kwargs)
    finally:
        handle.remove()
    return shapes


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_prompts_are_batched_by_length_and_cut_at_the_read_token(model, padding_side, monkeypatch):
    # Prompts read whole (pairs sharing a start are tested in test_activations.py).
    monkeypatch.setattr("steerlens.training.activations.MIN_SHARED_PREFIX", 10**6)
    lengths = [len(model.to_tokens(p)[0]) for pair in PAIRS for p in pair]
    # By hand: all 2 x 11 prompts sorted by length, longest first, 2 x batch_size rows a batch.
    by_length = sorted(lengths, reverse=True)
    expected = [(len(by_length[i : i + 8]), by_length[i]) for i in range(0, len(by_length), 8)]
    assert widths_seen(model, batch_size=4, padding_side=padding_side) == expected
    # Reading token 2 computes three columns, whatever the prompts' lengths.
    assert widths_seen(model, batch_size=4, read_token_index=2, padding_side=padding_side) == [(8, 3), (8, 3), (6, 3)]
    # A callable read index cuts each prompt after its own read token.
    cut = [max(1, n // 2) for n in lengths]
    mid = lambda prompt: max(1, len(model.to_tokens(prompt)[0]) // 2) - 1  # noqa: E731
    by_cut = sorted(cut, reverse=True)
    expected = [(len(by_cut[i : i + 8]), by_cut[i]) for i in range(0, len(by_cut), 8)]
    assert widths_seen(model, batch_size=4, read_token_index=mid, padding_side=padding_side) == expected


def extracted(model, **kwargs) -> tuple[dict, dict]:
    """extract_activations' per-batch lists concatenated into one [n_pairs, d_model] tensor per layer."""
    pos, neg = extract_activations(model, None, PAIRS, **kwargs)
    return {k: torch.cat(v) for k, v in pos.items()}, {k: torch.cat(v) for k, v in neg.items()}


def test_extract_then_aggregate_equals_train(model):
    batches, neg_batches = extract_activations(model, None, PAIRS, layers=[1, 2], batch_size=5)
    # steering-vectors' layout: per layer, one [batch, d_model] tensor per batch of pairs.
    assert [b.shape for b in batches[1]] == [(5, model.cfg.d_model), (5, model.cfg.d_model), (1, model.cfg.d_model)]
    pos, neg = {k: torch.cat(v) for k, v in batches.items()}, {k: torch.cat(v) for k, v in neg_batches.items()}
    torch.testing.assert_close(pos[2], manual_reads(model, [p for p, _ in PAIRS], 2), atol=1e-5, rtol=0)
    agg = aggregate_activations(pos, neg)
    from_batches = aggregate_activations(pos_acts_by_layer=batches, neg_acts_by_layer=neg_batches)
    for layer in (1, 2):
        torch.testing.assert_close(from_batches[layer], agg[layer], atol=0, rtol=0)
    vec = train_steering_vector(model, None, PAIRS, layers=[1, 2], batch_size=3)
    for layer in (1, 2):
        torch.testing.assert_close(agg[layer], vec.layer_activations[layer], atol=1e-6, rtol=0)
    # The steering-vectors layout (lists of rows) is accepted too.
    as_lists = aggregate_activations({1: list(pos[1])}, {1: list(neg[1])}, mean_aggregator())
    torch.testing.assert_close(as_lists[1], agg[1], atol=1e-6, rtol=0)


def test_pca_aggregator_is_top_singular_direction(model):
    pos, neg = extracted(model, layers=[2], batch_size=4)
    vec = train_steering_vector(model, None, PAIRS, layers=[2], batch_size=4, aggregator=pca_aggregator())
    v = vec.layer_activations[2].double()
    deltas = (pos[2] - neg[2]).double()
    evals, evecs = torch.linalg.eigh(deltas.T @ deltas)
    top = evecs[:, -1]
    assert abs(float(v.norm()) - 1.0) < 1e-6
    assert abs(abs(float(v @ top)) - 1.0) < 1e-5
    assert float(v @ deltas.mean(0)) > 0


def test_logistic_aggregator_separates_classes(model):
    pos, neg = extracted(model, layers=[3], batch_size=4)
    vec = train_steering_vector(
        model, None, PAIRS, layers=[3], batch_size=4, aggregator=logistic_aggregator(C=100.0, max_iter=5000)
    )
    v = vec.layer_activations[3]
    assert abs(float(v.norm()) - 1.0) < 1e-5
    # Projections of positives exceed those of negatives on average: the direction points to "positive".
    assert float((pos[3] @ v).mean()) > float((neg[3] @ v).mean())


def test_user_callable_aggregator_gets_all_rows(model):
    seen = {}

    def first_pair(p, n):
        seen["shape"] = p.shape
        return p[0] - n[0]

    vec = train_steering_vector(model, None, PAIRS, layers=[1], batch_size=4, aggregator=first_pair)
    assert seen["shape"] == (len(PAIRS), model.cfg.d_model)
    torch.testing.assert_close(vec.layer_activations[1], manual_mean_diff(model, PAIRS[:1], 1), atol=1e-5, rtol=0)


def permuted_tokenizer(tokenizer):
    """``tokenizer`` with the ids of its ordinary tokens shuffled (special tokens keep theirs)."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    special = {tokenizer.bos_token_id, tokenizer.unk_token_id}
    ids = sorted(i for i in vocab.values() if i not in special)
    shuffled = [ids[i] for i in torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))]
    mapping = dict(zip(ids, shuffled))
    state["model"]["vocab"] = {token: mapping.get(i, i) for token, i in vocab.items()}
    backend = Tokenizer.from_str(json.dumps(state))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token,
    )


def test_an_explicit_tokenizer_is_the_one_used(model):
    """The tokenizer argument, not the model's, encodes the pairs: with its ids permuted the vector is the
    mean difference of the activations of *its* token ids (and not the model tokenizer's vector)."""
    permuted = permuted_tokenizer(model.tokenizer)
    a = train_steering_vector(model, model.tokenizer, PAIRS, layers=[1], batch_size=4)
    b = train_steering_vector(model, permuted, PAIRS, layers=[1], batch_size=4)

    def read(text: str) -> torch.Tensor:
        ids = torch.tensor([[permuted.bos_token_id, *permuted(text, add_special_tokens=False)["input_ids"]]])
        _, cache = model.run_with_cache(ids)
        return cache["blocks.1.hook_resid_post"][0, -1]

    expected = torch.stack([read(p) - read(n) for p, n in PAIRS]).mean(0)
    torch.testing.assert_close(b.layer_activations[1], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a.layer_activations[1], b.layer_activations[1], atol=1e-3)
    torch.testing.assert_close(a.layer_activations[1], manual_mean_diff(model, PAIRS, 1), atol=1e-5, rtol=1e-5)


def test_tokenizer_too_large_for_model():
    model = make_model()
    big = make_tokenizer()
    big.add_tokens([f"extra{i}" for i in range(50)])
    with pytest.raises(TokenizerError, match="does not belong"):
        train_steering_vector(model, big, PAIRS[:2], layers=[0])


def test_show_progress_prints_a_bar(model, capsys):
    train_steering_vector(model, None, PAIRS, layers=[0], batch_size=4, show_progress=True, tqdm_desc="Reading pairs")
    err = capsys.readouterr().err
    done = re.findall(r"(\d+)/(\d+)", err)[-1]
    assert "Reading pairs" in err and done[0] == done[1] != "0"  # the bar reached its total


def test_metadata_records_model_and_settings(model):
    vec = train_steering_vector(model, None, PAIRS[:3], layers=[1], batch_size=2)
    assert vec.metadata["d_model"] == model.cfg.d_model
    assert vec.metadata["n_layers"] == model.cfg.n_layers
    assert vec.metadata["training"]["n_samples"] == 3
    assert vec.metadata["training"]["batch_size"] == 2


def test_settings_value_equals_the_keyword_and_changes_the_read(model):
    from steerlens.settings import Settings

    bos = model.tokenizer.bos_token_id
    assert model.cfg.default_prepend_bos and model.to_tokens(PAIRS[0][0])[0, 0].item() == bos  # the model adds BOS
    assert model.to_tokens(PAIRS[0][0], prepend_bos=False)[0, 0].item() != bos
    by_value = train_steering_vector(model, None, PAIRS, layers=[1], settings=Settings(prepend_bos=False))
    by_keyword = train_steering_vector(model, None, PAIRS, layers=[1], prepend_bos=False)
    default = train_steering_vector(model, None, PAIRS, layers=[1])
    torch.testing.assert_close(by_value.layer_activations[1], by_keyword.layer_activations[1], atol=0, rtol=0)
    assert not torch.allclose(by_value.layer_activations[1], default.layer_activations[1], atol=1e-3)
    # Without BOS by hand: one unpadded forward per prompt.
    no_bos = [
        torch.stack(
            [
                model.run_with_cache(model.to_tokens(p, prepend_bos=False))[1]["blocks.1.hook_resid_post"][0, -1]
                for p in prompts
            ]
        )
        for prompts in ([p for p, _ in PAIRS], [n for _, n in PAIRS])
    ]
    torch.testing.assert_close(by_value.layer_activations[1], (no_bos[0] - no_bos[1]).mean(0), atol=1e-5, rtol=1e-5)


def test_positional_settings_fold_into_a_settings_value(model):
    from steerlens.settings import Settings

    shared = Settings(batch_size=3)
    assert (
        train_steering_vector(model, None, PAIRS[:3], layers=[1], settings=shared).metadata["training"]["batch_size"]
        == 3
    )  # batch_size left at its default: the value's
    assert (
        train_steering_vector(model, None, PAIRS[:3], [1], batch_size=2, settings=shared).metadata["training"][
            "batch_size"
        ]
        == 2
    )  # given explicitly: wins


def test_a_setting_training_does_not_use_is_an_error(model):
    from steerlens.errors import UnknownKeywordError

    with pytest.raises(UnknownKeywordError, match="operator"):
        train_steering_vector(model, None, PAIRS[:2], layers=[0], operator=lambda act, vec: vec)
