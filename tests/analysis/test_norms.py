"""Residual norms per layer and a vector rescaled to them, against run_with_cache and hidden states."""

from __future__ import annotations

import pytest
import torch
from helpers import random_vector
from tiny_hf import make_hf_model, make_tokenizer

from steerlens.analysis import relative_vector, residual_norms
from steerlens.errors import InvalidArgumentError

PROMPTS = ["the cat sat on the mat", "a dog", "happy", "big red dog ran fast and slow"]


def norms_by_hand(model, prompts, layers, hook="hook_resid_post"):
    """Mean L2 norm over every token but the leading BOS, each prompt run alone."""
    totals, count = {layer: 0.0 for layer in layers}, 0
    for prompt in prompts:
        tokens = model.to_tokens(prompt)
        assert tokens[0, 0] == model.tokenizer.bos_token_id
        _, cache = model.run_with_cache(tokens)
        content = slice(1, None) if tokens.shape[1] > 1 else slice(0, None)
        for layer in layers:
            totals[layer] += cache[f"blocks.{layer}.{hook}"][0, content].norm(dim=-1).double().sum().item()
        count += tokens[0, content].numel()
    return {layer: totals[layer] / count for layer in layers}


def test_residual_norms_match_run_with_cache_without_the_bos(model):
    got = residual_norms(model, PROMPTS, [0, -1], batch_size=3)  # padded batches, a negative layer
    expected = norms_by_hand(model, PROMPTS, [0, model.cfg.n_layers - 1])
    assert list(got) == [0, model.cfg.n_layers - 1]
    for layer, value in expected.items():
        assert got[layer] == pytest.approx(value, rel=1e-5)
    # The BOS is left out: with it the mean differs.
    assert residual_norms(model, PROMPTS, [0], prepend_bos=False)[0] != pytest.approx(got[0], rel=1e-3)


def test_residual_norms_of_another_layer_type(model):
    got = residual_norms(model, PROMPTS, [1], layer_type="mlp_out")
    assert got[1] == pytest.approx(norms_by_hand(model, PROMPTS, [1], "hook_mlp_out")[1], rel=1e-5)


def test_residual_norms_on_a_hugging_face_model_match_its_hidden_states():
    hf, tokenizer = make_hf_model("llama"), make_tokenizer()
    prompts = ["the cat sat", "a big happy dog ran"]
    got = residual_norms(hf, prompts, [0], tokenizer=tokenizer, prepend_bos=True)
    norms = []
    for prompt in prompts:
        ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hidden = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0, 1:]
        norms.append(hidden.norm(dim=-1))
    assert got[0] == pytest.approx(torch.cat(norms).mean().item(), rel=1e-5)


def test_relative_vector_keeps_each_direction_at_the_measured_norm(model):
    vec = random_vector(model, (1, -1), scale=5.0)
    rel = relative_vector(model, vec, PROMPTS)
    measured = residual_norms(model, PROMPTS, [1, model.cfg.n_layers - 1])
    assert sorted(rel.layer_activations) == [1, model.cfg.n_layers - 1]  # negative keys resolved
    for key, layer in ((1, 1), (-1, model.cfg.n_layers - 1)):
        got, original = rel.layer_activations[layer], vec.layer_activations[key]
        assert got.norm().item() == pytest.approx(measured[layer], rel=1e-5)
        assert torch.nn.functional.cosine_similarity(got, original, dim=0).item() == pytest.approx(1.0, abs=1e-6)
        assert rel.metadata["residual_norms"][str(layer)] == pytest.approx(measured[layer])
        assert rel.metadata["original_norms"][str(layer)] == pytest.approx(original.norm().item())


def test_relative_vector_with_given_norms_and_its_refusals(model):
    vec = random_vector(model, (1, 2))
    rel = relative_vector(model, vec, norms={1: 2.0, 2: 0.5})
    assert rel.layer_activations[1].norm().item() == pytest.approx(2.0)
    assert rel.layer_activations[2].norm().item() == pytest.approx(0.5)
    with pytest.raises(InvalidArgumentError, match="needs prompts"):
        relative_vector(model, vec)
    with pytest.raises(InvalidArgumentError, match=r"no entry for layers \[2\]"):
        relative_vector(model, vec, norms={1: 2.0})
