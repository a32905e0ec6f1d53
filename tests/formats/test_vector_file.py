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
