"""The native Hugging Face backend: train and steer any decoder-only model with torch hooks.

Every check compares with an independent computation on the model itself: its own
``output_hidden_states``, or plain ``register_forward_hook`` hooks written here.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from tiny_hf import CONFIGS, INPUT_IDS, NEW_ARCHITECTURES, ORIGINAL_ARCHITECTURES, make_hf_model, make_tokenizer

from steerlens import SteeringVector, record_activations, train_steering_vector
from steerlens.backends import backend_for, steering_hooks_on
from steerlens.backends.hf import HFBackend
from steerlens.backends.hf_layout import hf_layout
from steerlens.errors import LayerError, ModelMismatchError, TokenizerError
from steerlens.hooks import make_spec
from steerlens.layers import hook_name
from steerlens.tokens import PromptBatch, iter_batches

PAIRS = [
    ("the cat sat on the mat", "the dog ran on the mat"),
    ("a big happy dog", "a small sad dog"),
    ("red and blue", "blue or red and the red cat"),
    ("the cat ran fast", "the cat sat"),
]


@pytest.fixture(scope="module")
def tokenizer() -> tf.PreTrainedTokenizerFast:
    return make_tokenizer()


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.get_submodule(hf_layout(model).layers_path)


def first(out):
    """A module's output tensor (the first element when it returns a tuple or, like OpenAI GPT's blocks, a list)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def plus(out, delta: torch.Tensor):
    """``out`` with ``delta`` added to its output tensor, in the container it came in."""
    if isinstance(out, (tuple, list)):
        return type(out)([out[0] + delta, *out[1:]])
    return out + delta


def layer_outputs(model: torch.nn.Module, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Each decoder layer's output for ``ids``, read with plain torch hooks."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(i: int):
        return lambda m, a, out: outputs.__setitem__(i, first(out).clone())

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(decoder_layers(model))]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def manual_steering(model: torch.nn.Module, vectors: dict[int, torch.Tensor]) -> list:
    """Plain forward hooks adding ``vectors[L]`` to decoder layer L's output at every position."""

    def add(vec: torch.Tensor):
        def hook(module, args, out):
            return plus(out, vec)

        return hook

    layers = decoder_layers(model)
    return [layers[i].register_forward_hook(add(vec)) for i, vec in vectors.items()]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_vector_is_the_mean_difference_of_the_models_own_hidden_states(name, tokenizer):
    model = make_hf_model(name)
    vec = train_steering_vector(model, tokenizer, PAIRS, batch_size=2)
    n_layers = model.config.num_hidden_layers
    assert vec.layers == list(range(n_layers))
    diffs: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(n_layers)}
    reads_all: list[dict[int, torch.Tensor]] = []
    for pos, neg in PAIRS:
        reads = []
        for text in (pos, neg):
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            with torch.no_grad():
                hidden = model(ids, output_hidden_states=True).hidden_states
            # hidden_states[L + 1] is layer L's output, except the last (the final norm is applied there).
            outputs = {layer: hidden[layer + 1][0, -1] for layer in range(n_layers - 1)}
            outputs[n_layers - 1] = layer_outputs(model, ids)[n_layers - 1][0, -1]
            reads.append(outputs)
        reads_all.extend(reads)
        for layer in range(n_layers):
            diffs[layer].append(reads[0][layer] - reads[1][layer])
    for layer in range(n_layers):
        expected = torch.stack(diffs[layer]).double().mean(0)
        error = float((vec.layer_activations[layer].double() - expected).abs().max())
        # float32 kernels round differently for a batch of 4 rows than for 1 row (a few ulps
        # of the activations), so the bound is 1e-6 of the activations' own scale.
        scale = max(float(read[layer].abs().max()) for read in reads_all)
        assert error <= 1e-6 * scale, (layer, error, scale)


