"""The native Hugging Face backend: train and steer any decoder-only model with torch hooks.

Every check compares with an independent computation on the model itself: its own
``output_hidden_states``, or plain ``register_forward_hook`` hooks written here.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from tiny_hf import CONFIGS, GATED, INPUT_IDS, NEW_ARCHITECTURES, make_hf_model, make_tokenizer

from steerlens import SteeringVector, steering_hooks_on, train_steering_vector
from steerlens.backends import backend_for
from steerlens.backends.hf import HFBackend
from steerlens.backends.hf_layout import hf_layout
from steerlens.errors import LayerError, TokenizerError

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


def layer_outputs(model: torch.nn.Module, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Each decoder layer's output for ``ids``, read with plain torch hooks."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(i: int):
        return lambda m, a, out: outputs.__setitem__(i, (out[0] if isinstance(out, tuple) else out).clone())

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
            return (out[0] + vec, *out[1:]) if isinstance(out, tuple) else out + vec

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
    handles = [model.model.layers[i].mlp.down_proj.register_forward_pre_hook(
        lambda m, a, i=i: seen[i].append(tuple(a[0].shape[:2]))) for i in (0, 1)]
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
    vec = SteeringVector({0: torch.randn(config.hidden_size, generator=gen),
                          1: torch.randn(config.hidden_size, generator=gen)})
    with torch.no_grad():
        pristine = model(INPUT_IDS, output_hidden_states=True).hidden_states
        with vec.apply(model, multiplier=3.0, min_token_index=4):
            hidden = model(INPUT_IDS, output_hidden_states=True).hidden_states
            passed_on = layer_outputs(model, INPUT_IDS)  # what each layer really handed to the next
    for layer in (0, 1):
        torch.testing.assert_close(hidden[layer + 1], passed_on[layer], atol=0, rtol=0)
    # Layer 0's output is the clean one plus the vector, from position 4 on.
    shift = hidden[1] - pristine[1]
    torch.testing.assert_close(shift[:, 4:], (3.0 * vec.layer_activations[0]).expand_as(shift[:, 4:]),
                               atol=1e-5, rtol=0)
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
                lambda m, args, kwargs: ((args[0] + delta, *args[1:]), kwargs) if args
                else (args, {**kwargs, "hidden_states": kwargs["hidden_states"] + delta}),
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
