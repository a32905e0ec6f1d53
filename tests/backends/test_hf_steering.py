"""Steering plain Hugging Face models: same numbers as on their HookedTransformer, same positions."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from helpers import random_vector
from tiny_hf import INPUT_IDS, ORIGINAL_ARCHITECTURES, make_hf_model, make_tokenizer, save_checkpoint

from steerlens import SteeringVector, train_steering_vector
from steerlens.adapter import convert_hf_model
from steerlens.backends import steering_hooks_on
from steerlens.errors import ModelMismatchError

LAYER_TYPES = ["resid_post", "resid_pre", "attn_out", "mlp_out"]


@pytest.fixture(scope="module")
def models() -> dict:
    """name -> (HF model, its HookedTransformer)."""
    out = {}
    for name in ORIGINAL_ARCHITECTURES:
        hf = make_hf_model(name)
        out[name] = (hf, convert_hf_model(hf, make_tokenizer()))
    return out


@pytest.mark.parametrize("layer_type", LAYER_TYPES)
@pytest.mark.parametrize("name", list(ORIGINAL_ARCHITECTURES))
def test_steered_logits_equal_hooked_transformer(models, name, layer_type):
    hf, tl = models[name]
    vec = random_vector(32, (0, 1), layer_type, scale=1.0)
    with torch.no_grad():
        pristine = hf(INPUT_IDS).logits
        with vec.apply(hf, multiplier=3.0, min_token_index=3):
            steered = hf(INPUT_IDS).logits
        with vec.apply(tl, multiplier=3.0, min_token_index=3):
            expected = tl(INPUT_IDS)
        after = hf(INPUT_IDS).logits
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=0)
    assert (steered - pristine).abs().max() > 0.1  # the steering did something
    torch.testing.assert_close(steered[:, :3], pristine[:, :3], atol=1e-5, rtol=0)  # before min_token_index
    assert torch.equal(after, pristine) and steering_hooks_on(hf) == []


@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma2"])
def test_generation_with_cache_steers_absolute_positions(models, name):
    hf, _ = models[name]
    vec = random_vector(32, (0, 1), "resid_post", seed=1, scale=1.0)
    prompt = INPUT_IDS[:1, :6]
    n_prompt, new = prompt.shape[1], 6
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    plain = hf.generate(prompt, **kwargs)

    # Independent reference: greedy decoding without a cache, one full forward per step.
    def greedy_without_cache(min_token_index: int) -> torch.Tensor:
        seq = prompt
        with vec.apply(hf, multiplier=8.0, min_token_index=min_token_index), torch.no_grad():
            for _ in range(new):
                nxt = hf(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], 1)
        return seq

    for min_index in (0, n_prompt):
        with vec.apply(hf, multiplier=8.0, min_token_index=min_index):
            cached = hf.generate(prompt, **kwargs)
        assert torch.equal(cached, greedy_without_cache(min_index))
    # Steering only generated tokens: the first new token comes from the unsteered prompt.
    with vec.apply(hf, multiplier=8.0, min_token_index=n_prompt):
        late = hf.generate(prompt, **kwargs)
    assert late[0, n_prompt] == plain[0, n_prompt]
    assert not torch.equal(late, plain)
    assert steering_hooks_on(hf) == []


def test_hooks_removed_after_exception_and_patch(models):
    hf, _ = models["llama"]
    vec = random_vector(32, (0, 1), "resid_post", scale=1.0)
    with torch.no_grad():
        pristine = hf(INPUT_IDS).logits
        with pytest.raises(RuntimeError, match="boom"):
            with vec.apply(hf, multiplier=2.0):
                assert steering_hooks_on(hf)
                raise RuntimeError("boom")
        assert steering_hooks_on(hf) == [] and torch.equal(hf(INPUT_IDS).logits, pristine)
        handle = vec.patch(hf, multiplier=2.0)
        patched = hf(INPUT_IDS).logits
        handle.remove()
        handle.remove()  # idempotent
        assert not torch.equal(patched, pristine)
        assert steering_hooks_on(hf) == [] and torch.equal(hf(INPUT_IDS).logits, pristine)


def test_users_own_torch_hooks_survive(models):
    hf, _ = models["gpt2"]
    seen = []
    handle = hf.transformer.h[0].register_forward_hook(lambda *a: seen.append(1))
    try:
        with random_vector(32, (0, 1), "resid_post", scale=1.0).apply(hf):
            hf(INPUT_IDS)
        hf(INPUT_IDS)
        assert len(seen) == 2
    finally:
        handle.remove()


def test_mismatched_vector_and_unsteerable_site(models):
    hf, _ = models["gpt2"]
    with pytest.raises(ModelMismatchError, match="d_model 16"):
        with SteeringVector({0: torch.randn(16)}).apply(hf):
            pass
    with pytest.raises(ModelMismatchError, match="only 2 layers"):
        with SteeringVector({5: torch.randn(32)}).apply(hf):
            pass
    with pytest.raises(ModelMismatchError, match="cannot be steered there"):
        with SteeringVector({0: torch.randn(32)}, "resid_mid").apply(hf):
            pass
    assert steering_hooks_on(hf) == []


def test_steering_vectors_readme_flow_runs_unchanged(tmp_path, monkeypatch):
    """The steering-vectors README, with a local folder for the model name."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_checkpoint("llama", tmp_path)

    model = tf.AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = tf.AutoTokenizer.from_pretrained(tmp_path)
    training_samples = [
        ("the cat sat on the mat", "the dog ran on the mat"),
        ("a big happy dog", "a small sad dog"),
        ("red and blue", "blue or red"),
    ]
    steering_vector = train_steering_vector(model, tokenizer, training_samples, show_progress=True)
    inputs = tokenizer("the cat sat", return_tensors="pt")
    with steering_vector.apply(model):
        steered = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, inputs.input_ids.shape[1] + 3)
    assert not torch.equal(steered, model(**inputs).logits)

    # Independently: the mean over pairs of decoder-layer output differences at the last
    # token. hidden_states[L + 1] is that output except for the last layer, where HF
    # applies the final norm first, so a plain torch hook reads the layer outputs.
    outputs: dict[int, torch.Tensor] = {}
    handles = [
        layer.register_forward_hook(
            lambda m, a, out, i=i: outputs.__setitem__(i, out[0] if isinstance(out, tuple) else out)
        )
        for i, layer in enumerate(model.model.layers)
    ]
    try:

        def last_token(text: str) -> dict[int, torch.Tensor]:
            with torch.no_grad():
                hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
            assert torch.equal(hidden[1], outputs[0])
            return {i: out[0, -1] for i, out in outputs.items()}

        acts = [(last_token(p), last_token(n)) for p, n in training_samples]
    finally:
        for handle in handles:
            handle.remove()
    for layer in steering_vector.layers:
        expected = torch.stack([pos[layer] - neg[layer] for pos, neg in acts]).mean(0)
        torch.testing.assert_close(steering_vector.layer_activations[layer].float(), expected, atol=1e-4, rtol=1e-4)
    assert steering_vector.layers == list(range(model.config.num_hidden_layers))


