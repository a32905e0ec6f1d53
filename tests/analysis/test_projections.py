"""Token projections: each token's activation on the unit vector, checked against the model's own activations."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from tiny_hf import make_hf_model, make_tokenizer  # noqa: E402

from steerlens import SteeringVector, token_projections, train_steering_vector  # noqa: E402
from steerlens.analysis import projections_html
from steerlens.analysis.projections import projection_colour  # noqa: E402
from steerlens.errors import InvalidArgumentError, LayerError, ModelMismatchError  # noqa: E402
from steerlens.evaluation import plot_token_projections  # noqa: E402
from steerlens.toy import concept_words, neutral_prompts, sentiment_pairs  # noqa: E402


@pytest.fixture(scope="module")
def sentiment(toy):
    return train_steering_vector(toy, None, sentiment_pairs("train"), batch_size=32)


def test_projection_is_the_activation_dotted_with_the_unit_vector(toy, sentiment):
    prompts = ["The food was wonderful.", "Honestly, the trip was awful and long."]
    df = token_projections(toy, sentiment, prompts, layers=[1, 3])
    assert list(df.columns) == [
        "prompt_index",
        "prompt",
        "position",
        "token_id",
        "token",
        "is_bos",
        "layer",
        "projection",
        "cosine",
    ]
    for index, prompt in enumerate(prompts):
        _, cache = toy.run_with_cache(prompt)
        tokens = toy.to_str_tokens(prompt)
        for layer in (1, 3):
            rows = df[(df.prompt_index == index) & (df.layer == layer)]
            act = cache[f"blocks.{layer}.hook_resid_post"][0]
            v = sentiment.layer_activations[layer]
            expected = act @ (v / v.norm())
            assert rows.token.tolist() == tokens
            assert rows.position.tolist() == list(range(len(tokens)))
            assert rows.is_bos.tolist() == [True] + [False] * (len(tokens) - 1)
            np.testing.assert_allclose(rows.projection, expected.numpy(), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(rows.cosine, (expected / act.norm(dim=-1)).numpy(), rtol=1e-4, atol=1e-5)


def test_positive_words_project_above_negative_words_on_held_out_text(toy, sentiment):
    """Held-out stems + each measuring word: the concept shows at the word and right after it."""
    words = concept_words("sentiment")
    stems = neutral_prompts("sentiment", "test")[:4]
    texts, labels = [], []
    for stem in stems:
        for group in ("positive", "negative"):
            for word in words[group]:
                texts.append(f"{stem}{word}.")
                labels.append(group)
    df = token_projections(toy, sentiment, texts)
    labels = np.array(labels)
    for layer in sentiment.layers:
        rows = df[df.layer == layer].groupby("prompt_index")
        at_word = rows.projection.nth(-2).to_numpy()  # the word (each is one token), then "."
        after = rows.projection.nth(-1).to_numpy()
        assert at_word[labels == "positive"].mean() > at_word[labels == "negative"].mean(), layer
        # Right after the word every positive text projects above every negative one.
        assert after[labels == "positive"].min() > after[labels == "negative"].max(), layer
    # The word itself is on the axis most clearly at layer 0 (measured: AUC 0.77 there).
    rows = df[df.layer == 0].groupby("prompt_index").projection.nth(-2).to_numpy()
    pos, neg = rows[labels == "positive"], rows[labels == "negative"]
    assert (pos[:, None] > neg[None, :]).mean() > 0.7


def test_html_colours_tokens_and_escapes_them(toy, sentiment):
    df = token_projections(toy, sentiment, ["It was great", "It was <b>bad</b>"], layers=[2])
    page = projections_html(df)
    assert page.count('<div style="font-family:monospace') == 2
    assert "&lt;" in page and "<b>" not in page  # token text is escaped
    assert "endoftext" not in page and "endoftext" in projections_html(df, show_bos=True)
    top = df[~df.is_bos].sort_values("projection").iloc[-1]
    assert f'title="{top.projection:.3f}" style="background:rgb(255,0,0)' in page  # the largest is full red
    assert projection_colour(-1.0, 2.0) == "rgb(128,128,255)" and projection_colour(0.5, 1.0) == "rgb(255,128,128)"
    with pytest.raises(InvalidArgumentError, match="layer"):
        projections_html(token_projections(toy, sentiment, ["It was great"], layers=[1, 2]))
    with pytest.raises(InvalidArgumentError, match="no column"):
        projections_html(df.drop(columns="projection"))


def test_figure_writes_every_token(toy, sentiment):
    df = token_projections(toy, sentiment, ["It was great", "The food was awful and the staff rude"], layers=[2])
    fig = plot_token_projections(df)
    texts = [t.get_text() for t in fig.axes[0].texts]
    shown = df[~df.is_bos].token.tolist()
    assert texts[:-1] == shown and "layer 2" in texts[-1]


def test_vector_must_fit_the_model(toy, sentiment):
    with pytest.raises(LayerError, match="no direction at layers"):
        token_projections(toy, sentiment.select_layers([1]), ["It was"], layers=[2])
    with pytest.raises(ModelMismatchError, match="d_model"):
        token_projections(toy, SteeringVector({1: torch.ones(5)}), ["It was"])
    df = token_projections(toy, SteeringVector({-1: sentiment.layer_activations[3]}, "resid_post"), ["It was"])
    assert df.layer.unique().tolist() == [3]  # negative keys count from the end


def test_hugging_face_model_matches_its_hidden_states():
    model, tokenizer = make_hf_model("llama"), make_tokenizer()
    gen = torch.Generator().manual_seed(0)
    vec = SteeringVector({0: torch.randn(32, generator=gen), 1: torch.randn(32, generator=gen)}, "resid_post")
    prompts = ["the cat sat on the mat", "a big dog ran"]
    df = token_projections(model, vec, prompts, layers=[0], tokenizer=tokenizer)
    for index, prompt in enumerate(prompts):
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states[1][0]  # output of layer 0
        v = vec.layer_activations[0]
        rows = df[df.prompt_index == index]
        assert rows.token_id.tolist() == ids[0].tolist()
        assert rows.token.tolist() == prompt.split()
        np.testing.assert_allclose(rows.projection, (hidden @ (v / v.norm())).numpy(), rtol=1e-4, atol=1e-5)
