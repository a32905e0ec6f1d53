"""Saving vector files: clear errors for metadata JSON cannot hold and for missing folders."""

from __future__ import annotations

import pytest
import torch

from steerlens import SteeringVector
from steerlens.errors import InvalidArgumentError, VectorFileError


def test_unstorable_metadata_names_the_key(tmp_path):
    vec = SteeringVector({0: torch.ones(4)}, metadata={"probe": {"weights": torch.ones(2)}})
    with pytest.raises(InvalidArgumentError, match=r"metadata\['probe'\]\['weights'\] is a Tensor"):
        vec.save(tmp_path / "v.safetensors")
    with pytest.raises(InvalidArgumentError, match="nan"):
        SteeringVector({0: torch.ones(4)}, metadata={"score": float("nan")}).save(tmp_path / "v.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_named_not_the_temporary_file(tmp_path):
    target = tmp_path / "missing" / "v.safetensors"
    with pytest.raises(VectorFileError) as error:
        SteeringVector({0: torch.ones(4)}).save(target)
    assert str(tmp_path / "missing") in str(error.value) and ".tmp" not in str(error.value)
    assert "mkdir" in str(error.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_summary_without_torch_equals_the_loaded_vector(tmp_path, dtype):
    """`steerlens info` reads files with numpy: the same layers, norms, dtype and metadata as a load."""
    from steerlens.formats.vector_file import summarize_vector_file

    torch.manual_seed(0)
    vec = SteeringVector({-1: torch.randn(16) * 3, 4: torch.randn(16)}, "attn_out", {"model_name": "m", "n": 3})
    vec = SteeringVector({k: v.to(dtype) for k, v in vec.layer_activations.items()}, "attn_out", vec.metadata)
    vec.save(tmp_path / "v.safetensors")
    summary = summarize_vector_file(tmp_path / "v.safetensors")
    loaded = SteeringVector.load(tmp_path / "v.safetensors")
    assert (summary.layer_type, summary.d_model, summary.metadata) == ("attn_out", 16, loaded.metadata)
    assert summary.dtype == str(dtype)
    expected = {k: float(v.double().norm()) for k, v in loaded.layer_activations.items()}
    assert summary.norms.keys() == expected.keys()
    for layer, norm in expected.items():
        assert summary.norms[layer] == pytest.approx(norm, rel=1e-12)


def test_summary_rejects_what_a_load_rejects(tmp_path):
    from steerlens.formats.vector_file import summarize_vector_file

    path = tmp_path / "v.safetensors"
    data = bytearray(_saved_bytes(tmp_path))
    data[-4:] = b"\x00\x00\xc0\x7f"  # the last float32 becomes NaN
    path.write_bytes(bytes(data))
    with pytest.raises(VectorFileError, match="NaN"):
        SteeringVector.load(path)
    with pytest.raises(VectorFileError, match="NaN"):
        summarize_vector_file(path)
    path.write_bytes(b"not a vector file")
    with pytest.raises(VectorFileError, match="too short|header"):
        summarize_vector_file(path)


def _saved_bytes(tmp_path) -> bytes:
    SteeringVector({0: torch.ones(4)}).save(tmp_path / "ok.safetensors")
    return (tmp_path / "ok.safetensors").read_bytes()