def test_the_deepest_mlp_runs_only_at_the_read_token(tokenizer):
    """Training reads one token per row, so the deepest layer's MLP runs at that token only."""
    model = make_hf_model("llama")
    seen: dict[int, list[tuple[int, ...]]] = {0: [], 1: []}
    # What the MLP's own projection receives (hooks on the MLP itself may run before steerlens').
    handles = [
        model.model.layers[i].mlp.down_proj.register_forward_pre_hook(
            lambda m, a, i=i: seen[i].append(tuple(a[0].shape[:2]))
        )
        for i in (0, 1)
    ]
    try:
        train_steering_vector(model, tokenizer, PAIRS, layers=[0, 1], batch_size=len(PAIRS))
        assert seen[0][0][1] > 1 and seen[1] == [(2 * len(PAIRS), 1)]
        # Other sites at the deepest layer need every position: the MLP runs on all of them.
        seen[1].clear()
        train_steering_vector(model, tokenizer, PAIRS, layers=[1], layer_type="mlp_out", batch_size=len(PAIRS))
        assert seen[1] == [seen[0][0]]
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma2", "cohere", "opt", "granite"])
def test_last_token_logits_run_the_head_on_the_last_tokens_only(name, padding_side, tokenizer):
    """Equal to the full forward's logits at each row's last real token (soft-caps and scales included)."""
    from steerlens.tokens import iter_batches

    model = make_hf_model(name)
    backend = HFBackend(model, tokenizer)
    prompts = ["the cat sat on the mat", "a dog", "red and blue or red and big"]
    (batch,) = iter_batches([backend.encode(p) for p in prompts], 8, backend.pad_id, padding_side, backend.device)
    widths = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: widths.append(out.shape[1]))
    try:
        got = backend.last_token_logits(batch)
    finally:
        handle.remove()
    with torch.no_grad():
        for row, index in enumerate(batch.indices):
            alone = model(torch.tensor([backend.encode(prompts[index])])).logits[0, -1]
            torch.testing.assert_close(got[row], alone, atol=1e-4, rtol=1e-4)
    assert widths == [1]


def test_training_stops_after_the_deepest_layer(tokenizer):
    model = make_hf_model("llama")
    calls: list[str] = []
    late = [model.model.layers[1], model.model.norm, model.lm_head]
    handles = [m.register_forward_hook(lambda m, a, o, n=n: calls.append(n)) for n, m in zip("LNH", late)]
    try:
        train_steering_vector(model, tokenizer, PAIRS, layers=[0], batch_size=4)
        assert calls == []
        train_steering_vector(model, tokenizer, PAIRS, layers=[1], batch_size=4)
        assert calls == ["L"]  # layer 1 ran once (one batch); the final norm and the head never
    finally:
        for handle in handles:
            handle.remove()
    assert steering_hooks_on(model) == [] and not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_steered_logits_equal_a_plain_forward_hook(name):
    model = make_hf_model(name)
    gen = torch.Generator().manual_seed(1)
    vectors = {layer: torch.randn(model.config.hidden_size, generator=gen) for layer in range(2)}
    vec = SteeringVector(vectors)
    with torch.no_grad():
        pristine = model(INPUT_IDS).logits
        with vec.apply(model, multiplier=2.5):
            steered = model(INPUT_IDS).logits
        handles = manual_steering(model, {layer: 2.5 * v for layer, v in vectors.items()})
        try:
            expected = model(INPUT_IDS).logits
        finally:
            for handle in handles:
                handle.remove()
        after = model(INPUT_IDS).logits
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=1e-5)
    assert (steered - pristine).abs().max() > 0.1
    assert torch.equal(after, pristine) and steering_hooks_on(model) == []


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2", "opt", "qwen3_moe", "falcon"])
def test_output_hidden_states_show_the_steered_values(name):
    config = CONFIGS[name]()
    layers_attr = "n_layer" if hasattr(config, "n_layer") else "num_hidden_layers"
    setattr(config, layers_attr, 3)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (Gemma 2) must cover layer 2
        config.layer_types = [*config.layer_types, config.layer_types[0]]
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(2)
    vec = SteeringVector(
        {0: torch.randn(config.hidden_size, generator=gen), 1: torch.randn(config.hidden_size, generator=gen)}
    )
    with torch.no_grad():
        pristine = model(INPUT_IDS, output_hidden_states=True).hidden_states
        with vec.apply(model, multiplier=3.0, min_token_index=4):
            hidden = model(INPUT_IDS, output_hidden_states=True).hidden_states
            passed_on = layer_outputs(model, INPUT_IDS)  # what each layer really handed to the next
    for layer in (0, 1):
        torch.testing.assert_close(hidden[layer + 1], passed_on[layer], atol=0, rtol=0)
    # Layer 0's output is the clean one plus the vector, from position 4 on.
    shift = hidden[1] - pristine[1]
    torch.testing.assert_close(
        shift[:, 4:], (3.0 * vec.layer_activations[0]).expand_as(shift[:, 4:]), atol=1e-5, rtol=0
    )
    assert shift[:, :4].abs().max() == 0


