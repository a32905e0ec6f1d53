"""Prompts and pairs as the model receives them on the command line: --chat, .jsonl prompt files, message
lists; against the tokenizer's own apply_chat_template."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from steerlens import SteeringVector, sweep_layers, train_steering_vector
from steerlens.cli import main
from steerlens.cli.prompts import chat_tokenizer, render_pairs, render_prompts
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation import steered_and_unsteered
from steerlens.formats.pairs import PromptedPair


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, capsys) -> str:
    """The single stderr line of a failed command (exit 2, no traceback)."""
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("steerlens: error: ")
    return err


def user_turn(tokenizer, text: str) -> str:
    """The reference: ``text`` as the user's turn with the generation prompt, by the tokenizer itself."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


@pytest.fixture()
def chat_model(monkeypatch):
    """A tiny model with a chat template, returned by every --model the CLI loads."""
    from helpers import make_chat_model

    import steerlens.adapter

    model = make_chat_model(n_layers=3)
    monkeypatch.setattr(steerlens.adapter, "load_model", lambda source: model)
    return model


CHAT_PAIRS = [
    {"prompt": "Do you like the film?", "positive": "I love it", "negative": "I hate it"},
    {"positive": "the food was good", "negative": "the food was bad"},
    {"user": "Do you like cats?", "positive": "Yes a lot", "negative": "Not at all"},
]


@pytest.fixture()
def chat_pairs_file(tmp_path):
    import json

    path = tmp_path / "chat_pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in CHAT_PAIRS))
    return path


def templated_pairs(tokenizer) -> list[tuple[str, str]]:
    """CHAT_PAIRS as --chat documents them, rendered by apply_chat_template directly."""
    out = []
    for row in CHAT_PAIRS:
        prompt = row.get("prompt", row.get("user"))
        if prompt is None:
            out.append((user_turn(tokenizer, row["positive"]), user_turn(tokenizer, row["negative"])))
        else:
            out.append((user_turn(tokenizer, prompt) + row["positive"], user_turn(tokenizer, prompt) + row["negative"]))
    return out


