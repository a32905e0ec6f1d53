"""Conditional steering: rows whose prompt passes the condition are steered, the others stay bit-identical."""

from __future__ import annotations

import pytest
import torch
from tiny_hf import make_hf_model, make_tokenizer

from steerlens import SteeringVector, conditional_steering, fit_condition, train_steering_vector
from steerlens.backends import steering_hooks_on
from steerlens.conditional import Condition, condition_scores
from steerlens.errors import InvalidArgumentError, ModelMismatchError
from steerlens.toy import sentiment_pairs, topic_pairs

STEPS = 8


def topic_texts(split):
    """(food texts, travel and film texts): the held-out halves of topic pairs."""
    food_travel, food_film = topic_pairs(split), topic_pairs(split, "food", "film")
    return [f for f, _ in food_travel], [t for _, t in food_travel] + [t for _, t in food_film]


@pytest.fixture(scope="module")
def vectors(toy):
    topic = train_steering_vector(toy, None, topic_pairs("train"), layers=[1, 3], batch_size=32)  # food - travel
    sentiment = train_steering_vector(toy, None, sentiment_pairs("train"), layers=[1, 2], batch_size=32)
    return topic, sentiment


@pytest.fixture(scope="module")
def food(toy, vectors):
    steer, other = topic_texts("train")
    return fit_condition(toy, vectors[0], steer, other, layer=1, aggregate="last")


def generate(model, prompts, **kwargs):
    out = model.generate(
        prompts,
        max_new_tokens=STEPS,
        do_sample=False,
        verbose=False,
        stop_at_eos=False,
        return_type="tokens",
        output_logits=True,
        **kwargs,
    )
    return out.sequences, torch.stack(out.logits, 1)  # [batch, steps, d_vocab]


def test_generation_steers_only_rows_above_the_threshold(toy, vectors, food):
    sentiment = vectors[1].select_layers(2)
    steer, other = topic_texts("test")
    prompts = [steer[0], other[0], steer[1], other[-1], other[5]]  # different lengths: left padding
    should = torch.tensor([True, False, True, False, False])
    plain_tokens, plain_logits = generate(toy, prompts)
    with conditional_steering(toy, sentiment, food.condition, multiplier=2.0) as state:
        tokens, logits = generate(toy, prompts)
    with sentiment.apply(toy, multiplier=2.0):
        full_tokens, full_logits = generate(toy, prompts)
    assert torch.equal(state.steered, should) and len(state.decisions) == 1
    # Below the threshold: the unsteered generation, bit for bit (tokens and every step's logits).
    assert torch.equal(tokens[~should], plain_tokens[~should])
    assert torch.equal(logits[~should], plain_logits[~should])
    # Above it: what plain steering gives (the condition's layer 1 runs before the steered layer 2).
    assert torch.equal(tokens[should], full_tokens[should])
    assert torch.equal(logits[should], full_logits[should])
    assert not torch.equal(tokens[should], plain_tokens[should])
    for row in should.nonzero()[:, 0]:
        print(
            f"\n  steered:   {toy.to_string(plain_tokens[row, -STEPS:])!r}\n        ->   "
            f"{toy.to_string(tokens[row, -STEPS:])!r}"
        )
    # The scores are those condition_scores computes offline (both read the unsteered prompt).
    offline = condition_scores(toy, food.condition, prompts)
    torch.testing.assert_close(state.scores, offline, atol=1e-3, rtol=1e-4)
    # Nothing is left on the model.
    assert steering_hooks_on(toy) == []
    assert all(not block._forward_pre_hooks for block in toy.blocks)
    assert torch.equal(generate(toy, prompts)[1], plain_logits)


