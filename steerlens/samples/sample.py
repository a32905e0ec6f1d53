"""Training samples: (positive, negative) prompt pairs and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, Union

from steerlens.errors import InvalidSampleError, InvalidSampleTypeError

ReadIndex = Union[int, Callable[[str], int]]


@dataclass
class SteeringVectorTrainingSample:
    """One contrast pair, optionally with its own read positions.

    ``read_*_token_index`` override the ``read_token_index`` passed to training
    for this sample only (``None`` means "use the training default").

    Example:
        >>> SteeringVectorTrainingSample("I love it", "I hate it")
        SteeringVectorTrainingSample(positive_str='I love it', negative_str='I hate it', read_positive_token_index=None, read_negative_token_index=None)
    """

    positive_str: str
    negative_str: str
    read_positive_token_index: int | None = None
    read_negative_token_index: int | None = None


SampleLike = Union[SteeringVectorTrainingSample, tuple[str, str], Sequence[str]]


def normalize_samples(samples: Iterable[SampleLike]) -> list[SteeringVectorTrainingSample]:
    """Turn tuples and samples into validated ``SteeringVectorTrainingSample`` objects."""
    if isinstance(samples, (str, bytes)):
        raise InvalidSampleTypeError(
            "training_samples is a single string; pass a list of (positive, negative) pairs, "
            "e.g. [('I love it', 'I hate it')]."
        )
    out = [_normalize_one(i, s) for i, s in enumerate(samples)]
    if not out:
        raise InvalidSampleError(
            "training_samples is empty; pass at least one (positive, negative) pair."
        )
    return out


def _normalize_one(i: int, sample: object) -> SteeringVectorTrainingSample:
    if isinstance(sample, SteeringVectorTrainingSample):
        result = sample
    elif isinstance(sample, (tuple, list)) and len(sample) == 2:
        result = SteeringVectorTrainingSample(sample[0], sample[1])
    else:
        raise InvalidSampleTypeError(
            f"training sample {i} is {type(sample).__name__} {sample!r:.80}; each sample must be "
            "a (positive, negative) pair of strings or a SteeringVectorTrainingSample."
        )
    for side, text in (("positive", result.positive_str), ("negative", result.negative_str)):
        if not isinstance(text, str):
            raise InvalidSampleTypeError(
                f"training sample {i}: the {side} prompt is {type(text).__name__}, not a string; "
                "pass both prompts as str."
            )
        if not text.strip():
            raise InvalidSampleError(
                f"training sample {i}: the {side} prompt is empty; remove the sample or give it text."
            )
    for side, idx in (
        ("read_positive_token_index", result.read_positive_token_index),
        ("read_negative_token_index", result.read_negative_token_index),
    ):
        if idx is not None and (isinstance(idx, bool) or not isinstance(idx, int)):
            raise InvalidSampleTypeError(
                f"training sample {i}: {side} must be an int or None, got {type(idx).__name__}."
            )
    return result
