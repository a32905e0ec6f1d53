"""Targets (answer letters, target words) encoded in the context of their prompt, on three tokenizer kinds.

References pick the token ids by hand from the vocabulary (``convert_tokens_to_ids``) and read
probabilities from a plain forward pass of the model; steerlens' encoding is never used for them.
"""

from __future__ import annotations

import pytest
import torch
from helpers import hf_logprobs, hooked_logprobs, llama_model, make_model, make_tokenizer, metaspace_tokenizer

from steerlens import SteeringVector, ab_behavior_probability, compare_logits, logit_diff, prob_share, sweep_layers
from steerlens.errors import TargetTokenError, TokenizerError
from steerlens.tokens import ids_in_context, single_target_id

ITEMS = [
    ("Do you like cats?\n(A) Yes\n(B) No\nAnswer: (", "A"),
    ("Is the film good?\n(A) Not at all\n(B) Yes a lot\nAnswer: (", "B"),
    ("Pick one: (", "B"),
]


@pytest.fixture(scope="module", params=["bos", "bos_eos"])
def sp_tok(request):
    return metaspace_tokenizer(request.param)


@pytest.fixture(scope="module")
def sp_model(sp_tok):
    return llama_model(sp_tok, n_layers=2, seed=1)


def vector(d_model: int = 32, layers=(0, 1), seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: 2.0 * torch.randn(d_model, generator=g) for layer in layers})


def test_letters_are_the_tokens_that_follow_the_prompt(sp_tok):
    a, space_a = sp_tok.convert_tokens_to_ids(["A", "\u2581A"])
    assert sp_tok.encode("A", add_special_tokens=False) == [space_a]  # alone, "A" is ▁A
    assert single_target_id(sp_tok, "Answer: (", "A") == a  # after "(", it is A
    assert single_target_id(sp_tok, "Answer:", " A") == space_a
    assert ids_in_context(sp_tok, "I think", " cannot help") == sp_tok.convert_tokens_to_ids(
        ["\u2581cannot", "\u2581help"]
    )
    byte_level = make_tokenizer()
    assert single_target_id(byte_level, "Answer: (", "A") == byte_level.convert_tokens_to_ids("A")
    assert single_target_id(byte_level, "I", 7) == 7


def test_a_target_that_is_not_one_token_in_context_is_a_clear_error(sp_tok):
    with pytest.raises(TargetTokenError, match=r"'AB' is 2 tokens .* after prompt 'Answer: \('") as info:
        single_target_id(sp_tok, "Answer: (", "AB")
    assert isinstance(info.value, (TokenizerError, ValueError))
    assert "continuation_logprob" in str(info.value) and "token id" in str(info.value)
    with pytest.raises(TargetTokenError, match="merges with the end of prompt 'Answer: '.*trailing space"):
        single_target_id(sp_tok, "Answer: ", "A")  # "▁" alone, "▁A" with the target


def test_ab_probability_reads_the_letter_tokens_that_follow_the_prompt(sp_tok, sp_model):
    vec = vector()
    a, b = sp_tok.convert_tokens_to_ids(["A", "B"])
    frame = ab_behavior_probability(sp_model, vec, ITEMS, multipliers=[-2.0, 2.0], tokenizer=sp_tok, batch_size=4)
    assert len(frame) == 3 * 2 * 2
    for _, row in frame.iterrows():
        ids = [sp_tok.bos_token_id] + sp_tok(row.prompt, add_special_tokens=False)["input_ids"]
        for suffix, hooks in (
            ("unsteered", None),
            ("steered", {row.layer: row.multiplier * vec.layer_activations[row.layer]}),
        ):
            lp = hf_logprobs(sp_model, ids, hooks)[-1]
            pa, pb = lp[a].exp(), lp[b].exp()
            expected = (pa if row.matching == "A" else pb) / (pa + pb)
            assert row[f"p_matching_{suffix}"] == pytest.approx(float(expected), abs=1e-5)
            assert row[f"ab_mass_{suffix}"] == pytest.approx(float(pa + pb), abs=1e-5)
    with pytest.raises(TargetTokenError, match="'AB' is 2 tokens"):
        ab_behavior_probability(sp_model, vec, ITEMS, letters=("AB", "B"), tokenizer=sp_tok)
    with pytest.raises(TargetTokenError, match="same token"):
        ab_behavior_probability(sp_model, vec, ITEMS, letters=("A", "A"), tokenizer=sp_tok)


