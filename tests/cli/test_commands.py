"""``steerlens sweep``'s options: the metric choices come from the one list of presets."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import subprocess_env

from steerlens.cli.main import _extra_commands, build_parser
from steerlens.evaluation import metrics


def sweep_parser():
    sub = next(a for a in build_parser(_extra_commands())._actions if a.choices)
    return sub.choices["sweep"]


def metric_action():
    return next(a for a in sweep_parser()._actions if "--metric" in a.option_strings)


def test_metric_choices_are_the_presets():
    assert list(metric_action().choices) == list(metrics.PRESETS)


def test_a_new_preset_is_a_choice_without_editing_the_cli(monkeypatch):
    monkeypatch.setitem(metrics.PRESETS, "always_one", lambda steered, unsteered: steered[..., 0] * 0 + 1)
    args = sweep_parser().parse_args(
        ["--pairs", "p.jsonl", "--prompts", "p.txt", "--out", "s.csv", "--metric", "always_one"]
    )
    assert args.metric == "always_one"
    monkeypatch.delitem(metrics.PRESETS, "always_one")
    with pytest.raises(SystemExit):
        sweep_parser().parse_args(
            ["--pairs", "p.jsonl", "--prompts", "p.txt", "--out", "s.csv", "--metric", "always_one"]
        )


def test_building_the_parser_reads_no_presets():
    """``steerlens info`` builds the same parser, and must not import torch (the presets' module does)."""
    code = (
        "import sys\nfrom steerlens.cli.main import _extra_commands, build_parser\n"
        "build_parser(_extra_commands()).parse_args(['info', 'v.safetensors'])\n"
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
