"""Shared fixtures: tiny seeded HookedTransformers with an in-memory tokenizer (no downloads)."""

from __future__ import annotations

import tempfile
import warnings

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

CORPUS = [
    "I love this film , it was wonderful and great",
    "I hate this film , it was terrible and awful",
    "The food was delicious and the service was kind",
    "The trip was long , the hotel was dirty and sad",
    "What a lovely day for a walk in the park",
    "Nothing ever works out , everything is broken",
    "She said that the movie was fine but too long",
    "We ate pasta and pizza in a small town",
]


def make_tokenizer(vocab_size: int = 120) -> PreTrainedTokenizerFast:
    """A small BPE tokenizer trained in memory; BOS/EOS/PAD are one special token."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    # TransformerLens re-loads tokenizers by name_or_path, so give it a local folder.
    folder = tempfile.mkdtemp(prefix="steerlens-tok-")
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def make_model(
    n_layers: int = 4,
    d_model: int = 32,
    seed: int = 0,
    padding_side: str = "right",
    positional_embedding_type: str = "standard",
    dtype: torch.dtype = torch.float32,
    **cfg_overrides,
):
    """A tiny random HookedTransformer with a tokenizer attached."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = make_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=8,
        n_heads=d_model // 8,
        d_mlp=4 * d_model,
        n_ctx=64,
        d_vocab=len(tokenizer),
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type=positional_embedding_type,
        seed=seed,
        device="cpu",
        dtype=dtype,
        **cfg_overrides,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side=padding_side)
    model.eval()
    return model


@pytest.fixture(scope="session")
def model():
    return make_model()


@pytest.fixture(scope="session")
def rotary_model():
    return make_model(positional_embedding_type="rotary", seed=1, rotary_dim=8)


PAIRS = [
    ("I love this film", "I hate this film"),
    ("The food was delicious and great", "The food was terrible"),
    ("What a lovely day", "What an awful and sad day for a walk"),
    ("She said it was wonderful", "She said it was awful"),
    ("We ate pasta in a lovely small town", "We ate pasta in a dirty town"),
    ("kind", "The hotel was dirty and the trip was long"),
    ("great great great", "sad"),
    ("The movie was fine", "The movie was broken and nothing works"),
    ("a walk in the park", "everything is broken"),
    ("I love it", "I hate it"),
    ("The service was kind and the day was lovely", "The service was terrible"),
]


@pytest.fixture
def pairs():
    return list(PAIRS)
