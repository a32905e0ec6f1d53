"""The one tokenization policy (steerlens.tokens.policy), on real tokenizer kinds, at every entry point.

Three tokenizer kinds are built in memory: byte-level BPE (GPT-2 style, ``helpers.make_tokenizer``),
SentencePiece style (a Unigram model with a Metaspace pre-tokenizer and a ``<s> $A``
post-processor, as Llama-2's) and the same with a ``<s> $A </s>`` post-processor (BOS and EOS).
References are plain forward passes on ids built by hand, never steerlens' own encoding.

The builders here (``metaspace_tokenizer``, ``llama_model``, ``llama_prompt``...) are shared
by test_targets, test_chat, test_joint and test_continuation.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    hf_logprobs,
    hooked_logprobs,
    llama_model,
    llama_prompt,
    make_model,
    make_tokenizer,
    metaspace_tokenizer,
)

from steerlens import SteeringVector, compare_logits, extract_activations, sweep_layers
from steerlens.backends import backend_for
from steerlens.errors import InvalidArgumentError, PromptTooLongError, TokenizerError
from steerlens.evaluation import generate_text, steered_and_unsteered
from steerlens.tokens import TokenPolicy, check_prompt_inputs


@pytest.fixture(scope="module")
def hooked():
    return make_model(n_layers=3)


@pytest.fixture(scope="module")
def llama_tok():
    return metaspace_tokenizer("bos")


@pytest.fixture(scope="module")
def llama(llama_tok):
    return llama_model(llama_tok)


# -- the policy itself --------------------------------------------------------------------------


def test_hooked_transformer_default_equals_to_tokens(hooked):
    policy = TokenPolicy.for_hooked_transformer(hooked)
    for text in ["I love this film", "a", "The food was delicious and great"]:
        for prepend_bos in (None, True, False):
            expected = (
                hooked.to_tokens(text, prepend_bos=prepend_bos)[0].tolist()
                if prepend_bos is not None
                else hooked.to_tokens(text)[0].tolist()
            )
            assert policy.encode(text, prepend_bos) == expected, (text, prepend_bos)


def test_a_prompt_starting_with_bos_never_gets_a_second_one(hooked):
    bos_text, bos = hooked.tokenizer.bos_token, hooked.tokenizer.bos_token_id
    text = "I love this film"
    assert hooked.to_tokens(bos_text + text)[0, :2].tolist() == [bos, bos]  # what to_tokens does
    backend = backend_for(hooked)
    one_bos = [bos] + hooked.tokenizer(text, add_special_tokens=False)["input_ids"]
    for prepend_bos in (None, True, False):
        assert backend.encode(bos_text + text, prepend_bos) == one_bos
        assert backend.encode(one_bos, prepend_bos) == one_bos  # ids: as given


def test_hugging_face_default_is_what_the_tokenizer_adds(llama_tok, llama):
    gpt2_style = make_tokenizer()
    text = "Do you like cats"
    body = llama_tok(text, add_special_tokens=False)["input_ids"]
    assert TokenPolicy.for_tokenizer(llama_tok).encode(text) == [1] + body  # Llama-2 adds <s>
    assert TokenPolicy.for_tokenizer(gpt2_style).encode("I love") == gpt2_style("I love")["input_ids"]
    assert TokenPolicy.for_tokenizer(gpt2_style).encode("I love", True)[0] == gpt2_style.bos_token_id
    assert TokenPolicy.for_tokenizer(llama_tok).encode(text, False) == body
    chat = llama_prompt(llama_tok, "Do you like cats?")
    assert llama_tok(chat)["input_ids"][:2] == [1, 1]  # the tokenizer alone doubles the BOS
    for prepend_bos in (None, True, False):
        ids = backend_for(llama, llama_tok).encode(chat, prepend_bos)
        assert ids == llama_tok(chat, add_special_tokens=False)["input_ids"] and ids.count(1) == 1


def test_bos_eos_post_processor_keeps_bos_and_drops_the_trailing_eos():
    tok = metaspace_tokenizer("bos_eos")
    text = "Answer: (A"
    assert tok(text)["input_ids"][-1] == tok.eos_token_id  # the tokenizer appends </s>
    ids = TokenPolicy.for_tokenizer(tok).encode(text)
    assert ids == [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[-1] == "A"


def test_token_ids_are_used_as_given_and_true_adds_a_missing_bos(llama_tok):
    policy = TokenPolicy.for_tokenizer(llama_tok)
    assert policy.encode([40, 41]) == [40, 41]
    assert policy.encode(torch.tensor([40, 41])) == [40, 41]
    assert policy.encode([40, 41], prepend_bos=True) == [1, 40, 41]
    assert policy.encode([1, 40], prepend_bos=True) == [1, 40]
    assert policy.encode([1, 40], prepend_bos=False) == [1, 40]


def test_bad_settings_are_clear(llama_tok):
    no_bos = make_tokenizer()
    no_bos.bos_token = None
    with pytest.raises(TokenizerError, match="no BOS token"):
        TokenPolicy.for_tokenizer(no_bos).encode("I love", prepend_bos=True)
    with pytest.raises(InvalidArgumentError, match="prepend_bos"):
        TokenPolicy.for_tokenizer(llama_tok).encode("cats", prepend_bos="yes")
    with pytest.raises(PromptTooLongError, match="context is 4"):
        TokenPolicy.for_tokenizer(llama_tok, n_ctx=4).encode([5] * 5)


# -- every entry point uses it ----------------------------------------------------------------


def test_training_reads_a_chat_prompt_with_one_bos(llama_tok, llama):
    chats = [llama_prompt(llama_tok, q) for q in ("Do you like cats?", "Is the film good?")]
    pos, neg = extract_activations(llama, llama_tok, [(c + " Yes", c + " No") for c in chats], layers=[1], batch_size=2)
    for row, chat in enumerate(chats):
        for acts, answer in ((pos, " Yes"), (neg, " No")):
            ids = llama_tok(chat + answer, add_special_tokens=False)["input_ids"]  # one BOS, from the template
            with torch.no_grad():
                hidden = llama(torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0, -1]
            torch.testing.assert_close(torch.cat(acts[1])[row], hidden, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_training_and_sweeps_follow_prepend_bos(hooked, prepend_bos):
    pairs = [("I love this film", "I hate this film"), ("great great", "sad")]
    pos, neg = extract_activations(hooked, None, pairs, layers=[1], prepend_bos=prepend_bos, batch_size=2)
    with torch.no_grad():
        for row, (p, n) in enumerate(pairs):
            for acts, text in ((pos, p), (neg, n)):
                _, cache = hooked.run_with_cache(hooked.to_tokens(text, prepend_bos=prepend_bos))
                torch.testing.assert_close(
                    torch.cat(acts[1])[row], cache["blocks.1.hook_resid_post"][0, -1], atol=1e-5, rtol=0
                )
    expected = SteeringVector({1: (torch.cat(pos[1]) - torch.cat(neg[1])).mean(0)})
    prompt = "The movie was"
    frame = sweep_layers(
        hooked, pairs, [prompt], layers=[1], multipliers=[2.0], prepend_bos=prepend_bos, per_prompt=True
    )
    ids = hooked.to_tokens(prompt, prepend_bos=prepend_bos)[0].tolist()
    after = hooked_logprobs(hooked, ids, {1: 2.0 * expected.layer_activations[1]})[-1]
    before = hooked_logprobs(hooked, ids)[-1]
    assert frame.kl[0] == pytest.approx(float((after.exp() * (after - before)).sum()), abs=1e-5)


def test_compare_logits_and_generation_on_a_chat_prompt(llama_tok, llama):
    chat = llama_prompt(llama_tok, "Do you like cats?")
    ids = llama_tok(chat, add_special_tokens=False)["input_ids"]
    vec = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(0))})
    frame = compare_logits(llama, vec, [chat, ids], multipliers=[1.5], tokenizer=llama_tok)
    before, after = hf_logprobs(llama, ids)[-1], hf_logprobs(llama, ids, {1: 1.5 * vec.layer_activations[1]})[-1]
    for _, row in frame.iterrows():
        assert row.kl == pytest.approx(float((after.exp() * (after - before)).sum()), abs=1e-5)
    with torch.no_grad():
        greedy = llama.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=3,
        )
    expected = llama_tok.decode(greedy[0, len(ids) :], skip_special_tokens=True)
    assert generate_text(llama, chat, max_new_tokens=4, tokenizer=llama_tok) == expected
    assert generate_text(llama, ids, max_new_tokens=4, tokenizer=llama_tok) == expected
    steered, unsteered = steered_and_unsteered(
        llama, vec, chat, multiplier=0.0, max_new_tokens=4, tokenizer=llama_tok, prepend_bos=False
    )
    assert steered == unsteered == expected


def test_cli_prepend_bos_flags(toy, tmp_path, capsys):
    from steerlens import train_steering_vector
    from steerlens.cli import main
    from steerlens.formats.pairs import save_pairs_jsonl

    pairs = [("I loved the film. It was", "I hated the film. It was"), ("great food", "awful food")]
    save_pairs_jsonl(pairs, tmp_path / "pairs.jsonl")
    out = tmp_path / "vec.safetensors"
    assert (
        main(
            ["train", "--pairs", str(tmp_path / "pairs.jsonl"), "--layers", "2", "--no-prepend-bos", "--out", str(out)]
        )
        == 0
    )
    expected = train_steering_vector(toy, None, pairs, layers=[2], prepend_bos=False)
    with_bos = train_steering_vector(toy, None, pairs, layers=[2])
    got = SteeringVector.load(out).layer_activations[2]
    torch.testing.assert_close(got, expected.layer_activations[2], atol=1e-5, rtol=0)
    assert not torch.allclose(got, with_bos.layer_activations[2], atol=1e-3)
    capsys.readouterr()
    prompt = "The film was"
    assert (
        main(["generate", "--vector", str(out), "--prompt", prompt, "--max-new-tokens", "4", "--no-prepend-bos"]) == 0
    )
    steered, plain = steered_and_unsteered(toy, SteeringVector.load(out), prompt, 4.0, 4, prepend_bos=False)
    assert f"unsteered:  {plain!r}" in capsys.readouterr().out


LONE_SURROGATE = "I love \ud800 it"


def test_a_lone_surrogate_is_one_clear_error_at_every_entry_point():
    """No tokenizer can encode half a UTF-16 pair: one steerlens error naming the prompt and the fix
    (issue 28, item 10), before any forward pass, on both routes; valid text around it is untouched."""
    hooked = make_model()
    tok = metaspace_tokenizer()
    hf = llama_model(tok)
    vec = SteeringVector({1: torch.ones(32)})
    # the tokenizer's own failure, which this replaces
    with pytest.raises(TypeError):
        tok(LONE_SURROGATE)
    calls = [
        lambda: check_prompt_inputs(["fine", LONE_SURROGATE]),
        lambda: TokenPolicy.for_tokenizer(tok).encode(LONE_SURROGATE),
        lambda: compare_logits(hooked, vec, [LONE_SURROGATE]),
        lambda: compare_logits(hf, vec, [LONE_SURROGATE], tokenizer=tok),
        lambda: sweep_layers(hooked, vec, ["fine", LONE_SURROGATE], multipliers=[1.0]),
        lambda: extract_activations(hf, tok, [("I love it", LONE_SURROGATE)]),
        lambda: extract_activations(hooked, None, [(LONE_SURROGATE, "I hate it")]),
        lambda: generate_text(hf, LONE_SURROGATE, max_new_tokens=2, tokenizer=tok),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError) as info:
            call()
        message = str(info.value)
        assert "'I love \\ud800 it'" in message and "lone surrogate" in message, message
        assert "encode('utf-8', 'replace')" in message
    # a surrogate *pair* written as one character is fine
    assert check_prompt_inputs(["I love \U0001f600 it"]) == ["I love \U0001f600 it"]
