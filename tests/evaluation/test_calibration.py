"""Calibration and strength in residual-norm units, re-measured with plain vec.apply + forward passes."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from tiny_hf import make_hf_model, make_tokenizer  # noqa: E402

from steerlens import (  # noqa: E402
    calibrate,  # noqa: E402
    logit_diff,
    prob_share,
    residual_norms,
    train_steering_vector,  # noqa: E402
)
from steerlens.analysis import relative_vector  # noqa: E402
from steerlens.errors import InvalidArgumentError  # noqa: E402
from steerlens.toy import concept_words, neutral_prompts, next_token_probs, positive_mass, sentiment_pairs  # noqa: E402  # noqa: E402

PROMPTS = neutral_prompts("sentiment", "test")[:16]
REFERENCES = neutral_prompts("topic", "test")[:16]
BUDGET = 0.25  # nats of mean KL on topic prompts


@pytest.fixture(scope="module")
def sentiment(toy):
    return train_steering_vector(toy, None, sentiment_pairs("train"), batch_size=32)  # every layer


@pytest.fixture(scope="module")
def share():
    words = concept_words("sentiment")
    return prob_share(words["positive"], words["negative"])


def kl_by_hand(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, from probabilities."""
    p, q = p.double(), q.double()
    return (p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log())).sum(-1)


def remeasure(model, vector, layer, multiplier):
    """(positive share on PROMPTS, mean KL on REFERENCES) with the vector applied the plain way."""
    clean = next_token_probs(model, REFERENCES)
    with vector.select_layers(layer).apply(model, multiplier=multiplier):
        share = float(positive_mass(model, PROMPTS).mean())
        steered = next_token_probs(model, REFERENCES)
    return share, float(kl_by_hand(steered, clean).mean())


@pytest.fixture(scope="module")
def absolute(toy, sentiment, share):
    return calibrate(toy, sentiment, PROMPTS, share, REFERENCES, max_kl=BUDGET, batch_size=128)


def test_best_cell_reaches_the_share_within_the_budget_and_remeasures(toy, sentiment, absolute):
    best = absolute.best
    print(f"\nbest cell: {best}")
    assert best.effect >= 0.9 and best.kl <= BUDGET
    share, kl = remeasure(toy, sentiment, best.layer, best.absolute_multiplier)
    assert share == pytest.approx(best.effect, abs=1e-4)
    assert kl == pytest.approx(best.kl, abs=1e-4)
    assert absolute.baseline == pytest.approx(float(positive_mass(toy, PROMPTS).mean()), abs=1e-4)
    # It is the strongest admissible cell of the grid.
    table = absolute.table
    admissible = table[table.kl <= BUDGET]
    assert best.effect == pytest.approx(admissible.effect.max())
    assert (table.within_budget == (table.kl <= BUDGET)).all()


def test_every_grid_cell_is_what_plain_steering_gives(toy, sentiment, absolute):
    rows = absolute.table.sample(3, random_state=0)
    for _, row in rows.iterrows():
        share, kl = remeasure(toy, sentiment, int(row.layer), float(row.multiplier))
        assert share == pytest.approx(row.effect, abs=1e-4) and kl == pytest.approx(row.kl, abs=1e-4)


def test_pareto_front_is_the_non_dominated_cells(absolute):
    table = absolute.table
    for i, row in table.iterrows():
        others = table.drop(index=i)
        dominated = (
            (others.effect >= row.effect)
            & (others.kl <= row.kl)
            & ((others.effect > row.effect) | (others.kl < row.kl))
        ).any()
        assert row.pareto == (not dominated)
    assert absolute.table.pareto.any()


def test_plot_marks_front_budget_and_choice(absolute):
    fig = absolute.plot()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Pareto front" in labels and f"budget {BUDGET:g}" in labels
    assert any(label.startswith(f"chosen: layer {absolute.best.layer}") for label in labels)
    assert sum(label.startswith("layer ") for label in labels) == 4


def test_apply_steers_with_the_best_cell(toy, sentiment, absolute):
    with absolute.apply(toy):
        share = float(positive_mass(toy, PROMPTS).mean())
    assert share == pytest.approx(absolute.best.effect, abs=1e-4)


