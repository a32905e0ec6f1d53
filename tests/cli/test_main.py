"""The command line: each subcommand against the library call it wraps, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import assert_atomic, spy_on_replace, subprocess_env

from steerlens import SteeringVector, prob_share, sweep_layers, train_steering_vector
from steerlens.cli import main
from steerlens.evaluation import steered_and_unsteered
from steerlens.formats.pairs import save_pairs_jsonl
from steerlens.toy import sentiment_pairs


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_the_library_vector(toy, pairs_file, tmp_path, capsys):
    out = tmp_path / "vec.safetensors"
    code, stdout, _ = run(
        ["train", "--pairs", pairs_file, "--layers", "1,-1", "--batch-size", "4", "--out", out], capsys
    )
    assert code == 0 and "layers [1, 3]" in stdout
    expected = train_steering_vector(toy, None, sentiment_pairs("train")[:16], layers=[1, 3], batch_size=1)
    vec = SteeringVector.load(out)
    assert vec.layers == [1, 3]
    for layer in (1, 3):
        torch.testing.assert_close(vec.layer_activations[layer], expected.layer_activations[layer], atol=1e-5, rtol=0)


def test_generate_prints_steered_and_unsteered(toy, pairs_file, tmp_path, capsys):
    out = tmp_path / "vec.safetensors"
    run(["train", "--pairs", pairs_file, "--layers", "2", "--out", out], capsys)
    prompt = "Let me tell you about the film. I thought the movie was"
    code, stdout, _ = run(
        ["generate", "--vector", out, "--multiplier", "-6", "--prompt", prompt, "--max-new-tokens", "8"], capsys
    )
    steered, plain = steered_and_unsteered(toy, SteeringVector.load(out), prompt, -6.0, 8)
    assert code == 0
    assert f"unsteered:  {plain!r}" in stdout and f"steered x-6: {steered!r}" in stdout


def test_sweep_csv_equals_sweep_layers(toy, pairs_file, prompts_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep.csv"
    replaced = spy_on_replace(monkeypatch)
    code, stdout, _ = run(
        [
            "sweep",
            "--pairs",
            pairs_file,
            "--prompts",
            prompts_file,
            "--layers",
            "0,2",
            "--multipliers",
            "-4,4",
            "--positive-words",
            "good,great",
            "--negative-words",
            "bad,terrible",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0 and "prob_share over 6 prompts" in stdout
    got = pd.read_csv(out)
    prompts = prompts_file.read_text().split("\n")[:6]
    expected = sweep_layers(
        toy,
        sentiment_pairs("train")[:16],
        prompts,
        layers=[0, 2],
        multipliers=[-4, 4],
        metric=prob_share([" good", " great"], [" bad", " terrible"]),
        train_kwargs={"batch_size": 8},
    )
    assert list(got["layer"]) == [0, 0, 2, 2] and list(got["multiplier"]) == [-4, 4, -4, 4]
    assert got["prob_share"].to_numpy() == pytest.approx(expected["prob_share"].to_numpy(), abs=1e-6)
    assert_atomic(replaced, out)
    # The damage beside the effect, in the CSV and on screen.
    for column in ("kl", "target_mass", "target_mass_unsteered"):
        assert got[column].to_numpy() == pytest.approx(expected[column].to_numpy(), abs=1e-6), column
    assert got["degenerate"].tolist() == expected["degenerate"].tolist()
    assert "kl (nats):" in stdout


def test_sweep_marks_degenerate_cells_and_kl_sweeps_carry_kl(toy, prompts_file, tmp_path, capsys):
    """A topic vector pushed 60x breaks the toy model's sentiment words: the CSV flags it, the table stars it."""
    from steerlens.toy import topic_pairs

    save_pairs_jsonl(topic_pairs("train")[:16], tmp_path / "topic.jsonl")
    words = ["--positive-words", "good,great", "--negative-words", "bad,terrible"]
    common = ["sweep", "--pairs", tmp_path / "topic.jsonl", "--prompts", prompts_file, "--layers", "1"]
    common += ["--multipliers", "1,60"]
    with pytest.warns(RuntimeWarning, match="1 of 2 cells are degenerate"):
        code, stdout, _ = run([*common, *words, "--out", tmp_path / "share.csv"], capsys)
    got = pd.read_csv(tmp_path / "share.csv")
    assert code == 0 and got["degenerate"].tolist() == [False, True]
    assert got["target_mass"][1] < 0.1 * got["target_mass_unsteered"][1]  # the flag's own definition
    share_row = next(line for line in stdout.splitlines() if line.split()[:1] == ["1"])
    assert share_row.count("*") == 1 and share_row.split()[-1].endswith("*")
    assert stdout.count("* degenerate") == 1 and "kl (nats):" in stdout
    code, stdout, _ = run([*common, "--out", tmp_path / "kl.csv"], capsys)
    kl = pd.read_csv(tmp_path / "kl.csv")
    assert code == 0 and "kl" in kl and not {"target_mass", "degenerate"} & set(kl.columns)
    assert kl["kl"].to_numpy() == pytest.approx(got["kl"].to_numpy(), abs=1e-6)  # the same damage either way


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["train", "--pairs", "{missing}", "--out", "{tmp}/v.safetensors"], "cannot read pairs file"),
        (["train", "--pairs", "{bad_jsonl}", "--out", "{tmp}/v.safetensors"], "line 2"),
        (["train", "--pairs", "{pairs}", "--layers", "9", "--out", "{tmp}/v.safetensors"], "layer"),
        (
            ["train", "--pairs", "{pairs}", "--layers", "a,b", "--out", "{tmp}/v.safetensors"],
            "comma-separated integers",
        ),
        (
            ["train", "--model", "{tmp}/no-such-model", "--pairs", "{pairs}", "--out", "{tmp}/v.safetensors"],
            "no-such-model",
        ),
        (["info", "{garbage}"], "{garbage}"),
        (["generate", "--vector", "{garbage}", "--prompt", "hi"], "{garbage}"),
        (["sweep", "--pairs", "{pairs}", "--prompts", "{empty}", "--out", "{tmp}/s.csv"], "no prompts"),
        (["sweep", "--pairs", "{pairs}", "--prompts", "{empty}", "--positive-words", "good", "--out", "x"], "neither"),
        (["train"], "required"),
        (["nonsense"], "invalid choice"),
        (["generate", "--vector", "{garbage}", "--prompt", "hi", "--max-new-tokens", "0"], "positive integer"),
        (["demo", "--max-new-tokens", "-3"], "positive integer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, phrase, pairs_file, tmp_path, capsys):
    files = {
        "tmp": tmp_path,
        "missing": tmp_path / "missing.jsonl",
        "pairs": pairs_file,
        "bad_jsonl": tmp_path / "bad.jsonl",
        "garbage": tmp_path / "garbage.safetensors",
        "empty": tmp_path / "empty.txt",
    }
    files["bad_jsonl"].write_text('{"positive": "a", "negative": "b"}\n{"positive": 3}\n')
    files["garbage"].write_bytes(os.urandom(64))
    files["empty"].write_text("\n \n")
    argv = [a.format(**files) for a in argv]
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("steerlens")
    assert phrase.format(**files) in err


def test_console_entry_point_has_no_traceback(tmp_path):
    env = subprocess_env()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    proc = subprocess.run(
        [sys.executable, "-m", "steerlens.cli", "info", str(bad)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr


def one_line_error(code: int, capsys) -> str:
    """The single stderr line of a failed command (exit 2, no traceback)."""
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("steerlens: error: ")
    return err


def test_generate_past_the_context_is_one_line(toy, tmp_path, capsys):
    vec = tmp_path / "v.safetensors"
    SteeringVector({1: torch.ones(toy.cfg.d_model)}).save(vec)
    code = main(["generate", "--vector", str(vec), "--prompt", "I think", "--max-new-tokens", "100000"])
    err = one_line_error(code, capsys)
    room = toy.cfg.n_ctx - toy.to_tokens("I think").shape[1]
    assert "--max-new-tokens 100000 does not fit" in err and f"use --max-new-tokens {room} or less" in err


def test_missing_relative_model_folder_is_one_line(tmp_path, monkeypatch, capsys):
    """A folder under an existing one never goes to the hub; neither does a name when the hub is unreachable."""
    from steerlens.adapter import load as load_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(load_module, "_in_hub_cache", lambda name: False)
    monkeypatch.setattr(load_module, "_hub_reachable", lambda timeout=3.0: False, raising=False)
    (tmp_path / "runs").mkdir()
    vec = tmp_path / "v.safetensors"
    SteeringVector({1: torch.ones(8)}).save(vec)
    code = main(["generate", "--model", "runs/tiny", "--vector", str(vec), "--prompt", "hi"])
    err = one_line_error(code, capsys)
    assert "no such folder" in err and str(tmp_path / "runs" / "tiny") in err
    code = main(["generate", "--model", "my_tiny_model", "--vector", str(vec), "--prompt", "hi"])
    err = one_line_error(code, capsys)
    assert "no local folder" in err and "HF_HUB_OFFLINE=1" in err and err.rstrip().endswith(".")


def test_hub_errors_are_not_cut_mid_sentence(tmp_path, monkeypatch, capsys):
    import transformers

    from steerlens.adapter import load as load_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(load_module, "_hub_reachable", lambda timeout=3.0: True, raising=False)

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    vec = tmp_path / "v.safetensors"
    SteeringVector({1: torch.ones(8)}).save(vec)
    err = one_line_error(main(["generate", "--model", "org/not-here", "--vector", str(vec), "--prompt", "hi"]), capsys)
    assert "load the files. Check your connection." in err and "HF_HUB_OFFLINE=1" in err


@pytest.fixture()
def unwritable_folder(tmp_path):
    """A folder no new file can be created in: a read-only one, or /sys for root (who ignores permissions)."""
    if os.geteuid() == 0:
        folder = Path("/sys")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        probe = folder / ".probe"
        probe.touch()
        probe.unlink()
        pytest.skip(f"{folder} is writable here")
    except OSError:
        pass
    yield folder
    if folder != Path("/sys"):
        folder.chmod(0o755)


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["train", "--pairs", "{pairs}", "--out", "{tmp}"], "is a folder"),
        (["train", "--pairs", "{pairs}", "--out", "{tmp}/missing/v.safetensors"], "'{tmp}/missing' does not exist"),
        (["train", "--pairs", "{pairs}", "--out", "{unwritable}/v.safetensors"], "cannot write in the folder"),
        (["train", "--pairs", "{pairs}", "--out", "{pairs}/v.safetensors"], "is not a folder"),
        (["sweep", "--pairs", "{pairs}", "--prompts", "{pairs}", "--out", "."], "'.' is a folder"),
        (["sweep", "--pairs", "{pairs}", "--prompts", "{pairs}", "--out", "{tmp}/no/s.csv"], "does not exist"),
        (["sweep", "--pairs", "{pairs}", "--prompts", "{pairs}", "--out", "{unwritable}/s.csv"], "cannot write"),
        (["demo", "--out", "{pairs}"], "is a file, not a folder"),
        (["demo", "--out", "{unwritable}/demo"], "cannot write in the folder"),
    ],
)
def test_output_paths_are_checked_before_any_work(
    argv, phrase, pairs_file, tmp_path, unwritable_folder, monkeypatch, capsys
):
    """A bad --out is one line and exit 2 before a model loads: training never runs only to lose its result."""
    import steerlens.adapter

    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(steerlens.adapter, "load_model", no_work)
    monkeypatch.setattr(steerlens.adapter, "load_hf_model", no_work)
    monkeypatch.chdir(tmp_path)
    names = {"tmp": tmp_path, "pairs": pairs_file, "unwritable": unwritable_folder}
    code = main([a.format(**names) for a in argv])
    message = capsys.readouterr().err
    assert code == 2 and len(message.strip().splitlines()) == 1, message
    assert "--out" in message and phrase.format(**names) in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


