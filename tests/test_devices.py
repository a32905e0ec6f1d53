"""Models spread over devices train, sweep and steer as they are.

This machine has one device, the CPU, so the tests use what it has:
TransformerLens' multi-device code path (``cfg.n_devices = 2``, every block placed
on the CPU, as TransformerLens does for a CPU model) and accelerate's big-model
hooks (a ``device_map`` that offloads layers to disk and CPU RAM: their weights sit
on the meta device until their forward pass), which is what ``device_map="auto"``
installs on a model larger than its GPUs. Each result is compared with the same
weights on one device.
"""

from __future__ import annotations

import pytest
import torch
from helpers import PAIRS, make_model
from tiny_hf import INPUT_IDS, make_tokenizer, save_checkpoint

import steerlens
from steerlens.backends import backend_for
from steerlens.tokens import prepare_prompts

HF_PAIRS = [
    ("the cat sat on the mat", "the dog ran"),
    ("a big red dog", "a small sad cat sat"),
    ("happy", "sad and slow"),
    ("the blue mat", "the red mat"),
]


@pytest.fixture(scope="module")
def hooked_pair():
    """The same weights twice: on one device, and on TransformerLens' multi-device path."""
    one, spread = make_model(n_layers=4, seed=3), make_model(n_layers=4, seed=3)
    # TransformerLens' config refuses n_devices > 1 without that many GPUs; set after
    # construction, every block maps to the CPU (get_device_for_block_index).
    spread.cfg.n_devices = 2
    return one, spread


def test_hooked_multi_device_trains_like_one_device(hooked_pair):
    one, spread = hooked_pair
    a = steerlens.train_steering_vector(one, None, PAIRS, layers=[0, 3], batch_size=4)
    b = steerlens.train_steering_vector(spread, None, PAIRS, layers=[0, 3], batch_size=4)
    for layer in (0, 3):
        torch.testing.assert_close(b.layer_activations[layer], a.layer_activations[layer], atol=1e-6, rtol=0)


def block_device_lookups(monkeypatch) -> list[int]:
    """Count TransformerLens' per-block device lookups (its multi-device path moves the residual each block)."""
    import sys

    ht = sys.modules["transformer_lens.HookedTransformer"]  # the module (the package attribute is the class)
    calls: list[int] = []
    original = ht.get_device_for_block_index

    def spy(index, cfg, device=None):
        calls.append(index)
        return original(index, cfg, device)

    monkeypatch.setattr(ht, "get_device_for_block_index", spy)
    return calls


def test_hooked_multi_device_sweeps_and_steers_like_one_device(hooked_pair, monkeypatch):
    one, spread = hooked_pair
    prompts = ["I love this film", "The food was"]
    calls = block_device_lookups(monkeypatch)
    backend = backend_for(spread)
    batch = next(prepare_prompts(backend, prompts).batches(2))
    # The multi-device model takes the sweep's general path (no resuming from a cached layer), and every
    # block of its forward really goes through TransformerLens' device placement.
    assert (
        not backend.sweep_pass(batch, [1], "resid_post").fast
        and backend_for(one).sweep_pass(batch, [1], "resid_post").fast
    )
    assert set(range(1, spread.cfg.n_layers)) <= set(calls)
    # The multi-device model takes the sweep's general path (no resuming from a cached layer).
    frames = [
        steerlens.sweep_layers(m, PAIRS, prompts, layers=[1, 2], multipliers=[-2.0, 3.0], batch_size=4, per_prompt=True)
        for m in (one, spread)
    ]
    assert frames[1].drop(columns="kl").equals(frames[0].drop(columns="kl"))
    assert frames[0].kl.min() > 1e-4  # the steering really moves the output
    assert frames[1].kl.tolist() == pytest.approx(frames[0].kl.tolist(), abs=1e-6)
    vec = steerlens.train_steering_vector(one, None, PAIRS, layers=[2], batch_size=4)
    tokens = one.to_tokens(prompts[0])
    with torch.no_grad():
        manual = one.run_with_hooks(
            tokens, fwd_hooks=[("blocks.2.hook_resid_post", lambda act, hook: act + 3.0 * vec.layer_activations[2])]
        )
        with vec.apply(spread, multiplier=3.0):
            steered = spread(tokens)
    torch.testing.assert_close(steered, manual, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory):
    """A tiny Llama, and the same checkpoint loaded with layer 1 on disk and the rest in CPU RAM via accelerate."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("llama")
    plain = save_checkpoint("llama", folder)
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    spread = AutoModelForCausalLM.from_pretrained(
        folder, device_map=device_map, offload_folder=str(tmp_path_factory.mktemp("offload"))
    ).eval()
    return plain, spread


def test_offloaded_layers_really_are_offloaded(offloaded):
    _, spread = offloaded
    assert spread.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
    assert hasattr(spread.model.layers[1], "_hf_hook")


def test_hf_device_map_trains_like_one_device(offloaded):
    plain, spread = offloaded
    tok = make_tokenizer()
    a = steerlens.train_steering_vector(plain, tok, HF_PAIRS, layers=[0, 1], batch_size=2)
    b = steerlens.train_steering_vector(spread, tok, HF_PAIRS, layers=[0, 1], batch_size=2)
    for layer in (0, 1):
        torch.testing.assert_close(b.layer_activations[layer], a.layer_activations[layer], atol=1e-6, rtol=1e-6)


def test_hf_device_map_steers_like_a_manual_hook(offloaded):
    plain, spread = offloaded
    vec = steerlens.SteeringVector({0: torch.randn(32), 1: torch.randn(32)})

    def add(layer: int):
        return lambda _module, _args, out: (
            (out[0] + 2.0 * vec.layer_activations[layer], *out[1:])
            if isinstance(out, tuple)
            else out + 2.0 * vec.layer_activations[layer]
        )

    handles = [plain.model.layers[i].register_forward_hook(add(i)) for i in (0, 1)]
    try:
        with torch.no_grad():
            manual = plain(INPUT_IDS).logits
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad(), vec.apply(spread, multiplier=2.0):
        steered = spread(INPUT_IDS).logits
    torch.testing.assert_close(steered, manual, atol=1e-5, rtol=0)
    with torch.no_grad():  # and nothing is left behind
        torch.testing.assert_close(spread(INPUT_IDS).logits, plain(INPUT_IDS).logits, atol=1e-5, rtol=0)


def test_offloaded_hf_model_converts_with_all_its_weights(offloaded):
    """load_model of an accelerate-offloaded model reads the weights from the offload hooks (none on meta)."""
    plain, spread = offloaded
    tl = steerlens.load_model(spread, tokenizer=make_tokenizer())
    assert not any(p.is_meta for p in tl.parameters())
    with torch.no_grad():
        torch.testing.assert_close(tl(INPUT_IDS), plain(INPUT_IDS).logits, atol=1e-4, rtol=0)
    # The offloaded model is left as it was: layer 1 back on meta, and it still runs.
    assert spread.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
    with torch.no_grad():
        torch.testing.assert_close(spread(INPUT_IDS).logits, plain(INPUT_IDS).logits, atol=1e-5, rtol=0)


def test_weights_without_numbers_get_a_clear_error():
    from accelerate import init_empty_weights
    from tiny_hf import CONFIGS
    from transformers import AutoModelForCausalLM

    from steerlens.errors import ModelLoadError

    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(CONFIGS["llama"]())
    with pytest.raises(ModelLoadError, match="without device_map"):
        steerlens.load_model(empty, tokenizer=make_tokenizer())
