"""Random models and tokenizers for benchmarks (no downloads)."""

from __future__ import annotations

import random
import tempfile
import warnings

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

WORDS = (
    "the a film food trip was is great awful lovely terrible kind sad good bad very quite "
    "really hotel pasta movie story day night town city walk long short happy angry calm"
).split()


def random_sentences(n: int, seed: int = 0, min_words: int = 6, max_words: int = 24) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def bench_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on random sentences, saved to a temp folder."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(random_sentences(2000), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    folder = tempfile.mkdtemp(prefix="steerlens-bench-tok-")
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def random_model(n_layers: int = 12, d_model: int = 768, d_vocab: int = 50257, n_ctx: int = 256, seed: int = 0):
    """A GPT-2-shaped random HookedTransformer (default: GPT-2 small sizes)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=64,
        n_heads=d_model // 64,
        d_mlp=4 * d_model,
        n_ctx=n_ctx,
        d_vocab=d_vocab,
        act_fn="gelu_new",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=bench_tokenizer())
    return model.eval()
