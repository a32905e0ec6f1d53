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


def _two_layer_file(tmp_path) -> tuple[dict, bytes]:
    """(safetensors header, tensor bytes) of a valid file with layers 0 and 2, 4 float32 values each."""
    from helpers import split_safetensors

    SteeringVector({0: torch.ones(4), 2: torch.full((4,), 2.0)}).save(tmp_path / "two.safetensors")
    return split_safetensors((tmp_path / "two.safetensors").read_bytes())


OFFSET_DAMAGE = {
    "negative begin (reads header bytes)": lambda raw: raw["layer.0"].update(data_offsets=[-16, 0]),
    "not a list": lambda raw: raw["layer.0"].update(data_offsets=7),
    "a string": lambda raw: raw["layer.0"].update(data_offsets="0,16"),
    "three numbers": lambda raw: raw["layer.0"].update(data_offsets=[0, 16, 32]),
    "booleans": lambda raw: raw["layer.0"].update(data_offsets=[False, 16]),
    "floats": lambda raw: raw["layer.0"].update(data_offsets=[0.0, 16.0]),
    "missing": lambda raw: raw["layer.0"].pop("data_offsets"),
    "overlapping tensors": lambda raw: raw["layer.2"].update(data_offsets=[0, 16]),
    "wrong size": lambda raw: raw["layer.0"].update(data_offsets=[0, 8]),
    "past the end": lambda raw: raw["layer.2"].update(data_offsets=[24, 40]),
}


@pytest.mark.parametrize("damage", list(OFFSET_DAMAGE))
def test_info_refuses_exactly_what_load_refuses(damage, tmp_path, capsys):
    """`steerlens info` and a load run one check: bad data_offsets are one VectorFileError with one message
    in both (today info read header bytes as floats for a negative offset and raised TypeError for a non-list)."""
    from helpers import join_safetensors

    from steerlens.cli import main
    from steerlens.formats.vector_file import summarize_vector_file

    raw, body = _two_layer_file(tmp_path)
    OFFSET_DAMAGE[damage](raw)
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(join_safetensors(raw, body))
    with pytest.raises(VectorFileError) as load_error:
        SteeringVector.load(path)
    with pytest.raises(VectorFileError) as info_error:
        summarize_vector_file(path)
    assert str(info_error.value) == str(load_error.value)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"steerlens: error: {load_error.value}\n"


def test_an_empty_vector_is_refused_when_made_and_when_saved(tmp_path):
    """A 0-length vector used to save a file no load accepts; now it never gets that far."""
    with pytest.raises(InvalidArgumentError, match="layer 3: the vector is empty"):
        SteeringVector({3: torch.empty(0)})
    vec = SteeringVector({3: torch.ones(4)})
    vec.layer_activations[3] = torch.empty(0)  # emptied after construction
    with pytest.raises(InvalidArgumentError, match="empty"):
        vec.save(tmp_path / "v.safetensors")
    assert list(tmp_path.iterdir()) == []
