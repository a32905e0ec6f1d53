"""One side of ``check_layer_types_against_steering_vectors.py``: runs under either virtualenv.

This module imports neither steerlens nor steering-vectors at import time, and nothing from
this repository, so the same file runs under steerlens' interpreter (transformers 5) and
under the steering-vectors 0.12.2 virtualenv (transformers 4.x). The library under test is
chosen by name (``--lib steerlens`` or ``--lib steering_vectors``); both are called with the
very same arguments (steerlens' API is a superset of steering-vectors'):

    lib.train_steering_vector(model, tokenizer, PAIRS, layers=[0, 1], layer_type=X, read_token_index=-1)
    with vec.apply(model, multiplier=1.0): model(HELD_OUT ids).logits

(steering-vectors alone is given a ``layer_config`` where transformers 4 names the module
differently: ``TRANSFORMERS4_LAYER_CONFIG``.)

Weights: ``build_weights`` (run once, under transformers 5) builds each tiny model from
``SPECS`` (config values that mean the same under transformers 4 and 5), moves every weight
well away from its init value and saves the state dict (safetensors). Each side then rebuilds
the model from its own config class with the same values and loads that state dict strictly,
after renaming the few keys transformers 4 spells differently (GPT-NeoX's ``embed_out``;
the per-expert MoE weights that transformers 5 stacks into ``experts.gate_up_proj`` /
``experts.down_proj``; Mixtral's ``block_sparse_moe``).

    python _layer_types_worker.py --lib steering_vectors --weights DIR --out FILE.npz [--arch a,b] [--layer-type x,y]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAYER_TYPES = ("decoder_block", "self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
LAYERS = [0, 1]
SEED = 0

_SPECIAL = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
_SIZES = dict(
    num_hidden_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=64, max_position_embeddings=64, **_SPECIAL
)
# rope_theta explicitly: some defaults differ (Cohere, OLMo 3: 10000 in transformers 4, 500000 in 5).
_GATED = dict(_SIZES, intermediate_size=64, rope_theta=10000.0)

# arch -> (config class name in transformers 4 and 5, keyword values that mean the same in both).
# Modelled on tests/tiny_hf.py, minus values only one version understands (e.g. a llama3
# ``rope_parameters`` dict): rope_theta / partial_rotary_factor are accepted by both.
SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", dict(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=64, **_SPECIAL)),
    "gpt_neox": ("GPTNeoXConfig", dict(_GATED)),
    "gpt_neox_sequential": ("GPTNeoXConfig", dict(_GATED, use_parallel_residual=False)),
    "llama": ("LlamaConfig", dict(_GATED, num_key_value_heads=2)),
    "mistral": ("MistralConfig", dict(_GATED, num_key_value_heads=2, sliding_window=4)),
    "qwen2": ("Qwen2Config", dict(_GATED, num_key_value_heads=2)),
    "qwen3": ("Qwen3Config", dict(_GATED, num_key_value_heads=2, head_dim=8)),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        dict(
            _GATED,
            num_key_value_heads=2,
            head_dim=8,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            decoder_sparse_step=1,
        ),
    ),
    "gemma": ("GemmaConfig", dict(_GATED, num_key_value_heads=1, head_dim=8)),
    "gemma2": (
        "Gemma2Config",
        dict(_GATED, num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=16),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        dict(_GATED, num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=16),
    ),
    "phi": ("PhiConfig", dict(_GATED, partial_rotary_factor=0.5)),
    "phi3": ("Phi3Config", dict(_GATED, num_key_value_heads=4)),
    "opt": ("OPTConfig", dict(_SIZES, ffn_dim=64, word_embed_proj_dim=32)),
    "olmo": ("OlmoConfig", dict(_GATED)),
    "olmo2": ("Olmo2Config", dict(_GATED)),
    "olmo3": ("Olmo3Config", dict(_GATED, sliding_window=4)),
    "olmoe": ("OlmoeConfig", dict(_GATED, num_experts=4, num_experts_per_tok=2)),
    "mixtral": ("MixtralConfig", dict(_GATED, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)),
    "gptj": (
        "GPTJConfig",
        dict(n_layer=2, n_embd=32, n_head=4, rotary_dim=4, vocab_size=64, n_positions=64, **_SPECIAL),
    ),
    "gpt_neo": (
        "GPTNeoConfig",
        dict(
            num_layers=2,
            hidden_size=32,
            num_heads=4,
            vocab_size=64,
            max_position_embeddings=64,
            window_size=4,
            attention_types=[[["global", "local"], 1]],
            **_SPECIAL,
        ),
    ),
    "gpt_bigcode": (
        "GPTBigCodeConfig",
        dict(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=64, **_SPECIAL),
    ),
    "bloom": ("BloomConfig", dict(n_layer=2, hidden_size=32, n_head=4, vocab_size=64, **_SPECIAL)),
    "falcon": (
        "FalconConfig",
        dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            vocab_size=64,
            new_decoder_architecture=False,
            **_SPECIAL,
        ),
    ),
    "stablelm": ("StableLmConfig", dict(_GATED, num_key_value_heads=4)),
    "granite": (
        "GraniteConfig",
        dict(_GATED, num_key_value_heads=2, residual_multiplier=0.5, embedding_multiplier=2.0, logits_scaling=2.0),
    ),
    "starcoder2": ("Starcoder2Config", dict(_GATED, num_key_value_heads=2)),
    "cohere": ("CohereConfig", dict(_GATED, num_key_value_heads=2)),
    "smollm3": ("SmolLM3Config", dict(_GATED, num_key_value_heads=2)),
    "apertus": ("ApertusConfig", dict(_GATED, num_key_value_heads=2)),
}

# Prompts in the tokenizer's words, each starting with its BOS (as text), of 2 to 11 tokens (the
# longer ones, and the held-out prompt's 15, exceed the sliding windows of 4). batch_size=1 on
# both sides: no padding anywhere.
PAIRS = [
    ("<bos> the happy cat", "<bos> the sad cat"),
    ("<bos> a big red dog ran fast", "<bos> a small blue dog ran slow and sad"),
    ("<bos> happy", "<bos> the dog sat on a mat or ran"),
    ("<bos> the cat and the dog sat on the mat happy", "<bos> the cat sat sad"),
]
# Where transformers 4 names a module differently, steering-vectors' guess finds nothing; there it
# is given the template of the very module steerlens' guess finds under transformers 5.
# (Only on the transformers 4 side; steerlens is never given a layer_config.)
TRANSFORMERS4_LAYER_CONFIG = {
    ("mixtral", "mlp"): "model.layers.{num}.block_sparse_moe",  # transformers 5: model.layers.{num}.mlp
}
HELD_OUT = "<bos> the big dog ran fast and the small cat sat on a red mat"


def make_tokenizer() -> Any:
    """tests/tiny_hf.py's WordLevel tokenizer (no pad token, no BOS/EOS post-processor)."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "the a cat dog sat on mat ran fast slow big small happy sad red blue and or".split()
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    vocab.update({word: index + 4 for index, word in enumerate(words)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )


def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def build_model(arch: str, eager_experts: bool = False) -> Any:
    """The tiny model of ``arch`` from this transformers' own config class (eager attention, float32).

    ``eager_experts``: transformers 5's MoE layers run their experts one by one, as transformers 4
    does, instead of with ``torch.nn.functional.grouped_mm`` (which has no float64 kernel).
    """
    import transformers as tf

    cls_name, kwargs = SPECS[arch]
    config = getattr(tf, cls_name)(**kwargs)
    rope = getattr(config, "rope_parameters", None)
    if "rope_theta" in kwargs and isinstance(rope, dict):
        # transformers 5 keeps the theta inside rope_parameters (one dict per attention type for some
        # models) and does not always let a legacy rope_theta through: Apertus keeps its default
        # 12e6, OLMo 3's sliding layers keep 500000. transformers 4 uses rope_theta for all of them
        # (Gemma 3's local layers use rope_local_base_freq, 10000 in both).
        for sub in rope.values() if all(isinstance(v, dict) for v in rope.values()) else [rope]:
            sub["rope_theta"] = kwargs["rope_theta"]
    extra = {}
    if eager_experts and transformers_major() >= 5 and any("expert" in k for k in config.to_dict()):
        extra["experts_implementation"] = "eager"
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager", **extra)
    return model.float().eval()


def build_weights(archs: list[str], folder: Path) -> dict[str, str]:
    """Save each arch's randomised state dict (transformers 5 key names) to ``folder/ARCH.safetensors``.

    Returns arch -> error for the archs that could not be built here.
    """
    from safetensors.torch import save_file

    errors = {}
    for arch in archs:
        try:
            torch.manual_seed(SEED)
            model = build_model(arch)
            with torch.no_grad():
                for name, param in model.named_parameters():
                    is_gain = param.ndim == 1 and name.endswith("weight") and ("norm" in name or "ln" in name)
                    param.copy_(torch.randn_like(param) * 0.2 + (1.0 if is_gain else 0.0))
            state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(folder / f"{arch}.safetensors"))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            errors[arch] = _short(exc)
    return errors


