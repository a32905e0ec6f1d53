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


# -- the reply to a chat prompt: the new token ids decoded, on both routes ---------------------------------------------

REPLY_NEW = 8


def chat_of(tok, user: str = "I love it") -> str:
    """A generation prompt in the tokenizer's own chat template: it holds special tokens (turn markers, BOS)."""
    return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)


def template_ids(tok, chat: str) -> list[int]:
    """The chat string's ids as its template wrote it (the template holds the BOS text: no second BOS)."""
    return tok(chat, add_special_tokens=False)["input_ids"]


def greedy_ids(logits_of, ids: list[int], new: int) -> list[int]:
    """The independent reference: one full forward per new token, no KV cache, no stopping; the new ids only."""
    out = list(ids)
    for _ in range(new):
        out.append(int(logits_of(out)[-1].argmax()))
    return out[len(ids) :]


def tl_logits(model):
    def logits_of(ids):
        with torch.no_grad():
            return model(torch.tensor([ids]))[0]

    return logits_of


def hf_logits(model):
    def logits_of(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0]

    return logits_of


@pytest.fixture(scope="module")
def tl_chat():
    from helpers import make_chat_model

    return make_chat_model(n_layers=3, seed=1)


def test_transformer_lens_string_generate_drops_the_prompts_special_tokens(tl_chat):
    """Whose behaviour: TransformerLens' ``generate(str)`` decodes prompt + reply with ``skip_special_tokens=True``.

    The chat prompt's turn markers are gone from its output, so slicing that output by
    ``len(prompt)`` cuts into (here: past) the reply; steerlens' helpers return the reply itself.
    """
    from steerlens.evaluation.generation import generate_text

    model, tok = tl_chat, tl_chat.tokenizer
    chat = chat_of(tok)
    assert tok.bos_token in chat and chat.startswith(tok.bos_token)
    tokens = model.to_tokens(chat)
    out = model.generate(chat, max_new_tokens=REPLY_NEW, do_sample=False, verbose=False)
    by_ids = model.generate(tokens, max_new_tokens=REPLY_NEW, do_sample=False, verbose=False)
    assert out == tok.decode(by_ids[0], skip_special_tokens=True)  # TransformerLens' own decode of prompt + reply
    assert not out.startswith(chat) and len(out) < len(chat) + len(tok.decode(by_ids[0, tokens.shape[1] :]))
    reply = generate_text(model, template_ids(tok, chat), max_new_tokens=REPLY_NEW)
    assert reply and out[len(chat) :] != reply


def test_chat_reply_is_the_new_ids_decoded_on_a_hooked_transformer(tl_chat):
    """generate_text / steered_and_unsteered / generate_grid on a chat string: TL's own generate of its ids, sliced by ids."""
    from steerlens.evaluation.generation import generate_text, steered_and_unsteered

    model, tok = tl_chat, tl_chat.tokenizer
    chat = chat_of(tok)
    ids = template_ids(tok, chat)
    assert tok.bos_token_id in ids[1:]  # a special token inside the prompt, not only at its start
    vec = random_vector(model, (1,), scale=4.0, seed=11)

    def reply(steer: float) -> str:
        tokens = torch.tensor([ids])
        if steer:
            with vec.apply(model, multiplier=steer):
                out = model.generate(tokens, max_new_tokens=REPLY_NEW, do_sample=False, verbose=False)
        else:
            out = model.generate(tokens, max_new_tokens=REPLY_NEW, do_sample=False, verbose=False)
        return tok.decode(out[0, len(ids) :], skip_special_tokens=True)

    plain, steered = reply(0.0), reply(3.0)
    assert plain and steered != plain
    assert generate_text(model, chat, max_new_tokens=REPLY_NEW) == plain
    assert generate_text(model, ids, max_new_tokens=REPLY_NEW) == plain
    assert steered_and_unsteered(model, vec, chat, multiplier=3.0, max_new_tokens=REPLY_NEW) == (steered, plain)
    df = generate_grid(model, vec, [chat], [1], [3.0], max_new_tokens=REPLY_NEW, fluency=False)
    assert (df["text"][0], df["unsteered_text"][0]) == (steered, plain)


