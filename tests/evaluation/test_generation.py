"""Generation grids against the models' own ``generate`` under ``vec.apply``, and fluency by hand."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import llama_model, make_model, metaspace_tokenizer, random_vector

from steerlens import SteeringVector, prob_mass
from steerlens.evaluation.generation import generate_grid
from steerlens.hooks import multiplicative_operator

N_NEW = 6
PROMPTS = ["I love this film", "The food was"]


@pytest.fixture(scope="module")
def tl_model():
    return make_model(n_layers=3, seed=1)


@pytest.fixture(scope="module")
def hf():
    tok = metaspace_tokenizer()
    return llama_model(tok, n_layers=3, seed=1), tok


def tl_generate(model, prompt: str) -> str:
    """TransformerLens' own greedy generate, decoded past the prompt."""
    tokens = model.to_tokens(prompt)
    out = model.generate(tokens, max_new_tokens=N_NEW, do_sample=False, verbose=False, stop_at_eos=True)
    return model.tokenizer.decode(out[0, tokens.shape[1] :], skip_special_tokens=True)


def hf_generate(model, tok, prompt: str) -> str:
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_NEW, do_sample=False, pad_token_id=3
    )
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def nll_by_hand(logits_of, encode, prompt: str, text: str) -> float | None:
    """Mean NLL per token of ``text`` after ``prompt`` from one full forward pass (None: text merges with prompt)."""
    before, full = encode(prompt), encode(prompt + text)
    if full[: len(before)] != before or len(full) == len(before):
        return None
    logprobs = torch.log_softmax(logits_of(full).float(), -1)
    targets = torch.tensor(full[len(before) :])
    return -float(logprobs[len(before) - 1 : -1].gather(-1, targets[:, None]).mean())


def check_grid(df, generate, apply, logits_of, encode, vec, layers, multipliers):
    assert len(df) == len(PROMPTS) * len(layers) * len(multipliers)
    assert list(df[["prompt_index", "layer", "multiplier"]].itertuples(index=False, name=None)) == [
        (i, layer, m) for i in range(len(PROMPTS)) for layer in layers for m in multipliers
    ]
    plain = {p: generate(p) for p in PROMPTS}
    changed, scored = 0, 0
    for row in df.itertuples():
        prompt = PROMPTS[row.prompt_index]
        one = SteeringVector({row.layer: vec.layer_activations[row.layer]}, vec.layer_type)
        with apply(one, row.multiplier):
            expected = generate(prompt)
        assert row.text == expected, (row.layer, row.multiplier)
        assert row.unsteered_text == plain[prompt]
        changed += row.text != plain[prompt]
        for text, nll in ((row.text, row.nll), (row.unsteered_text, row.unsteered_nll)):
            hand = nll_by_hand(logits_of, encode, prompt, text)
            if hand is not None:
                assert math.isclose(nll, hand, rel_tol=1e-4, abs_tol=1e-5)
                scored += 1
    assert changed > 0 and scored >= len(df)  # steering changed texts; fluency checked on most of them


def test_grid_texts_and_fluency_on_a_hooked_transformer(tl_model):
    model = tl_model
    vec = random_vector(model, (1, 2), scale=4.0, seed=3)
    layers, mults = [1, 2], [-3.0, 0.0, 4.0]
    df = generate_grid(model, vec, PROMPTS, layers, mults, max_new_tokens=N_NEW)
    assert df.attrs["metric"] is None and "kl" not in df

    def apply(v, m):
        return v.apply(model, multiplier=m)

    def logits_of(ids):
        with torch.no_grad():
            return model(torch.tensor([ids]))[0]

    def encode(text):
        return model.to_tokens(text)[0].tolist()

    check_grid(df, lambda p: tl_generate(model, p), apply, logits_of, encode, vec, layers, mults)


def test_grid_texts_and_fluency_on_a_hugging_face_model(hf):
    model, tok = hf
    vec = random_vector(32, (0, 2), scale=4.0, seed=4)
    layers, mults = [0, 2], [-3.0, 4.0]
    df = generate_grid(model, vec, PROMPTS, layers, mults, max_new_tokens=N_NEW, tokenizer=tok)

    def apply(v, m):
        return v.apply(model, multiplier=m)

    def logits_of(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0]

    def encode(text):
        return tok(text)["input_ids"]

    check_grid(df, lambda p: hf_generate(model, tok, p), apply, logits_of, encode, vec, layers, mults)


