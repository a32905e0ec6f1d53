"""steering-vectors' layout (``layer_activations`` + ``layer_type``) to and from a steerlens vector."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import random_vector

from steerlens.errors import InvalidArgumentError
from steerlens.interop import from_steering_vectors, to_steering_vectors

META = {"model_name": "tiny-llama"}


@pytest.mark.parametrize(
    "ours, theirs", [("resid_post", "decoder_block"), ("attn_out", "self_attn"), ("mlp_out", "mlp")]
)
def test_steering_vectors_layout_round_trip(ours, theirs):
    vec = random_vector(16, (1, 3), ours, scale=1.0, metadata=META)
    fields = to_steering_vectors(vec)
    assert fields["layer_type"] == theirs and sorted(fields["layer_activations"]) == [1, 3]
    # Their SteeringVector is a dataclass with these two fields; any object with them converts back.
    back = from_steering_vectors(SimpleNamespace(**fields))
    assert back.layer_type == ours
    for layer in (1, 3):
        assert torch.equal(back.layer_activations[layer], vec.layer_activations[layer])
    fields["layer_activations"][1].add_(1.0)  # a copy: the original is untouched
    assert not torch.equal(fields["layer_activations"][1], vec.layer_activations[1])


def test_steering_vectors_layout_errors():
    with pytest.raises(InvalidArgumentError, match="no layer type"):
        to_steering_vectors(random_vector(16, (1, 3), "resid_pre", scale=1.0, metadata=META))
    with pytest.raises(InvalidArgumentError, match="embed_tokens"):
        from_steering_vectors({"layer_activations": {0: torch.zeros(4)}, "layer_type": "embed_tokens"})
    normed = from_steering_vectors({"layer_activations": {0: torch.ones(4)}, "layer_type": "input_layernorm"})
    assert normed.layer_type == "ln1" and to_steering_vectors(normed)["layer_type"] == "input_layernorm"
    with pytest.raises(InvalidArgumentError, match="layer_activations"):
        from_steering_vectors(42)


def test_module_layer_types_cross_to_steering_vectors_with_their_meaning():
    """Gemma 2's ``post_attention_layernorm`` is that module on both sides, not steerlens' ``ln2``."""
    from tiny_hf import make_hf_model

    model = make_hf_model("gemma2")
    theirs = {"layer_activations": {0: torch.randn(32), 1: torch.randn(32)}, "layer_type": "post_attention_layernorm"}
    vec = from_steering_vectors(theirs, model=model)
    assert vec.layer_type == "module:post_attention_layernorm"
    assert from_steering_vectors(theirs).layer_type == "ln2"  # without the model: the canonical name
    back = to_steering_vectors(vec)
    assert back["layer_type"] == "post_attention_layernorm"
    # Steering with the imported vector adds it to that module's output, as steering-vectors does.
    ids = torch.tensor([[1, 5, 9, 12]])
    handle = model.model.layers[1].post_attention_layernorm.register_forward_hook(
        lambda m, a, out: out + theirs["layer_activations"][1]
    )
    with torch.no_grad():
        expected = model(ids).logits
    handle.remove()
    with torch.no_grad(), vec.select_layers(1).apply(model):
        got = model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
