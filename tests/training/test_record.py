"""record_activations: every forward pass's activations at a layer type, against hidden states and run_with_cache."""

from __future__ import annotations

import torch
from tiny_hf import INPUT_IDS, make_hf_model

from steerlens import SteeringVector, record_activations
from steerlens.backends import steering_hooks_on


def test_record_activations_equal_hidden_states_and_run_with_cache(model):
    hf = make_hf_model("gpt2")
    with record_activations(hf) as recorded:
        with torch.no_grad():
            hidden = hf(INPUT_IDS, output_hidden_states=True).hidden_states
            hf(INPUT_IDS[:1])
    assert sorted(recorded) == [0, 1] and len(recorded[0]) == 2
    torch.testing.assert_close(recorded[0][0], hidden[1], atol=0, rtol=0)
    assert recorded[1][1].shape == (1, INPUT_IDS.shape[1], 32)
    with record_activations(hf, layer_nums=[-1], clone_activations=False) as last_only:
        with torch.no_grad():
            hf(INPUT_IDS)
    assert list(last_only) == [1]
    tokens = model.to_tokens("I love it")
    with record_activations(model, "mlp", layer_nums=[0, 3]) as recorded_tl:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
    assert sorted(recorded_tl) == [0, 3]
    torch.testing.assert_close(recorded_tl[3][0], cache["blocks.3.hook_mlp_out"], atol=0, rtol=0)
    assert steering_hooks_on(model) == [] and not any(h.fwd_hooks for h in model.hook_dict.values())


def test_recording_under_steering_sees_the_steered_values():
    hf = make_hf_model("llama")
    vec = SteeringVector({0: torch.randn(32)})
    with torch.no_grad():
        clean = hf(INPUT_IDS, output_hidden_states=True).hidden_states[1]
    with record_activations(hf, "decoder_block", layer_nums=[0]) as recorded, vec.apply(hf, multiplier=2.0):
        with torch.no_grad():
            hf(INPUT_IDS)
    torch.testing.assert_close(recorded[0][0], clean + 2.0 * vec.layer_activations[0], atol=1e-5, rtol=0)
    assert steering_hooks_on(hf) == []
