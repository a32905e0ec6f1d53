"""Shared test helpers, HookedTransformer side: tiny seeded models, an in-memory BPE tokenizer,
contrast pairs, seeded random vectors and vector-file surgery (no downloads).

Import them as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``). The
Hugging Face side (tiny random HF models per architecture) lives in ``tiny_hf``; fixtures
built from these helpers live in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from steerlens import SteeringVector

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (holds ``steerlens/``, ``scripts/``, ``README.md``)."""

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
"""What ``make_tokenizer`` trains its BPE merges on."""

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
"""(positive, negative) pairs of many different lengths, in ``CORPUS``'s words."""


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
    **cfg_overrides: Any,
) -> Any:
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


def random_vector(
    model_or_d_model: Any,
    layers: Iterable[int] = (1,),
    layer_type: str = "resid_post",
    seed: int = 0,
    scale: float = 3.0,
    metadata: dict[str, Any] | None = None,
) -> SteeringVector:
    """``scale * randn(d_model)`` for each layer, in order, from one generator seeded with ``seed``.

    ``model_or_d_model`` is a HookedTransformer (its ``cfg.d_model`` is used) or a plain
    ``d_model``. ``scale=1`` gives the raw ``randn`` draws.
    """
    d_model = model_or_d_model if isinstance(model_or_d_model, int) else model_or_d_model.cfg.d_model
    gen = torch.Generator().manual_seed(seed)
    vectors = {layer: scale * torch.randn(d_model, generator=gen) for layer in layers}
    return SteeringVector(vectors, layer_type, metadata=dict(metadata or {}))


def subprocess_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, with the repository root first on ``PYTHONPATH``."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_gloo_ranks(code: str, arg: Any, world_size: int = 2) -> None:
    """Run ``python -c code arg`` as ``world_size`` torch.distributed ranks on this host (one thread each).

    Each rank finds its rank, the world size and a free rendezvous port in its environment; every
    rank must exit 0 (its stderr's tail is the failure message).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size)}
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(arg)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]


# -- vector files (safetensors: 8-byte little-endian header length, JSON header, tensor bytes) --


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(JSON header, tensor bytes) of a safetensors file's bytes."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_safetensors(header: dict[str, Any], body: bytes, align: bool = False) -> bytes:
    """The bytes of a safetensors file; ``align`` pads the header with spaces to a multiple of 8."""
    encoded = json.dumps(header).encode()
    if align:
        encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + body


def steerlens_header(data: bytes) -> dict[str, Any]:
    """The steerlens JSON header kept in a vector file's safetensors metadata."""
    return json.loads(split_safetensors(data)[0]["__metadata__"]["steerlens"])


CHAT_TEMPLATE = (
    "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}"
)
"""A ChatML-like template for ``make_tokenizer``'s tokenizer: its BOS text opens every turn."""


def make_chat_model(n_layers: int = 3, seed: int = 3) -> Any:
    """``make_model`` whose (private copy of the) tokenizer has :data:`CHAT_TEMPLATE`."""
    import copy

    model = make_model(n_layers=n_layers, seed=seed)
    model.tokenizer = copy.deepcopy(model.tokenizer)
    model.tokenizer.chat_template = CHAT_TEMPLATE
    return model


