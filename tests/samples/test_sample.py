"""Training samples: pairs and SteeringVectorTrainingSample objects normalised, bad ones refused by index."""

from __future__ import annotations

import pytest
import torch

from steerlens import SteeringVectorTrainingSample
from steerlens.errors import InvalidSampleError, InvalidSampleTypeError
from steerlens.samples.sample import normalize_samples


def test_pairs_become_samples_and_samples_keep_their_read_indices():
    given = SteeringVectorTrainingSample("I love it", "I hate it", read_negative_token_index=-2)
    out = normalize_samples([("good", "bad"), ["yes", "no"], given])
    assert [(s.positive_str, s.negative_str) for s in out] == [
        ("good", "bad"),
        ("yes", "no"),
        ("I love it", "I hate it"),
    ]
    assert out[2] is given and out[2].read_negative_token_index == -2
    assert out[0].read_positive_token_index is None and out[0].read_negative_token_index is None


def test_token_id_tensors_become_lists_in_a_copy():
    given = SteeringVectorTrainingSample(torch.tensor([1, 5, 6]), [1, 7], read_positive_token_index=1)
    (out,) = normalize_samples(iter([given]))
    assert out.positive_str == [1, 5, 6] and out.negative_str == [1, 7] and out.read_positive_token_index == 1
    assert isinstance(given.positive_str, torch.Tensor)  # the caller's sample is left as it is


@pytest.mark.parametrize(
    "samples, error, match",
    [
        ("I love it", InvalidSampleTypeError, "single string"),
        ([], InvalidSampleError, "empty"),
        ([("a", "b"), ("a", "b", "c")], InvalidSampleTypeError, "training sample 1 is tuple"),
        ([("a", "b"), ("a", " ")], InvalidSampleError, "sample 1: the negative prompt is empty"),
        ([(3.5, "b")], InvalidSampleTypeError, "sample 0: the positive prompt is float"),
        ([([], "b")], InvalidSampleError, "sample 0: the positive prompt has no token ids"),
        (
            [SteeringVectorTrainingSample("a", "b", read_positive_token_index=1.0)],
            InvalidSampleTypeError,
            "read_positive_token_index must be an int",
        ),
        (
            [SteeringVectorTrainingSample("a", "b", read_negative_token_index=True)],
            InvalidSampleTypeError,
            "read_negative_token_index must be an int",
        ),
    ],
)
def test_bad_samples_are_refused_naming_the_sample(samples, error, match):
    with pytest.raises(error, match=match):
        normalize_samples(samples)