def test_train_chat_trains_on_the_templated_pairs(chat_model, chat_pairs_file, tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    code, stdout, _ = run(["train", "--chat", "--pairs", chat_pairs_file, "--layers", "1", "--out", out], capsys)
    assert code == 0 and "trained on 3 pairs (in the chat template)" in stdout
    assert SteeringVector.load(out).metadata["training"]["chat_template"] is True
    assert "batch size 8, in the model's chat template (steerlens train --chat)" in run(["info", out], capsys)[1]
    got = SteeringVector.load(out).layer_activations[1]
    expected = train_steering_vector(chat_model, None, templated_pairs(chat_model.tokenizer), layers=[1])
    torch.testing.assert_close(got, expected.layer_activations[1], atol=1e-5, rtol=0)
    plain = train_steering_vector(chat_model, None, [(r["positive"], r["negative"]) for r in CHAT_PAIRS], layers=[1])
    assert not torch.allclose(got, plain.layer_activations[1], atol=1e-3)


def test_train_without_chat_joins_prompt_and_texts(chat_model, chat_pairs_file, tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    assert run(["train", "--pairs", chat_pairs_file, "--layers", "1", "--out", out], capsys)[0] == 0
    texts = [
        (r.get("prompt", r.get("user", "")) + r["positive"], r.get("prompt", r.get("user", "")) + r["negative"])
        for r in CHAT_PAIRS
    ]
    expected = train_steering_vector(chat_model, None, texts, layers=[1])
    torch.testing.assert_close(
        SteeringVector.load(out).layer_activations[1], expected.layer_activations[1], atol=1e-5, rtol=0
    )


def test_sweep_chat_with_a_jsonl_prompt_file(chat_model, chat_pairs_file, tmp_path, capsys):
    import json

    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How was the film?"}]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps("I think the film\nwas ") + "\n\n" + json.dumps(system) + "\n")
    out = tmp_path / "sweep.csv"
    argv = ["sweep", "--chat", "--pairs", chat_pairs_file, "--prompts", prompts, "--layers", "0,2"]
    code, stdout, _ = run([*argv, "--multipliers", "-2,2", "--per-prompt", "--out", out], capsys)
    assert code == 0 and "over 2 prompts" in stdout
    tok = chat_model.tokenizer
    rendered = [
        user_turn(tok, "I think the film\nwas "),  # a JSON string is kept exactly, then wrapped
        tok.apply_chat_template(system, tokenize=False, add_generation_prompt=True),
    ]
    expected = sweep_layers(
        chat_model,
        templated_pairs(tok),
        rendered,
        layers=[0, 2],
        multipliers=[-2, 2],
        per_prompt=True,
        train_kwargs={"batch_size": 8},
    )
    got = pd.read_csv(out)
    assert len(got) == len(expected) == 8
    assert got["kl"].to_numpy() == pytest.approx(expected["kl"].to_numpy(), abs=1e-6)
    assert got["kl"].gt(0).all()


def test_sweep_renders_message_lists_even_without_chat(chat_model, chat_pairs_file, tmp_path, capsys):
    import json

    messages = [{"role": "user", "content": "the film was"}]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps("the food was") + "\n" + json.dumps(messages) + "\n")
    out = tmp_path / "sweep.csv"
    argv = ["sweep", "--pairs", chat_pairs_file, "--prompts", prompts, "--layers", "1", "--multipliers", "3"]
    assert run([*argv, "--per-prompt", "--out", out], capsys)[0] == 0
    tok = chat_model.tokenizer
    rendered = ["the food was", tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]
    pairs = [
        (r.get("prompt", r.get("user", "")) + r["positive"], r.get("prompt", r.get("user", "")) + r["negative"])
        for r in CHAT_PAIRS
    ]
    expected = sweep_layers(
        chat_model, pairs, rendered, layers=[1], multipliers=[3], per_prompt=True, train_kwargs={"batch_size": 8}
    )
    assert pd.read_csv(out)["kl"].to_numpy() == pytest.approx(expected["kl"].to_numpy(), abs=1e-6)


def test_generate_chat_continues_the_templated_prompt(chat_model, tmp_path, capsys):
    vec = tmp_path / "v.safetensors"
    SteeringVector({1: torch.randn(chat_model.cfg.d_model, generator=torch.Generator().manual_seed(0))}).save(vec)
    argv = ["generate", "--chat", "--vector", vec, "--prompt", "Do you like cats?", "--multiplier", "3"]
    code, stdout, _ = run([*argv, "--max-new-tokens", "6"], capsys)
    prompt = user_turn(chat_model.tokenizer, "Do you like cats?")
    steered, plain = steered_and_unsteered(chat_model, SteeringVector.load(vec), prompt, 3.0, 6)
    assert code == 0 and prompt != "Do you like cats?"
    assert stdout.splitlines() == [f"prompt:     {prompt!r}", f"unsteered:  {plain!r}", f"steered x3: {steered!r}"]


@pytest.mark.parametrize(
    "argv, phrases",
    [
        (
            ["generate", "--chat", "--vector", "{vec}", "--prompt", "hi"],
            ["--chat wraps", "--model toy has no chat template", "drop --chat", "--model smollm2-135m-instruct"],
        ),
        (
            ["train", "--chat", "--pairs", "{pairs}", "--out", "{tmp}/v.safetensors"],
            ["--model toy has no chat template", "drop --chat"],
        ),
        (
            ["sweep", "--pairs", "{pairs}", "--prompts", "{messages}", "--layers", "1", "--out", "{tmp}/s.csv"],
            ["{messages} holds message lists", "no chat template", "write plain prompts"],
        ),
    ],
)
def test_chat_without_a_chat_template_is_one_line(argv, phrases, toy, pairs_file, tmp_path, capsys):
    assert getattr(toy.tokenizer, "chat_template", None) is None
    names = {"tmp": tmp_path, "pairs": pairs_file, "vec": tmp_path / "v.safetensors", "messages": tmp_path / "m.jsonl"}
    SteeringVector({1: torch.ones(toy.cfg.d_model)}).save(names["vec"])
    names["messages"].write_text('[{"role": "user", "content": "hi"}]\n')
    err = one_line_error(main([a.format(**names) for a in argv]), capsys)
    for phrase in phrases:
        assert phrase.format(**names) in err, err


def test_render_prompts_wraps_strings_only_with_chat_and_always_renders_message_lists():
    from helpers import make_chat_model

    model = make_chat_model(n_layers=1)
    tok = model.tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How was it?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_prompts(model, ["Hi", messages], chat=True, model_name="m") == [user_turn(tok, "Hi"), rendered]
    assert render_prompts(model, ["Hi", messages], chat=False, model_name="m") == ["Hi", rendered]
    assert render_prompts(model, ["Hi", "there"], chat=False, model_name="m") == ["Hi", "there"]


def test_render_pairs_puts_a_prompt_in_the_user_turn_and_the_texts_after_it():
    from helpers import make_chat_model

    model = make_chat_model(n_layers=1)
    tok = model.tokenizer
    pairs = [PromptedPair(" yes", " no", "Cats?"), PromptedPair("good", "bad")]
    assert render_pairs(model, pairs, chat=False, model_name="m") == [("Cats? yes", "Cats? no"), ("good", "bad")]
    assert render_pairs(model, pairs, chat=True, model_name="m") == [
        (user_turn(tok, "Cats?") + " yes", user_turn(tok, "Cats?") + " no"),
        (user_turn(tok, "good"), user_turn(tok, "bad")),
    ]


def test_a_model_without_a_chat_template_is_refused_with_the_reason_and_the_fix(model):
    assert render_pairs(model, [PromptedPair("a", "b")], chat=False, model_name="tiny") == [("a", "b")]
    with pytest.raises(InvalidArgumentError, match="--chat wraps each pair.*--model tiny has no chat template; drop"):
        render_pairs(model, [PromptedPair("a", "b")], chat=True, model_name="tiny")
    with pytest.raises(InvalidArgumentError, match="prompts.jsonl holds message lists.*write plain prompts"):
        render_prompts(model, [[{"role": "user", "content": "hi"}]], chat=False, model_name="t", source="prompts.jsonl")
    with pytest.raises(InvalidArgumentError, match="e.g. --model smollm2-135m-instruct"):
        chat_tokenizer(model, "tiny", "why")
