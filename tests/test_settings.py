"""The settings value: built once at a public door (keywords over ``settings=``, verb defaults), the
backend resolved once per call, and the same result as the keywords spelled out."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, random_vector, steered_logits_by_hand

import steerlens.backends as backends
from steerlens import Settings
from steerlens.errors import InvalidArgumentError, UnknownKeywordError
from steerlens.evaluation import calibrate, compare_logits, prob_share, sweep_layers
from steerlens.settings import FIELDS, PROMPT_READING, READING, STEERING, Run, folded, open_run, settings_from
from steerlens.tokens import prepare_prompts

PROMPTS = ["I think the film", "The food was good and", "It was"]


@pytest.fixture(scope="module")
def model():
    return make_model(n_layers=3)


def test_the_field_sets_nest():
    assert PROMPT_READING < READING < STEERING < FIELDS
    assert FIELDS == {"tokenizer", "batch_size", "padding_side", "prepend_bos", "steer_from", "operator"} | {
        "show_progress",
        "distributed",
    }


def test_bad_values_are_refused_when_the_value_is_built():
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        Settings(batch_size=0)
    with pytest.raises(InvalidArgumentError, match="padding"):
        Settings(padding_side="middle")
    with pytest.raises(InvalidArgumentError, match="prepend_bos"):
        Settings(prepend_bos="yes")
    with pytest.raises(InvalidArgumentError, match="operator"):
        Settings(operator=3)
    with pytest.raises(InvalidArgumentError, match="distributed"):
        Settings(distributed="no")
    with pytest.raises(UnknownKeywordError, match="bach_size"):
        Settings().replace(bach_size=2)


def test_keywords_win_over_the_shared_value_and_defaults_fill_the_rest():
    shared = Settings(batch_size=4, prepend_bos=False, steer_from="last")
    s = settings_from({"settings": shared, "batch_size": 2}, "verb", STEERING, batch_size=32)
    assert (s.batch_size, s.prepend_bos, s.steer_from) == (2, False, "last")
    assert settings_from({"settings": shared}, "verb", STEERING, batch_size=32).batch_size == 4
    assert settings_from({}, "verb", STEERING, batch_size=32).batch_size == 32
    # Fields the verb does not read go back to their defaults (a shared value may carry them).
    read_only = settings_from({"settings": shared}, "verb", PROMPT_READING)
    assert (read_only.steer_from, read_only.prepend_bos) == (None, False)
    with pytest.raises(UnknownKeywordError, match="steer_from"):
        settings_from({"steer_from": "last"}, "verb", PROMPT_READING)
    with pytest.raises(InvalidArgumentError, match="settings must be"):
        settings_from({"settings": {"batch_size": 2}}, "verb")


def test_a_run_prepares_prompts_as_its_settings_say(model):
    run = open_run(model, {"prepend_bos": False, "padding_side": "left"}, "verb", batch_size=8)
    assert isinstance(run, Run) and run.batch_size == 8
    by_hand = prepare_prompts(run.backend, PROMPTS, prepend_bos=False, padding_side="left")
    prepared = run.prepare(PROMPTS)
    assert prepared.encoded == by_hand.encoded and prepared.padding_side == "left"
    assert prepared.encoded[0] == model.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    steered_from_last = open_run(model, {"steer_from": "last"}, "verb").starts(prepared.encoded)
    assert steered_from_last == [len(ids) - 1 for ids in prepared.encoded]


def test_a_settings_value_gives_the_keywords_result(model):
    vec = random_vector(model, layers=(1,), scale=2.0)
    shared = Settings(batch_size=2, prepend_bos=False, steer_from="last")
    by_value = compare_logits(model, vec, PROMPTS, multipliers=[3.0], settings=shared)
    by_keywords = compare_logits(
        model, vec, PROMPTS, multipliers=[3.0], batch_size=2, prepend_bos=False, steer_from="last"
    )
    assert by_value.equals(by_keywords)
    # ... and it is really applied: KL of a hand-hooked forward that steers only the last token, without BOS.
    ids = model.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        clean = model(torch.tensor([ids]))[0, -1].log_softmax(-1)
    steered = steered_logits_by_hand(model, vec, 1, 3.0, ids, start=len(ids) - 1)[-1].log_softmax(-1)
    kl = float((steered.exp() * (steered - clean)).sum())
    assert by_value.loc[by_value.prompt_index == 0, "kl"].item() == pytest.approx(kl, rel=1e-4)
    assert not by_value.equals(compare_logits(model, vec, PROMPTS, multipliers=[3.0]))


def _counting(monkeypatch) -> list[int]:
    """Count ``backend_for`` calls wherever steerlens imported it."""
    import sys

    calls: list[int] = []
    real = backends.backend_for

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("steerlens") and getattr(module, "backend_for", None) is real:
            monkeypatch.setattr(module, "backend_for", counting)
    return calls


def test_one_call_resolves_the_backend_once(model, monkeypatch):
    vec = random_vector(model, layers=(0, 1, 2), scale=1.0)
    share = prob_share([66], [67])  # token ids: this tokenizer spells words letter by letter
    calls = _counting(monkeypatch)
    calibrate(model, vec, PROMPTS * 2, share, PROMPTS, max_kl=5.0, relative=True, keep_layers=1)
    assert len(calls) == 1
    calls.clear()
    sweep_layers(model, vec, PROMPTS, multipliers=[-1.0, 1.0], metric=share)
    assert len(calls) == 1
    calls.clear()
    # Handed pairs, the sweep's convenience trains first: one call of its own to train_steering_vector.
    sweep_layers(model, [("I love it", "I hate it")], PROMPTS, layers=[1], multipliers=[1.0])
    assert len(calls) == 2


def test_a_shared_operator_is_applied_by_a_verb_that_steers(model):
    vec = random_vector(model, layers=(1,), scale=2.0)
    doubled = Settings(operator=lambda act, v: 2 * v)
    plain = sweep_layers(model, vec, PROMPTS, multipliers=[1.0], settings=Settings())
    with_operator = sweep_layers(model, vec, PROMPTS, multipliers=[1.0], settings=doubled)
    twice = sweep_layers(model, vec, PROMPTS, multipliers=[2.0])
    assert torch.allclose(torch.tensor(with_operator.kl.values), torch.tensor(twice.kl.values), atol=1e-6)
    assert not plain.kl.equals(with_operator.kl)


def test_parameters_a_door_takes_by_position_fold_in():
    shared = {"settings": Settings(batch_size=8)}
    assert folded(shared, {"batch_size": 32}, batch_size=32) == shared  # at its default: the value's field
    assert folded(shared, {"batch_size": 32}, batch_size=4)["batch_size"] == 4  # changed: it wins
    assert (
        settings_from(folded(shared, {"batch_size": 32}, batch_size=32), "sweep_layers", batch_size=32).batch_size == 8
    )
    assert settings_from(folded({}, {"batch_size": 32}, batch_size=32), "sweep_layers", batch_size=32).batch_size == 32
    # steering-vectors' show_progress=False default is not a choice: True from the shared value stays.
    defaults = {"show_progress": False, "tokenizer": None}
    assert folded({"show_progress": True}, defaults, show_progress=False, tokenizer=None) == {"show_progress": True}
