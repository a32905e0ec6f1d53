"""hf_layout: every site it names carries the tensor its TL hook name promises.

Each architecture runs one forward pass with plain torch hooks on the sites
``hf_layout`` reports, and the recorded tensors are checked against independent
computations: HF's own ``hidden_states``, the residual-stream sums, the norm modules
applied by hand, the inputs attention and MLP actually receive, and (for the nine
hand-registered families) the adapter registry's answers.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest
import torch
import transformers as tf
from tiny_hf import CONFIGS, INPUT_IDS, SIZES, make_hf_model
from torch import nn

from steerlens.backends.hf_layout import LAYER_TYPES, HFLayout, ModuleSite, hf_layout
from steerlens.errors import LayerError, UnsupportedModelError

GATED = dict(SIZES, intermediate_size=64)

# Variants tiny_hf does not build, for wiring the 26 do not cover.
EXTRA_CONFIGS = {
    # post_self_attn_layernorm / post_mlp_layernorm sandwich, post_attention_layernorm is the pre-MLP norm
    "glm4": lambda: tf.Glm4Config(num_key_value_heads=2, head_dim=8, **GATED),
    # parallel with two norms named ln_attn / ln_mlp
    "falcon_new": lambda: tf.FalconConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_kv_heads=2,
        vocab_size=64,
        new_decoder_architecture=True,
    ),
    "falcon_sequential": lambda: tf.FalconConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        vocab_size=64,
        new_decoder_architecture=False,
        parallel_attn=False,
    ),
    "stablelm_parallel": lambda: tf.StableLmConfig(num_key_value_heads=4, use_parallel_residual=True, **GATED),
}
ALL = [*CONFIGS, *EXTRA_CONFIGS]
SUBLAYERS = ("attn_out", "mlp_out")


def _build(name: str) -> nn.Module:
    if name in CONFIGS:
        return make_hf_model(name)
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(EXTRA_CONFIGS[name]()).eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            is_gain = param.ndim == 1 and param_name.endswith("weight") and "norm" in param_name
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if is_gain else 0.0))
    return model


def _first_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _first_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output  # OpenAI GPT's blocks return lists


def _sublayer(layer: nn.Module, names: tuple[str, ...]) -> str:
    """The layer's attention (or MLP) child, named independently of hf_layout."""
    return next(name for name in names if hasattr(layer, name))


class Run:
    """One forward pass with every reported site recorded (and the sublayers' real inputs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model = _build(name)
        self.layout = hf_layout(self.model)
        self.records: dict[tuple[int, str], torch.Tensor] = {}
        handles = []
        for layer in range(self.layout.n_layers):
            block = self.model.get_submodule(f"{self.layout.layers_path}.{layer}")
            probes = {
                "attn_in": _sublayer(block, ("self_attn", "self_attention", "attn", "attention")),
                "mlp_in": _sublayer(block, ("mlp", "feed_forward", "fc1")),
            }
            for key, child in probes.items():
                handles.append(self._record(f"{self.layout.layers_path}.{layer}.{child}", "input", (layer, key)))
            for layer_type in LAYER_TYPES:
                try:
                    site = self.layout.site(layer, layer_type)
                except LayerError:
                    continue
                handles.append(self._record(site.path, site.io, (layer, layer_type)))
        with torch.no_grad():
            self.out = self.model(INPUT_IDS, output_hidden_states=True)
        for handle in handles:
            handle.remove()

    def _record(self, path: str, io: str, key: tuple[int, str]) -> Any:
        module = self.model.get_submodule(path)
        if io == "input":

            def pre_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                self.records[key] = _first_input(args, kwargs).detach().clone()

            return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            # clone: Falcon adds the attention output into the MLP output in place.
            self.records[key] = _first_output(output).detach().clone()

        return module.register_forward_hook(hook)

    def get(self, layer: int, key: str) -> torch.Tensor:
        """A recorded tensor, unflattened to [batch, pos, d_model]."""
        tensor = self.records[(layer, key)]
        return tensor.view(INPUT_IDS.shape + tensor.shape[-1:]) if tensor.ndim == 2 else tensor

    def module(self, layer: int, relative: str) -> nn.Module:
        return self.model.get_submodule(f"{self.layout.layers_path}.{layer}.{relative}")


@functools.lru_cache(maxsize=None)
def run(name: str) -> Run:
    return Run(name)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_resid_sites_match_hidden_states(name: str) -> None:
    r = run(name)
    hidden = r.out.hidden_states
    assert r.layout.n_layers == len(hidden) - 1 == r.model.config.num_hidden_layers
    for layer in range(r.layout.n_layers):
        close(r.get(layer, "resid_pre"), hidden[layer])
        if layer < r.layout.n_layers - 1:  # the last entry has the final norm applied
            close(r.get(layer, "resid_post"), hidden[layer + 1])


@pytest.mark.parametrize("name", ALL)
def test_sublayer_outputs_sum_to_the_residual_stream(name: str) -> None:
    r = run(name)
    for layer in range(r.layout.n_layers):
        present = [t for t in SUBLAYERS if (layer, t) in r.records]
        if name in ("bloom", "granite", "openai-gpt"):
            assert present == []
            continue
        assert present == list(SUBLAYERS)
        pre, attn, mlp = r.get(layer, "resid_pre"), r.get(layer, "attn_out"), r.get(layer, "mlp_out")
        close(pre + attn + mlp, r.get(layer, "resid_post"))
        if r.layout.parallel:
            with pytest.raises(LayerError, match="parallel"):
                r.layout.site(layer, "resid_mid")
        else:
            close(r.get(layer, "resid_mid"), pre + attn)


def test_refused_sublayers_really_are_not_what_is_added() -> None:
    """Bloom's sublayers return residual + output; Granite scales them before the add."""
    bloom = run("bloom")
    for layer in range(bloom.layout.n_layers):
        attention = bloom.module(layer, "self_attention")
        assert "residual" in str(attention.forward.__code__.co_varnames)
    granite = run("granite")
    scale = granite.model.config.residual_multiplier
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        granite.module(0, child).register_forward_hook(
            lambda _m, _a, out, child=child: outputs.__setitem__(child, _first_output(out).clone())
        )
        for child in ("self_attn", "mlp")
    ]
    with torch.no_grad():
        granite.model(INPUT_IDS)
    for handle in handles:
        handle.remove()
    pre, mid = granite.get(0, "resid_pre"), granite.get(0, "resid_mid")
    close(pre + scale * outputs["self_attn"], mid)
    close(mid + scale * outputs["mlp"], granite.get(0, "resid_post"))
    assert not torch.allclose(pre + outputs["self_attn"], mid)


