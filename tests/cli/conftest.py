"""Fixtures of the command-line tests: a pairs file and a prompts file from the toy data sets."""

from __future__ import annotations

import pytest

from steerlens.formats.pairs import save_pairs_jsonl
from steerlens.toy import neutral_prompts, sentiment_pairs


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    save_pairs_jsonl(sentiment_pairs("train")[:16], path)
    return path


@pytest.fixture()
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(neutral_prompts("sentiment", "test")[:6]) + "\n\n")
    return path