def test_chat_reply_is_the_new_ids_decoded_on_a_hugging_face_model(hf):
    """The same on the Hugging Face route, with a Llama-2-like template (``<s>`` and ``</s>`` inside the prompt)."""
    from steerlens.evaluation.generation import generate_text, steered_and_unsteered

    model, tok = hf
    chat = tok.apply_chat_template(
        [
            {"role": "user", "content": "Do you like cats"},
            {"role": "assistant", "content": "Yes I love it"},
            {"role": "user", "content": "the film was good"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = template_ids(tok, chat)
    assert ids[0] == tok.bos_token_id and tok.eos_token_id in ids
    vec = random_vector(32, (1,), scale=4.0, seed=12)

    def reply(steer: float) -> str:
        tokens = torch.tensor([ids])
        kwargs = {"attention_mask": torch.ones_like(tokens), "max_new_tokens": REPLY_NEW, "do_sample": False}
        if steer:
            with vec.apply(model, multiplier=steer):
                out = model.generate(tokens, pad_token_id=3, **kwargs)
        else:
            out = model.generate(tokens, pad_token_id=3, **kwargs)
        return tok.decode(out[0, len(ids) :], skip_special_tokens=True)

    plain, steered = reply(0.0), reply(3.0)
    assert plain and steered != plain
    assert generate_text(model, chat, max_new_tokens=REPLY_NEW, tokenizer=tok) == plain
    assert generate_text(model, ids, max_new_tokens=REPLY_NEW, tokenizer=tok) == plain
    assert steered_and_unsteered(model, vec, chat, 3.0, REPLY_NEW, tokenizer=tok) == (steered, plain)
    df = generate_grid(model, vec, [chat], [1], [3.0], max_new_tokens=REPLY_NEW, tokenizer=tok, fluency=False)
    assert (df["text"][0], df["unsteered_text"][0]) == (steered, plain)


def eos_at_a_new_token(logits_of, ids: list[int], eos: int) -> tuple[int, int]:
    """``(t, k)``: the first greedy new token ``t`` at step ``k >= 2`` not generated before (and not the EOS)."""
    new = greedy_ids(logits_of, ids, REPLY_NEW)
    assert eos not in new
    k = next(k for k in range(2, REPLY_NEW - 2) if new[k] not in new[:k])
    return new[k], k


def check_stops_at_eos(logits_of, ids: list[int], eos: int, k: int, decode, text: str) -> None:
    """The reply is the greedy ids before the first EOS, and the model had more to say after it."""
    new = greedy_ids(logits_of, ids, REPLY_NEW)
    assert new.index(eos) == k and len(new) > k + 1
    assert text == decode(new[:k]) and text != decode([t for t in new if t != eos])


def test_the_reply_stops_at_the_end_of_turn_token_on_a_hooked_transformer():
    """The EOS's unembedding is made a copy of a token the model says at step k (a nudge above it): the reply ends there."""
    from helpers import make_chat_model

    from steerlens.evaluation.generation import generate_text

    model = make_chat_model(n_layers=3, seed=1)
    tok = model.tokenizer
    ids = template_ids(tok, chat_of(tok))
    eos = tok.eos_token_id
    token, k = eos_at_a_new_token(tl_logits(model), ids, eos)
    with torch.no_grad():
        model.unembed.W_U[:, eos] = model.unembed.W_U[:, token]
        model.unembed.b_U[eos] = model.unembed.b_U[token] + 1e-3
    text = generate_text(model, ids, max_new_tokens=REPLY_NEW)
    check_stops_at_eos(tl_logits(model), ids, eos, k, lambda t: tok.decode(t, skip_special_tokens=True), text)


def test_the_reply_stops_at_the_end_of_turn_token_on_a_hugging_face_model():
    """The same on the Hugging Face route (the model's generation config names ``</s>``)."""
    from steerlens.evaluation.generation import generate_text

    tok = metaspace_tokenizer()
    model = llama_model(tok, n_layers=3, seed=1)
    ids = template_ids(tok, chat_of(tok, "Do you like cats"))
    eos = tok.eos_token_id
    assert model.generation_config.eos_token_id == eos
    token, k = eos_at_a_new_token(hf_logits(model), ids, eos)
    with torch.no_grad():
        model.lm_head.weight[eos] = model.lm_head.weight[token] * (1 + 1e-4)
    text = generate_text(model, ids, max_new_tokens=REPLY_NEW, tokenizer=tok)
    check_stops_at_eos(hf_logits(model), ids, eos, k, lambda t: tok.decode(t, skip_special_tokens=True), text)


def test_the_reply_stops_at_a_template_end_of_turn_token_that_is_not_the_eos_on_a_hooked_transformer():
    """Gemma-like: the template ends a turn with <end_of_turn>, not the EOS; TransformerLens stops at the EOS only."""
    import warnings

    from tokens.test_turns import GEMMA_LIKE
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AddedToken

    from steerlens.evaluation.generation import generate_text
    from steerlens.tokens.turns import end_of_turn_ids

    tok = metaspace_tokenizer()
    tok.add_tokens([AddedToken("<end_of_turn>", special=True)], special_tokens=True)
    tok.chat_template = GEMMA_LIKE
    turn = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn_ids(tok) == [tok.eos_token_id, turn]
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=64, d_vocab=len(tok), act_fn="gelu", seed=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg).eval()
    model.tokenizer = tok  # set after construction: TransformerLens would reload it from its name
    ids = template_ids(tok, chat_of(tok, "Do you like cats"))
    token, k = eos_at_a_new_token(tl_logits(model), ids, turn)
    with torch.no_grad():
        model.unembed.W_U[:, turn] = model.unembed.W_U[:, token]
        model.unembed.b_U[turn] = model.unembed.b_U[token] + 1e-3
    text = generate_text(model, ids, max_new_tokens=REPLY_NEW)
    check_stops_at_eos(tl_logits(model), ids, turn, k, lambda t: tok.decode(t, skip_special_tokens=True), text)


def test_grid_settings_value_equals_its_fields_by_name_and_ignores_the_fields_it_does_not_take(tl_model):
    """settings=Settings(...) is the same grid as its fields by name (and not the default grid's metric); a shared
    value's padding side, steering start, bar and distributed flag are not used (distributed=True would need a
    process group), and naming one of them is an error."""
    import pandas as pd

    from steerlens.errors import UnknownKeywordError
    from steerlens.settings import Settings

    vec = random_vector(tl_model, (1,), scale=4.0, seed=2)
    grid = {"layers": [1], "multipliers": [0.0, 3.0], "max_new_tokens": 3, "metric": "kl"}
    fields = {"batch_size": 2, "prepend_bos": False, "operator": multiplicative_operator(-2.0)}
    by_name = generate_grid(tl_model, vec, PROMPTS, **grid, **fields)
    by_value = generate_grid(tl_model, vec, PROMPTS, **grid, settings=Settings(**fields))
    pd.testing.assert_frame_equal(by_value, by_name)
    assert not by_name.kl.equals(generate_grid(tl_model, vec, PROMPTS, **grid).kl)
    shared = Settings(**fields, padding_side="left", steer_from="last", show_progress=True, distributed=True)
    pd.testing.assert_frame_equal(generate_grid(tl_model, vec, PROMPTS, **grid, settings=shared), by_name)
    with pytest.raises(UnknownKeywordError, match="padding_side"):
        generate_grid(tl_model, vec, PROMPTS, **grid, padding_side="left")