def test_relative_units_and_bisection_to_a_target(toy, sentiment, share):
    cal = calibrate(
        toy,
        sentiment,
        PROMPTS,
        share,
        REFERENCES,
        max_kl=BUDGET,
        relative=True,
        target=0.9,
        batch_size=128,
        bisect_steps=6,
    )
    best = cal.best
    print(f"\nrelative, target 0.9: {best}")
    assert cal.target_reached and best.effect >= 0.9 and best.kl <= BUDGET
    norms = residual_norms(toy, REFERENCES)
    assert best.relative_strength == pytest.approx(best.multiplier, rel=1e-5)
    # The relative multiplier is the absolute one scaled by residual norm / vector norm.
    original = sentiment.norms()[best.layer]
    assert best.absolute_multiplier == pytest.approx(best.multiplier * norms[best.layer] / original, rel=1e-5)
    effect, kl = remeasure(toy, sentiment, best.layer, best.absolute_multiplier)
    assert effect == pytest.approx(best.effect, abs=1e-4) and kl == pytest.approx(best.kl, abs=1e-4)
    # Bisection found a weaker strength than any grid cell of that layer reaching the target.
    grid = cal.table[(cal.table.source == "grid") & (cal.table.layer == best.layer)]
    assert best.multiplier < grid[grid.effect >= 0.9].multiplier.min()
    assert (cal.table.source == "bisect").sum() >= 1
    # Just above the target: the weaker end of the bracket was below it.
    assert best.effect - 0.9 < 0.02


def test_residual_norms_and_relative_vector_by_hand(toy, sentiment):
    prompts = REFERENCES[:5]
    norms = residual_norms(toy, prompts, layers=[0, 2])
    for layer in (0, 2):
        by_hand = torch.cat(
            [toy.run_with_cache(p)[1][f"blocks.{layer}.hook_resid_post"][0, 1:].norm(dim=-1) for p in prompts]
        ).mean()
        assert norms[layer] == pytest.approx(float(by_hand), rel=1e-5)
    rel = relative_vector(toy, sentiment.select_layers([0, 2]), prompts)
    for layer in (0, 2):
        assert rel.norms()[layer] == pytest.approx(norms[layer], rel=1e-5)
        cos = torch.nn.functional.cosine_similarity(
            rel.layer_activations[layer], sentiment.layer_activations[layer], dim=0
        )
        assert float(cos) == pytest.approx(1.0, abs=1e-6)
    assert rel.metadata["residual_norms"]["2"] == pytest.approx(norms[2])
    # "0.5" means half a typical residual norm whatever the aggregator: a 10x longer vector changes nothing.
    longer = relative_vector(toy, sentiment.select_layers([0, 2]) * 10.0, norms=norms)
    torch.testing.assert_close(longer.layer_activations[2], rel.layer_activations[2])


def test_no_cell_within_the_budget(toy, sentiment, share):
    cal = calibrate(toy, sentiment, PROMPTS[:4], share, REFERENCES[:4], max_kl=1e-9, layers=[2], multipliers=[1.0, 2.0])
    assert cal.best is None and not cal.table.within_budget.any()
    with pytest.raises(InvalidArgumentError, match="max_kl"):
        with cal.apply(toy):
            pass
    with pytest.raises(InvalidArgumentError, match="max_kl"):
        calibrate(toy, sentiment, PROMPTS[:2], share, REFERENCES[:2], max_kl=-1)
    with pytest.raises(InvalidArgumentError, match="direction"):
        calibrate(toy, sentiment, PROMPTS[:2], share, REFERENCES[:2], direction="up")


def test_decrease_goes_the_other_way(toy, sentiment, share):
    cal = calibrate(
        toy,
        sentiment,
        PROMPTS[:8],
        share,
        REFERENCES[:8],
        max_kl=BUDGET,
        layers=[2],
        direction="decrease",
        batch_size=128,
    )
    assert (cal.table.multiplier < 0).all()
    assert cal.best.effect < cal.baseline - 0.2