@pytest.mark.filterwarnings("ignore:the metric's tokens hold only")
def test_grid_metric_columns_are_the_steered_next_token_at_the_prompt(tl_model):
    model = tl_model
    vec = random_vector(model, (1,), scale=4.0, seed=5)
    df = generate_grid(model, vec, PROMPTS, None, [0.0, 3.0], max_new_tokens=2, metric=prob_mass(10))
    assert df.attrs["metric"] in df and {"kl", "target_mass", "target_mass_unsteered"} <= set(df)
    film = 10  # a token id: the test tokenizer has few whole words
    for row in df.itertuples():
        tokens = model.to_tokens(PROMPTS[row.prompt_index])
        with torch.no_grad():
            clean = torch.log_softmax(model(tokens)[0, -1], -1)
            with vec.apply(model, multiplier=row.multiplier):
                steered = torch.log_softmax(model(tokens)[0, -1], -1)
        kl = float((steered.exp() * (steered - clean)).sum())
        assert math.isclose(row.kl, kl, rel_tol=1e-4, abs_tol=1e-6)
        assert math.isclose(row.target_mass, float(steered[film].exp()), rel_tol=1e-4, abs_tol=1e-7)


def test_grid_with_an_operator_steers_at_multiplier_zero_only_if_the_operator_says_so(tl_model):
    """multiplicative_operator ignores the multiplier's size: m=1 and m=5 give the same text; m=0 is unsteered."""
    model = tl_model
    vec = random_vector(model, (1,), scale=4.0, seed=6)
    df = generate_grid(
        model, vec, PROMPTS[:1], [1], [0.0, 1.0, 5.0], max_new_tokens=N_NEW, operator=multiplicative_operator(-3.0)
    )
    with vec.apply(model, operator=multiplicative_operator(-3.0)):
        expected = tl_generate(model, PROMPTS[0])
    assert list(df["text"]) == [df["unsteered_text"][0], expected, expected]
    assert expected != df["unsteered_text"][0]


def test_grid_without_fluency_and_bad_arguments(tl_model):
    from steerlens.errors import InvalidArgumentError

    vec = random_vector(tl_model, (1,), scale=4.0, seed=7)
    df = generate_grid(tl_model, vec, PROMPTS[:1], None, [2.0], max_new_tokens=2, fluency=False)
    assert list(df.columns) == ["prompt_index", "prompt", "layer", "multiplier", "text", "unsteered_text"]
    for bad in (0, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="max_new_tokens"):
            generate_grid(tl_model, vec, PROMPTS[:1], None, [2.0], max_new_tokens=bad)


def test_choice_scoring_recipe_is_the_hand_sum_of_log_probs(tl_model):
    """The module's choice-scoring recipe (continuation_logprob per choice) against hand-hooked log-probs."""
    import numpy as np
    from helpers import hooked_logprobs

    from steerlens import continuation_logprob

    model = tl_model
    vec = random_vector(model, (2,), scale=4.0, seed=8)
    prompt, choices = "I love this film", [" great", " awful", " and sad"]
    df = continuation_logprob(model, vec, [prompt] * len(choices), choices, multipliers=[0, 2], layers=[2])
    table = df.pivot_table(index="completion", columns="multiplier", values="logprob_steered")
    shares = np.exp(table) / np.exp(table).sum()
    before = model.to_tokens(prompt)[0].tolist()
    for m in (0.0, 2.0):
        by_hand = {}
        for choice in choices:
            full = model.to_tokens(prompt + choice)[0].tolist()
            assert full[: len(before)] == before
            logprobs = hooked_logprobs(model, full, {2: m * vec.layer_activations[2]})
            by_hand[choice] = sum(float(logprobs[t - 1, full[t]]) for t in range(len(before), len(full)))
        for choice in choices:
            assert math.isclose(table.loc[choice, m], by_hand[choice], rel_tol=1e-4)
        total = sum(math.exp(v) for v in by_hand.values())
        assert math.isclose(shares.loc[" great", m], math.exp(by_hand[" great"]) / total, rel_tol=1e-4)
