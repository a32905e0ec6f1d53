"""The toy metrics: next-token probabilities and the mass of a concept's word groups."""

from __future__ import annotations

import torch

from steerlens.toy import concept_mass, neutral_prompts, positive_mass, total_variation
from steerlens.toy.metrics import first_token_ids, group_mass, next_token_probs


def test_concept_mass_rows_are_distributions(toy):
    mass = concept_mass(toy, neutral_prompts("topic"), "topic")
    assert mass.shape == (48, 3)
    torch.testing.assert_close(mass.sum(-1), torch.ones(48))


def test_unsteered_model_is_undecided(toy):
    assert 0.3 < positive_mass(toy, neutral_prompts("sentiment")).mean() < 0.7
    assert concept_mass(toy, neutral_prompts("topic"), "topic").mean(0).min() > 0.2


def test_context_sentiment_is_followed(toy):
    # A mood sentence sets the sentiment of the review that follows; the corpus makes
    # 15% of sentences mixed, so the model cannot be sure of the next sentiment word.
    prompts = neutral_prompts("sentiment")
    assert positive_mass(toy, ["I had a wonderful time. " + p for p in prompts]).mean() > 0.75
    assert positive_mass(toy, ["I had a terrible time. " + p for p in prompts]).mean() < 0.25


def test_next_token_probs_match_the_models_own_forward_per_prompt(toy):
    # Prompts of different lengths are batched (padded) by the library; each row must equal
    # the softmax of the model's own logits for that prompt run alone.
    prompts = ["The film was", "Let me tell you about the trip to the", "I"]
    probs = next_token_probs(toy, prompts, batch_size=2)
    assert probs.shape == (3, toy.cfg.d_vocab)
    for row, prompt in zip(probs, prompts):
        with torch.no_grad():
            expected = torch.softmax(toy(prompt)[0, -1].float(), -1)
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-4)


def test_group_mass_is_the_renormalised_sum_of_each_groups_first_tokens(toy):
    prompts = neutral_prompts("sentiment")[:5]
    groups = {"a": [" good", " great"], "b": [" bad"], "c": [" the"]}
    probs = next_token_probs(toy, prompts)
    by_hand = torch.stack(
        [
            probs[:, [toy.tokenizer.encode(w, add_special_tokens=False)[0] for w in words]].sum(-1)
            for words in groups.values()
        ],
        -1,
    )
    by_hand = by_hand / by_hand.sum(-1, keepdim=True)
    torch.testing.assert_close(group_mass(toy, prompts, groups), by_hand)


def test_first_token_ids_take_the_first_token_without_bos(toy):
    word = " wonderfulness"
    ids = toy.tokenizer.encode(word, add_special_tokens=False)
    assert first_token_ids(toy.tokenizer, [word, " the"]) == [
        ids[0],
        toy.tokenizer.encode(" the", add_special_tokens=False)[0],
    ]
    assert len(ids) > 1 and ids[0] != toy.tokenizer.bos_token_id


def test_total_variation_by_hand():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]])
    q = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.25, 0.25]])
    torch.testing.assert_close(total_variation(p, q), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(total_variation(p[1], torch.tensor([0.25, 0.25, 0.5])), torch.tensor(0.25))


def test_positive_mass_is_the_first_column_of_the_sentiment_mass(toy):
    prompts = neutral_prompts("sentiment")[:6]
    torch.testing.assert_close(positive_mass(toy, prompts), concept_mass(toy, prompts, "sentiment")[:, 0])