@pytest.mark.parametrize("name", ALL)
def test_norm_sites_are_the_sublayers_inputs(name: str) -> None:
    r = run(name)
    layout = r.layout
    for layer in range(layout.n_layers):
        pre = r.get(layer, "resid_pre")
        attn_in, mlp_in = r.get(layer, "attn_in"), r.get(layer, "mlp_in")
        if name == "openai-gpt":  # post-norm: ln_1(x + a), ln_2(n + m); no pre-sublayer norms
            for layer_type in ("ln1", "ln2", "resid_mid"):
                with pytest.raises(LayerError, match=r"post-layer-norm layers \(Block computes ln_1\(x \+ a\)\)"):
                    layout.site(layer, layer_type)
            close(attn_in, pre)
            continue
        if layout.ln1 is None:
            with pytest.raises(LayerError, match="ln1"):
                layout.site(layer, "ln1")
            close(attn_in, pre)
        else:
            close(r.get(layer, "ln1"), r.module(layer, layout.ln1)(pre))
            close(attn_in, r.get(layer, "ln1"))
        if layout.ln2 is not None:
            mlp_reads = pre if layout.parallel else r.get(layer, "resid_mid")
            close(r.get(layer, "ln2"), r.module(layer, layout.ln2)(mlp_reads))
            close(mlp_in, r.get(layer, "ln2"))
        elif layout.parallel:  # one norm feeds both sublayers; steering it steers both (as steering-vectors does)
            close(mlp_in, r.get(layer, "ln1"))
            assert layout.site(layer, "ln1").steerable
        else:  # OLMo 2/3: the MLP reads resid_mid itself
            close(mlp_in, r.get(layer, "resid_mid"))


def test_flattened_sites_reshape_to_the_residual_stream() -> None:
    r = run("opt")
    assert r.layout.flattened == {"mlp_out", "resid_mid", "ln2"}
    n_rows = INPUT_IDS.numel()
    for layer in range(r.layout.n_layers):
        for layer_type in ("mlp_out", "resid_mid", "ln2"):
            site = r.layout.site(layer, layer_type)
            assert site.flattened and site.layer_path == f"model.decoder.layers.{layer}"
            assert r.records[(layer, layer_type)].shape == (n_rows, 32)
        for layer_type in ("resid_pre", "resid_post", "attn_out", "ln1"):
            assert not r.layout.site(layer, layer_type).flattened
            assert r.records[(layer, layer_type)].shape == (*INPUT_IDS.shape, 32)


