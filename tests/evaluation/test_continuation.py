"""Log-probability of multi-token completions, steered vs unsteered (steerlens.evaluation.continuation).

Reference: one plain forward pass over prompt + completion (vectors added with plain hooks at
every position), summing ``log_softmax`` at the completion's positions; completion ids picked by
hand from the vocabulary.
"""

from __future__ import annotations

import pytest
import torch
from helpers import hf_logprobs, hooked_logprobs, llama_model, make_model, metaspace_tokenizer

from steerlens import SteeringVector, continuation_logprob
from steerlens.errors import InvalidArgumentError, TargetTokenError


def vector(layers, seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: 2.0 * torch.randn(32, generator=g) for layer in layers})


def sequence_logprob(logprobs: torch.Tensor, n_prompt: int, completion: list[int]) -> float:
    """Σ_t log P(c_t | prefix) from one pass: position n_prompt - 1 + t predicts c_t."""
    return float(sum(logprobs[n_prompt - 1 + t, token] for t, token in enumerate(completion)))


def mean_kl(steered: torch.Tensor, unsteered: torch.Tensor, n_prompt: int, n_tokens: int) -> float:
    """Mean over the positions that predict the completion of KL(steered ‖ unsteered), by hand."""
    rows = slice(n_prompt - 1, n_prompt - 1 + n_tokens)
    return float((steered[rows].exp() * (steered[rows] - unsteered[rows])).sum(-1).mean())


@pytest.fixture(scope="module")
def model():
    return make_model(n_layers=3, seed=4)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_hooked_transformer_matches_one_full_pass(model, padding_side):
    vec = vector([1, 2])
    prompts = ["I love this film", "The food was", "What a lovely day"]
    completions = [" and it was great", "delicious", [45, 46, 47]]
    frame = continuation_logprob(
        model, vec, prompts, completions, multipliers=[-1.0, 2.0], batch_size=5, padding_side=padding_side
    )
    assert len(frame) == 3 * 2 * 2
    tok = model.tokenizer
    for _, row in frame.iterrows():
        prompt_ids = model.to_tokens(row.prompt)[0].tolist()
        text = row.prompt + row.completion if isinstance(row.completion, str) else None
        completion = tok(text, add_special_tokens=False)["input_ids"][len(prompt_ids) - 1 :] if text else row.completion
        ids = prompt_ids + completion
        assert row.n_tokens == len(completion) > 0
        hooks = {row.layer: row.multiplier * vec.layer_activations[row.layer]}
        clean, pushed = hooked_logprobs(model, ids), hooked_logprobs(model, ids, hooks)
        un = sequence_logprob(clean, len(prompt_ids), completion)
        st = sequence_logprob(pushed, len(prompt_ids), completion)
        assert row.kl == pytest.approx(mean_kl(pushed, clean, len(prompt_ids), len(completion)), abs=1e-5)
        assert row.kl > 1e-4
        assert row.logprob_unsteered == pytest.approx(un, abs=1e-4)
        assert row.logprob_steered == pytest.approx(st, abs=1e-4)
        assert row.delta_logprob == pytest.approx(st - un, abs=1e-4)


def test_sentencepiece_completion_in_context_with_the_joint_vector():
    tok = metaspace_tokenizer("bos_eos")  # BOS and EOS from the post-processor: the EOS is not scored
    hf = llama_model(tok, n_layers=2, seed=6)
    vec = vector([0, 1], seed=1)
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Can you help?"}], tokenize=False, add_generation_prompt=True
    )
    frame = continuation_logprob(
        hf,
        vec,
        [chat, "Answer: ("],
        [" I cannot help with that", "A)"],
        multipliers=[1.0],
        layers="joint",
        tokenizer=tok,
        show_progress=False,
    )
    completions = [["\u2581I", "\u2581cannot", "\u2581help", "\u2581with", "\u2581that"], ["A", ")"]]
    prompt_ids = [
        tok(chat, add_special_tokens=False)["input_ids"],
        [tok.bos_token_id] + tok("Answer: (", add_special_tokens=False)["input_ids"],
    ]
    assert prompt_ids[0].count(tok.bos_token_id) == 1
    for index, row in frame.iterrows():
        completion = tok.convert_tokens_to_ids(completions[index])
        ids = prompt_ids[index] + completion
        full = {layer: vec.layer_activations[layer] for layer in (0, 1)}
        assert row.layer == "0+1" and row.n_tokens == len(completion)
        assert row.logprob_unsteered == pytest.approx(
            sequence_logprob(hf_logprobs(hf, ids), len(ids) - len(completion), completion), abs=1e-4
        )
        assert row.logprob_steered == pytest.approx(
            sequence_logprob(hf_logprobs(hf, ids, full), len(ids) - len(completion), completion), abs=1e-4
        )
        n_prompt = len(ids) - len(completion)
        assert row.kl == pytest.approx(
            mean_kl(hf_logprobs(hf, ids, full), hf_logprobs(hf, ids), n_prompt, len(completion)), abs=1e-5
        )


def test_bad_completions_are_clear(model, capsys):
    vec = vector([1])
    with pytest.raises(InvalidArgumentError, match="2 completions for 1 prompts"):
        continuation_logprob(model, vec, ["I love"], ["a", "b"])
    with pytest.raises(InvalidArgumentError, match="empty"):
        continuation_logprob(model, vec, ["I love"], "")
    with pytest.raises(TargetTokenError, match="merges with the end of prompt"):
        continuation_logprob(metaspace_llama(), vector([0]), ["Answer: "], "A", tokenizer=metaspace_tokenizer())
    frame = continuation_logprob(model, vec, "I love", " it", multipliers=[0.0], show_progress=True)
    assert frame.delta_logprob[0] == 0.0 and frame.kl[0] == 0.0 and "Sweeping" in capsys.readouterr().err


def metaspace_llama():
    return llama_model(metaspace_tokenizer(), n_layers=1)


def test_settings_value_equals_its_fields_by_name_and_steers_every_position(model):
    """settings=Settings(...) is the same call as its fields by name (and not the default call); a shared value's
    steer_from is not used (the verb steers every position: the same frame as without it), and naming it is an
    error."""
    import pandas as pd

    from steerlens.errors import UnknownKeywordError
    from steerlens.settings import Settings

    vec, prompts, completions = vector([1, 2]), ["I love", "The food was so"], [" it so", " good"]
    fields = {"batch_size": 2, "padding_side": "left", "prepend_bos": False}
    by_value = continuation_logprob(model, vec, prompts, completions, [-1.0, 2.0], settings=Settings(**fields))
    by_name = continuation_logprob(model, vec, prompts, completions, [-1.0, 2.0], **fields)
    pd.testing.assert_frame_equal(by_value, by_name)
    assert not by_value.logprob_steered.equals(continuation_logprob(model, vec, prompts, completions, [-1.0, 2.0]))
    shared = Settings(**fields, steer_from="last")
    pd.testing.assert_frame_equal(
        continuation_logprob(model, vec, prompts, completions, [-1.0, 2.0], settings=shared), by_name
    )
    with pytest.raises(UnknownKeywordError, match="steer_from"):
        continuation_logprob(model, vec, prompts, completions, steer_from="last")