@pytest.mark.parametrize("name", NEW_ARCHITECTURES)
@pytest.mark.parametrize("layer_type", ["resid_pre", "attn_out", "mlp_out"])
def test_every_architecture_trains_and_steers_each_layer_type(name, layer_type, tokenizer):
    model = make_hf_model(name)
    site = None
    try:
        site = hf_layout(model).site(0, layer_type)
    except LayerError as error:  # e.g. Bloom's sublayers add the residual themselves
        with pytest.raises(LayerError, match=layer_type):
            train_steering_vector(model, tokenizer, PAIRS, layers=[0], layer_type=layer_type)
        assert "resid" in str(error)
        return
    vec = train_steering_vector(model, tokenizer, PAIRS, layers=[0], layer_type=layer_type, batch_size=4)
    assert vec.layer_activations[0].norm() > 0
    # The steered forward equals one with a plain hook adding the vector at the same module.
    module = model.get_submodule(site.path)
    delta = 2.0 * vec.layer_activations[0]
    with torch.no_grad():
        with vec.apply(model, multiplier=2.0):
            steered = model(INPUT_IDS).logits
        if site.io == "input":
            handle = module.register_forward_pre_hook(
                lambda m, args, kwargs: (
                    ((args[0] + delta, *args[1:]), kwargs)
                    if args
                    else (args, {**kwargs, "hidden_states": kwargs["hidden_states"] + delta})
                ),
                with_kwargs=True,
            )
        else:
            handle = module.register_forward_hook(
                lambda m, a, out: (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta
            )
        try:
            expected = model(INPUT_IDS).logits
        finally:
            handle.remove()
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=1e-5)


def test_left_padding_reads_the_same_activations(tokenizer):
    """Left-padded HF batches get position ids from the mask, so padding changes nothing."""
    for name in ("llama", "gpt2"):
        model = make_hf_model(name)
        one = train_steering_vector(model, tokenizer, PAIRS, batch_size=1)
        left = train_steering_vector(model, tokenizer, PAIRS, batch_size=4, padding_side="left")
        right = train_steering_vector(model, tokenizer, PAIRS, batch_size=4, padding_side="right")
        for layer in one.layers:
            torch.testing.assert_close(left.layer_activations[layer], one.layer_activations[layer], atol=1e-5, rtol=0)
            torch.testing.assert_close(right.layer_activations[layer], one.layer_activations[layer], atol=1e-5, rtol=0)


def test_vector_is_cast_to_each_layers_dtype(tokenizer):
    """Hooks cast to their own activation's dtype/device: a float64 vector steers a bf16 model."""
    model = make_hf_model("llama", dtype=torch.bfloat16)
    vec = SteeringVector({0: torch.randn(32, dtype=torch.float64)})
    with torch.no_grad():
        with vec.apply(model, multiplier=2.0):
            steered = model(INPUT_IDS).logits
        handles = manual_steering(model, {0: (2.0 * vec.layer_activations[0].float()).to(torch.bfloat16)})
        try:
            expected = model(INPUT_IDS).logits
        finally:
            for handle in handles:
                handle.remove()
    assert steered.dtype == torch.bfloat16
    torch.testing.assert_close(steered, expected, atol=0, rtol=0)


def test_one_dispatch_point_and_clear_errors(tokenizer):
    model = make_hf_model("llama")
    backend = backend_for(model, tokenizer)
    assert isinstance(backend, HFBackend) and backend_for(backend) is backend
    assert backend.n_layers == 2 and backend.d_model == 32
    with pytest.raises(TokenizerError, match="needs its tokenizer"):
        train_steering_vector(model, None, PAIRS)
    with pytest.raises(LayerError, match="attn_out"):
        train_steering_vector(make_hf_model("bloom"), tokenizer, PAIRS, layer_type="attn_out")


# -- issue 18: layer types that mean what steering-vectors means, and the crashes --------------


