"""Drop-in compatibility with steering-vectors 0.12.2, from that library's documented behaviour.

Signatures are compared with the ones its documentation and source show; every
behaviour is checked against an independent computation (plain torch hooks, the
model's own ``output_hidden_states``, TransformerLens' ``run_with_cache``).
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from tiny_hf import INPUT_IDS, make_hf_model, make_tokenizer

import steerlens
from steerlens import (
    SteeringPatchHandle,
    SteeringVector,
    SteeringVectorTrainingSample,
    mean_aggregator,
    record_activations,
    train_steering_vector,
)
from steerlens.backends import steering_hooks_on
from steerlens.errors import LayerError, TokenIndexError

EMPTY = inspect.Parameter.empty
# steering-vectors 0.12.2: (parameter, default) in order; `...` marks "an aggregator instance".
SIGNATURES = {
    "train_steering_vector": [
        ("model", EMPTY),
        ("tokenizer", EMPTY),
        ("training_samples", EMPTY),
        ("layers", None),
        ("layer_type", "decoder_block"),
        ("layer_config", None),
        ("move_to_cpu", False),
        ("read_token_index", -1),
        ("show_progress", False),
        ("aggregator", ...),
        ("batch_size", 1),
        ("tqdm_desc", "Training steering vector"),
    ],
    "extract_activations": [
        ("model", EMPTY),
        ("tokenizer", EMPTY),
        ("training_samples", EMPTY),
        ("layers", None),
        ("layer_type", "decoder_block"),
        ("layer_config", None),
        ("move_to_cpu", False),
        ("read_token_index", -1),
        ("show_progress", False),
        ("batch_size", 1),
        ("tqdm_desc", "Extracting activations"),
    ],
    "aggregate_activations": [("pos_acts_by_layer", EMPTY), ("neg_acts_by_layer", EMPTY), ("aggregator", ...)],
    "record_activations": [
        ("model", EMPTY),
        ("layer_type", "decoder_block"),
        ("layer_config", None),
        ("clone_activations", True),
        ("layer_nums", None),
    ],
    "get_num_matching_layers": [("model", EMPTY), ("layer_matcher", EMPTY)],
    "guess_and_enhance_layer_config": [("model", EMPTY), ("layer_config", None), ("layer_type", None)],
    "SteeringVector.apply": [
        ("self", EMPTY),
        ("model", EMPTY),
        ("layer_config", None),
        ("operator", None),
        ("multiplier", 1.0),
        ("min_token_index", 0),
        ("token_indices", None),
    ],
    "SteeringVector.patch_activations": [
        ("self", EMPTY),
        ("model", EMPTY),
        ("layer_config", None),
        ("operator", None),
        ("multiplier", 1.0),
        ("min_token_index", None),
        ("token_indices", None),
    ],
    "mean_aggregator": [],
    "pca_aggregator": [],
    "logistic_aggregator": [("sklearn_kwargs", None)],
}
SV_ALL = [
    "Aggregator",
    "mean_aggregator",
    "pca_aggregator",
    "logistic_aggregator",
    "LayerType",
    "LayerMatcher",
    "ModelLayerConfig",
    "get_num_matching_layers",
    "guess_and_enhance_layer_config",
    "PatchDeltaOperator",
    "record_activations",
    "SteeringVector",
    "SteeringPatchHandle",
    "train_steering_vector",
    "SteeringVectorTrainingSample",
    "aggregate_activations",
    "extract_activations",
]
PAIRS = [
    ("the cat sat on the mat", "the dog ran on the mat"),
    ("a big happy dog", "a small sad dog"),
    ("red and blue", "blue or red and the red cat"),
]


def _resolve(path: str):
    obj = steerlens
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("path", list(SIGNATURES))
def test_signature_starts_like_steering_vectors(path):
    params = list(inspect.signature(_resolve(path)).parameters.values())
    expected = SIGNATURES[path]
    assert [p.name for p in params[: len(expected)]] == [name for name, _ in expected]
    for param, (name, default) in zip(params, expected):
        if default is ...:
            assert type(param.default) is type(mean_aggregator()), name
        else:
            assert param.default == default and type(param.default) is type(default), name
    # steerlens' own extras come after: keyword-only with defaults (or **kwargs).
    for extra in params[len(expected) :]:
        assert extra.kind is inspect.Parameter.VAR_KEYWORD or (
            extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default is not EMPTY
        ), (path, extra.name)


def test_every_public_name_of_steering_vectors_is_importable():
    for name in SV_ALL:
        assert hasattr(steerlens, name) and name in steerlens.__all__, name
    fields = dataclasses.fields(SteeringVectorTrainingSample)
    assert [(f.name, f.default) for f in fields] == [
        ("positive_str", dataclasses.MISSING),
        ("negative_str", dataclasses.MISSING),
        ("read_positive_token_index", None),
        ("read_negative_token_index", None),
    ]
    sample = SteeringVectorTrainingSample("a", "b")
    sample.read_positive_token_index = -2  # mutable, as there
    assert SteeringVector({0: torch.ones(3)}).layer_type == "resid_post"  # default decoder_block, stored canonically
    assert [f.name for f in dataclasses.fields(SteeringVector)][:2] == ["layer_activations", "layer_type"]


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("decoder_block", "resid_post"),
        ("self_attn", "attn_out"),
        ("mlp", "mlp_out"),
        ("input_layernorm", "ln1"),
        ("post_attention_layernorm", "ln2"),
    ],
)
def test_layer_type_names_on_a_hooked_transformer(model, pairs, alias, canonical):
    vec = train_steering_vector(model, None, pairs, layers=[1, 2], layer_type=alias, batch_size=4)
    same = train_steering_vector(model, None, pairs, layers=[1, 2], layer_type=canonical, batch_size=4)
    assert vec.layer_type == canonical
    hook = {"ln1": "blocks.{L}.ln1.hook_normalized", "ln2": "blocks.{L}.ln2.hook_normalized"}.get(
        canonical, "blocks.{L}.hook_" + canonical
    )
    names = [hook.format(L=layer) for layer in (1, 2)]
    with torch.no_grad():
        reads = {
            text: model.run_with_cache(model.to_tokens(text), names_filter=names, stop_at_layer=3)[1]
            for pair in pairs
            for text in pair
        }
    for layer, name in zip((1, 2), names):
        torch.testing.assert_close(vec.layer_activations[layer], same.layer_activations[layer], atol=0, rtol=0)
        # Independently: run_with_cache at that hook point, last token, mean difference.
        diffs = [reads[pos][name][0, -1] - reads[neg][name][0, -1] for pos, neg in pairs]
        torch.testing.assert_close(vec.layer_activations[layer], torch.stack(diffs).mean(0), atol=1e-5, rtol=0)
    # Steering at that layer type equals a manual hook there.
    tokens = model.to_tokens("I love this film")
    with torch.no_grad(), vec.apply(model, multiplier=2.0):
        steered = model(tokens)
    manual = [
        (hook.format(L=layer), lambda act, hook, v=v: act + 2.0 * v) for layer, v in vec.layer_activations.items()
    ]
    with torch.no_grad():
        expected = model.run_with_hooks(tokens, fwd_hooks=manual)
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("alias", ["decoder_block", "self_attn", "mlp", "input_layernorm", "post_attention_layernorm"])
def test_layer_type_names_on_a_hugging_face_model(alias):
    model, tokenizer = make_hf_model("llama"), make_tokenizer()
    module = {
        "decoder_block": "",
        "self_attn": ".self_attn",
        "mlp": ".mlp",
        "input_layernorm": ".input_layernorm",
        "post_attention_layernorm": ".post_attention_layernorm",
    }[alias]
    vec = train_steering_vector(model, tokenizer, PAIRS, layer_type=alias, batch_size=2)
    # Independently: the module's output, read with plain torch hooks, one prompt at a time.
    for layer in (0, 1):
        target = model.get_submodule(f"model.layers.{layer}{module}")
        diffs = []
        for pos, neg in PAIRS:
            reads = []
            for text in (pos, neg):
                seen = []
                handle = target.register_forward_hook(
                    lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).clone())
                )
                with torch.no_grad():
                    model(torch.tensor([tokenizer(text)["input_ids"]]))
                handle.remove()
                reads.append(seen[0][0, -1])
            diffs.append(reads[0] - reads[1])
        torch.testing.assert_close(vec.layer_activations[layer], torch.stack(diffs).mean(0), atol=1e-5, rtol=1e-5)


def test_token_indices_tensor_is_a_mask(model):
    tokens = model.to_tokens("I love this film a lot")[:, :5]
    vec = SteeringVector({1: torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))})

    def resid(**kwargs):
        with torch.no_grad(), vec.apply(model, multiplier=3.0, **kwargs):
            _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
        return cache["blocks.1.hook_resid_post"][0]

    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    clean = clean["blocks.1.hook_resid_post"][0]
    for mask in (
        torch.tensor([0, 0, 1, 0, 1]),
        torch.tensor([False, False, True, False, True]),
        torch.tensor([[0, 0, 1, 0, 1]]),
    ):
        moved = (resid(token_indices=mask) - clean).abs().sum(-1) > 0
        assert moved.tolist() == [False, False, True, False, True]
    moved = (resid(token_indices=[0, 1]) - clean).abs().sum(-1) > 0  # a list means positions
    assert moved.tolist() == [True, True, False, False, False]
    with pytest.raises(TokenIndexError, match="mask"):
        vec.apply(model, token_indices=torch.tensor([0, 2])).__enter__()


def test_token_indices_mask_under_a_kv_cache_is_read_at_absolute_positions():
    model = make_hf_model("llama")
    vec = SteeringVector({0: torch.randn(32, generator=torch.Generator().manual_seed(3))})
    prompt = INPUT_IDS[:1, :5]
    kwargs = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    mask = torch.zeros(9, dtype=torch.long)
    mask[[1, 6]] = 1  # one prompt position and one generated position
    with vec.apply(model, multiplier=4.0, token_indices=mask):
        masked = model.generate(prompt, **kwargs)
    with vec.apply(model, multiplier=4.0, token_indices=[1, 6]):
        listed = model.generate(prompt, **kwargs)
    assert torch.equal(masked, listed) and steering_hooks_on(model) == []


@pytest.mark.parametrize("kind", ["hooked", "hf"])
def test_negative_layer_keys_count_from_the_end(model, kind):
    target = model if kind == "hooked" else make_hf_model("gpt2")
    n_layers, d_model = (4, model.cfg.d_model) if kind == "hooked" else (2, 32)
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(1))
    tokens = model.to_tokens("I love it") if kind == "hooked" else INPUT_IDS

    def run() -> torch.Tensor:
        with torch.no_grad():
            out = target(tokens)
        return out if kind == "hooked" else out.logits

    with SteeringVector({-1: v}).apply(target, multiplier=2.0):
        negative = run()
    with SteeringVector({n_layers - 1: v}).apply(target, multiplier=2.0):
        positive = run()
    assert torch.equal(negative, positive) and not torch.equal(negative, run())
    with pytest.raises(LayerError, match="twice"):
        SteeringVector({-1: v, n_layers - 1: v}).apply(target).__enter__()


def test_patch_activations_returns_a_removable_handle(model):
    vec = SteeringVector({2: torch.ones(model.cfg.d_model)})
    tokens = model.to_tokens("I love it")
    with torch.no_grad():
        clean = model(tokens)
    handle = vec.patch_activations(model, multiplier=1.5)
    assert isinstance(handle, SteeringPatchHandle)
    with torch.no_grad():
        assert not torch.equal(model(tokens), clean)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(tokens), clean)
    with vec.patch_activations(model):
        assert steering_hooks_on(model)
    assert steering_hooks_on(model) == []


def test_files_keep_negative_layers_and_store_the_canonical_layer_type(tmp_path):
    import json

    from safetensors import safe_open

    vec = SteeringVector({-1: torch.ones(4), 0: torch.full((4,), 2.0)}, "input_layernorm")
    vec.save(tmp_path / "v.safetensors")
    with safe_open(str(tmp_path / "v.safetensors"), "pt") as handle:  # read the header independently
        header = json.loads(handle.metadata()["steerlens"])
    assert header["layer_type"] == "ln1" and sorted(header["layers"]) == [-1, 0]
    back = SteeringVector.load(tmp_path / "v.safetensors")
    assert back.layer_type == "ln1" and torch.equal(back.layer_activations[-1], torch.ones(4))


# -- steering-vectors' SteeringPatchHandle.model_hooks (issue 28, item 15) ---------------------------


def test_patch_handle_model_hooks_on_a_hugging_face_model_and_the_steering_vectors_constructor():
    hf = make_hf_model("llama")
    vec = SteeringVector({0: torch.ones(32)})
    with torch.no_grad():
        clean = hf(INPUT_IDS).logits
    handle = vec.patch_activations(hf, multiplier=2.0)
    assert set(hf.model.layers[0]._forward_hooks) <= {h.id for h in handle.model_hooks}
    for hook in handle.model_hooks:
        hook.remove()
    assert steering_hooks_on(hf) == []
    with torch.no_grad():
        assert torch.equal(hf(INPUT_IDS).logits, clean)
    # steering-vectors builds one from its hooks: SteeringPatchHandle(model_hooks)
    hook = hf.model.layers[0].register_forward_hook(lambda m, a, out: (out[0] + 1.0, *out[1:]))
    by_hand = SteeringPatchHandle([hook])
    assert by_hand.model_hooks == [hook]
    by_hand.remove()
    with torch.no_grad():
        assert torch.equal(hf(INPUT_IDS).logits, clean)


# -- TransformerLens hook names wherever a layer is (issue 30, point 3) -----------------------------------

HOOK_NAMES = {
    "resid_pre": "blocks.{}.hook_resid_pre",
    "resid_mid": "blocks.{}.hook_resid_mid",
    "resid_post": "blocks.{}.hook_resid_post",
    "attn_out": "blocks.{}.hook_attn_out",
    "mlp_out": "blocks.{}.hook_mlp_out",
    "ln1": "blocks.{}.ln1.hook_normalized",
    "ln2": "blocks.{}.ln2.hook_normalized",
}


@pytest.mark.parametrize("layer_type", list(HOOK_NAMES))
def test_training_at_hook_names_equals_training_at_layers_and_run_with_cache(model, pairs, layer_type):
    name = HOOK_NAMES[layer_type]
    by_name = train_steering_vector(model, None, pairs, layers=[name.format(1), name.format(3)], layer_type=layer_type)
    by_index = train_steering_vector(model, None, pairs, layers=[1, 3], layer_type=layer_type)
    assert by_name.layers == [1, 3] and by_name.layer_type == layer_type
    for layer in (1, 3):
        assert torch.equal(by_name.layer_activations[layer], by_index.layer_activations[layer])
    # independently: the hook's own activation at each prompt's last token, from run_with_cache
    reads = {True: [], False: []}
    for pos, neg in pairs:
        for positive, text in ((True, pos), (False, neg)):
            _, cache = model.run_with_cache(model.to_tokens(text), names_filter=name.format(3))
            reads[positive].append(cache[name.format(3)][0, -1])
    expected = torch.stack(reads[True]).mean(0) - torch.stack(reads[False]).mean(0)
    torch.testing.assert_close(by_name.layer_activations[3], expected, atol=1e-5, rtol=1e-5)


def test_hook_names_in_record_activations_sweeps_and_logit_comparisons(model, pairs):
    from steerlens import compare_logits, sweep_layers

    vec = train_steering_vector(model, None, pairs, layers=[1, 2])
    prompts = ["I love it", "the food was"]
    names = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    by_name = sweep_layers(model, vec, prompts, layers=names, multipliers=[-2.0, 2.0])
    by_index = sweep_layers(model, vec, prompts, layers=[1, 2], multipliers=[-2.0, 2.0])
    assert by_name.equals(by_index) and sorted(by_name.layer.unique()) == [1, 2]
    joint = sweep_layers(model, vec, prompts, layers=[names], multipliers=[2.0])
    assert joint.layer.tolist() == ["1+2"]
    trained = sweep_layers(model, pairs, prompts, layers="blocks.2.hook_resid_post", multipliers=[2.0])
    assert trained.layer.tolist() == [2]
    df = compare_logits(model, vec, prompts, multipliers=[3.0], layers="blocks.2.hook_resid_post")
    expected = compare_logits(model, vec, prompts, multipliers=[3.0], layers=[2])
    assert df.layer.tolist() == [2, 2] and df.kl.tolist() == expected.kl.tolist()
    tokens = model.to_tokens("I love it")
    with record_activations(model, "resid_pre", layer_nums=["blocks.2.hook_resid_pre"]) as recorded:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
    assert list(recorded) == [2]
    torch.testing.assert_close(recorded[2][0], cache["blocks.2.hook_resid_pre"], atol=0, rtol=0)
    from steerlens import residual_norms

    norms = residual_norms(model, ["I love it"], layers="blocks.2.hook_mlp_out", layer_type="mlp_out")
    expected_norm = cache["blocks.2.hook_mlp_out"][0, 1:].norm(dim=-1).mean()  # BOS left out
    assert list(norms) == [2] and norms[2] == pytest.approx(float(expected_norm), rel=1e-5)
    with pytest.raises(LayerError, match="is a mlp_out hook, but layer_type is 'resid_post'"):
        residual_norms(model, ["I love it"], layers=["blocks.2.hook_mlp_out"])


def test_a_hook_name_of_another_layer_type_is_an_error_naming_both(model, pairs):
    vec = train_steering_vector(model, None, pairs, layers=[2])
    with pytest.raises(LayerError, match="'blocks.2.hook_resid_pre' is a resid_pre hook, but layer_type is") as info:
        train_steering_vector(model, None, pairs, layers=["blocks.2.hook_resid_pre"])
    assert "'decoder_block' (resid_post)" in str(info.value)
    from steerlens import compare_logits, sweep_layers

    for call in (
        lambda: compare_logits(model, vec, ["I love it"], layers=["blocks.2.hook_mlp_out"]),
        lambda: sweep_layers(model, vec, ["I love it"], layers="blocks.2.hook_mlp_out"),
        lambda: vec.select_layers("blocks.2.hook_mlp_out"),
    ):
        with pytest.raises(LayerError, match="is a mlp_out hook, but the vector's layer_type is 'resid_post'"):
            call()
    with pytest.raises(LayerError, match="is a ln1 hook, but layer_type is 'mlp'"):
        with record_activations(model, "mlp", layer_nums=["blocks.1.ln1.hook_normalized"]):
            pass
    with pytest.raises(LayerError, match="not a whole number or a TransformerLens hook name"):
        train_steering_vector(model, None, pairs, layers=["blocks.2.attn.hook_z"])
