"""steerlens' bundled toy model: a 4-layer GPT trained on procedural reviews.

The model (about 1M parameters, 2 MB) ships with the package and loads offline in
well under a second, so steering can be tried without any download. Its corpus
(:mod:`steerlens.toy.corpus`) varies two concepts independently, sentiment and
topic; :mod:`steerlens.datasets` has matching contrast pairs and evaluation prompts
and :mod:`steerlens.toy.metrics` measures them. ``scripts/train_toy_model.py``
regenerates the data files.

Example:
    >>> from steerlens.toy import load_toy_model
    >>> model = load_toy_model()
    >>> model.generate("Let me tell you about the", max_new_tokens=10)
"""

from __future__ import annotations

import json
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from steerlens import tl_speedup
from steerlens.errors import ModelLoadError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

MODEL_NAME = "steerlens-toy"
# Where a sentiment vector trained on ``sentiment_pairs("train")`` steers best, as
# measured by ``tests/toy/test_toy.py`` and the demo's sweep (positive share 0.49 ->
# 0.996 at +2, -> 0.004 at -2, topic moved by <= 0.03).
BEST_LAYER = 2
BEST_MULTIPLIER = 2.0
_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def load_toy_model(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None, fast_generation: bool = False
) -> HookedTransformer:
    """Load the bundled toy ``HookedTransformer`` with its tokenizer, in eval mode.

    ``device`` defaults to CPU and ``dtype`` to float32 (the weights are stored in
    float16). Needs no network: the tokenizer is read from the package folder.
    ``fast_generation=True`` applies :func:`steerlens.tl_speedup.fast_generation` (opt-in:
    the model then is a subclass of TransformerLens' class).

    Example:
        >>> model = load_toy_model()
        >>> model.cfg.model_name
        'steerlens-toy'
    """
    # as_file gives a real folder even if the package is zipped; TransformerLens
    # reloads the tokenizer from its folder (name_or_path) to turn on BOS.
    with resources.as_file(resources.files("steerlens.toy") / "data") as folder:
        return load_toy_model_from(folder, device, dtype, fast_generation)


def load_toy_model_from(
    folder: str | os.PathLike[str],
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    fast_generation: bool = False,
) -> HookedTransformer:
    """Load a toy model written by ``scripts/train_toy_model.py`` to ``folder`` (as :func:`load_toy_model`)."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(
            f"the toy model's data files are missing from {folder} ({', '.join(missing)}); "
            "reinstall steerlens or run scripts/train_toy_model.py."
        )
    fields = json.loads((folder / "config.json").read_text())
    fields.pop("model_name", None)
    cfg = HookedTransformerConfig(
        **fields,
        model_name=MODEL_NAME,
        device=str(device) if device is not None else "cpu",
        dtype=dtype or torch.float32,
        init_weights=False,
    )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    weights = load_file(str(folder / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side="right")
    result = model.load_state_dict({k: v.to(cfg.dtype) for k, v in weights.items()}, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    if result.unexpected_keys or set(result.missing_keys) - buffers:
        raise ModelLoadError(
            f"the toy model's weights do not fit its config (missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}); reinstall steerlens."
        )
    model.eval()
    return tl_speedup.fast_generation(model) if fast_generation else model


from steerlens.toy.datasets import concept_words, neutral_prompts, sentiment_pairs, topic_pairs  # noqa: E402
from steerlens.toy.metrics import concept_mass, next_token_probs, positive_mass, total_variation  # noqa: E402

__all__ = [
    "BEST_LAYER",
    "BEST_MULTIPLIER",
    "MODEL_NAME",
    "concept_mass",
    "concept_words",
    "load_toy_model",
    "load_toy_model_from",
    "neutral_prompts",
    "next_token_probs",
    "positive_mass",
    "sentiment_pairs",
    "topic_pairs",
    "total_variation",
]
