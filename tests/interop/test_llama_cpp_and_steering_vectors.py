"""Conversions to the steering-vectors layout and llama.cpp control vectors (GGUF)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import random_vector

from steerlens import SteeringVector
from steerlens.errors import InvalidArgumentError, LayerError, NonFiniteError, VectorFileError
from steerlens.interop import export_gguf, from_steering_vectors, import_gguf, to_steering_vectors

gguf = pytest.importorskip("gguf")


META = {"model_name": "tiny-llama"}


@pytest.mark.parametrize(
    "ours, theirs", [("resid_post", "decoder_block"), ("attn_out", "self_attn"), ("mlp_out", "mlp")]
)
def test_steering_vectors_layout_round_trip(ours, theirs):
    vec = random_vector(16, (1, 3), ours, scale=1.0, metadata=META)
    fields = to_steering_vectors(vec)
    assert fields["layer_type"] == theirs and sorted(fields["layer_activations"]) == [1, 3]
    # Their SteeringVector is a dataclass with these two fields; any object with them converts back.
    back = from_steering_vectors(SimpleNamespace(**fields))
    assert back.layer_type == ours
    for layer in (1, 3):
        assert torch.equal(back.layer_activations[layer], vec.layer_activations[layer])
    fields["layer_activations"][1].add_(1.0)  # a copy: the original is untouched
    assert not torch.equal(fields["layer_activations"][1], vec.layer_activations[1])


def test_steering_vectors_layout_errors():
    with pytest.raises(InvalidArgumentError, match="no layer type"):
        to_steering_vectors(random_vector(16, (1, 3), "resid_pre", scale=1.0, metadata=META))
    with pytest.raises(InvalidArgumentError, match="embed_tokens"):
        from_steering_vectors({"layer_activations": {0: torch.zeros(4)}, "layer_type": "embed_tokens"})
    normed = from_steering_vectors({"layer_activations": {0: torch.ones(4)}, "layer_type": "input_layernorm"})
    assert normed.layer_type == "ln1" and to_steering_vectors(normed)["layer_type"] == "input_layernorm"
    with pytest.raises(InvalidArgumentError, match="layer_activations"):
        from_steering_vectors(42)


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


def test_module_layer_types_cross_to_steering_vectors_with_their_meaning():
    """Gemma 2's ``post_attention_layernorm`` is that module on both sides, not steerlens' ``ln2``."""
    from tiny_hf import make_hf_model

    model = make_hf_model("gemma2")
    theirs = {"layer_activations": {0: torch.randn(32), 1: torch.randn(32)}, "layer_type": "post_attention_layernorm"}
    vec = from_steering_vectors(theirs, model=model)
    assert vec.layer_type == "module:post_attention_layernorm"
    assert from_steering_vectors(theirs).layer_type == "ln2"  # without the model: the canonical name
    back = to_steering_vectors(vec)
    assert back["layer_type"] == "post_attention_layernorm"
    # Steering with the imported vector adds it to that module's output, as steering-vectors does.
    ids = torch.tensor([[1, 5, 9, 12]])
    handle = model.model.layers[1].post_attention_layernorm.register_forward_hook(
        lambda m, a, out: out + theirs["layer_activations"][1]
    )
    with torch.no_grad():
        expected = model(ids).logits
    handle.remove()
    with torch.no_grad(), vec.select_layers(1).apply(model):
        got = model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
