"""Parity of steerlens.adapter conversions against the Hugging Face models themselves.

Every architecture gets a tiny random checkpoint (2 layers, d_model 32, 4 heads, 64-token
vocabulary) saved with an in-memory WordLevel tokenizer to a temporary folder. The
TransformerLens model loaded from that folder must reproduce the HF model's logits,
hidden states and every mapped hook site.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf
from helpers import hf_site_activations
from tiny_hf import (
    CONFIGS,
    GATED,
    INPUT_IDS,
    N_LAYERS,
    ORIGINAL_ARCHITECTURES,
    SIZES,
    VOCAB,
    make_tokenizer,
    save_checkpoint,
)
from tokenizers import Tokenizer, models

from steerlens import load_model
from steerlens.adapter import (
    hf_site,
    supported_architectures,
)
from steerlens.errors import LayerError, ModelLoadError, TokenizerError, UnsupportedModelError
from steerlens.layers import hook_name

pytestmark = pytest.mark.usefixtures("offline")  # no test may reach the hub

ATOL = 1e-4
HAS_SLIDING_WINDOW = {"mistral", "qwen2", "gemma2"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """name -> (saved folder, the HF model it was saved from)."""
    saved = {}
    for name in ORIGINAL_ARCHITECTURES:
        folder = tmp_path_factory.mktemp(name)
        saved[name] = (folder, save_checkpoint(name, folder))
    return saved


@pytest.fixture(scope="module")
def loaded(checkpoints: dict[str, tuple[Path, Any]]) -> Iterator[dict[str, Any]]:
    """name -> HookedTransformer loaded from the folder, offline, unprocessed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield {name: load_model(folder, device="cpu") for name, (folder, _) in checkpoints.items()}


def all_sites(hf_model: Any) -> list[tuple[int, str]]:
    sites = []
    for layer in range(N_LAYERS):
        for layer_type in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
            try:
                hf_site(hf_model, layer, layer_type)
            except LayerError:
                continue
            sites.append((layer, layer_type))
    return sites


@pytest.mark.parametrize("name", list(ORIGINAL_ARCHITECTURES))
def test_folder_load_matches_hf(name: str, checkpoints: dict, loaded: dict) -> None:
    _, hf_model = checkpoints[name]
    model = loaded[name]
    with torch.no_grad():
        hf_out = hf_model(INPUT_IDS, output_hidden_states=True)
        logits, cache = model.run_with_cache(INPUT_IDS)
    assert (logits - hf_out.logits).abs().max() < ATOL
    # HF's hidden_states[L + 1] is decoder layer L's output, except the last entry,
    # which HF returns after the final norm.
    for layer in range(N_LAYERS - 1):
        resid = cache[hook_name(layer, "resid_post")]
        assert (resid - hf_out.hidden_states[layer + 1]).abs().max() < ATOL
    last = cache[hook_name(N_LAYERS - 1, "resid_post")]
    with torch.no_grad():
        assert (model.ln_final(last) - hf_out.hidden_states[-1]).abs().max() < ATOL
    assert (cache[hook_name(0, "resid_pre")] - hf_out.hidden_states[0]).abs().max() < ATOL
    if name in HAS_SLIDING_WINDOW:
        assert "local" in model.cfg.attn_types


@pytest.mark.parametrize("name", list(ORIGINAL_ARCHITECTURES))
def test_every_mapped_site_matches_tl_hook(name: str, checkpoints: dict, loaded: dict) -> None:
    _, hf_model = checkpoints[name]
    sites = all_sites(hf_model)
    assert {"resid_pre", "resid_post", "attn_out", "mlp_out"} <= {kind for _, kind in sites}
    with torch.no_grad(), hf_site_activations(hf_model, sites) as hf_acts:
        hf_model(INPUT_IDS)
        _, cache = loaded[name].run_with_cache(INPUT_IDS)
    for layer, layer_type in sites:
        expected = cache[hook_name(layer, layer_type)]  # OPT's MLP sees [batch * pos, d]: compare as [batch, pos, d]
        diff = (expected - hf_acts[(layer, layer_type)].reshape(expected.shape)).abs().max()
        assert diff < ATOL, (layer, layer_type, diff.item())


@pytest.mark.parametrize("name", list(ORIGINAL_ARCHITECTURES))
def test_processed_weights_keep_log_probs(name: str, checkpoints: dict) -> None:
    folder, hf_model = checkpoints[name]
    model = load_model(folder, device="cpu", process_weights=True)
    assert model.cfg.normalization_type in ("LNPre", "RMSPre")
    with torch.no_grad():
        expected = hf_model(INPUT_IDS).logits.log_softmax(-1)
        # Centring the unembedding shifts each position's logits by a constant.
        assert (model(INPUT_IDS).log_softmax(-1) - expected).abs().max() < ATOL


@pytest.mark.parametrize("name", ["gpt2", "gemma2", "phi3"])
def test_load_from_hf_instance(name: str, checkpoints: dict) -> None:
    _, hf_model = checkpoints[name]
    model = load_model(hf_model, tokenizer=make_tokenizer())
    assert model.cfg.dtype == torch.float32 and model.cfg.device == "cpu"
    with torch.no_grad():
        assert (model(INPUT_IDS) - hf_model(INPUT_IDS).logits).abs().max() < ATOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("process_weights", [False, True])
