"""Prompt lists as every entry point accepts them: one prompt or several, text or token ids."""

from __future__ import annotations

import pytest
import torch

from steerlens.errors import InvalidArgumentError
from steerlens.tokens import check_prompt_inputs


def test_mixed_prompts_and_one_id_list():
    with pytest.raises(InvalidArgumentError, match="1-D"):
        check_prompt_inputs(torch.ones(2, 3, dtype=torch.long))
    assert check_prompt_inputs([[1, 2], "a", torch.tensor([3])]) == [[1, 2], "a", [3]]
    assert check_prompt_inputs([1, 2]) == [[1, 2]]


def test_one_string_or_one_tensor_is_one_prompt():
    assert check_prompt_inputs("Hi there") == ["Hi there"]
    assert check_prompt_inputs(torch.tensor([4, 5, 6])) == [[4, 5, 6]]
    assert check_prompt_inputs(("a", "b")) == ["a", "b"]
    assert check_prompt_inputs(p for p in ["x", "y"]) == ["x", "y"]  # any iterable


@pytest.mark.parametrize(
    "prompts, match",
    [
        ([], "no prompts"),
        (["fine", ""], "non-empty strings"),
        ([[1], []], "pre-tokenized prompt is empty"),
        ([True, False], "non-empty strings"),  # booleans are not token ids
        ([["a", "b"]], "non-empty strings"),
    ],
)
def test_empty_or_malformed_prompts_are_refused(prompts, match):
    with pytest.raises(InvalidArgumentError, match=match):
        check_prompt_inputs(prompts)
