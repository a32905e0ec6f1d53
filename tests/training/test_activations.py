"""Reading pairs whose prompts share a start: the start runs once (the model's KV cache), yet
every activation equals the whole prompt's own unpadded forward (run_with_cache, plain torch hooks)."""

from __future__ import annotations

import pytest
import torch
from helpers import PAIRS, hf_site_activations
from tiny_hf import CONFIGS, make_hf_model
from tiny_hf import make_tokenizer as word_tokenizer

from steerlens import SteeringVectorTrainingSample, extract_activations, pca_aggregator, train_steering_vector
from steerlens.backends import backend_for
from steerlens.training.activations import MIN_SHARED_PREFIX, shared_prefix_length

QUESTION = "We ate pasta in a small town . "
# Answers of different lengths, so the continuations of one batch are right-padded.
SHARED = [
    (QUESTION + "I love it", QUESTION + "I hate this film"),
    (QUESTION + "What a lovely day", QUESTION + "sad"),
    ("The food was delicious and great", "The food was delicious and sad"),
    (QUESTION + "kind", QUESTION + "The hotel was dirty"),
]
MIXED = SHARED[:2] + PAIRS[:3] + SHARED[2:]


class TokenCounter:
    """Counts the token positions a model embeds (hook on its embedding)."""

    def __init__(self, embedding: torch.nn.Module):
        self.count = 0
        self.handle = embedding.register_forward_hook(self)

    def __call__(self, module, args, output) -> None:
        self.count += output.shape[0] * output.shape[1]


def whole_reads(model, prompts, layer, layer_type, index=-1):
    """The activation at token ``index`` of each prompt, one forward per whole prompt."""
    rows = []
    for prompt in prompts:
        _, cache = model.run_with_cache(model.to_tokens(prompt))
        rows.append(cache[f"blocks.{layer}.hook_{layer_type}"][0, index])
    return torch.stack(rows)


def test_shared_prefix_length_leaves_each_prompt_its_read_token():
    assert shared_prefix_length([1, 2, 3, 4], [1, 2, 9]) == 2
    assert shared_prefix_length([1, 2, 3], [1, 2, 3, 4]) == 2  # one prompt is the other's start
    assert shared_prefix_length([5, 2], [1, 2]) == 0


@pytest.mark.parametrize("layer_type", ["resid_pre", "resid_post", "attn_out", "mlp_out"])
@pytest.mark.parametrize("fixture", ["model", "rotary_model"])
def test_hooked_transformer_reads_equal_whole_prompts(request, fixture, layer_type):
    model = request.getfixturevalue(fixture)
    shares = [shared_prefix_length(model.to_tokens(p)[0].tolist(), model.to_tokens(n)[0].tolist()) for p, n in MIXED]
    assert sum(k >= MIN_SHARED_PREFIX for k in shares) >= len(SHARED) and min(shares) < MIN_SHARED_PREFIX
    counter = TokenCounter(model.embed)
    try:
        pos, neg = extract_activations(model, None, MIXED, layers=[1, 3], layer_type=layer_type, batch_size=2)
    finally:
        counter.handle.remove()
    whole = sum(model.to_tokens(p).shape[1] for pair in MIXED for p in pair)
    assert counter.count < whole - 20, (counter.count, whole)  # the shared starts ran once
    for layer in (1, 3):
        torch.testing.assert_close(
            torch.cat(pos[layer]), whole_reads(model, [p for p, _ in MIXED], layer, layer_type), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            torch.cat(neg[layer]), whole_reads(model, [n for _, n in MIXED], layer, layer_type), atol=1e-5, rtol=0
        )


def test_read_index_overrides_and_caller_order_with_shared_starts(model):
    samples = [
        SteeringVectorTrainingSample(p, n, read_positive_token_index=-2 if i % 2 else None)
        for i, (p, n) in enumerate(MIXED)
    ]
    vec = train_steering_vector(model, None, samples, layers=[2], aggregator=pca_aggregator(), batch_size=3)
    pos = torch.stack(
        [whole_reads(model, [p], 2, "resid_post", -2 if i % 2 else -1)[0] for i, (p, _) in enumerate(MIXED)]
    )
    neg = whole_reads(model, [n for _, n in MIXED], 2, "resid_post")
    expected = pca_aggregator()(pos, neg)
    torch.testing.assert_close(vec.layer_activations[2], expected, atol=1e-5, rtol=0)


WORDS_Q = "the big red cat sat on the mat and the small blue dog ran fast or slow and the "
# Word-level prompts for the tiny HF models (longer than their sliding windows of 4 tokens).
HF_PAIRS = [
    (WORDS_Q + "cat", WORDS_Q + "dog sat on a mat"),
    (WORDS_Q + "happy red dog", WORDS_Q + "sad"),
    ("a cat", "the dog ran"),
    (WORDS_Q + "blue", WORDS_Q + "red cat"),
]


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_every_architecture_reads_equal_whole_prompts(arch):
    tok = word_tokenizer()
    hf = make_hf_model(arch)
    sites = [(0, "resid_post"), (1, "resid_pre"), (1, "resid_post")]
    counter = TokenCounter(hf.get_input_embeddings())
    try:
        got = {
            layer_type: extract_activations(hf, tok, HF_PAIRS, layers=[0, 1], layer_type=layer_type, batch_size=2)
            for layer_type in ("resid_pre", "resid_post")
        }
    finally:
        counter.handle.remove()
    ids = [[tok(text).input_ids for text in pair] for pair in HF_PAIRS]
    if backend_for(hf, tok).can_continue:  # the shared starts ran once: fewer positions than the prompts hold
        assert counter.count < 2 * sum(len(i) for pair in ids for i in pair), counter.count
    else:  # a model whose forward takes no KV cache (OpenAI GPT) reads every prompt whole
        assert arch == "openai-gpt"
    for side in (0, 1):
        for layer, layer_type in sites:
            expected = []
            for pair in ids:
                with hf_site_activations(hf, sites) as seen, torch.no_grad():
                    hf(torch.tensor([pair[side]]))
                expected.append(seen[(layer, layer_type)][0, -1])
            torch.testing.assert_close(
                torch.cat(got[layer_type][side][layer]), torch.stack(expected), atol=1e-5, rtol=1e-4
            )
