"""llama.cpp control vectors: round trips, files from careless or hostile hands, and the architecture hint.

Files are written with the ``gguf`` package itself (``GGUFWriter``; quantized with
``gguf.quants.quantize``), so each test checks :func:`import_gguf` against what gguf's own
reader and de-quantizer say the file holds, and against the float values it was made from.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_vector
from tiny_hf import make_hf_model, make_tokenizer

from steerlens import SteeringVector, train_steering_vector
from steerlens.errors import (
    InvalidArgumentError,
    LayerError,
    ModelMismatchError,
    ModelNameWarning,
    NonFiniteError,
    VectorFileError,
)
from steerlens.interop import export_gguf, import_gguf
from steerlens.interop.llama_cpp import llama_cpp_architecture

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

D = 64  # two Q8_0/Q4_0 blocks of 32
META = {"model_name": "tiny-llama"}
PAIRS = [("happy cat sat", "sad cat sat"), ("a big happy dog", "a big sad dog")]


def write_control_vector(path: Path, tensors: dict[str, tuple[np.ndarray, Q]], hint: str | None = "llama") -> Path:
    """A control vector as llama.cpp's tools write one, each tensor stored as the given type."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    if hint is not None:
        writer.add_string("controlvector.model_hint", hint)
    for name, (values, kind) in tensors.items():
        if kind in (Q.F32, Q.F16):
            writer.add_tensor(name, gguf.quants.quantize(values, kind))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def direction(seed: int = 0, shape: tuple[int, ...] = (D,)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("kind", [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.F16, Q.BF16], ids=lambda kind: kind.name)
def test_quantized_directions_are_dequantized_exactly(tmp_path, kind):
    original = {1: direction(1), 4: direction(4)}
    path = write_control_vector(tmp_path / "cv.gguf", {f"direction.{k}": (v, kind) for k, v in original.items()})
    vec = import_gguf(path)
    assert vec.layers == [1, 4] and vec.d_model == D
    stored = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    for layer, values in original.items():
        tensor = stored[f"direction.{layer}"]
        assert tensor.tensor_type == kind
        # Value for value what gguf's own de-quantizer reads from the file ...
        expected = gguf.quants.dequantize(np.asarray(tensor.data), kind).reshape(-1)
        np.testing.assert_array_equal(vec.layer_activations[layer].numpy(), expected)
        # ... which is the float original to the quantization's precision (Q4: 1/7 of a block's largest value).
        step = {Q.Q8_0: 1 / 127, Q.Q4_0: 1 / 7, Q.Q4_1: 1 / 15, Q.F16: 1e-3, Q.BF16: 1e-2}[kind]
        error = np.abs(vec.layer_activations[layer].numpy() - values).max()
        assert error <= step * np.abs(values).max()


def test_a_row_or_column_direction_is_a_vector_and_a_matrix_is_refused(tmp_path):
    values = direction(2)
    row = write_control_vector(tmp_path / "row.gguf", {"direction.1": (values.reshape(1, D), Q.F32)})
    column = write_control_vector(tmp_path / "col.gguf", {"direction.1": (values.reshape(D, 1), Q.F32)})
    for path in (row, column):
        np.testing.assert_array_equal(import_gguf(path).layer_activations[1].numpy(), values)
    matrix = write_control_vector(tmp_path / "m.gguf", {"direction.2": (values.reshape(4, 16), Q.F32)})
    with pytest.raises(VectorFileError, match=r"direction\.2 has shape \(4, 16\), a matrix"):
        import_gguf(matrix)


def test_two_names_for_one_layer_are_refused_naming_both(tmp_path):
    path = write_control_vector(
        tmp_path / "dup.gguf", {"direction.01": (direction(1), Q.F32), "direction.1": (direction(2), Q.F32)}
    )
    with pytest.raises(VectorFileError, match=r"'direction\.01' and 'direction\.1' both name layer 1"):
        import_gguf(path)


def test_an_empty_or_integer_direction_is_refused(tmp_path):
    empty = write_control_vector(tmp_path / "empty.gguf", {"direction.1": (np.zeros(0, np.float32), Q.F32)})
    with pytest.raises(VectorFileError, match=r"direction\.1 is empty"):
        import_gguf(empty)
    ints = tmp_path / "ints.gguf"
    writer = gguf.GGUFWriter(str(ints), "controlvector")
    writer.add_tensor("direction.1", np.arange(D, dtype=np.int32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorFileError, match="integers"):
        import_gguf(ints)


# -- layers past the model's end -------------------------------------------------------------


def test_export_refuses_layers_past_the_models_end(tmp_path):
    path = tmp_path / "cv.gguf"
    # The vector's own metadata knows its model had 30 layers: direction.30 would be skipped by llama.cpp.
    vec = SteeringVector({29: torch.ones(8), 30: torch.ones(8)}, "resid_post", {"n_layers": 30})
    with pytest.raises(LayerError, match=r"layers \[30\] are past the end of the model, which has 30 layers"):
        export_gguf(vec, path)
    assert not path.exists()
    with pytest.raises(LayerError, match=r"past the end"):
        export_gguf(SteeringVector({5: torch.ones(8)}, "resid_post"), path, n_layers=5)
    model = make_hf_model("llama")  # 2 layers
    with pytest.raises(LayerError, match=r"which has 2 layers"):
        export_gguf(SteeringVector({2: torch.ones(32)}, "resid_post"), path, model=model)
    with pytest.raises(ModelMismatchError, match="d_model 8"):
        export_gguf(SteeringVector({1: torch.ones(8)}, "resid_post"), path, model=model)
    # Layer 0 is refused whatever the count; the last layer is written.
    with pytest.raises(Exception, match="layer 0"):
        export_gguf(SteeringVector({0: torch.ones(32)}, "resid_post"), path, model=model)
    export_gguf(SteeringVector({-1: torch.arange(32.0)}, "resid_post"), path, model=model)
    assert [t.name for t in gguf.GGUFReader(str(path)).tensors] == ["direction.1"]


def test_import_with_a_model_checks_layers_and_width(tmp_path):
    model = make_hf_model("llama")  # 2 layers, d_model 32
    deep = write_control_vector(tmp_path / "deep.gguf", {"direction.2": (direction(0, (32,)), Q.F32)})
    with pytest.raises(LayerError, match=r"layers \[2\], past the end of the model \(2 layers\)"):
        import_gguf(deep, model=model)
    wide = write_control_vector(tmp_path / "wide.gguf", {"direction.1": (direction(0), Q.F32)})
    with pytest.raises(ModelMismatchError, match="64 values"):
        import_gguf(wide, model=model)


# -- the architecture hint -------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_type, expected",
    [("llama", "llama"), ("gemma3_text", "gemma3"), ("gemma3", "gemma3"), ("mistral", "llama"), ("qwen2", "qwen2")]
    + [("qwen3", "qwen3"), ("gemma2", "gemma2"), ("phi3", "phi3"), ("phi", "phi2"), ("gpt2", "gpt2")],
)
def test_llama_cpp_architecture_names(model_type, expected):
    assert llama_cpp_architecture(model_type) == expected


@pytest.mark.parametrize("name, hint", [("llama", "llama"), ("gemma3", "gemma3"), ("qwen2", "qwen2")])
def test_the_hint_is_llama_cpps_architecture_name(tmp_path, name, hint):
    """Read back with gguf's reader: Gemma 3's text model (``gemma3_text`` in transformers) is ``gemma3``."""
    model = make_hf_model(name)
    vec = train_steering_vector(model, make_tokenizer(), PAIRS, layers=[1], batch_size=2)
    export_gguf(vec, tmp_path / "a.gguf")
    export_gguf(vec.select_layers([1]) * 1.0, tmp_path / "b.gguf", model=model)
    for path in (tmp_path / "a.gguf", tmp_path / "b.gguf"):
        assert gguf.GGUFReader(str(path)).fields["controlvector.model_hint"].contents() == hint


def test_an_imported_vector_applied_to_its_own_model_does_not_warn(tmp_path):
    model, tokenizer = make_hf_model("llama"), make_tokenizer()
    vec = train_steering_vector(model, tokenizer, PAIRS, layers=[1], batch_size=2)
    export_gguf(vec, tmp_path / "cv.gguf")
    back = import_gguf(tmp_path / "cv.gguf")
    assert back.metadata["llama_cpp_architecture"] == "llama" and "model_name" not in back.metadata
    ids = torch.tensor([[1, 5, 9, 12]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ModelNameWarning, nor any other
        import_gguf(tmp_path / "cv.gguf", model=model)
        with torch.no_grad(), back.apply(model):
            steered = model(ids).logits
        with torch.no_grad(), vec.apply(model):
            expected = model(ids).logits
    torch.testing.assert_close(steered, expected, atol=0, rtol=0)
    # Checked against another architecture (same width and depth), the hint is compared: a warning naming both.
    with pytest.warns(ModelNameWarning, match=r"'llama' model and the model is a 'qwen2'"):
        import_gguf(tmp_path / "cv.gguf", model=make_hf_model("qwen2"))


# -- against llama.cpp itself ----------------------------------------------------------------


XLLAMACPP = "2026.10.11549"


def _llama_cpp_logits(tmp_path: Path, model_path: Path, ids: list[int], runs: list[tuple[Path | None, float]]):
    """The last position's logits llama.cpp computes for each run (control vector file, strength), in a subprocess."""
    import json
    import subprocess
    import sys

    from helpers import subprocess_env

    spec, out = tmp_path / "runs.json", tmp_path / "logits.npy"
    spec.write_text(json.dumps({"model": str(model_path), "ids": ids, "runs": [[c and str(c), s] for c, s in runs]}))
    helper = Path(__file__).resolve().parents[1] / "llama_cpp_c.py"
    done = subprocess.run(
        [sys.executable, str(helper), str(spec), str(out)], capture_output=True, text=True, env=subprocess_env()
    )
    assert done.returncode == 0, f"llama.cpp run failed ({done.returncode}): {done.stderr[-2000:]}"
    return torch.from_numpy(np.load(out))


def test_llama_cpp_steers_as_steerlens_does(tmp_path):
    """A tiny Llama as a GGUF file and steerlens' exported control vectors, run by llama.cpp itself (its own
    control-vector loader, ``--control-vector-scaled``'s): the steered logits equal steerlens' native HF route's,
    layer for layer and at both signs. A ``direction.N`` past the model's end is silently skipped by llama.cpp,
    which is why ``export_gguf`` refuses it."""
    pytest.importorskip("xllamacpp")
    from importlib.metadata import version

    if version("xllamacpp") != XLLAMACPP:
        pytest.skip(f"tests/llama_cpp_c.py reads the struct layouts of xllamacpp {XLLAMACPP} (pyproject's dev pin)")
    from tiny_gguf import N_LAYERS, tiny_llama, write_llama_gguf

    model = tiny_llama()
    model_path = write_llama_gguf(model, tmp_path / "tiny.gguf")
    ids = [1, 5, 9, 12, 4, 20, 7]
    gen = torch.Generator().manual_seed(0)
    vectors = {
        "layer 1": SteeringVector({1: torch.randn(32, generator=gen)}, "resid_post"),
        "layer 2": SteeringVector({2: torch.randn(32, generator=gen)}, "resid_post"),
        "layers 1, 2": SteeringVector(
            {1: torch.randn(32, generator=gen), -1: torch.randn(32, generator=gen)}, "resid_post"
        ),
    }
    runs: list[tuple[Path | None, float]] = [(None, 0.0)]
    for name, vec in vectors.items():
        export_gguf(vec, tmp_path / f"{name}.gguf", model=model)
        runs += [(tmp_path / f"{name}.gguf", 1.0), (tmp_path / f"{name}.gguf", -1.0)]
    past = write_control_vector(tmp_path / "past.gguf", {f"direction.{N_LAYERS}": (direction(0, (32,)), Q.F32)})
    with pytest.raises(LayerError, match="past the end"):
        export_gguf(import_gguf(past), tmp_path / "refused.gguf", model=model)
    runs.append((past, 1.0))
    theirs = _llama_cpp_logits(tmp_path, model_path, ids, runs)

    with torch.no_grad():
        plain = model(torch.tensor([ids])).logits[0, -1]
        ours = [plain]
        for vec in vectors.values():
            for multiplier in (1.0, -1.0):
                with vec.apply(model, multiplier=multiplier):
                    ours.append(model(torch.tensor([ids])).logits[0, -1])
    ours = torch.stack(ours)
    # Same float32 weights: llama.cpp's kernels round differently, by ~1e-3 of logits of size ~3.
    torch.testing.assert_close(theirs[:-1], ours, atol=1e-2, rtol=0)
    deltas_theirs, deltas_ours = theirs[1:-1] - theirs[0], ours[1:] - ours[0]
    assert deltas_ours.abs().amax(dim=-1).min() > 0.5  # every run really moves the logits
    for a, b in zip(deltas_theirs, deltas_ours):
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9999
    torch.testing.assert_close(theirs[-1], theirs[0], atol=0, rtol=0)  # direction.3 of 3 layers: nothing steered


# --- export and import round trips ---------------------------------------------------


def test_gguf_round_trip_is_exact(tmp_path):
    vec = random_vector(16, (1, 3), scale=1.0, metadata={**META, "architecture": "llama"})
    path = tmp_path / "cv.gguf"
    export_gguf(vec, path)
    back = import_gguf(path)
    assert back.layers == [1, 3] and back.layer_type == "resid_post"
    # The file keeps the architecture (llama.cpp's name), not the model's name: an architecture hint.
    assert back.metadata["llama_cpp_architecture"] == "llama" and "model_name" not in back.metadata
    for layer in (1, 3):
        assert torch.equal(back.layer_activations[layer], vec.layer_activations[layer])


def test_gguf_file_is_a_llama_cpp_control_vector(tmp_path):
    """Read independently with gguf.GGUFReader: the keys and tensor names llama.cpp expects."""
    vec = random_vector(16, (1, 3), scale=1.0, metadata=META)
    path = tmp_path / "cv.gguf"
    export_gguf(vec, path, model_hint="llama")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 2
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.3"]
    for layer in (1, 3):
        t = tensors[f"direction.{layer}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(t.data).reshape(-1), vec.layer_activations[layer].numpy())


def test_gguf_export_refuses_what_llama_cpp_cannot_do(tmp_path):
    with pytest.raises(InvalidArgumentError, match="layer 0"):
        export_gguf(random_vector(16, (0, 2), scale=1.0, metadata=META), tmp_path / "x.gguf")
    with pytest.raises(InvalidArgumentError, match="resid_post"):
        export_gguf(random_vector(16, (1, 3), "mlp_out", scale=1.0, metadata=META), tmp_path / "x.gguf")


def test_gguf_import_rejects_other_files(tmp_path):
    other = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(other), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorFileError, match="not a control vector"):
        import_gguf(other)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(60)))
    with pytest.raises(VectorFileError, match="not a readable GGUF"):
        import_gguf(junk)
    bad = tmp_path / "nan.gguf"
    writer = gguf.GGUFWriter(str(bad), "controlvector")
    writer.add_tensor("direction.1", np.array([1.0, np.nan], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(NonFiniteError):
        import_gguf(bad)


def test_gguf_export_resolves_negative_layer_keys(tmp_path):
    """``direction.-1`` is unreadable by llama.cpp and by import_gguf: negative keys count from the end."""
    vec = SteeringVector({-1: torch.arange(16.0), 1: torch.ones(16)}, "resid_post", dict(META))
    path = tmp_path / "cv.gguf"
    export_gguf(vec, path, n_layers=4)
    names = sorted(t.name for t in gguf.GGUFReader(str(path)).tensors)
    assert names == ["direction.1", "direction.3"]
    back = import_gguf(path)
    assert torch.equal(back.layer_activations[3], vec.layer_activations[-1])
    assert torch.equal(back.layer_activations[1], vec.layer_activations[1])
    # A trained vector knows its model's layer count.
    export_gguf(SteeringVector({-2: torch.ones(16)}, "resid_post", {"n_layers": 6}), path)
    assert import_gguf(path).layers == [4]


def test_gguf_export_refuses_negative_keys_it_cannot_number(tmp_path):
    vec = SteeringVector({-1: torch.ones(16)}, "resid_post", dict(META))
    with pytest.raises(InvalidArgumentError, match="n_layers="):
        export_gguf(vec, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(LayerError, match="out of range"):
        export_gguf(SteeringVector({-5: torch.ones(16)}, "resid_post"), tmp_path / "x.gguf", n_layers=4)
    with pytest.raises(InvalidArgumentError, match="layer 0"):
        export_gguf(SteeringVector({-4: torch.ones(16)}, "resid_post"), tmp_path / "x.gguf", n_layers=4)
