"""compare_logits and ab_behavior_probability against hand computations with manual hooks."""

from __future__ import annotations

import pytest
import torch
from helpers import random_vector

from steerlens import ABItem, SteeringVector, ab_behavior_probability, compare_logits
from steerlens.backends import steering_hooks_on
from steerlens.errors import InvalidArgumentError, TargetTokenError

PROMPTS = ["The food was delicious and the service was", "I hate", "What a lovely day for a walk in the park"]


def token_str(tok, i):
    """Decoded text, or the vocabulary entry when the token is a partial UTF-8 byte."""
    text = tok.decode([i])
    return tok.convert_ids_to_tokens(i) if "\ufffd" in text else text


def manual_logprobs(model, prompt, vec, layer, multiplier):
    """(steered, unsteered) next-token log-probs, one unpadded prompt, hand-written hook."""
    tokens = model.to_tokens(prompt)
    v = vec.layer_activations[layer]
    hook = (f"blocks.{layer}.hook_{vec.layer_type}", lambda act, hook: act + multiplier * v)
    with torch.no_grad():
        steered = model.run_with_hooks(tokens, fwd_hooks=[hook])[0, -1]
        clean = model(tokens)[0, -1]
    return torch.log_softmax(steered, -1), torch.log_softmax(clean, -1)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("which", ["model", "rotary_model"])
def test_compare_logits_matches_manual_hook(request, which, padding_side):
    model = request.getfixturevalue(which)
    vec = random_vector(model, [2, 0])
    mults = [2.0, -1.5]
    targets = {"group": [40, 41, 42], "single": 50}
    frame = compare_logits(
        model,
        vec,
        PROMPTS,
        multipliers=mults,
        target_tokens=targets,
        top_k=4,
        batch_size=4,
        padding_side=padding_side,
    )
    assert len(frame) == len(PROMPTS) * 2 * 2
    # One row per prompt × layer × multiplier, in the order given.
    keys = [(r.prompt_index, r.layer, r.multiplier) for r in frame.itertuples()]
    assert keys == [(p, layer, m) for p in range(3) for layer in (0, 2) for m in mults]
    for _, row in frame.iterrows():
        assert row.prompt == PROMPTS[row.prompt_index]
        after, before = manual_logprobs(model, row.prompt, vec, row.layer, row.multiplier)
        kl = float((after.exp() * (after - before)).sum())
        assert row.kl == pytest.approx(kl, abs=1e-5)
        for name, ids in (("group", [40, 41, 42]), ("single", [50])):
            b, a = before[ids].exp().sum().log(), after[ids].exp().sum().log()
            assert row[f"logprob_before[{name}]"] == pytest.approx(float(b), abs=1e-5)
            assert row[f"logprob_after[{name}]"] == pytest.approx(float(a), abs=1e-5)
            assert row[f"delta_logprob[{name}]"] == pytest.approx(float(a - b), abs=1e-5)
        every = [40, 41, 42, 50]  # all targets together, each token once
        mass, mass_un = float(after[every].exp().sum()), float(before[every].exp().sum())
        assert row.target_mass == pytest.approx(mass, abs=1e-6)
        assert row.target_mass_unsteered == pytest.approx(mass_un, abs=1e-6)
        assert row.degenerate == (mass < 0.1 * mass_un)
        assert row.argmax_changed == bool(after.argmax() != before.argmax())
        for column, lp in (("top_k_before", before), ("top_k_after", after)):
            probs, ids = lp.exp().topk(4)
            assert [t for t, _ in row[column]] == [token_str(model.tokenizer, i) for i in ids.tolist()]
            assert [p for _, p in row[column]] == pytest.approx(probs.tolist(), abs=1e-5)
    assert steering_hooks_on(model) == []