def test_reduced_precision_load(dtype: torch.dtype, process_weights: bool, checkpoints: dict) -> None:
    folder, hf_model = checkpoints["llama"]
    model = load_model(folder, device="cpu", dtype=dtype, process_weights=process_weights)
    assert model.cfg.dtype == dtype
    assert {param.dtype for param in model.parameters()} == {dtype}
    hf_reduced = tf.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    with torch.no_grad():
        exact = hf_model(INPUT_IDS).logits.log_softmax(-1)
        ours = model(INPUT_IDS).float().log_softmax(-1)
        theirs = hf_reduced(INPUT_IDS).logits.float().log_softmax(-1)
    assert torch.isfinite(ours).all()
    # As accurate as HF itself at this precision (rounding differs, so allow 2x + slack).
    hf_error = (theirs - exact).abs().max()
    assert (ours - exact).abs().max() <= 2 * hf_error + 1e-3


def test_default_prepend_bos_follows_the_tokenizer(checkpoints: dict) -> None:
    """TransformerLens' to_tokens gives what the tokenizer itself gives, as on the Hugging Face route."""
    from tokenizers.processors import TemplateProcessing

    folder, _ = checkpoints["llama"]
    plain = make_tokenizer()  # adds nothing: like SmolLM2's, whose BOS is its chat-turn marker
    with_bos = make_tokenizer()
    with_bos._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    for tokenizer, expected in ((plain, False), (with_bos, True)):
        model = load_model(folder, tokenizer=tokenizer)
        assert model.cfg.default_prepend_bos is expected
        assert model.to_tokens("the cat")[0].tolist() == tokenizer("the cat")["input_ids"]
        chat = "<bos> the cat"  # a chat prompt that starts with the BOS (turn-marker) text
        assert model.to_tokens(chat)[0].tolist() == tokenizer(chat)["input_ids"]
    assert load_model(folder, tokenizer=plain).to_tokens("<bos> the cat")[0].tolist().count(1) == 1


def test_tokenizer_is_copied_not_mutated(checkpoints: dict) -> None:
    folder, _ = checkpoints["gpt2"]
    tokenizer = make_tokenizer()
    assert tokenizer.pad_token is None and tokenizer.name_or_path == ""
    model = load_model(folder, tokenizer=tokenizer)
    assert tokenizer.pad_token is None
    assert model.tokenizer is not tokenizer
    batch = model.to_tokens(["the cat sat", "dog"])
    assert batch.tolist() == [[4, 6, 8], [7, 2, 2]]  # no BOS, as the tokenizer adds none; padded with EOS


def test_tokenizer_too_large_for_vocab(checkpoints: dict) -> None:
    folder, _ = checkpoints["gpt2"]
    big = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB + 5)}, unk_token="w0"))
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=big, eos_token="w1")
    with pytest.raises(TokenizerError, match="vocabulary"):
        load_model(folder, tokenizer=tokenizer)


def test_no_deprecation_warnings_reach_users(checkpoints: dict) -> None:
    folder, _ = checkpoints["opt"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(folder)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]


def test_missing_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model("./missing/checkpoint")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="file"):
        load_model(tmp_path / "weights.bin")


def test_offline_hub_miss_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("steerlens-tests/not-a-real-model")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("gpt2")  # a TransformerLens official name, routed through TransformerLens


def test_unsupported_architecture_lists_supported(tmp_path: Path) -> None:
    tf.FalconConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, vocab_size=VOCAB).save_pretrained(
        tmp_path
    )
    with pytest.raises(UnsupportedModelError) as error:
        load_model(tmp_path)
    for supported in supported_architectures():
        assert supported in str(error.value)


def test_unsupported_variant_and_wrong_model_class() -> None:
    post_ln_opt = tf.OPTConfig(do_layer_norm_before=False, ffn_dim=64, word_embed_proj_dim=32, **SIZES)
    with pytest.raises(UnsupportedModelError, match="do_layer_norm_before"):
        load_model(tf.OPTForCausalLM(post_ln_opt))
    linear_rope = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(UnsupportedModelError, match="linear"):
        load_model(tf.LlamaForCausalLM(tf.LlamaConfig(rope_parameters=linear_rope, **GATED)))
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        load_model(tf.LlamaModel(CONFIGS["llama"]()))
    with pytest.raises(UnsupportedModelError):
        load_model(42)  # type: ignore[arg-type]


def test_toy_source_dispatches_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("steerlens.toy")
    fake.load_toy_model = (  # type: ignore[attr-defined]
        lambda **kwargs: calls.append(kwargs) or "toy-model"
    )
    monkeypatch.setitem(sys.modules, "steerlens.toy", fake)
    assert load_model("toy", device="cpu", dtype=torch.float64) == "toy-model"
    assert calls == [{"device": "cpu", "dtype": torch.float64}]


def test_missing_relative_folder_never_reaches_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``runs/tiny`` under an existing ``runs`` folder, or a name no hub id can have, is a missing folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for source in ("runs/tiny", "my checkpoint", "runs/tiny/"):
        with pytest.raises(ModelLoadError, match="no such folder") as error:
            load_model(source)
        assert str(tmp_path) in str(error.value)