def to_transformers4(arch: str, state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename / unstack the keys transformers 4 spells differently (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "lm_head.weight" and "embed_out.weight" in target_keys:  # GPT-NeoX
            out["embed_out.weight"] = value
            continue
        moe = "block_sparse_moe" if any(".block_sparse_moe." in k for k in target_keys) else None
        if moe:
            key = key.replace(".mlp.", f".{moe}.")
        if key.endswith("experts.gate_up_proj"):  # [E, 2I, H] = per expert cat(gate, up)
            prefix = key[: -len("gate_up_proj")]
            half = value.shape[1] // 2
            for e in range(value.shape[0]):
                gate, up = ("w1", "w3") if f"{prefix}{e}.w1.weight" in target_keys else ("gate_proj", "up_proj")
                out[f"{prefix}{e}.{gate}.weight"] = value[e, :half].clone()
                out[f"{prefix}{e}.{up}.weight"] = value[e, half:].clone()
        elif key.endswith("experts.down_proj"):  # [E, H, I]
            prefix = key[: -len("down_proj")]
            for e in range(value.shape[0]):
                down = "w2" if f"{prefix}{e}.w2.weight" in target_keys else "down_proj"
                out[f"{prefix}{e}.{down}.weight"] = value[e].clone()
        else:
            out[key] = value
    return out


def load_model(arch: str, folder: Path, dtype: str = "float32") -> Any:
    """``build_model(arch)`` with the saved (float32) weights loaded strictly, then cast to ``dtype``."""
    from safetensors.torch import load_file

    model = build_model(arch, eager_experts=dtype != "float32")
    state = load_file(str(folder / f"{arch}.safetensors"))
    if transformers_major() < 5:
        state = to_transformers4(arch, state, set(model.state_dict()))
    model.load_state_dict(state, strict=True)
    return model.to(getattr(torch, dtype)).eval()


def _short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _logits(model: Any, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=ids).logits[0].double().numpy()


def run_side(
    lib_name: str,
    folder: Path,
    archs: list[str],
    layer_types: list[str],
    tracebacks: bool = False,
    dtype: str = "float32",
) -> tuple[dict, dict]:
    """Train and steer every (arch, layer type); returns (arrays, info) keyed ``arch|...``."""
    lib = importlib.import_module(lib_name)
    import transformers

    transformers.logging.set_verbosity_error()
    arrays: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {
        "lib": f"{lib_name} {getattr(lib, '__version__', '?')}",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    tok = make_tokenizer()
    held_out = torch.tensor([tok(HELD_OUT)["input_ids"]])
    info["ids"] = {"pairs": [[tok(t)["input_ids"] for t in pair] for pair in PAIRS], "held_out": held_out[0].tolist()}
    for arch in archs:
        start = time.perf_counter()
        try:
            model = load_model(arch, folder, dtype)
            plain = _logits(model, held_out)
        except Exception as exc:  # noqa: BLE001
            info[f"{arch}|load_error"] = _short(exc)
            if tracebacks:
                traceback.print_exc()
            continue
        arrays[f"{arch}|plain"] = plain
        for layer_type in layer_types:
            cell = f"{arch}|{layer_type}"
            layer_config = None
            if transformers_major() < 5 and (arch, layer_type) in TRANSFORMERS4_LAYER_CONFIG:
                layer_config = {layer_type: TRANSFORMERS4_LAYER_CONFIG[arch, layer_type]}
                info[f"{cell}|layer_config"] = layer_config[layer_type]
            try:
                vec = lib.train_steering_vector(
                    model,
                    tok,
                    PAIRS,
                    layers=list(LAYERS),
                    layer_type=layer_type,
                    layer_config=layer_config,
                    read_token_index=-1,
                )
                acts = {int(k): v for k, v in vec.layer_activations.items()}
                if sorted(acts) != LAYERS:
                    raise RuntimeError(f"vector has layers {sorted(acts)}, expected {LAYERS}")
                arrays[f"{cell}|vec"] = torch.stack([acts[n].detach().double().cpu() for n in LAYERS]).numpy()
            except Exception as exc:  # noqa: BLE001
                info[f"{cell}|train_error"] = _short(exc)
                if tracebacks:
                    traceback.print_exc()
                continue
            try:
                with vec.apply(model, layer_config=layer_config, multiplier=1.0):
                    arrays[f"{cell}|steered"] = _logits(model, held_out)
                after = _logits(model, held_out)
                if not np.array_equal(after, plain):  # hooks left behind, or weights changed
                    info[f"{cell}|leak"] = float(np.abs(after - plain).max())
            except Exception as exc:  # noqa: BLE001
                info[f"{cell}|apply_error"] = _short(exc)
                if tracebacks:
                    traceback.print_exc()
        info[f"{arch}|seconds"] = time.perf_counter() - start
    return arrays, info


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", required=True, choices=["steerlens", "steering_vectors"])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default=",".join(SPECS))
    parser.add_argument("--layer-type", default=",".join(LAYER_TYPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--traceback", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    arrays, info = run_side(
        args.lib, args.weights, args.arch.split(","), args.layer_type.split(","), args.traceback, args.dtype
    )
    np.savez(args.out, **arrays)
    args.out.with_suffix(".json").write_text(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