def test_target_lists_and_multi_token_strings(model):
    tok = model.tokenizer
    vec = random_vector(model, [1])
    word = " lovely"
    first = tok.encode(word, add_special_tokens=False)[0]
    assert len(tok.encode(word, add_special_tokens=False)) > 1
    # Deliberate change (issue 13): a string that is several tokens after the prompt is an error
    # naming it; it used to stand for its first token, with a warning.
    with pytest.raises(TargetTokenError, match=r"target ' lovely' is \d tokens .* after prompt"):
        compare_logits(model, vec, PROMPTS[:1], target_tokens=[word, 45])
    frame = compare_logits(model, vec, PROMPTS[:1], target_tokens=[first, 45])
    name_first, name_45 = token_str(tok, first), token_str(tok, 45)
    assert {f"delta_logprob[{name_first}]", f"delta_logprob[{name_45}]"} <= set(frame.columns)
    after, before = manual_logprobs(model, PROMPTS[0], vec, 1, 1.0)
    assert frame[f"delta_logprob[{name_first}]"][0] == pytest.approx(float(after[first] - before[first]), abs=1e-5)
    with pytest.raises(InvalidArgumentError, match="twice"):
        compare_logits(model, vec, PROMPTS[:1], target_tokens=[45, 45])
    with pytest.raises(InvalidArgumentError, match="top_k"):
        compare_logits(model, vec, PROMPTS[:1], top_k=0)


def test_zero_multiplier_changes_nothing(model):
    frame = compare_logits(model, random_vector(model, [1, 3]), PROMPTS, multipliers=[0.0], target_tokens=[44])
    assert (frame.kl == 0).all() and not frame.argmax_changed.any()
    assert (frame["delta_logprob[" + token_str(model.tokenizer, 44) + "]"] == 0).all()
    assert all(a == b for a, b in zip(frame.top_k_before, frame.top_k_after))


def test_ab_items():
    item = ABItem.from_choices("Do you like cats?", "Yes", "No", matching="B")
    assert item.prompt.endswith("(A) Yes\n(B) No\nAnswer: (")
    caa = ABItem.from_caa({"question": "Q?\n\nChoices:\n (A) x\n (B) y", "answer_matching_behavior": " (A)"})
    assert caa == ABItem("Q?\n\nChoices:\n (A) x\n (B) y\nAnswer: (", "A")
    with pytest.raises(InvalidArgumentError, match="matching"):
        ABItem("Q", "C")
    with pytest.raises(InvalidArgumentError, match=r"\(A\)"):
        ABItem.from_caa({"question": "Q", "answer_matching_behavior": "yes"})


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_ab_behavior_probability_matches_manual(model, padding_side):
    vec = random_vector(model, [1, 2], seed=3)
    items = [
        ABItem.from_choices("Good?", "Yes", "No", "A"),
        {"question": "Bad?\n(A) yes\n(B) no", "answer_matching_behavior": "(B)"},
        ("Pick one: (", "B"),
    ]
    a_id, b_id = (model.tokenizer.encode(x, add_special_tokens=False)[0] for x in "AB")
    mults = [-2.0, 0.0, 2.0]
    frame = ab_behavior_probability(model, vec, items, multipliers=mults, batch_size=3, padding_side=padding_side)
    assert len(frame) == 3 * 2 * 3
    for _, row in frame.iterrows():
        after, before = manual_logprobs(model, row.prompt, vec, row.layer, row.multiplier)
        for lp, suffix in ((after, "steered"), (before, "unsteered")):
            pa, pb = lp[a_id].exp(), lp[b_id].exp()
            expected = (pa if row.matching == "A" else pb) / (pa + pb)
            assert row[f"p_matching_{suffix}"] == pytest.approx(float(expected), abs=1e-5)
            assert row[f"ab_mass_{suffix}"] == pytest.approx(float(pa + pb), abs=1e-6)
        assert row.kl == pytest.approx(float((after.exp() * (after - before)).sum()), abs=1e-5)
        ab_steered, ab_unsteered = after[[a_id, b_id]].exp().sum(), before[[a_id, b_id]].exp().sum()
        assert row.degenerate == bool(ab_steered < 0.1 * ab_unsteered)
    assert frame.matching.tolist()[::6] == ["A", "B", "B"]
    zero = frame[frame.multiplier == 0]
    assert (zero.p_matching_steered == zero.p_matching_unsteered).all()
    assert (zero.kl == 0).all() and not zero.degenerate.any()