def steered_logits_by_hand(
    model: Any, vec: SteeringVector, layer: int, multiplier: float, ids: list[int], start: int = 0
) -> torch.Tensor:
    """``[pos, d_vocab]`` logits with ``multiplier * vec[layer]`` added at positions ``>= start`` of
    ``blocks.{layer}.hook_resid_post``, by a hand-written TransformerLens hook (the reference)."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act = act.clone()
        act[:, start:] += multiplier * vec.layer_activations[layer].to(act.dtype)
        return act

    with torch.no_grad():
        return model.run_with_hooks(torch.tensor([ids]), fwd_hooks=[(f"blocks.{layer}.hook_resid_post", hook)])[0]


# -- a SentencePiece-style (Metaspace) tokenizer and a tiny Llama that uses it --------------------------

WORDS = (
    "Answer Choices Do you like cats the film was good bad I think a lot Not at all Yes No Pick one "
    "great awful dogs cannot help with that sure love hate it is movie food"
).split()
LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>> {{ m['content'] }} <</SYS>> "
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)
"""A Llama-2-like chat template: it writes the BOS text itself."""
SP = "\u2581"  # SentencePiece's word-boundary mark


def metaspace_tokenizer(post: str | None = "bos") -> tf.PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer: Unigram pieces with a Metaspace pre-tokenizer and decoder.

    Every character exists alone and after ``▁``; whole words only after ``▁``, so
    ``"Answer: (A"`` is ``▁Answer : ▁( A`` while ``"A"`` alone is ``▁A`` (as on Llama-2).
    ``post``: ``"bos"`` adds ``<s>`` (Llama-2), ``"bos_eos"`` adds ``<s> ... </s>``, None adds nothing.
    """
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = [(piece, 0.0) for piece in specials]
    seen = set(specials)

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))

    for word in WORDS:
        add(SP + word, -2.0)
    for char in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?()[]/<>'\"-":
        add(char, -5.0)
        add(SP + char, -6.0)
    add(SP, -8.0)
    add("\n", -5.0)
    model = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    model.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SP, prepend_scheme="first", split=False)
    model.decoder = decoders.Metaspace(replacement=SP, prepend_scheme="first", split=False)
    template = {"bos": "<s> $A", "bos_eos": "<s> $A </s>"}.get(post or "")
    if template:
        model.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<s>", 1), ("</s>", 2)])
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tok.chat_template = LLAMA2_TEMPLATE
    return tok


def llama_model(tokenizer, n_layers: int = 3, seed: int = 0) -> tf.PreTrainedModel:
    """A tiny random Llama whose vocabulary is the tokenizer's."""
    torch.manual_seed(seed)
    config = tf.LlamaConfig(
        num_hidden_layers=n_layers,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    model = tf.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model


def llama_prompt(tokenizer, user: str) -> str:
    """``apply_chat_template(..., tokenize=False)``: the string starts with ``<s>``."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )


def hf_logprobs(model, ids: list[int], hooks: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Log-probs at every position of one unpadded sequence; ``hooks`` adds vectors to decoder layer outputs."""
    handles = []
    for layer, vec in (hooks or {}).items():

        def add(module, args, out, vec=vec):
            return (out[0] + vec, *out[1:]) if isinstance(out, tuple) else out + vec

        handles.append(model.model.layers[layer].register_forward_hook(add))
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    return torch.log_softmax(logits.float(), -1)


def hooked_logprobs(model, ids: list[int], hooks: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Log-probs at every position of one unpadded sequence on a HookedTransformer (vectors added at resid_post)."""
    fwd = [
        (f"blocks.{layer}.hook_resid_post", lambda act, hook, v=vec: act + v) for layer, vec in (hooks or {}).items()
    ]
    with torch.no_grad():
        logits = model.run_with_hooks(torch.tensor([ids]), fwd_hooks=fwd)[0]
    return torch.log_softmax(logits.float(), -1)


def hf_site_activations(hf_model, sites):
    """Plain torch hooks (no steerlens code) recording the tensor at each ``(layer, layer_type)``
    of ``hf_model``, at the module ``hf_layout`` names: the independent side of conversion checks."""
    import contextlib

    from steerlens.backends.hf_layout import hf_layout

    @contextlib.contextmanager
    def recording():
        layout, seen, handles = hf_layout(hf_model), {}, []
        for layer, layer_type in sites:
            site = layout.site(layer, layer_type)
            module = hf_model.get_submodule(site.path)
            if site.io == "input":

                def before(module, args, kwargs, key=(layer, layer_type)):
                    seen[key] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

                handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            else:

                def after(module, args, output, key=(layer, layer_type)):
                    seen[key] = (output[0] if isinstance(output, (tuple, list)) else output).detach().clone()

                handles.append(module.register_forward_hook(after))
        try:
            yield seen
        finally:
            for handle in handles:
                handle.remove()

    return recording()


def spy_on_replace(monkeypatch) -> list[tuple[str, str]]:
    """Every os.replace(src, dst) made from now on, still performed."""
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        calls.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def assert_atomic(calls: list[tuple[str, str]], target) -> None:
    """``target`` was moved into place once, from a unique temporary file in its own folder (not target.tmp)."""
    sources = [src for src, dst in calls if dst == os.fspath(target)]
    assert len(sources) == 1 and os.path.dirname(sources[0]) == os.path.dirname(os.fspath(target)), calls
    assert sources[0] != os.fspath(target) + ".tmp" and not os.path.exists(sources[0])
