"""SteeringVector with the types users have in hand: numpy/torch numbers, sum(), repr, metadata."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from steerlens import SteeringVector, train_steering_vector
from steerlens.errors import LayerError, ModelNameWarning


def vec3() -> SteeringVector:
    gen = torch.Generator().manual_seed(0)
    return SteeringVector(
        {layer: torch.randn(8, generator=gen) for layer in (1, 2, 3)},
        metadata={"model_name": "m", "training": {"n_samples": 3}},
    )


def test_layers_from_numpy_torch_and_dataframes(model, pairs):
    frame = pd.DataFrame({"layer": [1, 2, 2, 1]})
    for layers in (frame.layer.unique(), torch.tensor([1, 2]), np.array([1, 2]), [np.int64(1), torch.tensor(2)]):
        vec = train_steering_vector(model, None, pairs[:3], layers=layers)
        assert vec.layers == [1, 2]
    v = vec3()
    assert v.select_layers(np.float64(2)).layers == [2]
    assert v.select_layers(torch.tensor([1, 3])).layers == [1, 3]
    assert SteeringVector({-1: torch.ones(2)}).select_layers(-1).layers == [-1]
    with pytest.raises(LayerError, match="whole number"):
        v.select_layers(2.5)


def test_sum_and_tensor_scalars_match_the_hand_computation():
    v, w = vec3(), vec3() * 2
    total = sum([v, w])
    for layer in v.layers:
        torch.testing.assert_close(total.layer_activations[layer], 3 * v.layer_activations[layer])
    for k in (torch.tensor(2.0), np.float32(2.0), np.int64(2)):
        scaled = v * k
        assert isinstance(scaled, SteeringVector)
        torch.testing.assert_close(scaled.layer_activations[1], 2 * v.layer_activations[1])
    torch.testing.assert_close((torch.tensor(3.0) * v).layer_activations[2], 3 * v.layer_activations[2])


def test_metadata_survives_arithmetic_consistently():
    v = vec3()
    assert (2 * v).metadata == v.metadata == (v + v).metadata == (v - 0.5 * v).metadata
    other = SteeringVector({1: torch.ones(8)}, metadata={"model_name": "m", "training": {"n_samples": 9}})
    assert (v + other).metadata == {"model_name": "m"}  # only what both agree on


def test_repr_is_a_summary_not_a_tensor_dump():
    text = repr(vec3())
    assert "norms={1:" in text and "d_model=8" in text and "model_name='m'" in text
    assert "tensor(" not in text and len(text) < 200


def test_applying_to_another_model_warns(model):
    vec = SteeringVector({1: torch.ones(model.cfg.d_model)}, metadata={"model_name": "some-other-model"})
    with pytest.warns(ModelNameWarning, match="some-other-model"):
        with vec.apply(model):
            pass
    same = SteeringVector({1: torch.ones(model.cfg.d_model)}, metadata={"model_name": model.cfg.model_name})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelNameWarning)
        with same.apply(model):
            pass


def test_training_metadata_names_the_aggregator_and_per_sample_indices(model, pairs):
    from steerlens import SteeringVectorTrainingSample, pca_aggregator

    def my_aggregator(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return (pos - neg).mean(0)

    samples = [SteeringVectorTrainingSample(p, n) for p, n in pairs[:3]]
    samples[1].read_positive_token_index = -2
    vec = train_steering_vector(model, None, samples, layers=[1], aggregator=my_aggregator)
    training = vec.metadata["training"]
    assert training["aggregator"].endswith("my_aggregator") and "0x" not in training["aggregator"]
    assert training["per_sample_read_token_index"] == [[None, None], [-2, None], [None, None]]
    pca = train_steering_vector(model, None, pairs[:4], layers=[1], aggregator=pca_aggregator())
    assert pca.metadata["training"]["aggregator"] == "pca_aggregator()"
    assert "per_sample_read_token_index" not in pca.metadata["training"]