def test_transformer_bridge_is_accepted(tmp_path, monkeypatch, models):
    """A TransformerBridge trains through its HF model (with its own tokenizer) and steers like it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformer_lens.model_bridge import TransformerBridge

    hf, tl = models["llama"]
    hf.save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    bridge = TransformerBridge.boot_transformers(
        str(tmp_path), hf_model=hf, tokenizer=tf.AutoTokenizer.from_pretrained(tmp_path), device="cpu"
    )
    pairs = [("the cat sat", "the dog ran"), ("a big dog", "a small dog")]
    vec = train_steering_vector(bridge, None, pairs, layers=[0, 1])
    expected = train_steering_vector(hf, bridge.tokenizer, pairs, layers=[0, 1])
    for layer in (0, 1):
        torch.testing.assert_close(vec.layer_activations[layer], expected.layer_activations[layer])
    with torch.no_grad():
        pristine = bridge(INPUT_IDS)
        with vec.apply(bridge, multiplier=3.0, min_token_index=2):
            assert steering_hooks_on(bridge)
            steered = bridge(INPUT_IDS)
        with vec.apply(tl, multiplier=3.0, min_token_index=2):
            reference = tl(INPUT_IDS)
    torch.testing.assert_close(steered, reference, atol=1e-4, rtol=0)
    assert steering_hooks_on(bridge) == [] and torch.equal(bridge(INPUT_IDS), pristine)
