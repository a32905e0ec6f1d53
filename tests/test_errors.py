"""Every kind of bad input gets a steerlens error that names the problem and the fix.

The table below is the list the reliability issue asks for: each row is a bad input,
the error class it must raise (a ValueError or TypeError subclass from
``steerlens.errors``) and a phrase its message must contain. The last tests cover the
inputs that must *not* fail: a tokenizer without a pad token and device/dtype mismatches.
Rows for untrusted files (crafted vector files, a pickle, bad JSONL) check that the loaders
validate schema, shapes, finiteness and size, and never unpickle.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from helpers import make_model, make_tokenizer, steerlens_header
from safetensors.torch import save_file

from steerlens import SteeringVector, train_steering_vector
from steerlens.errors import (
    AggregatorError,
    InvalidSampleError,
    InvalidSampleTypeError,
    LayerError,
    ModelMismatchError,
    NonFiniteError,
    NumberTypeError,
    PairsFileError,
    PromptTooLongError,
    SteerlensError,
    TokenIndexError,
    TokenizerError,
    VectorFileError,
)
from steerlens.formats.pairs import load_pairs_jsonl
from steerlens.formats.vector_file import encode_vector_file

PAIRS = [("a b c", "b c d"), ("c d", "d e a")]
LONG_PAIRS = [
    ("I love this film", "I hate it"),
    ("The food was delicious and great", "The food"),
    ("What a lovely day", "What an awful and sad day for a walk"),
]


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Any, Path], Any]
    error: type[Exception]
    phrase: str


def train(**kwargs: Any) -> Callable[[Any, Path], Any]:
    samples = kwargs.pop("samples", PAIRS)
    return lambda model, _: train_steering_vector(model, None, samples, **kwargs)


def enter(vec: SteeringVector, target: Callable[[], Any], **kwargs: Any) -> Callable[[Any, Path], Any]:
    def call(model: Any, _: Path) -> None:
        with vec.apply(target() if target else model, **kwargs):
            pass

    return call


def vector_file(tensor: torch.Tensor, **header_changes: Any) -> Callable[[Any, Path], Any]:
    """Load a file holding ``tensor`` as layer 1, written around the validating writer.

    ``header_changes`` overwrite fields of the steerlens JSON header (schema version, d_model...).
    """

    def call(model: Any, tmp: Path) -> SteeringVector:
        good = encode_vector_file({1: torch.ones(32)}, "resid_post", {})
        header = steerlens_header(good)
        header.update(header_changes)
        path = tmp / "crafted.safetensors"
        save_file({"layer.1": tensor}, str(path), metadata={"steerlens": json.dumps(header)})
        return SteeringVector.load(path)

    return call


def nan_model(model: Any, _: Path) -> SteeringVector:
    """Train on a model whose first MLP produces NaN, so the activations themselves are non-finite."""
    broken = make_model()
    with torch.no_grad():
        broken.blocks[0].mlp.W_in.fill_(float("nan"))
    return train_steering_vector(broken, None, PAIRS, layers=[1])


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"steerlens-unpickled-{os.getpid()}"


class Payload:
    """Unpickling this creates ``MARKER``: proof that a loader executed pickle code."""

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(MARKER),))


def load_bytes(data: bytes, loader: Callable[[Path], Any], name: str) -> Callable[[Any, Path], Any]:
    def call(model: Any, tmp: Path) -> Any:
        (tmp / name).write_bytes(data)
        return loader(tmp / name)

    return call


def load_big_vector(model: Any, tmp: Path) -> SteeringVector:
    SteeringVector({0: torch.randn(32)}).save(tmp / "v.safetensors")
    return SteeringVector.load(tmp / "v.safetensors", max_bytes=64)


VEC = SteeringVector({1: torch.randn(32)})
CASES = [
    Case("empty training set", train(samples=[]), InvalidSampleError, "training_samples is empty"),
    Case("sample is not a pair", train(samples=[("a",)]), InvalidSampleTypeError, "(positive, negative) pair"),
    Case("sample is a string", train(samples=["a b"]), InvalidSampleTypeError, "(positive, negative) pair"),
    Case("prompt is not a string", train(samples=[(1, "b")]), InvalidSampleTypeError, "not a string"),
    Case("empty positive prompt", train(samples=[("", "b")]), InvalidSampleError, "positive prompt is empty"),
    Case("blank negative prompt", train(samples=[("a", "  ")]), InvalidSampleError, "negative prompt is empty"),
    Case("prompt longer than context", train(samples=[("a " * 100, "b")]), PromptTooLongError, "context is 64"),
    Case("layer out of range", train(layers=[9]), LayerError, "out of range"),
    Case("negative layer out of range", train(layers=[-9]), LayerError, "out of range"),
    Case("duplicated layer", train(layers=[1, 1]), LayerError, "requested twice"),
    Case("layer duplicated through negative index", train(layers=[3, -1]), LayerError, "requested twice"),
    Case("unknown layer_type", train(layer_type="resid_foo"), LayerError, "unknown layer_type"),
    Case("read_token_index past the end", train(read_token_index=50), TokenIndexError, "outside prompt"),
    Case("read_token_index before the start", train(read_token_index=-50), TokenIndexError, "outside prompt"),
    Case(
        "callable read_token_index out of range",
        train(read_token_index=lambda s: 99),
        TokenIndexError,
        "outside prompt",
    ),
    Case(
        "aggregator returns NaN",
        train(aggregator=lambda p, n: torch.full((p.shape[-1],), float("nan"))),
        AggregatorError,
        "NaN or infinite",
    ),
    Case(
        "NaN in a vector",
        lambda m, t: SteeringVector({0: torch.full((32,), float("nan"))}),
        NonFiniteError,
        "NaN or inf",
    ),
    Case(
        "inf in a vector",
        lambda m, t: SteeringVector({0: torch.full((32,), float("inf"))}),
        NonFiniteError,
        "NaN or inf",
    ),
    Case("vector overflows to inf when scaled", lambda m, t: VEC * 1e39, NonFiniteError, "NaN or inf"),
    Case("NaN in a trained vector (non-finite activations)", nan_model, NonFiniteError, "contains NaN or inf"),
    Case(
        "NaN in a loaded vector file",
        vector_file(torch.tensor([float("nan")] + [1.0] * 31)),
        VectorFileError,
        "contains NaN or inf",
    ),
    Case(
        "inf in a loaded vector file",
        vector_file(torch.full((32,), float("inf"))),
        VectorFileError,
        "contains NaN or inf",
    ),
    Case(
        "vector file tensor shape disagrees with metadata",
        vector_file(torch.ones(16)),
        VectorFileError,
        "expected a float vector of shape [32]",
    ),
    Case(
        "vector file with an unknown schema version",
        vector_file(torch.ones(32), schema_version=99),
        VectorFileError,
        "schema_version 99 is not supported",
    ),
    Case(
        "vector file with an unknown layer_type",
        vector_file(torch.ones(32), layer_type="resid_foo"),
        VectorFileError,
        "layer_type 'resid_foo'",
    ),
    Case("vector file over the size limit", load_big_vector, VectorFileError, "over the limit of 64"),
    Case(
        "plain safetensors file without steerlens metadata",
        lambda m, t: (save_file({"x": torch.ones(3)}, str(t / "p.st")), SteeringVector.load(t / "p.st")),
        VectorFileError,
        "no steerlens metadata",
    ),
    Case(
        "pickle file given as a vector file",
        load_bytes(pickle.dumps(Payload()), SteeringVector.load, "v.pt"),
        VectorFileError,
        "not a vector file",
    ),
    Case(
        "pairs file with a line that is not an object",
        load_bytes(b'{"positive": "a", "negative": "b"}\n[1]\n', load_pairs_jsonl, "p.jsonl"),
        PairsFileError,
        "line 2: expected a JSON object",
    ),
    Case(
        "pairs file with deeply nested JSON",
        load_bytes(b"[" * 100_000, load_pairs_jsonl, "p.jsonl"),
        PairsFileError,
        "line 1: invalid JSON",
    ),
    Case(
        "vector with an unknown layer_type",
        lambda m, t: SteeringVector({0: torch.ones(32)}, "resid_foo"),
        LayerError,
        "unknown layer_type",
    ),
    Case("layers are not ints", train(layers=["1"]), LayerError, "is not a whole number"),
    Case("read_token_index is not an int", train(read_token_index=1.5), TokenIndexError, "must be an int"),
    Case(
        "tokenizer of a bigger vocabulary",
        lambda m, t: train_steering_vector(m, make_tokenizer(400), PAIRS),
        TokenizerError,
        "does not belong to this model",
    ),
    Case("NaN multiplier", enter(VEC, None, multiplier=float("nan")), NonFiniteError, "finite number"),
    Case("infinite multiplier", enter(VEC, None, multiplier=float("-inf")), NonFiniteError, "finite number"),
    Case(
        "NaN tensor multiplier",
        enter(VEC, None, multiplier=torch.tensor(float("nan"))),
        NonFiniteError,
        "finite number",
    ),
    Case("multiplier is a string", enter(VEC, None, multiplier="2"), NumberTypeError, "got a str '2'"),
    Case("model with another d_model", enter(VEC, lambda: make_model(d_model=16)), ModelMismatchError, "d_model 32"),
    Case(
        "model with fewer layers",
        enter(SteeringVector({3: torch.randn(32)}), lambda: make_model(n_layers=2)),
        ModelMismatchError,
        "only 2 layers",
    ),
    Case(
        "model without the hook point",
        enter(SteeringVector({0: torch.randn(32)}, "resid_mid"), lambda: make_model(attn_only=True)),
        ModelMismatchError,
        "no hook point",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_clear_error(case: Case, model, tmp_path):
    with pytest.raises(case.error) as info:
        case.call(model, tmp_path)
    assert isinstance(info.value, SteerlensError)
    assert isinstance(info.value, (ValueError, TypeError))
    assert case.phrase in str(info.value)
    assert not MARKER.exists(), "a loader unpickled attacker-controlled data"
    assert ";" in str(info.value) or "." in str(info.value)  # a sentence, with the fix after the problem


def test_errors_come_before_any_forward_pass(model, tmp_path):
    calls = []
    handle = model.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        for case in CASES:
            if case.name in {"model with another d_model", "model with fewer layers"}:
                continue
            with pytest.raises(case.error):
                case.call(model, tmp_path)
            if case.error is not AggregatorError and "read_token_index" not in case.name:
                assert not calls, case.name
            calls.clear()
    finally:
        handle.remove()


def tokenizer_state(tokenizer: Any) -> tuple:
    return (
        tokenizer.pad_token,
        tokenizer.pad_token_id,
        tokenizer.padding_side,
        dict(tokenizer.special_tokens_map),
        len(tokenizer),
        tokenizer.get_vocab(),
    )


@pytest.mark.parametrize("attached", [False, True], ids=["passed tokenizer", "model's own tokenizer"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_tokenizer_without_pad_token_is_used_but_not_mutated(attached: bool, side: str):
    model = make_model()
    tokenizer = model.tokenizer if attached else make_tokenizer()
    tokenizer.pad_token = None
    tokenizer.padding_side = side
    before = tokenizer_state(tokenizer)
    vec = train_steering_vector(model, tokenizer, LONG_PAIRS, layers=[1, 2], batch_size=4)
    assert tokenizer_state(tokenizer) == before and tokenizer.pad_token is None
    # Independent reference: each prompt alone (BOS + its ids), read at its last token.
    bos = tokenizer.bos_token_id
    diffs = {1: [], 2: []}
    with torch.no_grad():
        for pos, neg in LONG_PAIRS:
            acts = []
            for prompt in (pos, neg):
                ids = tokenizer(prompt)["input_ids"]
                tokens = torch.tensor([ids if ids[0] == bos else [bos] + ids])  # TL's copy adds BOS itself
                _, cache = model.run_with_cache(tokens, attention_mask=torch.ones_like(tokens))
                acts.append({layer: cache[f"blocks.{layer}.hook_resid_post"][0, -1] for layer in (1, 2)})
            for layer in (1, 2):
                diffs[layer].append(acts[0][layer] - acts[1][layer])
    for layer in (1, 2):
        torch.testing.assert_close(vec.layer_activations[layer], torch.stack(diffs[layer]).mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_dtype", [torch.float16, torch.bfloat16])
def test_vector_dtype_is_cast_to_the_model(model_dtype):
    low = make_model(dtype=model_dtype)
    vec = SteeringVector({1: torch.randn(32, dtype=torch.float64)})
    tokens = low.to_tokens("a b c d")
    with torch.no_grad():
        _, clean = low.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
        with vec.apply(low, multiplier=2.0):
            _, steered = low.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    got = steered["blocks.1.hook_resid_post"]
    assert got.dtype == model_dtype
    expected = clean["blocks.1.hook_resid_post"].float() + 2.0 * vec.layer_activations[1].float()
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.02)


def test_float64_vector_on_float32_model_equals_float32_vector(model):
    vec32 = SteeringVector({1: torch.randn(32)})
    vec64 = vec32.to(torch.float64)
    tokens = model.to_tokens("a b c d")
    with torch.no_grad():
        with vec32.apply(model, multiplier=3.0):
            a = model(tokens)
        with vec64.apply(model, multiplier=3.0):
            b = model(tokens)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("multiplier", [np.float32(3.0), np.int64(3), torch.tensor(3.0), 3])
def test_scalar_multipliers_of_any_numeric_type_work(model, multiplier):
    tokens = model.to_tokens("a b c d")
    with torch.no_grad():
        with VEC.apply(model, multiplier=3.0):
            expected = model(tokens)
        with VEC.apply(model, multiplier=multiplier):
            got = model(tokens)
    assert torch.equal(got, expected)


# -- issue 28 item 10 (a lone surrogate) and issue 30 point 3 (TransformerLens idioms) ----------------------

from steerlens.errors import InvalidArgumentError  # noqa: E402  (appended section)

WRAPPER_CASES = [
    Case(
        "prompt with a lone surrogate",
        train(samples=[("a b \ud800", "b c")]),
        InvalidArgumentError,
        "'a b \\ud800' holds '\\ud800' at character 4, a lone surrogate",
    ),
    Case(
        "multiplier where layer_config goes",
        lambda m, t: VEC.apply(m, 2.0).__enter__(),
        InvalidArgumentError,
        "2.0 was taken as layer_config",
    ),
    Case(
        "hook name of another layer type",
        train(layers=["blocks.1.hook_resid_pre"]),
        LayerError,
        "is a resid_pre hook, but layer_type is 'decoder_block' (resid_post)",
    ),
    Case(
        "hook name steerlens does not steer",
        train(layers=["blocks.1.attn.hook_z"]),
        LayerError,
        "not a whole number or a TransformerLens hook name",
    ),
    Case(
        "select_layers of a hook name of another type",
        lambda m, t: VEC.select_layers("blocks.1.hook_mlp_out"),
        LayerError,
        "the vector's layer_type is 'resid_post'",
    ),
]


@pytest.mark.parametrize("case", WRAPPER_CASES, ids=[c.name for c in WRAPPER_CASES])
def test_bad_layer_and_prompt_inputs_get_a_clear_error(case: Case, model, tmp_path):
    test_bad_input_gets_a_clear_error(case, model, tmp_path)


# -- steering that cannot work: overflow, vectors without numbers, bad operators (issue 28) ----------------


def _hf_tiny():
    from tiny_hf import make_hf_model

    return make_hf_model("llama")


@pytest.mark.parametrize("route", ["hooked", "hf", "sweep"])
@pytest.mark.parametrize(
    "vector, multiplier, phrase",
    [
        (torch.ones(32), 1e300, "multiplier 1e+300"),
        (torch.full((32,), 1e20), 1.0, "norm 5.657e+20"),  # finite entries; float32 norm (and squares) overflow
    ],
    ids=["huge multiplier", "finite entries inf norm"],
)
def test_steering_that_overflows_float32_is_refused_before_the_forward(model, route, vector, multiplier, phrase):
    import re

    from steerlens import sweep_layers
    from steerlens.errors import NonFiniteError

    vec = SteeringVector({1: vector})
    target = _hf_tiny() if route == "hf" else model
    calls = []
    handle = (target.model.layers[0] if route == "hf" else target.blocks[0]).register_forward_pre_hook(
        lambda *args: calls.append(1)
    )
    try:
        with pytest.raises(NonFiniteError, match=re.escape(phrase)):
            if route == "sweep":
                sweep_layers(target, vec, ["a b c"], multipliers=[multiplier], layers=[1])
            else:
                with vec.apply(target, multiplier=multiplier):
                    pass
        with pytest.raises(NonFiniteError, match="overflows float32"):
            vec.patch(target, multiplier=multiplier)
    finally:
        handle.remove()
    assert calls == []
    # The largest safe steering still runs, with finite logits.
    with torch.no_grad(), SteeringVector({1: torch.ones(32)}).apply(target, multiplier=1e3):
        out = target(torch.tensor([[1, 5, 9]]))
    assert torch.isfinite(out if isinstance(out, torch.Tensor) else out.logits).all()


def test_float16_overflow_is_refused_in_the_hook():
    from steerlens.errors import NonFiniteError

    half = make_model(n_layers=2, dtype=torch.float16)
    with pytest.raises(NonFiniteError, match="float16"):
        with SteeringVector({1: torch.ones(32)}).apply(half, multiplier=1e6), torch.no_grad():
            half(half.to_tokens("a b"))


def test_a_vector_on_the_meta_device_is_refused_at_apply(model):
    from steerlens.errors import InvalidArgumentError

    vec = SteeringVector({1: torch.ones(32)})
    vec.layer_activations[1] = torch.empty(32, device="meta")  # e.g. read from a model loaded without weights
    for target in (model, _hf_tiny()):
        with pytest.raises(InvalidArgumentError, match="'meta' device"):
            with vec.apply(target):
                pass


@pytest.mark.parametrize("operator", [3, "addition", torch.ones(32)], ids=["int", "str", "tensor"])
def test_an_operator_that_is_not_callable_is_refused_at_apply(model, operator):
    from steerlens.errors import OperatorError

    with pytest.raises(OperatorError, match="operator must be a callable"):
        VEC.patch(model, operator=operator)
    assert not model.hook_dict["blocks.1.hook_resid_post"].fwd_hooks


def _norm_per_position(activation, vector):  # [batch, pos, 1]: broadcast silently before
    return activation.norm(dim=-1, keepdim=True)


def _extra_axis(activation, vector):  # [1, batch, pos, d_model]
    return vector.expand_as(activation)[None]


@pytest.mark.parametrize("operator", [_norm_per_position, _extra_axis, lambda a, v: 0.0])
def test_an_operator_returning_the_wrong_shape_is_named(model, operator):
    from steerlens.errors import OperatorError

    name = operator.__qualname__
    for target in (model, _hf_tiny()):
        with pytest.raises(OperatorError, match=f"operator {name} returned"):
            with VEC.apply(target, operator=operator), torch.no_grad():
                target(torch.tensor([[1, 5, 9]]))


def test_operators_returning_a_broadcastable_delta_still_work(model):
    # steering-vectors' operators return [d_model]; a per-row [batch, 1, d_model] delta is fine too.
    tokens = model.to_tokens("a b c")
    with torch.no_grad():
        with VEC.apply(model, multiplier=2.0):
            expected = model(tokens)
        with VEC.apply(model, multiplier=2.0, operator=lambda act, vec: vec):
            flat = model(tokens)
        with VEC.apply(model, multiplier=2.0, operator=lambda act, vec: vec.expand(act.shape[0], 1, -1)):
            per_row = model(tokens)
    assert torch.equal(flat, expected) and torch.equal(per_row, expected)


# -- one list, one path per error -----------------------------------------------------------


def _classes_defined_in(module: Any) -> set[str]:
    import ast
    import inspect as _inspect

    tree = ast.parse(_inspect.getsource(module))
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef) and not node.name.startswith("_")}


def test_errors_all_lists_every_public_class_it_defines():
    import steerlens.errors as errors

    defined = _classes_defined_in(errors)
    assert {"PromptsFileError", "ModelNameWarning", "LayerRouteWarning"} <= defined
    assert set(errors.__all__) == defined, f"missing {sorted(defined - set(errors.__all__))}"
    assert len(errors.__all__) == len(set(errors.__all__))


def test_each_error_has_one_public_import_path():
    """No subpackage's ``__all__`` re-exports an error: ``steerlens.errors`` (and the facade) is its one home."""
    import importlib
    import pkgutil

    import steerlens
    import steerlens.errors as errors

    again = []
    for info in pkgutil.iter_modules(steerlens.__path__):
        if not info.ispkg:
            continue
        package = importlib.import_module(f"steerlens.{info.name}")
        again += [f"steerlens.{info.name}.{name}" for name in getattr(package, "__all__", ()) if name in errors.__all__]
    assert not again, f"errors exported again outside steerlens.errors: {again}"
