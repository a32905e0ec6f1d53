"""Per-item steerability: slopes, R² and damage against a hand regression (numpy.polyfit) on cells computed
by ``vec.apply`` + a plain forward pass (or a hand-written hook from the answer on), on both routes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import llama_model, llama_prompt, make_chat_model, make_model, metaspace_tokenizer, random_vector
from tiny_hf import make_hf_model, make_tokenizer

from steerlens import logit_diff, steerability
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation import plot_steerability, steerability_summary
from steerlens.tokens import single_target_id
from steerlens.tokens.starts import assistant_header

pytestmark = pytest.mark.filterwarnings("ignore:the metric's tokens hold only")

PROMPTS = ["I love this film", "The food was delicious and", "What a lovely day", "sad", "We ate pasta in a"]
POSITIVE, NEGATIVE = [40, 50], [41, 51]
MULTS = [-2.0, -0.5, 1.0, 3.0]


def hand_fit(x, y):
    slope, intercept = np.polyfit(x, y, 1)
    fitted = np.polyval([slope, intercept], x)
    r2 = 1 - ((y - fitted) ** 2).sum() / ((y - np.mean(y)) ** 2).sum()
    return slope, intercept, r2


def hand_kl(steered, clean):
    p, q = torch.log_softmax(steered.double(), -1), torch.log_softmax(clean.double(), -1)
    return float((p.exp() * (p - q)).sum())


def hand_diff(logits, positive, negative):
    logprobs = torch.log_softmax(logits.double(), -1)
    return float(logprobs[positive].logsumexp(-1) - logprobs[negative].logsumexp(-1))


def check_rows(frame, cells, clean, mults, metric, mass_ids):
    """``cells[(layer, m)][i]`` steered logits and ``clean[i]`` unsteered logits of item i, by hand."""
    x = np.array(mults)
    for row in frame.itertuples():
        y = np.array([metric(cells[(row.layer, m)][row.item_index], row.item_index) for m in mults])
        slope, intercept, r2 = hand_fit(x, y)
        assert row.slope == pytest.approx(slope, abs=1e-5)
        assert row.intercept == pytest.approx(intercept, abs=1e-5)
        assert row.r2 == pytest.approx(r2, abs=1e-5)
        assert np.allclose(row.values, y, atol=1e-5)
        assert row.unsteered == pytest.approx(metric(clean[row.item_index], row.item_index), abs=1e-5)
        kls = [hand_kl(cells[(row.layer, m)][row.item_index], clean[row.item_index]) for m in mults if m != 0]
        assert row.kl_mean == pytest.approx(np.mean(kls), abs=1e-5)
        assert row.kl_max == pytest.approx(np.max(kls), abs=1e-5)
        ids = mass_ids(row.item_index)
        masses = [float(torch.softmax(cells[(row.layer, m)][row.item_index].double(), -1)[ids].sum()) for m in mults]
        unsteered_mass = float(torch.softmax(clean[row.item_index].double(), -1)[ids].sum())
        assert row.target_mass_unsteered == pytest.approx(unsteered_mass, abs=1e-6)
        assert row.target_mass_min == pytest.approx(min(masses), abs=1e-6)
        assert row.degenerate == (min(masses) < 0.1 * unsteered_mass)


def apply_cells(model, vec, layers, mults, encoded, forward, start=0):
    cells = {}
    with torch.no_grad():
        for layer in layers:
            for m in mults:
                with vec.select_layers([layer]).apply(model, multiplier=m, min_token_index=start):
                    cells[(layer, m)] = [forward(ids) for ids in encoded]
        clean = [forward(ids) for ids in encoded]
    return cells, clean


@pytest.mark.parametrize("batch_size", [3, 32])
def test_hooked_transformer_prompts_equal_a_hand_regression(batch_size):
    model = make_model(seed=3)
    vec = random_vector(model, [1, 3], seed=2)
    frame = steerability(model, vec, PROMPTS, logit_diff(POSITIVE, NEGATIVE), MULTS, batch_size=batch_size)
    assert len(frame) == len(PROMPTS) * 2 and frame.layer.tolist() == [1] * 5 + [3] * 5
    assert frame.prompt.tolist() == PROMPTS * 2
    encoded = [model.to_tokens(p)[0].tolist() for p in PROMPTS]
    cells, clean = apply_cells(model, vec, [1, 3], MULTS, encoded, lambda ids: model(torch.tensor([ids]))[0, -1])
    check_rows(
        frame,
        cells,
        clean,
        MULTS,
        lambda logits, i: hand_diff(logits, POSITIVE, NEGATIVE),
        lambda i: POSITIVE + NEGATIVE,
    )


def test_hugging_face_prompts_equal_a_hand_regression():
    model, tokenizer = make_hf_model("qwen2"), make_tokenizer()
    texts = ["the cat sat on the mat", "a big happy dog ran", "red and blue", "the small cat ran fast"]
    vec = random_vector(model.config.hidden_size, [0, 1], seed=5, scale=4.0)
    mults = [-1.0, 0.0, 0.5, 2.0]
    frame = steerability(model, vec, texts, logit_diff(POSITIVE, NEGATIVE), mults, tokenizer=tokenizer)
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    cells, clean = apply_cells(model, vec, [0, 1], mults, encoded, lambda ids: model(torch.tensor([ids])).logits[0, -1])
    check_rows(
        frame,
        cells,
        clean,
        mults,
        lambda logits, i: hand_diff(logits, POSITIVE, NEGATIVE),
        lambda i: POSITIVE + NEGATIVE,
    )
    # 0 is among the multipliers: its KL (0) is left out of kl_mean, and the value there is the unsteered one.
    assert np.allclose([v[1] for v in frame["values"]], frame["unsteered"], atol=1e-6)


def ab_items(tok, questions, prompt_of):
    return [(prompt_of(q) + " (", "A" if i % 2 else "B") for i, q in enumerate(questions)]


def letters_and_starts(tok, items, encode):
    header = assistant_header(tok)
    out = []
    for prompt, _ in items:
        ids = encode(prompt)
        start = max(i + len(header) for i in range(len(ids)) if ids[i : i + len(header)] == header)
        out.append(([single_target_id(tok, prompt, "A"), single_target_id(tok, prompt, "B")], start, ids))
    return out


@pytest.mark.parametrize("metric", [None, "p_matching"])
def test_ab_items_from_the_answer_on_a_hooked_transformer(metric):
    model = make_chat_model()
    tok = model.tokenizer
    questions = ["I love this film , it was", "The food was terrible", "What a lovely day for a walk", "sad"]
    items = ab_items(
        tok,
        questions,
        lambda q: tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True),
    )
    vec = random_vector(model, [1, 2], seed=7, scale=4.0)
    mults = [-2.0, 0.0, 2.0]
    frame = steerability(model, vec, items, metric, mults, steer_from="answer")
    assert frame.attrs["metric"] == (metric or "matching_logit_diff")
    assert frame.matching.tolist()[:4] == ["B", "A", "B", "A"]
    found = letters_and_starts(tok, items, lambda p: model.to_tokens(p, prepend_bos=False)[0].tolist())

    def hook_logits(layer, m, i):
        letters, start, ids = found[i]

        def add(act, hook):
            act = act.clone()
            act[:, start:] += m * vec.layer_activations[layer]
            return act

        with torch.no_grad():
            return model.run_with_hooks(torch.tensor([ids]), fwd_hooks=[(f"blocks.{layer}.hook_resid_post", add)])[
                0, -1
            ]

    cells = {(layer, m): [hook_logits(layer, m, i) for i in range(len(items))] for layer in (1, 2) for m in mults}
    clean = [hook_logits(1, 0.0, i) for i in range(len(items))]

    def matching(logits, i):
        letters = found[i][0]
        order = letters if items[i][1] == "A" else letters[::-1]
        diff = hand_diff(logits, [order[0]], [order[1]])
        return diff if metric is None else float(torch.sigmoid(torch.tensor(diff)))

    check_rows(frame, cells, clean, mults, matching, lambda i: found[i][0])


def test_ab_items_from_the_answer_on_hugging_face():
    tok = metaspace_tokenizer("bos")
    model = llama_model(tok, n_layers=3, seed=2)
    questions = ["Do you like cats", "I think the film was good", "Pick one", "the food was bad"]
    items = ab_items(tok, questions, lambda q: llama_prompt(tok, q))
    vec = random_vector(32, [0, 2], seed=3, scale=3.0)
    mults = [-1.5, 1.0, 2.5]
    # Llama-2's template writes no assistant header: steer from the "[/INST]" that closes each user turn.
    close = tok("[/INST]", add_special_tokens=False)["input_ids"]
    found = []
    for prompt, _ in items:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        start = max(i for i in range(len(ids)) if ids[i : i + len(close)] == close)
        found.append(([single_target_id(tok, prompt, "A"), single_target_id(tok, prompt, "B")], start, ids))
    starts = [start for _, start, _ in found]
    frame = steerability(model, vec, items, None, mults, tokenizer=tok, steer_from=starts, batch_size=4)
    cells = {}
    with torch.no_grad():
        for layer in (0, 2):
            for m in mults:
                cells[(layer, m)] = []
                for _, start, ids in found:
                    with vec.select_layers([layer]).apply(model, multiplier=m, min_token_index=start):
                        cells[(layer, m)].append(model(torch.tensor([ids])).logits[0, -1])
        clean = [model(torch.tensor([ids])).logits[0, -1] for _, _, ids in found]

    def matching(logits, i):
        letters = found[i][0]
        order = letters if items[i][1] == "A" else letters[::-1]
        return hand_diff(logits, [order[0]], [order[1]])

    check_rows(frame, cells, clean, mults, matching, lambda i: found[i][0])


def test_summary_and_plot():
    model = make_model(seed=3)
    vec = random_vector(model, [1, 3], seed=3)
    frame = steerability(model, vec, PROMPTS, logit_diff(POSITIVE, NEGATIVE), MULTS)
    summary = steerability_summary(frame).set_index("layer")
    for layer, group in frame.groupby("layer"):
        slopes = group.slope.to_numpy()
        row = summary.loc[layer]
        assert row.n_items == len(PROMPTS)
        assert row.mean_slope == pytest.approx(slopes.mean()) and row.median_slope == pytest.approx(np.median(slopes))
        assert row.std_slope == pytest.approx(slopes.std(ddof=1))
        assert row.anti_steerable_share == pytest.approx(np.mean(slopes < 0))
        assert row.mean_r2 == pytest.approx(group.r2.mean()) and row.mean_kl_max == pytest.approx(group.kl_max.mean())
        assert frame.attrs["summary"][layer]["mean_slope"] == pytest.approx(slopes.mean())
    assert 0 < summary.anti_steerable_share.max(), "the test needs an anti-steerable item to draw"
    anti_layer = summary.anti_steerable_share.idxmax()
    fig = plot_steerability(frame, layer=anti_layer)
    lines_ax, hist_ax = fig.axes
    assert len(lines_ax.lines) == len(PROMPTS)
    red = [line for line in lines_ax.lines if line.get_color() == "tab:red"]
    assert len(red) == int((frame[frame.layer == anti_layer].slope < 0).sum())
    assert sum(patch.get_height() for patch in hist_ax.patches) == len(PROMPTS)


def test_bad_arguments():
    model = make_model(seed=3)
    vec = random_vector(model, [1], seed=2)
    metric = logit_diff(POSITIVE, NEGATIVE)
    with pytest.raises(InvalidArgumentError, match="two different multipliers"):
        steerability(model, vec, PROMPTS, metric, [1.0])
    with pytest.raises(InvalidArgumentError, match="plain prompts were given"):
        steerability(model, vec, PROMPTS, None, MULTS)
    with pytest.raises(InvalidArgumentError, match="A/B items are scored"):
        steerability(model, vec, [("Pick one: (", "A")], metric, MULTS)
    with pytest.raises(InvalidArgumentError, match="steerability\\(\\) DataFrame"):
        plot_steerability(steerability_summary(steerability(model, vec, PROMPTS, metric, MULTS)))


def test_settings_value_equals_the_keywords():
    """``settings=Settings(...)`` is the keyword call (one field changed on top of it too); the steering start it
    carries is applied (the table differs from steering everywhere), and an operator it carries is not used."""
    import pandas as pd

    from steerlens import Settings

    model = make_model(seed=3)
    vec = random_vector(model, [1, 3], seed=2)
    metric = logit_diff(POSITIVE, NEGATIVE)
    by_keywords = steerability(model, vec, PROMPTS, metric, MULTS, batch_size=2, steer_from=2)
    by_value = steerability(model, vec, PROMPTS, metric, MULTS, settings=Settings(batch_size=2, steer_from=2))
    pd.testing.assert_frame_equal(by_value, by_keywords, check_exact=True)
    changed = steerability(
        model, vec, PROMPTS, metric, MULTS, settings=Settings(batch_size=8, steer_from=2), batch_size=2
    )
    pd.testing.assert_frame_equal(changed, by_keywords, check_exact=True)
    everywhere = steerability(model, vec, PROMPTS, metric, MULTS, batch_size=2)
    assert not np.allclose(everywhere.slope, by_keywords.slope)
    shared = Settings(batch_size=2, steer_from=2, operator=lambda activation, vector: -3.0 * vector)
    pd.testing.assert_frame_equal(
        steerability(model, vec, PROMPTS, metric, MULTS, settings=shared), by_keywords, check_exact=True
    )


def test_a_setting_it_does_not_use_is_an_error():
    from steerlens.errors import UnknownKeywordError

    model = make_model(seed=3)
    vec = random_vector(model, [1], seed=2)
    metric = logit_diff(POSITIVE, NEGATIVE)
    with pytest.raises(UnknownKeywordError, match="'operator'"):
        steerability(model, vec, PROMPTS, metric, MULTS, operator=lambda activation, vector: vector)
    with pytest.raises(UnknownKeywordError, match="'distributed'"):
        steerability(model, vec, PROMPTS, metric, MULTS, distributed=True)
    with pytest.raises(UnknownKeywordError, match="'batchsize'"):
        steerability(model, vec, PROMPTS, metric, MULTS, batchsize=2)
