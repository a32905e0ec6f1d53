"""The command line: each subcommand against the library call it wraps, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import subprocess_env

from steerlens import SteeringVector, prob_share, sweep_layers, train_steering_vector
from steerlens.cli import main
from steerlens.evaluation import steered_and_unsteered
from steerlens.formats.pairs import save_pairs_jsonl
from steerlens.toy import concept_words, neutral_prompts, sentiment_pairs


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


def test_info_shows_layers_norms_model_and_training(pairs_file, tmp_path, capsys):
    from steerlens import __version__

    out = tmp_path / "vec.safetensors"
    assert run(["train", "--pairs", pairs_file, "--layers", "1,2", "--batch-size", "4", "--out", out], capsys)[0] == 0
    code, stdout, _ = run(["info", out], capsys)
    vec = SteeringVector.load(out)
    lines = stdout.splitlines()
    assert code == 0
    assert f"  layer   1  norm {vec.layer_activations[1].norm().item():.4f}" in lines
    assert f"  layer   2  norm {vec.layer_activations[2].norm().item():.4f}" in lines
    meta = vec.metadata
    assert "layer type:    resid_post" in lines and "layers:        1, 2" in lines
    assert (
        f"model:         steerlens-toy ({meta['n_layers']} layers, d_model {meta['d_model']}, hooked backend)" in lines
    )
    assert meta["architecture"] is None and "architecture:  unknown" in lines
    assert "trained:       on 16 pairs, aggregator mean_aggregator(), read at token -1, batch size 4" in lines
    assert f"steerlens:     {__version__}" in lines
    assert "None" not in stdout and "embedding" not in stdout and "[" not in stdout  # no raw fingerprint floats


def test_info_shows_other_metadata_compactly(tmp_path, capsys):
    vec = SteeringVector({3: torch.ones(4)}, metadata={"note": "happy", "probe": list(range(40))})
    vec.save(tmp_path / "v.safetensors")
    lines = run(["info", tmp_path / "v.safetensors"], capsys)[1].splitlines()
    assert "model:         unknown" in lines and "trained:       unknown" in lines
    assert lines[-3:] == ["other metadata:", "  note: happy", "  probe: [40 numbers]"]


def test_info_does_not_import_torch(tmp_path):
    vec = tmp_path / "v.safetensors"
    SteeringVector({1: torch.ones(8)}).save(vec)
    code = (
        "import sys; from steerlens.cli import main; assert main(['info', sys.argv[1]]) == 0; "
        "assert 'torch' not in sys.modules, 'info imported torch'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(vec)], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "  layer   1  norm 2.8284" in proc.stdout


def test_info_reads_a_gguf_control_vector(tmp_path, capsys):
    from steerlens.interop import export_gguf

    vec = SteeringVector({1: torch.ones(8), 2: torch.full((8,), 2.0)}, metadata={"model_name": "tiny"})
    export_gguf(vec, tmp_path / "cv.gguf")
    assert main(["info", str(tmp_path / "cv.gguf")]) == 0
    out = capsys.readouterr().out
    assert "GGUF" in out and "control vector" in out and "safetensors" not in out
    assert "layer   2  norm 5.6569" in out  # |(2, ..., 2)| over 8 entries = 2 * sqrt(8)
    assert "layers:        1, 2" in out.splitlines() and "model:         unknown" in out
    assert "trained:       not recorded" in out and "steerlens:" not in out


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


def test_demo_writes_vector_csv_and_heatmap(toy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    replaced = spy_on_replace(monkeypatch)
    code, stdout, _ = run(
        ["demo", "--out", out, "--layers", "1,2", "--multipliers", "-4,0,4", "--max-new-tokens", "4"], capsys
    )
    assert code == 0
    vec = SteeringVector.load(out / "sentiment_vector.safetensors")
    assert vec.layers == [1, 2]
    sweep = pd.read_csv(out / "sweep.csv")
    assert len(sweep) == 6 and set(sweep["multiplier"]) == {-4.0, 0.0, 4.0}
    # An unsteered cell is the plain model's positive share.
    words = concept_words("sentiment")
    from steerlens.toy import positive_mass

    base = positive_mass(toy, neutral_prompts("sentiment", "test")).mean().item()
    assert sweep.loc[sweep["multiplier"] == 0, "prob_share"].to_numpy() == pytest.approx([base, base], abs=1e-5)
    assert (out / "sweep_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best layer" in stdout and "unsteered:" in stdout and len(words["positive"]) == 8
    for name in ("sentiment_vector.safetensors", "sweep.csv", "sweep_heatmap.png"):
        assert_atomic(replaced, out / name)


def spy_on_replace(monkeypatch) -> list[tuple[str, str]]:
    """Every os.replace(src, dst) made from now on, still performed."""
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        calls.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def assert_atomic(calls: list[tuple[str, str]], target) -> None:
    """``target`` was moved into place once, from a unique temporary file in its own folder (not target.tmp)."""
    sources = [src for src, dst in calls if dst == os.fspath(target)]
    assert len(sources) == 1 and os.path.dirname(sources[0]) == os.path.dirname(os.fspath(target)), calls
    assert sources[0] != os.fspath(target) + ".tmp" and not os.path.exists(sources[0])


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


# -- chat prompts: --chat, .jsonl prompt files, message lists ------------------------------------------


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