EXPECTED = {  # name: (layers_path, attn, mlp, ln1, ln2, resid_mid, parallel)
    "gpt2": ("transformer.h", "attn", "mlp", "ln_1", "ln_2", "ln_2", False),
    "neox": ("gpt_neox.layers", "attention", "mlp", "input_layernorm", "post_attention_layernorm", None, True),
    "gemma2": (
        "model.layers",
        "post_attention_layernorm",
        "post_feedforward_layernorm",
        "input_layernorm",
        "pre_feedforward_layernorm",
        "pre_feedforward_layernorm",
        False,
    ),
    "olmo2": ("model.layers", "post_attention_layernorm", "post_feedforward_layernorm", None, None, "mlp", False),
    "opt": (
        "model.decoder.layers",
        "self_attn",
        "fc2",
        "self_attn_layer_norm",
        "final_layer_norm",
        "final_layer_norm",
        False,
    ),
    "phi": ("model.layers", "self_attn", "mlp", "input_layernorm", None, None, True),
    "bloom": (
        "transformer.h",
        None,
        None,
        "input_layernorm",
        "post_attention_layernorm",
        "post_attention_layernorm",
        False,
    ),
    "glm4": (
        "model.layers",
        "post_self_attn_layernorm",
        "post_mlp_layernorm",
        "input_layernorm",
        "post_attention_layernorm",
        "post_attention_layernorm",
        False,
    ),
    "falcon_new": ("transformer.h", "self_attention", "mlp", "ln_attn", "ln_mlp", None, True),
    "apertus": (
        "model.layers",
        "self_attn",
        "mlp",
        "attention_layernorm",
        "feedforward_layernorm",
        "feedforward_layernorm",
        False,
    ),
    "openai-gpt": ("transformer.h", None, None, None, None, None, False),  # post-norm
    "llama4_text": (
        "model.layers",
        "self_attn",
        "feed_forward",
        "input_layernorm",
        "post_attention_layernorm",
        "post_attention_layernorm",
        False,
    ),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_layout_fields(name: str) -> None:
    layout = run(name).layout
    assert (
        layout.layers_path,
        layout.attn,
        layout.mlp,
        layout.ln1,
        layout.ln2,
        layout.resid_mid,
        layout.parallel,
    ) == EXPECTED[name]


def test_error_bloom_attn_out() -> None:
    layout = run("bloom").layout
    with pytest.raises(LayerError) as info:
        layout.site(0, "attn_out")
    message = str(info.value)
    for part in ("attn_out", "BloomForCausalLM", "self_attention", "input_layernorm", "resid_pre", "adds the residual"):
        assert part in message
    assert isinstance(info.value, ValueError)


def test_error_granite_sublayers() -> None:
    layout = run("granite").layout
    for layer_type in SUBLAYERS:
        with pytest.raises(LayerError, match="residual_multiplier=0.5"):
            layout.site(1, layer_type)


def test_error_olmo2_ln1() -> None:
    with pytest.raises(LayerError) as info:
        run("olmo2").layout.site(0, "ln1")
    message = str(info.value)
    for part in ("ln1", "Olmo2ForCausalLM", "post_feedforward_layernorm", "resid_pre", "attn_out"):
        assert part in message


def test_error_no_layer_list() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    with pytest.raises(UnsupportedModelError, match="cannot find the decoder layers of Sequential"):
        hf_layout(model)


def test_error_unknown_layer_type_and_layer() -> None:
    layout = run("llama").layout
    with pytest.raises(LayerError, match="unknown layer type 'resid_mdi'.*resid_mid"):
        layout.site(0, "resid_mdi")
    with pytest.raises(LayerError, match="out of range"):
        layout.site(2, "resid_pre")
    with pytest.raises(LayerError, match="out of range"):
        layout.site(-1, "resid_pre")


def test_error_post_layer_norm_opt() -> None:
    model = tf.OPTForCausalLM(tf.OPTConfig(ffn_dim=64, word_embed_proj_dim=32, do_layer_norm_before=False, **SIZES))
    layout = hf_layout(model)
    assert layout.site(0, "resid_post").path == "model.decoder.layers.0"
    with pytest.raises(LayerError, match="do_layer_norm_before=False"):
        layout.site(0, "attn_out")


def test_error_encoder_decoder() -> None:
    model = tf.T5ForConditionalGeneration(
        tf.T5Config(num_layers=2, d_model=16, d_ff=32, num_heads=2, d_kv=8, vocab_size=64)
    )
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        hf_layout(model)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8)