def test_positions_count_from_each_rows_first_real_token(toy, vectors, food):
    """With left padding, a row is steered at the positions its prompt has alone."""
    sentiment = vectors[1].select_layers(2)
    steer, other = topic_texts("test")
    prompts = [steer[0], other[0], steer[1], other[5]]  # different lengths: left padding
    lengths = [toy.to_tokens(p).shape[1] for p in prompts]
    assert len(set(lengths)) > 1
    with conditional_steering(toy, sentiment, food.condition, multiplier=3.0, min_token_index=min(lengths) + 2):
        tokens, logits = generate(toy, prompts)
        alone = [generate(toy, [p]) for p in prompts]
    for row, (single_tokens, single_logits) in enumerate(alone):
        assert torch.equal(tokens[row, -STEPS:], single_tokens[0, -STEPS:])
        torch.testing.assert_close(logits[row], single_logits[0], atol=1e-4, rtol=0)


def test_each_generate_call_decides_anew(toy, vectors, food):
    sentiment = vectors[1].select_layers(2)
    steer, other = topic_texts("test")
    with conditional_steering(toy, sentiment, food.condition, multiplier=2.0) as state:
        generate(toy, [other[0]])
        first = generate(toy, [steer[0]])[0]
        generate(toy, [other[1], other[2]])
    assert [d.steered.tolist() for d in state.decisions] == [[False], [True], [False, False]]
    with sentiment.apply(toy, multiplier=2.0):
        assert torch.equal(first, generate(toy, [steer[0]])[0])


def test_condition_below_threshold_steers_negative_texts_only(toy, vectors):
    sentiment = vectors[1]
    train, test = sentiment_pairs("train"), sentiment_pairs("test")
    fitted = fit_condition(toy, sentiment, [n for _, n in train], [p for p, _ in train], layer=1)
    assert not fitted.condition.above  # the texts to steer score low on the sentiment vector
    prompts = [test[0][0], test[0][1], test[1][1], test[2][0]]
    with conditional_steering(toy, sentiment.select_layers(2), fitted.condition, multiplier=2.0) as state:
        tokens, _ = generate(toy, prompts)
    assert state.steered.tolist() == [False, True, True, False]
    plain, _ = generate(toy, prompts)
    assert torch.equal(tokens[[0, 3]], plain[[0, 3]]) and not torch.equal(tokens[[1, 2]], plain[[1, 2]])


def test_sites_before_the_condition_are_steered_from_the_first_generated_token(toy, vectors, food):
    """Condition at layer 3, steering at layer 1: the prompt pass is decided too late to steer layer 1."""
    late = Condition.from_vector(vectors[0], 3, aggregate="last")
    steer, _ = topic_texts("test")
    late = late.with_threshold(float(condition_scores(toy, late, steer[:1])[0]) - 1.0)
    sentiment = vectors[1].select_layers(1)
    plain_tokens, plain_logits = generate(toy, steer[:1])
    with conditional_steering(toy, sentiment, late, multiplier=3.0) as state:
        tokens, logits = generate(toy, steer[:1])
    assert state.steered.tolist() == [True]
    assert torch.equal(logits[:, 0], plain_logits[:, 0])  # the prompt pass: unsteered
    assert not torch.equal(logits[:, 1:], plain_logits[:, 1:])  # every generated token: steered


def test_condition_on_the_steered_site_reads_it_before_steering(toy, vectors):
    """Same layer and layer type: the condition sees the unsteered activation, then the row is steered."""
    sentiment = vectors[1].select_layers(2)
    prompts = [sentiment_pairs("test")[3][0], sentiment_pairs("test")[3][1]]
    condition = Condition.from_vector(vectors[1], 2)
    scores = condition_scores(toy, condition, prompts)
    condition = condition.with_threshold(float(scores.mean()))
    rows = [toy.to_tokens(p)[0].tolist() for p in prompts]
    width = max(map(len, rows))
    tokens = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left padding
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        plain = toy(tokens, attention_mask=mask)
        with conditional_steering(toy, sentiment, condition, multiplier=2.0) as state:
            steered = toy(tokens, attention_mask=mask)
        with sentiment.apply(toy, multiplier=2.0):
            full = toy(tokens, attention_mask=mask)
    on = state.steered
    assert on.tolist() == (scores > scores.mean()).tolist() and on.any() and not on.all()
    assert torch.equal(steered[on], full[on]) and torch.equal(steered[~on], plain[~on])