# -- damage beside the effect on a model a push can break ------------------------------------------


def sharp_tiny_llama():
    """A tiny HF Llama with its unembedding scaled 4x, so a pushed residual picks a few tokens, as a real
    model's does (the plain tiny model stays near uniform whatever the push)."""
    from tiny_hf import make_hf_model
    from tiny_hf import make_tokenizer as make_word_tokenizer

    model = make_hf_model("llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return model, make_word_tokenizer()


def test_a_large_push_is_flagged_in_compare_logits_and_ab_items_as_computed_by_hand():
    """50 residual norms along a random direction: the target words and the two answer tokens lose their
    mass. Every row's kl, masses and flag equal a plain forward with a hand-written hook; one warning counts."""
    from helpers import hf_logprobs

    model, tok = sharp_tiny_llama()
    prompts = ["the cat sat on", "a dog ran fast and", "the big red", "a small happy dog"]
    direction = torch.randn(32, generator=torch.Generator().manual_seed(0))
    vec = SteeringVector({0: direction / direction.norm() * 6.0})  # 6: the residual norm after layer 0
    words = {"up": [" happy", " cat", " mat"], "down": [" ran", " sad", " small"]}
    ids = tok.convert_tokens_to_ids(["happy", "cat", "mat", "ran", "sad", "small"])
    letters = tok.convert_tokens_to_ids(["happy", "mat"])
    mults = [0.05, 50.0]
    with pytest.warns(RuntimeWarning, match=r"of 8 rows are degenerate: the target tokens keep less") as caught:
        frame = compare_logits(model, vec, prompts, multipliers=mults, target_tokens=words, tokenizer=tok)
    with pytest.warns(RuntimeWarning, match=r"of 8 rows are degenerate: the answer letters keep less") as ab_caught:
        ab = ab_behavior_probability(model, vec, [(p, "A") for p in prompts], mults, letters=letters, tokenizer=tok)
    assert f"{int(frame.degenerate.sum())} of 8 rows" in str(caught[0].message)
    assert f"{int(ab.degenerate.sum())} of 8 rows" in str(ab_caught[0].message)
    for table, tokens in ((frame, ids), (ab, letters)):
        for row in table.itertuples():
            ids_in = tok(row.prompt)["input_ids"]
            after = hf_logprobs(model, ids_in, {0: row.multiplier * vec.layer_activations[0]})[-1]
            before = hf_logprobs(model, ids_in)[-1]
            mass, mass_un = float(after[tokens].exp().sum()), float(before[tokens].exp().sum())
            assert row.kl == pytest.approx(float((after.exp() * (after - before)).sum()), abs=1e-4, rel=1e-4)
            assert row.degenerate == (mass < 0.1 * mass_un)
            if table is frame:
                assert row.target_mass == pytest.approx(mass, abs=1e-6, rel=1e-4)
                assert row.target_mass_unsteered == pytest.approx(mass_un, abs=1e-6, rel=1e-4)
            else:
                assert row.ab_mass_steered == pytest.approx(mass, abs=1e-6, rel=1e-4)
        small, large = table[table.multiplier == 0.05], table[table.multiplier == 50.0]
        assert not small.degenerate.any() and large.degenerate.any()


def test_no_targets_no_mass_columns(model):
    frame = compare_logits(model, random_vector(model, [1]), PROMPTS[:1], multipliers=[1.0])
    assert "kl" in frame and not {"target_mass", "target_mass_unsteered", "degenerate"} & set(frame.columns)


def test_every_verb_shows_progress_by_default_once_it_runs_long(model, monkeypatch):
    """show_progress=None (the default) reaches the bar, which appears only after a few seconds."""
    import steerlens.evaluation.sweep as sweep_module
    from steerlens import continuation_logprob

    seen = []
    real = sweep_module.progress_bar

    def recording(total, desc, show=None, unit="cell"):
        seen.append(show)
        return real(total, desc, show, unit)

    monkeypatch.setattr(sweep_module, "progress_bar", recording)
    vec = random_vector(model, [1])
    compare_logits(model, vec, PROMPTS[:1])
    ab_behavior_probability(model, vec, [("Pick one: (", "A")])
    continuation_logprob(model, vec, PROMPTS[:1], " it")
    compare_logits(model, vec, PROMPTS[:1], show_progress=False)
    assert seen == [None, None, None, False]


def test_settings_value_equals_its_fields_by_name_and_an_unused_setting_is_refused(model):
    """settings=Settings(...) is the same call as its fields spelled out (and not the default call: prepend_bos
    changes the tokens); a setting the verb does not take is an error, not silently ignored."""
    import pandas as pd

    from steerlens.errors import UnknownKeywordError
    from steerlens.settings import Settings

    vec = random_vector(model, [1, 2])
    kwargs = {"multipliers": [2.0, -1.0], "target_tokens": {"t": [40, 41]}}
    by_value = compare_logits(model, vec, PROMPTS, settings=Settings(batch_size=2, prepend_bos=False), **kwargs)
    by_name = compare_logits(model, vec, PROMPTS, batch_size=2, prepend_bos=False, **kwargs)
    pd.testing.assert_frame_equal(by_value, by_name)
    default = compare_logits(model, vec, PROMPTS, **kwargs)
    assert not by_value.kl.equals(default.kl)
    with pytest.raises(UnknownKeywordError, match="distributed"):
        compare_logits(model, vec, PROMPTS, distributed=True)
    with pytest.raises(UnknownKeywordError, match="distributed"):
        ab_behavior_probability(model, vec, [("Pick one: (", "A")], distributed=True)


def test_token_masses_and_shares_are_the_sweeps_to_the_bit(model):
    """compare_logits' target_mass and ab_behavior_probability's p_matching / ab_mass are read as sweep_layers
    reads prob_mass and prob_share (one computation, metrics.BoundMetric), so equal tokens give equal values."""
    from steerlens import prob_mass, prob_share, sweep_layers

    vec, mults = random_vector(model, [2, 0]), [2.0, -1.5]
    frame = compare_logits(model, vec, PROMPTS, mults, target_tokens={"g": [40, 41, 42], "s": 50})
    swept = sweep_layers(model, vec, PROMPTS, multipliers=mults, metric=prob_mass([40, 41, 42, 50]), per_prompt=True)
    both = frame.merge(swept, on=["layer", "multiplier", "prompt_index"])
    assert len(both) == len(frame) == 12
    assert (both.target_mass_x == both.target_mass_y).all()
    assert (both.target_mass_unsteered_x == both.target_mass_unsteered_y).all()
    items = [(prompt + " (", letter) for prompt, letter in zip(PROMPTS, "ABA")]
    ab = ab_behavior_probability(model, vec, items, mults, letters=(40, 41))
    for letter, share in (("A", prob_share(40, 41)), ("B", prob_share(41, 40))):  # the same batches as ab's
        swept = sweep_layers(model, vec, [p for p, _ in items], multipliers=mults, metric=share, per_prompt=True)
        both = ab[ab.matching == letter].merge(
            swept, left_on=["item_index", "layer", "multiplier"], right_on=["prompt_index", "layer", "multiplier"]
        )
        assert len(both) == 4 * (2 if letter == "A" else 1)
        assert (both.p_matching_steered == both.prob_share).all()
        assert (both.ab_mass_steered == both.target_mass).all()