def test_hugging_face_model_calibration_remeasures():
    model, tokenizer = make_hf_model("gpt2"), make_tokenizer()
    pairs = [("the cat sat on the mat", "the dog ran"), ("a big happy dog", "a small sad dog")]
    vec = train_steering_vector(model, tokenizer, pairs, batch_size=2)
    prompts, references = ["the cat sat on", "a big dog"], ["red and blue", "the mat"]
    metric = logit_diff(tokenizer.convert_tokens_to_ids("happy"), tokenizer.convert_tokens_to_ids("sad"))
    cal = calibrate(
        model,
        vec,
        prompts,
        metric,
        references,
        max_kl=10.0,
        multipliers=[0.5, 1.0, 2.0],
        tokenizer=tokenizer,
        relative=True,
    )
    assert len(cal.table) == 6 and cal.best is not None

    def last_logits(texts):
        out = []
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            with torch.no_grad():
                out.append(model(ids).logits[0, -1])
        return torch.stack(out)

    clean_r = last_logits(references)
    for _, row in cal.table.iterrows():
        with vec.select_layers(int(row.layer)).apply(model, multiplier=float(row.absolute_multiplier)):
            steered_p, steered_r = last_logits(prompts), last_logits(references)
        effect = steered_p.log_softmax(-1)[:, metric.ids[0][0]] - steered_p.log_softmax(-1)[:, metric.ids[1][0]]
        kl = kl_by_hand(steered_r.softmax(-1), clean_r.softmax(-1))
        assert float(effect.mean()) == pytest.approx(row.effect, abs=1e-4)
        assert float(kl.mean()) == pytest.approx(row.kl, abs=1e-4)
        np.testing.assert_allclose(row.relative_strength, row.multiplier, rtol=1e-5)


def test_ab_items_from_the_answer_and_fluency_against_hand_written_hooks():
    """CAA's setting: per-item matching letters, steering from the assistant's turn, fluency as the damage."""
    from helpers import make_chat_model, random_vector, steered_logits_by_hand

    from steerlens.backends import backend_for
    from steerlens.tokens import single_target_id
    from steerlens.tokens.starts import assistant_header, steer_starts

    model = make_chat_model()
    tok = model.tokenizer
    questions = ["I love this film , it was", "The food was terrible", "What a lovely day for a walk"]
    chats = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    items = [(chat + "the park (", "A" if i % 2 else "B") for i, chat in enumerate(chats)]
    texts = ["I love this film , it was wonderful and great", "We ate pasta and pizza in a small town"]
    vec = random_vector(model, (1, 2), seed=9, scale=3.0)
    cal = calibrate(
        model,
        vec,
        items,
        "p_matching",
        chats,
        max_kl=10.0,
        multipliers=[-2.0, 2.0],
        steer_from="answer",
        fluency_texts=texts,
        damage="fluency",
    )
    backend = backend_for(model)
    encoded = [backend.encode(prompt) for prompt, _ in items]
    starts = steer_starts(tok, encoded, "answer")
    assert starts == [
        max(i + len(h) for i in range(len(ids)) if ids[i : i + len(h)] == h)
        for ids, h in ((ids, assistant_header(tok)) for ids in encoded)
    ]
    for row in cal.table.itertuples():
        effect = []
        for (prompt, letter), ids, start in zip(items, encoded, starts):
            logits = steered_logits_by_hand(model, vec, row.layer, row.multiplier, ids, start)[-1]
            pair = torch.softmax(logits[[single_target_id(tok, prompt, "A"), single_target_id(tok, prompt, "B")]], -1)
            effect.append(pair[0 if letter == "A" else 1].item())
        assert row.effect == pytest.approx(np.mean(effect), abs=1e-5)
        increase = []
        for text in texts:
            ids = backend.encode(text)
            nll = [
                -(
                    torch.log_softmax(steered_logits_by_hand(model, vec, row.layer, m, ids)[:-1], -1).gather(
                        -1, torch.tensor(ids[1:])[:, None]
                    )
                )
                .mean()
                .item()
                for m in (0.0, row.multiplier)
            ]
            increase.append(nll[1] - nll[0])
        assert row.nll_increase == pytest.approx(np.mean(increase), abs=1e-4)
        assert row.perplexity_ratio == pytest.approx(np.exp(row.nll_increase))
    assert cal.table.attrs["damage"] == "nll_increase"
    assert cal.best is not None and (cal.table.nll_increase <= 10.0).all()
    with pytest.raises(InvalidArgumentError, match="fluency_texts"):
        calibrate(model, vec, items, "p_matching", chats, damage="fluency")