def module_mean_difference(model, tokenizer, path: str) -> torch.Tensor:
    """Mean over PAIRS of the difference of ``path``'s output at the last token, one prompt at a time.

    Read with a plain torch hook that clones (Falcon adds into its MLP's output in place later).
    """
    module = model.get_submodule(path)
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(first(out).clone()))
    try:
        with torch.no_grad():
            for text in (text for pair in PAIRS for text in pair):
                model(torch.tensor([tokenizer(text)["input_ids"]]))
    finally:
        handle.remove()
    # A flattening MLP (Llama 4's MoE) returns [pos, d] rows for one prompt: the last row is the last token.
    last = [s.reshape(-1, s.shape[-1])[-1] for s in seen]
    return torch.stack([last[2 * i] - last[2 * i + 1] for i in range(len(PAIRS))]).mean(0)


def logits_with_plain_hooks(model, deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """INPUT_IDS' logits with plain forward hooks adding ``deltas[path]`` to each module's output."""
    handles = [
        model.get_submodule(path).register_forward_hook(lambda m, a, out, d=d: plus(out, d))
        for path, d in deltas.items()
    ]
    try:
        with torch.no_grad():
            return model(INPUT_IDS).logits
    finally:
        for handle in handles:
            handle.remove()


def check_trains_and_steers_module(model, tokenizer, layer_type: str, module: str, tmp_path=None):
    """Trained at ``layer_type``: the mean difference of ``model.layers[L].<module>``'s output, and steering
    adds to that output (also after a save/load round trip). Returns the vector."""
    layers = hf_layout(model).layers_path
    vec = train_steering_vector(model, tokenizer, PAIRS, layer_type=layer_type, batch_size=4)
    for layer in (0, 1):
        expected = module_mean_difference(model, tokenizer, f"{layers}.{layer}.{module}")
        torch.testing.assert_close(vec.layer_activations[layer], expected, atol=1e-5, rtol=1e-5)
    if tmp_path is not None:
        vec.save(tmp_path / "v.safetensors")
        vec = SteeringVector.load(tmp_path / "v.safetensors")
    with torch.no_grad(), vec.apply(model, multiplier=2.0):
        steered = model(INPUT_IDS).logits
    expected = logits_with_plain_hooks(
        model, {f"{layers}.{layer}.{module}": 2.0 * v for layer, v in vec.layer_activations.items()}
    )
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert (steered - model(INPUT_IDS).logits).abs().max() > 1e-3
    return vec


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "olmo2", "olmo3"])
@pytest.mark.parametrize("layer_type", ["post_attention_layernorm", "self_attn", "mlp"])
def test_steering_vectors_names_are_the_modules_of_that_name(name, layer_type, tokenizer, tmp_path):
    """On sandwich-norm models steering-vectors' names read and steer the module of that name (as 0.12.2 does),
    and keep that meaning in the vector (``module:<name>``) through a file."""
    model = make_hf_model(name)
    vec = check_trains_and_steers_module(model, tokenizer, layer_type, layer_type, tmp_path)
    assert vec.layer_type == f"module:{layer_type}"
    with record_activations(model, layer_type, layer_nums=[1]) as recorded, torch.no_grad():
        model(INPUT_IDS)
    seen = []
    handle = (
        model.model.layers[1]
        .get_submodule(layer_type)
        .register_forward_hook(lambda m, a, out: seen.append(first(out).clone()))
    )
    with torch.no_grad():
        model(INPUT_IDS)
    handle.remove()
    torch.testing.assert_close(recorded[1][0], seen[0], atol=0, rtol=0)
    if layer_type == "post_attention_layernorm" and name.startswith("gemma"):
        # The canonical ln2 keeps its documented meaning: the norm in front of the MLP.
        ln2 = train_steering_vector(model, tokenizer, PAIRS, layers=[0], layer_type="ln2", batch_size=4)
        expected = module_mean_difference(model, tokenizer, "model.layers.0.pre_feedforward_layernorm")
        torch.testing.assert_close(ln2.layer_activations[0], expected, atol=1e-5, rtol=1e-5)
        assert ln2.layer_type == "ln2"


def test_bloom_self_attn_is_its_self_attention_module(tokenizer, tmp_path):
    """No child is called self_attn: steering-vectors' guesser picks ``self_attention`` (its output includes
    the residual), and so does steerlens, storing it as ``module:self_attn``."""
    model = make_hf_model("bloom")
    vec = check_trains_and_steers_module(model, tokenizer, "self_attn", "self_attention", tmp_path)
    assert vec.layer_type == "module:self_attn"