@pytest.mark.parametrize(
    "line, problem",
    [
        ('"ok"\n{"oops": ', "line 2: invalid JSON"),
        ('"ok"\n\n{"role": "user"}', "line 3: expected a string or a list of messages, got dict"),
        ('[{"role": "assistant", "content": "hi"}]', "line 1: the last message must be the user's turn"),
    ],
)
def test_bad_jsonl_prompt_line_is_one_line_before_the_model_loads(
    line, problem, pairs_file, tmp_path, monkeypatch, capsys
):
    import steerlens.adapter

    monkeypatch.setattr(steerlens.adapter, "load_model", lambda source: pytest.fail("the model was loaded"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(line + "\n")
    err = one_line_error(
        main(["sweep", "--pairs", str(pairs_file), "--prompts", str(prompts), "--out", str(tmp_path / "s.csv")]), capsys
    )
    assert f"{prompts}, {problem}" in err


def test_help_names_every_kind_of_model_and_every_option_has_help(capsys):
    from steerlens.adapter.gguf import PACKAGED_MODELS
    from steerlens.cli.commands import PACKAGED_SHORT_NAMES
    from steerlens.cli.main import _extra_commands, build_parser

    assert set(PACKAGED_SHORT_NAMES) == set(PACKAGED_MODELS)
    for command in ("train", "sweep", "generate"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert ".gguf file" in text and "a local checkpoint folder" in text and "hub id" in text, command
        assert all(name in text for name in PACKAGED_MODELS), command
        assert "--chat" in text and "apply_chat_template" in text, command
    assert main(["sweep", "--help"]) == 0
    assert ".jsonl holds one JSON string" in " ".join(capsys.readouterr().out.split())
    sub = next(a for a in build_parser(_extra_commands())._actions if a.choices)
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, f"steerlens {name} {action.option_strings or action.dest} has no help"
