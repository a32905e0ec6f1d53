"""Argument types of the command line: comma-separated lists, positive counts, output paths checked at parse time."""

from __future__ import annotations

import argparse

import pytest

from steerlens.cli.types import float_list, int_list, output_file, output_folder, positive_int, word_list


def test_lists_split_on_commas_and_skip_blanks():
    assert int_list("2,-1, 3,") == [2, -1, 3]
    assert float_list("-4,-0.5,2") == [-4.0, -0.5, 2.0]
    assert word_list("good, great ,,") == [" good", " great"]  # mid-sentence words keep their space


@pytest.mark.parametrize(
    "parse, text, match",
    [
        (int_list, "1,a", "comma-separated integers, got '1,a'"),
        (int_list, "1.5", "comma-separated integers"),
        (int_list, " , ", "at least one"),
        (float_list, "x", "comma-separated numbers"),
        (word_list, ",", "comma-separated words"),
        (positive_int, "0", "positive integer, got 0"),
        (positive_int, "-3", "positive integer, got -3"),
        (positive_int, "two", "positive integer, got 'two'"),
    ],
)
def test_bad_values_are_usage_errors(parse, text, match):
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        parse(text)


def test_positive_int():
    assert positive_int("16") == 16


def test_output_paths_are_checked_when_parsed(tmp_path):
    assert output_file(str(tmp_path / "v.safetensors")) == tmp_path / "v.safetensors"
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        output_file(str(tmp_path))
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        output_file(str(tmp_path / "missing" / "v.safetensors"))
    assert output_folder(str(tmp_path / "new" / "demo")) == tmp_path / "new" / "demo"  # created later
    (tmp_path / "file").write_text("x")
    with pytest.raises(argparse.ArgumentTypeError, match="is a file, not a folder"):
        output_folder(str(tmp_path / "file"))
    # Nothing was created while checking.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