@pytest.mark.parametrize("name", ["falcon", "phi", "gptj", "cohere"])
@pytest.mark.parametrize("layer_type", ["ln1", "input_layernorm"])
def test_the_shared_norm_of_parallel_layers_trains_and_steers(name, layer_type, tokenizer):
    """One norm feeds attention and MLP: ln1 / input_layernorm is its output, and steering adds to it."""
    model = make_hf_model(name)
    norm = hf_layout(model).ln1
    vec = check_trains_and_steers_module(model, tokenizer, layer_type, norm)
    assert vec.layer_type == "ln1"


@pytest.mark.parametrize("layer_type", ["mlp_out", "mlp"])
def test_falcon_mlp_reads_are_not_changed_by_the_later_in_place_add(layer_type, tokenizer):
    """Falcon adds the attention output into its MLP's output in place; training must keep the MLP's own output."""
    model = make_hf_model("falcon")
    check_trains_and_steers_module(model, tokenizer, layer_type, "mlp")


def test_llama4_moe_mlp_out_trains_and_steers(tokenizer):
    """Llama 4's MoE returns [batch * pos, d] rows: mlp_out is still per token; the deepest-layer MLP shortcut works."""
    model = make_hf_model("llama4_text")
    assert hf_layout(model).site(0, "mlp_out").flattened
    check_trains_and_steers_module(model, tokenizer, "mlp_out", "feed_forward")


def test_openai_gpt_blocks_return_lists_and_are_post_norm(tokenizer):
    """OpenAI GPT's blocks return lists (training, steering and recording work); its layers are post-norm, so
    sublayer types are refused with the reason, and steering-vectors' mlp / self_attn are its mlp / attn modules."""
    model = make_hf_model("openai-gpt")
    with record_activations(model, "decoder_block") as recorded, torch.no_grad():
        model(INPUT_IDS)
    expected = layer_outputs(model, INPUT_IDS)
    for layer in (0, 1):
        torch.testing.assert_close(recorded[layer][0], expected[layer], atol=0, rtol=0)
    for layer_type in ("attn_out", "mlp_out", "ln1", "ln2"):
        with pytest.raises(LayerError, match=r"post-layer-norm.*ln_1\(x \+ a\)"):
            train_steering_vector(model, tokenizer, PAIRS, layer_type=layer_type)
    vec = check_trains_and_steers_module(model, tokenizer, "mlp", "mlp")
    assert vec.layer_type == "module:mlp"
    # No child is called self_attn: steering-vectors' guesser reads attn, and so does steerlens.
    assert check_trains_and_steers_module(model, tokenizer, "self_attn", "attn").layer_type == "module:self_attn"


def test_module_layer_types_only_where_the_names_differ_and_clear_refusals(tokenizer):
    """Where a steering-vectors name is its canonical tensor the vector keeps the canonical name; a module:
    vector is refused where there is no such module (HF) or no modules at all (HookedTransformer)."""
    llama = make_hf_model("llama")
    same = train_steering_vector(llama, tokenizer, PAIRS, layers=[0], layer_type="post_attention_layernorm")
    assert same.layer_type == "ln2"
    vec = SteeringVector({0: torch.randn(32)}, "module:post_attention_layernorm")
    with pytest.raises(LayerError, match="no sub-module named 'post_attention_layernorm'"):
        with vec.apply(make_hf_model("falcon")):
            pass
    with pytest.raises(LayerError, match="HookedTransformer has no such module"):
        hook_name(0, "module:mlp")
    with pytest.raises(ModelMismatchError, match="read only"):
        with SteeringVector({0: torch.randn(32)}, "resid_mid").apply(make_hf_model("llama")):
            pass


# -- sweeps: steered cells resume from the clean layer outputs -------------------------------------

SWEEP_LAYER_TYPES = ("resid_post", "resid_pre", "attn_out", "mlp_out", "ln2")


def _batch(backend, padding_side: str) -> PromptBatch:
    rows = [INPUT_IDS[0].tolist(), INPUT_IDS[1, :7].tolist(), INPUT_IDS[1, 2:].tolist()]
    return next(iter_batches(rows, len(rows), backend.pad_id, padding_side, "cpu"))


