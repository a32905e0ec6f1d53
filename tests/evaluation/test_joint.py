"""Joint multi-layer evaluation: a whole vector (or groups of its layers) steered together as one cell.

References add every layer's vector at once with plain hooks (``run_with_hooks`` on a
HookedTransformer, ``register_forward_hook`` on a Hugging Face model) and read a plain forward pass.
"""

from __future__ import annotations

import pytest
import torch
from helpers import hf_logprobs, hooked_logprobs, llama_model, make_model, metaspace_tokenizer

from steerlens import SteeringVector, ab_behavior_probability, compare_logits, logit_diff, sweep_layers
from steerlens.backends import steering_hooks_on
from steerlens.errors import LayerError
from steerlens.evaluation.sweep import iter_steered_logits, resolve_layer_groups

PROMPTS = ["I love this film", "The food was delicious and the service was", "What a"]
MULTS = [-2.0, 0.0, 1.5]


@pytest.fixture(scope="module")
def model():
    return make_model(n_layers=4, seed=3)


def vector(layers=(1, 2, 3), seed: int = 0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: 2.0 * torch.randn(32, generator=g) for layer in layers})


def kl(after: torch.Tensor, before: torch.Tensor) -> float:
    return float((after.exp() * (after - before)).sum())


def test_layer_groups_are_resolved():
    assert resolve_layer_groups(None, [1, 3], 4) == [(1,), (3,)]
    assert resolve_layer_groups("joint", [1, 3], 4) == [(1, 3)]
    assert resolve_layer_groups([[1, 2], 3], [1, 2, 3], 4) == [(1, 2), (3,)]
    assert resolve_layer_groups([-1, 0], [0, 3], 4) == [(3,), (0,)]
    with pytest.raises(LayerError, match="'joint'"):
        resolve_layer_groups("all", [1], 4)
    with pytest.raises(LayerError, match="listed twice"):
        resolve_layer_groups([[1, 2], [2, 1]], [1, 2], 4)


@pytest.mark.parametrize("layers", ["joint", [[1, 2], [3]], [[3, 1], 2]])
def test_sweep_cells_steer_their_group_together(model, layers):
    vec = vector()
    frame = sweep_layers(model, vec, PROMPTS, layers=layers, multipliers=MULTS, per_prompt=True, batch_size=4)
    groups = resolve_layer_groups(layers, vec.layers, 4)
    labels = ["+".join(map(str, g)) for g in groups] if layers != [[3, 1], 2] else ["3+1", "2"]
    assert frame.layer.unique().tolist() == labels  # groups in the caller's order, labelled by their layers
    assert len(frame) == len(groups) * len(MULTS) * len(PROMPTS)
    for _, row in frame.iterrows():
        group = [int(x) for x in str(row.layer).split("+")]
        ids = model.to_tokens(row.prompt)[0].tolist()
        hooks = {layer: row.multiplier * vec.layer_activations[layer] for layer in group}
        expected = kl(hooked_logprobs(model, ids, hooks)[-1], hooked_logprobs(model, ids)[-1])
        assert row.kl == pytest.approx(expected, abs=1e-5)
    assert steering_hooks_on(model) == []


def test_trained_sweep_with_groups_trains_their_layers(model, pairs):
    frame = sweep_layers(model, pairs[:4], PROMPTS[:2], layers=[[1, 2]], multipliers=[1.0])
    assert frame.layer.tolist() == ["1+2"]
    joint = sweep_layers(model, pairs[:4], PROMPTS[:2], layers="joint", multipliers=[1.0])
    assert joint.layer.tolist() == ["0+1+2+3"]


def test_compare_logits_and_ab_items_with_the_joint_vector(model):
    vec = vector(seed=1)
    frame = compare_logits(model, vec, PROMPTS[:2], multipliers=[1.0], layers="joint", target_tokens=["!"])
    items = [("Do you like cats? (A) yes (B) no. Answer: (", "A")]
    ab = ab_behavior_probability(model, vec, items, multipliers=[2.0], layers="joint")
    full = {layer: vec.layer_activations[layer] for layer in vec.layers}
    for _, row in frame.iterrows():
        ids = model.to_tokens(row.prompt)[0].tolist()
        after, before = hooked_logprobs(model, ids, full)[-1], hooked_logprobs(model, ids)[-1]
        bang = model.tokenizer.convert_tokens_to_ids("!")
        assert row.layer == "1+2+3" and row.kl == pytest.approx(kl(after, before), abs=1e-5)
        assert row["delta_logprob[!]"] == pytest.approx(float(after[bang] - before[bang]), abs=1e-5)
        assert row.target_mass == pytest.approx(float(after[bang].exp()), abs=1e-6)
        assert row.target_mass_unsteered == pytest.approx(float(before[bang].exp()), abs=1e-6)
    ids = model.to_tokens(items[0][0])[0].tolist()
    lp = hooked_logprobs(model, ids, {layer: 2.0 * v for layer, v in full.items()})[-1]
    a, b = model.tokenizer.convert_tokens_to_ids(["A", "B"])
    assert ab.p_matching_steered[0] == pytest.approx(float(lp[a].exp() / (lp[a].exp() + lp[b].exp())), abs=1e-5)
    assert ab.kl[0] == pytest.approx(kl(lp, hooked_logprobs(model, ids)[-1]), abs=1e-5)


def test_groups_on_a_hugging_face_model_and_single_layers_unchanged():
    tok = metaspace_tokenizer("bos")
    hf = llama_model(tok, n_layers=3, seed=5)
    vec = vector(layers=(0, 1, 2), seed=2)
    prompts = ["Answer: (", "Do you like cats? I think"]
    frame = sweep_layers(
        hf,
        vec,
        prompts,
        layers=[[0, 2], 1],
        multipliers=[1.0],
        tokenizer=tok,
        per_prompt=True,
        metric=logit_diff(" Yes", " No"),
    )
    yes, no = tok.convert_tokens_to_ids(["\u2581Yes", "\u2581No"])
    for _, row in frame.iterrows():
        ids = [tok.bos_token_id] + tok(row.prompt, add_special_tokens=False)["input_ids"]
        group = [int(x) for x in str(row.layer).split("+")]
        lp = hf_logprobs(hf, ids, {layer: vec.layer_activations[layer] for layer in group})[-1]
        assert row.logit_diff == pytest.approx(float(lp[yes] - lp[no]), abs=1e-5)
    cells = list(iter_steered_logits(hf, vec, prompts, [[0, 2]], [0.0, 1.0], tokenizer=tok))
    assert [c.layers for c in cells] == [(0, 2), (0, 2)]
    torch.testing.assert_close(cells[0].steered, cells[0].unsteered)  # multiplier 0 is the clean pass
