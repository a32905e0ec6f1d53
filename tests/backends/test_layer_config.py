"""steering-vectors-style layer configs on a Hugging Face model: guessed templates, matchers, and layer_config
checked where it is passed; against the modules' own names and plain torch hooks."""

from __future__ import annotations

import pytest
import torch
from tiny_hf import INPUT_IDS, make_hf_model, make_tokenizer

from steerlens import (
    SteeringVector,
    get_num_matching_layers,
    guess_and_enhance_layer_config,
    record_activations,
    train_steering_vector,
)
from steerlens.backends import steering_hooks_on
from steerlens.backends.layer_config import (
    check_layer_config,
    configured_matcher,
    fitting_child,
    matcher_path,
    matching_layer_names,
)
from steerlens.errors import InvalidArgumentError, LayerError, UnsupportedModelError

PAIRS = [
    ("the cat sat on the mat", "the dog ran on the mat"),
    ("a big happy dog", "a small sad dog"),
    ("red and blue", "blue or red and the red cat"),
]


def test_guessed_layer_configs_match_the_module_names():
    expected = {
        "gpt2": (
            "transformer.h.{num}",
            "transformer.h.{num}.attn",
            "transformer.h.{num}.mlp",
            "transformer.h.{num}.ln_1",
            "transformer.h.{num}.ln_2",
        ),
        "llama": (
            "model.layers.{num}",
            "model.layers.{num}.self_attn",
            "model.layers.{num}.mlp",
            "model.layers.{num}.input_layernorm",
            "model.layers.{num}.post_attention_layernorm",
        ),
        "neox": (
            "gpt_neox.layers.{num}",
            "gpt_neox.layers.{num}.attention",
            "gpt_neox.layers.{num}.mlp",
            "gpt_neox.layers.{num}.input_layernorm",
            "gpt_neox.layers.{num}.post_attention_layernorm",
        ),
    }
    kinds = ("decoder_block", "self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
    for name, templates in expected.items():
        model = make_hf_model(name)
        assert guess_and_enhance_layer_config(model) == dict(zip(kinds, templates)), name
        assert get_num_matching_layers(model, templates[0]) == 2
        assert get_num_matching_layers(model, lambda m, n: f"{templates[0].format(num=n)}") == 2
        # Only the asked layer type is guessed; given entries are kept.
        assert guess_and_enhance_layer_config(model, {"mlp": "x.{num}"}, "self_attn") == {
            "mlp": "x.{num}",
            "self_attn": templates[1],
        }


def test_layer_config_points_at_modules_steerlens_would_not_choose():
    model, tokenizer = make_hf_model("llama"), make_tokenizer()
    config = {"decoder_block": lambda m, num: f"model.layers.{num}.mlp"}
    vec = train_steering_vector(model, tokenizer, PAIRS, layer_config=config, batch_size=3)
    with record_activations(model, "decoder_block", layer_config=config) as recorded:
        for pos, neg in PAIRS:
            for text in (pos, neg):
                with torch.no_grad():
                    model(torch.tensor([tokenizer(text)["input_ids"]]))
    for layer in (0, 1):
        reads = [r[0, -1] for r in recorded[layer]]
        expected = torch.stack(reads[0::2]).mean(0) - torch.stack(reads[1::2]).mean(0)
        torch.testing.assert_close(vec.layer_activations[layer], expected, atol=1e-5, rtol=1e-5)
    # Steering through the same config adds at the MLP output: equal to a plain hook there.
    with torch.no_grad(), vec.apply(model, layer_config=config, multiplier=2.0):
        steered = model(INPUT_IDS).logits
    handles = [
        model.model.layers[i].mlp.register_forward_hook(lambda m, a, out, i=i: out + 2.0 * vec.layer_activations[i])
        for i in (0, 1)
    ]
    with torch.no_grad():
        expected_logits = model(INPUT_IDS).logits
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(steered, expected_logits, atol=1e-5, rtol=0)


def test_layer_config_serves_a_model_whose_layers_cannot_be_found():
    reference_model, tokenizer = make_hf_model("llama"), make_tokenizer()
    reference = train_steering_vector(reference_model, tokenizer, PAIRS)
    model = make_hf_model("llama")
    model.model.layers = torch.nn.Sequential(*model.model.layers)  # runs the same, but is no ModuleList
    with pytest.raises(UnsupportedModelError, match="decoder layers"):
        train_steering_vector(model, tokenizer, PAIRS)
    config = {"decoder_block": "model.layers.{num}"}
    vec = train_steering_vector(model, tokenizer, PAIRS, layer_config=config)
    for layer in (0, 1):
        torch.testing.assert_close(vec.layer_activations[layer], reference.layer_activations[layer], atol=1e-6, rtol=0)


def test_layer_config_is_refused_on_a_hooked_transformer(model, pairs):
    with pytest.raises(InvalidArgumentError, match="layer_config"):
        train_steering_vector(model, None, pairs, layer_config={"decoder_block": "blocks.{num}"})


@pytest.mark.parametrize("kind", ["hooked", "hf"])
def test_a_multiplier_in_layer_configs_position_says_it_was_taken_as_layer_config(model, kind):
    target = model if kind == "hooked" else make_hf_model("llama")
    vec = SteeringVector({1: torch.ones(32)})
    for call in (lambda: vec.apply(target, 2.0).__enter__(), lambda: vec.patch_activations(target, 2.0)):
        with pytest.raises(InvalidArgumentError, match=r"2\.0 was taken as layer_config") as info:
            call()
        assert "multiplier=2.0" in str(info.value)
    assert steering_hooks_on(target) == []
    with pytest.raises(InvalidArgumentError, match="layer_config must be a dict"):
        vec.apply(target, "model.layers.{num}").__enter__()


def test_matchers_count_layers_until_the_first_gap_and_name_existing_modules():
    model = make_hf_model("llama")
    assert matching_layer_names(model, "model.layers.{num}.mlp") == ["model.layers.0.mlp", "model.layers.1.mlp"]
    # A function naming layer 0 only: counting stops at the first layer it names that the model lacks.
    assert get_num_matching_layers(model, lambda m, n: "model.layers.0" if n == 0 else "nowhere") == 1
    assert get_num_matching_layers(model, "model.decoder.{num}") == 0
    assert matcher_path(model, "model.layers.{num}.self_attn", 1) == "model.layers.1.self_attn"
    assert model.get_submodule(matcher_path(model, lambda m, n: f"model.layers.{n}", 0)) is model.model.layers[0]
    with pytest.raises(LayerError, match="has no such module"):
        matcher_path(model, "model.layers.{num}.ffn", 0)
    with pytest.raises(LayerError, match="has no '\\{num\\}'"):
        matching_layer_names(model, "model.layers.0")
    with pytest.raises(LayerError, match="template string or a function"):
        matching_layer_names(model, 3)


def test_a_config_entry_is_found_under_either_name_of_its_layer_type():
    config = {"decoder_block": "a.{num}", "ln2": "b.{num}"}
    assert configured_matcher(config, "resid_post") == "a.{num}"
    assert configured_matcher(config, "decoder_block") == "a.{num}"
    assert configured_matcher(config, "post_attention_layernorm") == "b.{num}"
    assert configured_matcher(config, "module:post_attention_layernorm") == "b.{num}"
    assert configured_matcher(config, "mlp") is None
    assert configured_matcher(None, "mlp") is None


def test_the_fitting_child_follows_steering_vectors_rule():
    assert fitting_child(["input_layernorm", "self_attention", "post_attention_layernorm", "mlp"], "self_attn") == (
        "self_attention"  # Bloom: the norm after attention is not the attention
    )
    assert fitting_child(["ln_1", "attn", "ln_2", "mlp"], "input_layernorm") == "ln_1"
    assert fitting_child(["attn", "cross_attn"], "self_attn") is None  # two fit: no guess
    assert fitting_child(["fc", "proj"], "mlp") is None
    assert fitting_child(["mlp"], "resid_pre") is None


def test_check_layer_config_takes_a_mapping_or_none():
    check_layer_config(None)
    check_layer_config({"decoder_block": "model.layers.{num}"})
    with pytest.raises(InvalidArgumentError, match="2 was taken as layer_config"):
        check_layer_config(2)
    with pytest.raises(InvalidArgumentError, match="must be a dict"):
        check_layer_config(["model.layers.{num}"])
