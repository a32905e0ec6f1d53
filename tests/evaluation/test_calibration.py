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
    # It is the strongest admissible cell measured on every prompt (coarse screening rows saw a quarter of them).
    table = absolute.table
    admissible = table[(table.kl <= BUDGET) & (table.source != "coarse") & ~table.degenerate]
    assert best.effect == pytest.approx(admissible.effect.max())
    assert (table.within_budget == (table.kl <= BUDGET)).all()


def test_every_grid_cell_is_what_plain_steering_gives(toy, sentiment, absolute):
    rows = absolute.table[absolute.table.source == "grid"].sample(3, random_state=0)
    for _, row in rows.iterrows():
        share, kl = remeasure(toy, sentiment, int(row.layer), float(row.multiplier))
        assert share == pytest.approx(row.effect, abs=1e-4) and kl == pytest.approx(row.kl, abs=1e-4)


def test_pareto_front_is_the_non_dominated_cells(absolute):
    # Among the cells measured on every prompt that are not degenerate (the others are never on the front).
    table = absolute.table[(absolute.table.source != "coarse") & ~absolute.table.degenerate]
    assert not absolute.table.drop(index=table.index).pareto.any()
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
    # One line per layer measured on every prompt: the layers the coarse stage kept.
    kept = absolute.table[absolute.table.source == "grid"].layer.nunique()
    assert sum(label.startswith("layer ") for label in labels) == kept == 3


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

    clean_r, clean_p = last_logits(references), last_logits(prompts)
    words = [metric.ids[0][0], metric.ids[1][0]]
    for _, row in cal.table.iterrows():
        with vec.select_layers(int(row.layer)).apply(model, multiplier=float(row.absolute_multiplier)):
            steered_p, steered_r = last_logits(prompts), last_logits(references)
        effect = steered_p.log_softmax(-1)[:, metric.ids[0][0]] - steered_p.log_softmax(-1)[:, metric.ids[1][0]]
        kl = kl_by_hand(steered_r.softmax(-1), clean_r.softmax(-1))
        assert float(effect.mean()) == pytest.approx(row.effect, abs=1e-4)
        assert float(kl.mean()) == pytest.approx(row.kl, abs=1e-4)
        # Damage where the effect is read: KL on the prompts, and P(happy) + P(sad) steered and unsteered.
        assert float(kl_by_hand(steered_p.softmax(-1), clean_p.softmax(-1)).mean()) == pytest.approx(
            row.kl_prompts, abs=1e-5
        )
        mass, clean_mass = steered_p.softmax(-1)[:, words].sum(-1).mean(), clean_p.softmax(-1)[:, words].sum(-1).mean()
        assert float(mass) == pytest.approx(row.target_mass, abs=1e-6)
        assert float(clean_mass) == pytest.approx(row.target_mass_unsteered, abs=1e-6)
        assert row.degenerate == (float(mass) < 0.1 * float(clean_mass))
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
        effect, mass, clean_mass, kl = [], [], [], []
        for (prompt, letter), ids, start in zip(items, encoded, starts):
            logits = steered_logits_by_hand(model, vec, row.layer, row.multiplier, ids, start)[-1]
            clean = steered_logits_by_hand(model, vec, row.layer, 0.0, ids, start)[-1]
            letters = [single_target_id(tok, prompt, "A"), single_target_id(tok, prompt, "B")]
            pair = torch.softmax(logits[letters], -1)
            effect.append(pair[0 if letter == "A" else 1].item())
            mass.append(torch.softmax(logits, -1)[letters].sum().item())  # P(A) + P(B): what the ratio is taken of
            clean_mass.append(torch.softmax(clean, -1)[letters].sum().item())
            kl.append(kl_by_hand(torch.softmax(logits, -1)[None], torch.softmax(clean, -1)[None]).item())
        assert row.effect == pytest.approx(np.mean(effect), abs=1e-5)
        assert row.target_mass == pytest.approx(np.mean(mass), abs=1e-6)
        assert row.target_mass_unsteered == pytest.approx(np.mean(clean_mass), abs=1e-6)
        assert row.kl_prompts == pytest.approx(np.mean(kl), abs=1e-5)
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


