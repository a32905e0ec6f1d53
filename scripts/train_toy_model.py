"""Train steerlens' bundled toy model and write it to ``steerlens/toy/data/``.

Generates the procedural review corpus of :mod:`steerlens.toy.corpus`, trains a
byte-level BPE tokenizer on it, then a small GPT-style ``HookedTransformer``, and
saves fp16 safetensors weights, the tokenizer and the config. Seeded: the same
torch version and thread count give the same files. About 7 minutes on one CPU core (2,000 steps of 32 x 64 tokens).

Usage:
    python scripts/train_toy_model.py [--steps 2000] [--threads 1] [--out steerlens/toy/data]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from steerlens.toy.corpus import iter_documents

BOS = "<|endoftext|>"
PAD = "<|pad|>"
ARCH = dict(
    n_layers=4,
    d_model=128,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    n_ctx=64,
    act_fn="gelu",
    normalization_type="LN",
    positional_embedding_type="standard",
)


def train_tokenizer(docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style: words carry their leading space) with BOS/EOS and pad."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=PAD)


def token_stream(tokenizer: PreTrainedTokenizerFast, docs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """All documents as one id stream, each preceded by BOS, and the offsets of those BOS."""
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    starts: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False):
        starts.append(len(ids))
        ids.append(bos)
        ids.extend(enc.ids)
    return torch.tensor(ids), torch.tensor(starts)


def make_model(d_vocab: int, seed: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**ARCH, d_vocab=d_vocab, seed=seed, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(cfg)


def train(model, stream: torch.Tensor, starts: torch.Tensor, steps: int, batch: int, lr: float, seed: int) -> None:
    """AdamW with warmup and cosine decay; every sequence starts at a document's BOS."""
    n_ctx = model.cfg.n_ctx
    starts = starts[starts + n_ctx <= len(stream)]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps)))
    )
    offsets = torch.arange(n_ctx)
    model.train()
    t0 = time.time()
    for step in range(steps):
        first = starts[torch.randint(len(starts), (batch,), generator=gen)]
        tokens = stream[first[:, None] + offsets]
        loss = model(tokens, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - t0:6.0f}s", flush=True)
    model.eval()


def save(model, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Parameters (fp16 safetensors), tokenizer files and the config fields load_toy_model needs."""
    out.mkdir(parents=True, exist_ok=True)
    params = {name: p.detach().to(torch.float16).contiguous() for name, p in model.named_parameters()}
    save_file(params, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    config = dict(ARCH, d_vocab=model.cfg.d_vocab, model_name="steerlens-toy")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "steerlens/toy/data")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--docs", type=int, default=60_000)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (results are bit-identical only for the same count)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    t0 = time.time()
    docs = list(itertools.islice(iter_documents(args.seed), args.docs))
    tokenizer = train_tokenizer(docs, args.vocab)
    stream, starts = token_stream(tokenizer, docs)
    print(f"corpus: {len(docs)} docs, {len(stream)} tokens, vocab {len(tokenizer)}  ({time.time() - t0:.0f}s)")

    model = make_model(len(tokenizer), args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, {torch.get_num_threads()} threads")
    train(model, stream, starts, args.steps, args.batch, args.lr, args.seed)
    save(model, tokenizer, args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {time.time() - t0:.0f}s total")


if __name__ == "__main__":
    main()