def test_no_config_falls_back_to_the_longest_block_list() -> None:
    model = nn.Module()
    model.heads = nn.ModuleList([_Block() for _ in range(2)])
    model.body = nn.Module()
    model.body.blocks = nn.ModuleList([_Block() for _ in range(5)])
    layout = hf_layout(model)
    assert (layout.layers_path, layout.n_layers, layout.attn, layout.ln2, layout.parallel) == (
        "body.blocks",
        5,
        "attn",
        "ln_2",
        False,
    )


def test_base_model_and_wrapped_model() -> None:
    model = run("llama").model
    assert hf_layout(model.model).site(1, "mlp_out").path == "layers.1.mlp"
    wrapper = nn.Module()
    wrapper.inner = model
    assert hf_layout(wrapper).site(1, "resid_mid") == ModuleSite(
        "inner.model.layers.1.post_attention_layernorm", "input", False, False, "inner.model.layers.1"
    )


def test_cached_per_model_and_refreshed_when_layers_change() -> None:
    model = _build("gpt2")
    layout = hf_layout(model)
    assert hf_layout(model) is layout
    model.transformer.h = nn.ModuleList(list(model.transformer.h)[:1])
    model.config.num_hidden_layers = 1
    assert hf_layout(model).n_layers == 1


def test_hand_built_layout_works_without_per_layer_parts() -> None:
    layout = HFLayout(
        "model.layers",
        2,
        "self_attn",
        "mlp",
        "input_layernorm",
        "post_attention_layernorm",
        "post_attention_layernorm",
        False,
        frozenset(),
    )
    assert layout.site(1, "ln2") == ModuleSite(
        "model.layers.1.post_attention_layernorm", "output", True, False, "model.layers.1"
    )


# steering-vectors' names that mean another module than their canonical layer type there.
DIFFERING_NAMES = {
    "llama": {},
    "bloom": {"self_attn": "self_attention", "mlp": "mlp"},
    "opt": {},
    "phi": {},
    "falcon": {},
    "gemma2": {"self_attn": "self_attn", "mlp": "mlp", "post_attention_layernorm": "post_attention_layernorm"},
    "llama4_text": {},
    "openai-gpt": {"self_attn": "attn", "mlp": "mlp", "input_layernorm": "ln_1", "post_attention_layernorm": "ln_2"},
}
"""Per model: steering-vectors' names whose module is not the canonical tensor -> the child module they read
(where no child has the very name, the one steering-vectors' own guesser picks: Bloom's self_attention)."""


@pytest.mark.parametrize("name", list(DIFFERING_NAMES))
def test_describe(name: str) -> None:
    text = run(name).layout.describe()
    lines = text.splitlines()
    assert len(lines) == 1 + len(LAYER_TYPES) + len(DIFFERING_NAMES[name])
    assert type(run(name).model).__name__ in lines[0]
    for line, layer_type in zip(lines[1:], LAYER_TYPES):
        assert re.match(rf"  {layer_type}\s+(input of|output of|not available)", line)
    layers = run(name).layout.layers_path
    for line, (module, child) in zip(lines[1 + len(LAYER_TYPES) :], DIFFERING_NAMES[name].items()):
        assert line.startswith(f"  steering-vectors' {module}: output of {layers}.{{L}}.{child}, not ")
        assert line.endswith(f"stored as module:{module}")
        assert hasattr(run(name).module(0, child), "forward")  # the layer really has that child
    if name == "bloom":
        assert "attn_out    not available" in text
    if name in ("opt", "llama4_text"):
        assert "[batch*pos rows]" in text
    if name == "falcon":  # the shared norm is steerable, and says what reads it
        assert "ln1         output of transformer.h.{L}.input_layernorm (read by attention and MLP)" in text
    if name == "openai-gpt":
        assert "attn_out    not available: post-layer-norm layers (Block computes ln_1(x + a))" in text


class _MixerBlock(nn.Module):
    """A hybrid model's non-attention layer (a token mixer instead of attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.mixer, self.ln_2, self.mlp = nn.LayerNorm(8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8)


def test_hybrid_layers_get_their_own_parts() -> None:
    model = nn.Module()
    model.config = type("Config", (), {"num_hidden_layers": 3})()
    model.layers = nn.ModuleList([_Block(), _MixerBlock(), _Block()])
    layout = hf_layout(model)
    assert (layout.layers_path, layout.attn, layout.layer_class) == ("layers", "attn", "_Block")
    assert layout.site(2, "attn_out").path == "layers.2.attn"
    assert layout.site(1, "mlp_out").path == "layers.1.mlp"
    with pytest.raises(LayerError, match="layer 1: the layer has no attention sub-module.*ln_1, mixer"):
        layout.site(1, "attn_out")
    assert "layers [1] differ: 1: _MixerBlock attn=None" in layout.describe()