def word_ids(model, words):
    return [model.to_single_token(word) for word in words]


def test_damage_columns_on_the_toy_model_against_hand_computation(toy, sentiment, absolute, share):
    """kl_prompts, target_mass (all eight sentiment words) and its unsteered value, by vec.apply + forward."""
    words = concept_words("sentiment")
    ids = word_ids(toy, words["positive"] + words["negative"])
    clean = next_token_probs(toy, PROMPTS)
    table = absolute.table[absolute.table.source == "grid"]
    assert np.allclose(table.target_mass_unsteered, float(clean[:, ids].sum(-1).mean()), atol=1e-6)
    for _, row in table.sample(4, random_state=1).iterrows():
        with sentiment.select_layers(int(row.layer)).apply(toy, multiplier=float(row.multiplier)):
            steered = next_token_probs(toy, PROMPTS)
        assert row.kl_prompts == pytest.approx(float(kl_by_hand(steered, clean).mean()), abs=1e-5)
        assert row.target_mass == pytest.approx(float(steered[:, ids].sum(-1).mean()), abs=1e-6)
        assert not row.degenerate  # the sentiment words keep their mass on the toy model
    best = absolute.best
    row = table[(table.layer == best.layer) & (table.multiplier == best.multiplier)].iloc[0]
    assert (best.kl_prompts, best.target_mass, best.target_mass_unsteered) == pytest.approx(
        (row.kl_prompts, row.target_mass, row.target_mass_unsteered)
    )


def test_a_degenerate_cell_is_never_chosen(toy, share):
    """A large random direction at layer 2: at 256x the words lose > 90% of their mass while the share looks best."""
    from helpers import random_vector

    vec = random_vector(toy, (2,), seed=2, scale=1.0)
    prompts, references = PROMPTS[:8], REFERENCES[:8]
    mults = [1.0, 4.0, 16.0, 64.0, 256.0]
    with pytest.warns(RuntimeWarning, match="1 of 5 cells are degenerate"):
        cal = calibrate(toy, vec, prompts, share, references, max_kl=1e6, layers=[2], multipliers=mults)
    words = concept_words("sentiment")
    ids = word_ids(toy, words["positive"] + words["negative"])
    clean_mass = float(next_token_probs(toy, prompts)[:, ids].sum(-1).mean())
    flags = []
    for m in mults:
        with vec.apply(toy, multiplier=m):
            mass = float(next_token_probs(toy, prompts)[:, ids].sum(-1).mean())
        flags.append(mass < 0.1 * clean_mass)
    assert cal.table.sort_values("multiplier").degenerate.tolist() == flags == [False, False, False, False, True]
    broken = cal.table[cal.table.degenerate].iloc[0]
    # Without the flag it would win: the largest share, within the (huge) budget.
    assert broken.within_budget and broken.effect > cal.table[~cal.table.degenerate].effect.max()
    assert cal.best.multiplier == 64.0 and not cal.table.pareto[cal.table.degenerate].any()