def test_sweep_token_metrics_bind_each_prompt(sp_tok, sp_model):
    vec = vector(layers=(1,))
    prompts = ["Answer: (", "Answer:"]
    frame = sweep_layers(
        sp_model, vec, prompts, multipliers=[1.0], metric=logit_diff("A", "B"), tokenizer=sp_tok, per_prompt=True
    )
    share = sweep_layers(
        sp_model, vec, prompts[:1], multipliers=[1.0], metric=prob_share(["A"], ["B"]), tokenizer=sp_tok
    )
    spaced = sweep_layers(
        sp_model, vec, prompts[1:], multipliers=[1.0], metric=logit_diff(" A", " B"), tokenizer=sp_tok
    )
    plain = sp_tok.convert_tokens_to_ids(["A", "B"])  # "A" right after "(" or ":" is A, never ▁A
    for index, (a, b) in enumerate((plain, plain)):
        ids = [sp_tok.bos_token_id] + sp_tok(prompts[index], add_special_tokens=False)["input_ids"]
        lp = hf_logprobs(sp_model, ids, {1: vec.layer_activations[1]})[-1]
        assert frame.logit_diff[index] == pytest.approx(float(lp[a] - lp[b]), abs=1e-5)
        if index == 0:
            assert share.prob_share[0] == pytest.approx(float(torch.sigmoid(lp[a] - lp[b])), abs=1e-5)
        else:
            a, b = sp_tok.convert_tokens_to_ids(["\u2581A", "\u2581B"])  # " A" after ":" is ▁A
            assert spaced.logit_diff[0] == pytest.approx(float(lp[a] - lp[b]), abs=1e-5)


def test_compare_logits_targets_in_context_and_with_token_id_prompts(sp_tok, sp_model):
    vec = vector(layers=(0,))
    prompt = "Do you like cats? I think"
    ids = [sp_tok.bos_token_id] + sp_tok(prompt, add_special_tokens=False)["input_ids"]
    frame = compare_logits(
        sp_model,
        vec,
        [prompt, ids],
        multipliers=[1.0],
        tokenizer=sp_tok,
        target_tokens={"yes": [" Yes", " sure"], "no": " No"},
    )
    groups = {"yes": ["\u2581Yes", "\u2581sure"], "no": ["\u2581No"]}
    before, after = hf_logprobs(sp_model, ids)[-1], hf_logprobs(sp_model, ids, {0: vec.layer_activations[0]})[-1]
    for _, row in frame.iterrows():
        for name, pieces in groups.items():
            chosen = sp_tok.convert_tokens_to_ids(pieces)
            delta = torch.logsumexp(after[chosen], 0) - torch.logsumexp(before[chosen], 0)
            assert row[f"delta_logprob[{name}]"] == pytest.approx(float(delta), abs=1e-5)
    with pytest.raises(TargetTokenError, match="cannot help"):
        compare_logits(sp_model, vec, [prompt], target_tokens=[" cannot help"], tokenizer=sp_tok)


def test_byte_level_hooked_transformer_letters():
    model = make_model(n_layers=2)
    vec = vector(layers=(1,), seed=4)
    tok = model.tokenizer
    a, b = tok.convert_tokens_to_ids(["A", "B"])
    frame = ab_behavior_probability(model, vec, ITEMS[:2], multipliers=[3.0])
    for _, row in frame.iterrows():
        lp = hooked_logprobs(model, model.to_tokens(row.prompt)[0].tolist(), {1: 3.0 * vec.layer_activations[1]})[-1]
        expected = (lp[a] if row.matching == "A" else lp[b]).exp() / (lp[a].exp() + lp[b].exp())
        assert row.p_matching_steered == pytest.approx(float(expected), abs=1e-5)


def test_show_progress_on_comparisons(capsys):
    model = make_model(n_layers=2)
    vec = vector(layers=(1,))
    compare_logits(model, vec, ["I love"], show_progress=True)
    assert "Sweeping" in capsys.readouterr().err
    ab_behavior_probability(model, vec, ITEMS[:1], show_progress=True)
    assert "Sweeping" in capsys.readouterr().err
    compare_logits(model, vec, ["I love"])
    assert "Sweeping" not in capsys.readouterr().err