def _plain_logits(model, batch: PromptBatch) -> torch.Tensor:
    """The naive route: the whole model, logits at every position, then each row's last real token."""
    inputs = {"input_ids": batch.tokens, "attention_mask": batch.attention_mask}
    if batch.padded.padding_side == "left":
        inputs["position_ids"] = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(**inputs).logits
    return logits[torch.arange(len(batch.last)), batch.last]


CASES = [(name, "right", 0) for name in ORIGINAL_ARCHITECTURES + NEW_ARCHITECTURES] + [
    (name, "left", 0)
    for name in ("gpt2", "llama", "gemma2", "falcon")  # left padding: shifted position ids
]
# Steering from column 5 on (rows start at 5, 6, 5): the first 5 columns are run once, into the KV cache.
STARTS = [(name, "right", 5) for name in ORIGINAL_ARCHITECTURES + NEW_ARCHITECTURES]


@pytest.mark.parametrize(("name", "padding_side", "start"), CASES + STARTS)
def test_sweep_cells_equal_the_whole_steered_model(name: str, padding_side: str, start: int):
    model = make_hf_model(name)
    backend = backend_for(model, make_tokenizer())
    batch = _batch(backend, padding_side)
    d, n = backend.d_model, backend.n_layers
    torch.manual_seed(1)
    for layer_type in SWEEP_LAYER_TYPES:
        try:
            backend.check_sites([(layer, layer_type) for layer in range(n)])
        except LayerError:
            continue  # e.g. Bloom's attention adds the residual itself: no attn_out
        vectors = {layer: torch.randn(d) for layer in range(n)}
        sweep = backend.sweep_pass(batch, list(range(n)), layer_type, start)
        first = 1 if not start else torch.tensor([start, start + 1, start])
        with torch.no_grad():
            torch.testing.assert_close(sweep.clean, _plain_logits(model, batch), atol=1e-4, rtol=1e-4)
        for layer in range(n):
            specs = [make_spec({layer: vectors[layer]}, layer_type, m, None, first, None) for m in (-2.0, 1.5)]
            cells = sweep.steered(layer, specs)  # two cells in a row: the kept outputs must stay clean
            for spec, cell in zip(specs, cells):
                with backend.apply(spec), torch.no_grad():
                    expected = _plain_logits(model, batch)
                assert not torch.allclose(expected, sweep.clean, atol=1e-3), (layer_type, layer)
                torch.testing.assert_close(cell, expected, atol=1e-4, rtol=1e-4, msg=f"{layer_type} {layer}")
    assert backend.steering_hooks() == []
    assert all("forward" not in module.__dict__ for module in model.modules())


def test_steered_cells_after_a_start_run_only_the_columns_after_it():
    """With a start, the clean pass and every cell embed only the columns from the start on."""
    model = make_hf_model("llama")
    backend = backend_for(model, make_tokenizer())
    batch = _batch(backend, "right")
    widths = []
    model.get_input_embeddings().register_forward_hook(lambda m, a, out: widths.append(out.shape[1]))
    sweep = backend.sweep_pass(batch, [0], "resid_post", 5)
    sweep.steered(0, [make_spec({0: torch.randn(backend.d_model)}, "resid_post", 1.0, None, 5, None)])
    columns = batch.tokens.shape[1]
    assert widths == [5, columns - 5, columns - 5]  # the prefix once, then the clean pass and the cell
    assert sweep.rows.start == 5


def test_steered_cells_skip_the_layers_before_the_site():
    """A resid_post cell at the last layer runs no earlier layer; a resid_pre cell there runs only that layer."""
    model = make_hf_model("llama")
    backend = backend_for(model, make_tokenizer())
    batch = _batch(backend, "right")
    decoder = model.model.layers
    calls = [0] * len(decoder)
    for i, layer in enumerate(decoder):
        layer.self_attn.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1))
    last = len(decoder) - 1
    sweep = backend.sweep_pass(batch, [last], "resid_post")
    assert calls == [1] * len(decoder)
    sweep.steered(last, [make_spec({last: torch.randn(backend.d_model)}, "resid_post", 1.0, None, 0, None)])
    assert calls == [1] * len(decoder)
    sweep = backend.sweep_pass(batch, [last], "resid_pre")
    sweep.steered(last, [make_spec({last: torch.randn(backend.d_model)}, "resid_pre", 1.0, None, 0, None)])
    assert calls[:last] == [2] * last and calls[last] == 3
