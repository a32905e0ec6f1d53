"""Reading a vector's sites on plain prompts: layers resolved and checked, every real token's activation."""

from __future__ import annotations

import pytest
import torch
from helpers import random_vector

from steerlens.analysis.prompt_activations import content_rows, iter_prompt_activations, unit, vector_layers
from steerlens.backends import backend_for
from steerlens.errors import ModelMismatchError
from steerlens.tokens import prepare_prompts

PROMPTS = ["the cat sat on the mat", "a dog", "happy", "big red dog ran fast"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_each_prompts_activations_equal_its_own_run_padding_dropped(model, side):
    backend = backend_for(model)
    prepared = prepare_prompts(backend, PROMPTS, padding_side=side)
    seen = []
    for item in iter_prompt_activations(backend, prepared, [0, 2], "resid_post", batch_size=3):
        tokens = model.to_tokens(PROMPTS[item.index])
        assert item.token_ids == tokens[0].tolist() and item.bos
        _, cache = model.run_with_cache(tokens)
        for layer in (0, 2):
            torch.testing.assert_close(item.acts[layer], cache[f"blocks.{layer}.hook_resid_post"][0], atol=1e-5, rtol=0)
        seen.append(item.index)
    assert sorted(seen) == list(range(len(PROMPTS)))


def test_content_rows_leave_out_a_leading_bos_unless_alone(model):
    backend = backend_for(model)
    bos = model.tokenizer.bos_token_id
    prompts = ["a dog", [bos], [bos + 5, bos + 6]]
    items = {i.index: i for i in iter_prompt_activations(backend, prepare_prompts(backend, prompts), [0], "resid_post")}
    assert content_rows(items[0]) == slice(1, None)  # BOS + "a dog"
    assert items[1].bos and content_rows(items[1]) == slice(0, None)  # the BOS alone
    assert not items[2].bos and content_rows(items[2]) == slice(0, None)


def test_vector_layers_resolve_negative_keys_and_check_the_width(model):
    backend = backend_for(model)
    vec = random_vector(model, (1, -1))
    layers = vector_layers(backend, vec, None)
    assert list(layers) == [1, model.cfg.n_layers - 1]
    assert torch.equal(layers[model.cfg.n_layers - 1], vec.layer_activations[-1])
    assert list(vector_layers(backend, vec, [-1])) == [model.cfg.n_layers - 1]
    with pytest.raises(ModelMismatchError, match="d_model 7"):
        vector_layers(backend, random_vector(7, (1,)), None)


def test_unit_scales_to_norm_one_and_refuses_zero():
    direction = torch.tensor([3.0, 4.0], dtype=torch.float16)
    assert torch.equal(unit(direction, 0), torch.tensor([0.6, 0.8]))
    with pytest.raises(ModelMismatchError, match="zero at layer 2"):
        unit(torch.zeros(3), 2)
