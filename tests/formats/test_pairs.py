"""JSONL pairs with a shared prompt and prompt files in both formats, against the files' own JSON."""

from __future__ import annotations

import json

import pytest

from steerlens.errors import PairsFileError, PromptsFileError
from steerlens.formats.pairs import PromptedPair, load_pairs_jsonl, load_prompts, read_pairs_jsonl, save_pairs_jsonl


def write_lines(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_pairs_keep_their_prompt_and_join_it_as_written(tmp_path):
    rows = [
        {"prompt": "Q: ", "positive": "yes", "negative": "no", "id": 1},
        {"user": "Hi\n", "positive": "hello", "negative": "go away"},
        {"positive": "good", "negative": "bad"},
    ]
    write_lines(tmp_path / "p.jsonl", rows)
    assert read_pairs_jsonl(tmp_path / "p.jsonl") == [
        PromptedPair("yes", "no", "Q: "),
        PromptedPair("hello", "go away", "Hi\n"),
        PromptedPair("good", "bad", None),
    ]
    assert load_pairs_jsonl(tmp_path / "p.jsonl") == [
        ("Q: yes", "Q: no"),
        ("Hi\nhello", "Hi\ngo away"),
        ("good", "bad"),
    ]


@pytest.mark.parametrize(
    "row, problem",
    [
        ({"prompt": "", "positive": "a", "negative": "b"}, "'prompt' is empty"),
        ({"prompt": 3, "positive": "a", "negative": "b"}, "'prompt' must be a string, got int"),
        ({"prompt": "q", "user": "q", "positive": "a", "negative": "b"}, "under 'prompt' or 'user', not both"),
    ],
)
def test_a_bad_prompt_in_a_pair_names_the_line(tmp_path, row, problem):
    write_lines(tmp_path / "p.jsonl", [{"positive": "a", "negative": "b"}, row])
    with pytest.raises(PairsFileError, match="line 2") as info:
        read_pairs_jsonl(tmp_path / "p.jsonl")
    assert problem in str(info.value)


def test_jsonl_prompts_hold_strings_exactly_and_message_lists(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    path = tmp_path / "prompts.JSONL"
    path.write_text(json.dumps("The film was \n") + "\n\n" + json.dumps(messages) + "\n")
    assert load_prompts(path) == ["The film was \n", messages]


def test_any_other_extension_is_one_prompt_a_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text('"quoted" prompt  \n\n[1, 2]\n')
    assert load_prompts(path) == ['"quoted" prompt', "[1, 2]"]


@pytest.mark.parametrize(
    "line, problem",
    [
        ('"ok', "invalid JSON"),
        ("3", "expected a string or a list of messages, got int"),
        ('"  "', "the prompt is empty"),
        ("[]", "the message list is empty"),
        ('["hi"]', "message 0 is a str, not an object"),
        ('[{"role": "user"}]', "message 0 needs a string 'content'"),
        ('[{"role": 1, "content": "hi"}]', "message 0 needs a string 'role'"),
        ('[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]', "the last message must be"),
    ],
)
def test_a_bad_jsonl_prompt_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "prompts.jsonl"
    path.write_text('"fine"\n' + line + "\n")
    with pytest.raises(PromptsFileError) as info:
        load_prompts(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 2: {problem}") and "\n" not in message


def test_an_empty_jsonl_prompt_file_is_refused(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(PromptsFileError, match="no prompts"):
        load_prompts(path)


def test_jsonl_round_trip(tmp_path):
    pairs = [("I love it", "I hate it"), ("ünïcode ✓", 'quote " and \\n')]
    path = tmp_path / "pairs.jsonl"
    save_pairs_jsonl(pairs, path)
    assert load_pairs_jsonl(path) == pairs


def test_jsonl_skips_blank_lines_and_ignores_extra_keys(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('\n{"positive": "a", "negative": "b", "id": 3}\n   \n{"negative": "d", "positive": "c"}\n')
    assert load_pairs_jsonl(path) == [("a", "b"), ("c", "d")]


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"positive": "a", "negative": ', "invalid JSON"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        ('{"positive": "a"}', "missing key 'negative'"),
        ('{"negative": "b"}', "missing key 'positive'"),
        ('{"positive": 1, "negative": "b"}', "'positive' must be a string, got int"),
        ('{"positive": "a", "negative": null}', "'negative' must be a string, got NoneType"),
        ('{"positive": "", "negative": "b"}', "'positive' is empty"),
        ('{"positive": "a", "negative": "   "}', "'negative' is empty"),
    ],
)
def test_jsonl_malformed_line(tmp_path, line, problem):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"positive": "ok", "negative": "fine"}\n\n' + line + "\n")
    with pytest.raises(PairsFileError, match="line 3") as info:
        load_pairs_jsonl(path)
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)


def test_jsonl_invalid_utf8(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b'{"positive": "\xff", "negative": "b"}\n')
    with pytest.raises(PairsFileError, match="line 1: not valid UTF-8"):
        load_pairs_jsonl(path)


def test_jsonl_empty_or_missing_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n\n")
    with pytest.raises(PairsFileError, match="no pairs"):
        load_pairs_jsonl(path)
    with pytest.raises(PairsFileError, match="cannot read"):
        load_pairs_jsonl(tmp_path / "missing.jsonl")


def test_save_rejects_bad_pairs(tmp_path):
    with pytest.raises(TypeError):
        save_pairs_jsonl([("a", "b", "c")], tmp_path / "x.jsonl")
    with pytest.raises(ValueError):
        save_pairs_jsonl([("a", "")], tmp_path / "x.jsonl")