def test_coarse_to_fine_chooses_the_exhaustive_cell_and_measures_it_on_every_prompt(toy, sentiment, share):
    """README's calibrate example (48 sentiment prompts, 48 topic references, relative, target 0.9)."""
    prompts, references = neutral_prompts("sentiment", "test"), neutral_prompts("topic", "test")
    kwargs = {"max_kl": BUDGET, "relative": True, "target": 0.9}
    exhaustive = calibrate(toy, sentiment, prompts, share, references, search="exhaustive", **kwargs)
    fine = calibrate(toy, sentiment, prompts, share, references, **kwargs)
    assert fine.search == "coarse-to-fine" and exhaustive.search == "exhaustive"
    assert (fine.best.layer, fine.best.multiplier) == (exhaustive.best.layer, exhaustive.best.multiplier)
    coarse = fine.table[fine.table.source == "coarse"]
    assert sorted(coarse.layer.unique()) == [0, 1, 2, 3] and (coarse.n_prompts == 12).all()
    assert fine.table[fine.table.source == "grid"].layer.nunique() == 3 < exhaustive.table.layer.nunique()
    # The chosen cell, measured the plain way over all 48 prompts and all 48 references.
    clean = next_token_probs(toy, references)
    with sentiment.select_layers(fine.best.layer).apply(toy, multiplier=fine.best.absolute_multiplier):
        effect = float(positive_mass(toy, prompts).mean())
        kl = float(kl_by_hand(next_token_probs(toy, references), clean).mean())
    assert effect == pytest.approx(fine.best.effect, abs=1e-4) and kl == pytest.approx(fine.best.kl, abs=1e-4)
    # A screening row is what plain steering gives on its spread quarter of the prompts and references.
    row = coarse.iloc[-1]
    subset = [prompts[i * 48 // 12] for i in range(12)]
    refs = [references[i * 48 // 12] for i in range(12)]
    clean = next_token_probs(toy, refs)
    with fine.vector.select_layers(int(row.layer)).apply(toy, multiplier=float(row.multiplier)):
        assert float(positive_mass(toy, subset).mean()) == pytest.approx(row.effect, abs=1e-4)
        assert float(kl_by_hand(next_token_probs(toy, refs), clean).mean()) == pytest.approx(row.kl, abs=1e-4)
    with pytest.raises(InvalidArgumentError, match="search"):
        calibrate(toy, sentiment, prompts[:2], share, references[:2], search="quick")


def test_one_progress_bar_counts_every_cell_of_the_call(toy, sentiment, share, monkeypatch):
    """Coarse stage, grid and bisection advance one bar whose total is the number of cells run."""
    import steerlens.evaluation.calibration as calibration

    bars, yielded = [], []
    real_bar, real_iter = calibration.progress_bar, calibration.steered_cells

    def recording_bar(total, desc, show=None, unit="cell"):
        bar = real_bar(total, desc, True, unit)  # shown, so it counts
        bars.append((bar, show))
        return bar

    def counting_iter(*args, **kwargs):
        for cell in real_iter(*args, **kwargs):
            yielded.append(cell)
            yield cell

    monkeypatch.setattr(calibration, "progress_bar", recording_bar)
    monkeypatch.setattr(calibration, "steered_cells", counting_iter)
    texts = ["I thought the film was good and the soup was warm .", "The trip was long ."]
    cal = calibrate(
        toy,
        sentiment,
        PROMPTS,
        share,
        REFERENCES,
        max_kl=BUDGET,
        relative=True,
        target=0.9,
        fluency_texts=texts,
        bisect_steps=3,
        batch_size=64,
    )
    assert len(bars) == 1 and bars[0][1] is None  # one bar, shown after a few seconds by default
    bar = bars[0][0]
    assert bar.total == bar.n == len(yielded) > 0
    assert {"coarse", "grid", "bisect"} <= set(cal.table.source)


def test_bisection_runs_each_clean_pass_once_and_its_cells_are_plain_steering(toy, sentiment, share, monkeypatch):
    """Every bisection step re-measures one layer at a new multiplier on the clean passes of its first step."""
    from steerlens.backends.hooked import HookedBackend

    calls = []
    real = HookedBackend.sweep_pass

    def counting(self, batch, *args, **kwargs):
        calls.append(len(batch.indices))
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(HookedBackend, "sweep_pass", counting)
    mults = [2.0, 4.0, 8.0, 16.0]
    kwargs = {"max_kl": BUDGET, "target": 0.9, "batch_size": 64, "search": "exhaustive", "multipliers": mults}
    cal = calibrate(toy, sentiment, PROMPTS, share, REFERENCES, bisect_steps=5, **kwargs)
    bisect = cal.table[cal.table.source == "bisect"]
    assert len(bisect) == 5
    # Grid: 16 prompts per batch (64 // 4 multipliers), one batch of prompts and one of references; then the
    # bisection's one batch of each (64 prompts per batch at one multiplier), run once for its five steps.
    assert len(calls) == 2 + 2
    for row in bisect.itertuples():
        effect, kl = remeasure(toy, sentiment, row.layer, row.multiplier)
        assert effect == pytest.approx(row.effect, abs=1e-4) and kl == pytest.approx(row.kl, abs=1e-4)


def gains_by_hand(model, vector, table, prompts, budget):
    """Per layer: best admissible coarse share minus the unsteered share on the screening prompts (its rows' n_prompts)."""
    coarse = table[table.source == "coarse"]
    n = int(coarse.n_prompts.iloc[0])
    subset = [prompts[i * len(prompts) // n] for i in range(n)]
    baseline = float(positive_mass(model, subset).mean())
    ok = coarse[(coarse.kl <= budget) & ~coarse.degenerate]
    return {int(layer): float(rows.effect.max()) - baseline for layer, rows in ok.groupby("layer")}


def test_coarse_stage_keeps_only_the_layers_within_the_margin_of_the_best_gain(toy, sentiment, share):
    """keep_margin against gains computed by hand from the screening rows and an unsteered forward pass."""
    kwargs = {"max_kl": BUDGET, "relative": True, "keep_layers": 3, "multipliers": [0.25, 0.5, 1.0, 2.0]}
    wide = calibrate(toy, sentiment, PROMPTS, share, REFERENCES, keep_margin=None, **kwargs)
    gains = gains_by_hand(toy, sentiment, wide.table, PROMPTS, BUDGET)
    ranked = sorted(gains, key=gains.get, reverse=True)
    assert len(ranked) >= 3 and gains[ranked[2]] > 0 and len(set(gains.values())) == len(gains)
    assert set(wide.table[wide.table.source == "grid"].layer) == set(ranked[:3])  # no margin: the 3 best
    # A margin between the second and the third layer's relative gain keeps exactly the first two.
    second, third = gains[ranked[1]] / gains[ranked[0]], gains[ranked[2]] / gains[ranked[0]]
    margin = 1 - (second + third) / 2
    narrow = calibrate(toy, sentiment, PROMPTS, share, REFERENCES, keep_margin=margin, **kwargs)
    assert set(narrow.table[narrow.table.source == "grid"].layer) == set(ranked[:2])
    only = calibrate(toy, sentiment, PROMPTS, share, REFERENCES, keep_margin=0.0, **kwargs)
    assert set(only.table[only.table.source == "grid"].layer) == {ranked[0]}
    # The grid rows of a kept layer are the same cells whatever else was kept.
    cols = ["layer", "multiplier", "effect", "kl"]
    kept = narrow.table[narrow.table.source == "grid"][cols].reset_index(drop=True)
    same = wide.table[(wide.table.source == "grid") & wide.table.layer.isin(ranked[:2])][cols].reset_index(drop=True)
    assert np.allclose(kept.to_numpy(dtype=float), same.to_numpy(dtype=float), atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="keep_margin"):
        calibrate(toy, sentiment, PROMPTS[:2], share, REFERENCES[:2], keep_margin=1.5)


def test_a_search_value_is_its_knobs_by_name(toy, sentiment, share):
    """``search=Search(...)`` is the same search as its fields by name; a knob by name changes the value's."""
    from steerlens.evaluation import Search
    from steerlens.settings import Settings

    common = dict(max_kl=BUDGET, relative=True, multipliers=[0.25, 0.5, 1.0])
    by_value = calibrate(
        toy, sentiment, PROMPTS, share, REFERENCES, search=Search(keep_layers=1, keep_margin=None), **common
    )
    by_name = calibrate(toy, sentiment, PROMPTS, share, REFERENCES, keep_layers=1, keep_margin=None, **common)
    assert by_value.table.equals(by_name.table) and by_value.search == "coarse-to-fine"
    assert by_value.table[by_value.table.source == "grid"].layer.nunique() == 1
    wider = calibrate(
        toy,
        sentiment,
        PROMPTS,
        share,
        REFERENCES,
        search=Search(keep_layers=1, keep_margin=None),
        keep_layers=2,
        settings=Settings(batch_size=8),
        **common,
    )
    assert wider.table[wider.table.source == "grid"].layer.nunique() == 2
    with pytest.raises(InvalidArgumentError, match="keep_layers"):
        Search(keep_layers=0)