def test_bad_conditions_fail_before_any_forward_pass(toy, vectors):
    sentiment = vectors[1]
    with pytest.raises(InvalidArgumentError, match="Condition"):
        with conditional_steering(toy, sentiment, "food"):
            pass
    with pytest.raises(ModelMismatchError, match="d_model"):
        with conditional_steering(toy, sentiment, Condition(torch.ones(7), 1)):
            pass
    with pytest.raises(InvalidArgumentError, match="non-zero"):
        Condition(torch.zeros(toy.cfg.d_model), 1)
    with pytest.raises(InvalidArgumentError, match="aggregate"):
        Condition(torch.ones(toy.cfg.d_model), 1, aggregate="max")
    with pytest.raises(ValueError, match="layer"):
        Condition.from_vector(sentiment)  # two layers: say which
    with pytest.raises(RuntimeError, match="inside"):  # an error inside the block removes every hook
        with conditional_steering(toy, sentiment, Condition.from_vector(sentiment, 1)):
            raise RuntimeError("inside")
    assert steering_hooks_on(toy) == [] and all(not block._forward_pre_hooks for block in toy.blocks)


def test_hugging_face_generate_steers_only_rows_above_the_threshold():
    model, tokenizer = make_hf_model("llama"), make_tokenizer()
    gen = torch.Generator().manual_seed(0)
    condition = Condition(torch.randn(32, generator=gen), 0, aggregate="mean", skip_first=False)
    vec = SteeringVector({1: 6.0 * torch.randn(32, generator=gen)}, "resid_post")
    texts = ["the cat sat on the mat", "a big dog", "red and blue or red", "the small sad cat ran", "blue"]
    scores = condition_scores(model, condition, texts, tokenizer=tokenizer)
    condition = condition.with_threshold(float(scores.median()))
    should = scores > scores.median()
    rows = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left padding with <pad> = 0
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])

    def run():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=STEPS,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        return out.sequences, torch.stack(out.logits, 1)

    plain = run()
    with conditional_steering(model, vec, condition, multiplier=1.0, tokenizer=tokenizer) as state:
        steered = run()
    with vec.apply(model):
        full = run()
    assert torch.equal(state.steered, should) and should.any() and not should.all()
    torch.testing.assert_close(state.scores, scores, atol=1e-4, rtol=1e-4)
    for got, clean, everywhere in zip(steered, plain, full):
        assert torch.equal(got[~should], clean[~should])
        assert torch.equal(got[should], everywhere[should])
    assert not torch.equal(steered[1][should], plain[1][should])
    assert steering_hooks_on(model) == [] and not model._forward_pre_hooks


def test_a_condition_named_by_steering_vectors_reads_the_module_of_that_name():
    """On Gemma 2 ``post_attention_layernorm`` is that module (not ``ln2``), as when a vector is trained there."""
    model, tokenizer = make_hf_model("gemma2"), make_tokenizer()
    direction = torch.randn(32, generator=torch.Generator().manual_seed(1))
    texts = ["the cat sat on the mat", "a big dog", "red and blue or red"]
    got = condition_scores(
        model, Condition(direction, 1, "post_attention_layernorm", skip_first=False), texts, tokenizer=tokenizer
    )
    module = model.model.layers[1].post_attention_layernorm
    expected = []
    for text in texts:
        seen = []
        handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
        with torch.no_grad():
            model(torch.tensor([tokenizer(text)["input_ids"]]))
        handle.remove()
        expected.append((seen[0][0] @ (direction / direction.norm())).mean())
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)
