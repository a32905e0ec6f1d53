"""Training samples: (positive, negative) prompt pairs and their validation.

A prompt is text (chat-template strings included) or token ids (a list or a 1-D
tensor), which the model gets as they are (see :mod:`steerlens.tokens.policy`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

import torch

from steerlens.checks import token_id_list
from steerlens.errors import InvalidSampleError, InvalidSampleTypeError

ReadIndex = Union[int, Callable[[Any], int]]
Prompt = Union[str, Sequence[int], torch.Tensor]


@dataclass
class SteeringVectorTrainingSample:
    """One contrast pair, optionally with its own read positions.

    ``read_*_token_index`` override the ``read_token_index`` passed to training
    for this sample only (``None`` means "use the training default"). The two
    prompts are strings or token ids (lists or 1-D tensors, kept as lists).

    Example:
        >>> SteeringVectorTrainingSample("I love it", "I hate it")
        SteeringVectorTrainingSample(positive_str='I love it', negative_str='I hate it', read_positive_token_index=None, read_negative_token_index=None)
    """

    positive_str: Prompt
    negative_str: Prompt
    read_positive_token_index: int | None = None
    read_negative_token_index: int | None = None


SampleLike = Union[SteeringVectorTrainingSample, tuple[Prompt, Prompt], Sequence[Prompt]]


def normalize_samples(samples: Iterable[SampleLike]) -> list[SteeringVectorTrainingSample]:
    """Turn tuples and samples into validated ``SteeringVectorTrainingSample`` objects."""
    if isinstance(samples, (str, bytes)):
        raise InvalidSampleTypeError(
            "training_samples is a single string; pass a list of (positive, negative) pairs, "
            "e.g. [('I love it', 'I hate it')]."
        )
    out = [_normalize_one(i, s) for i, s in enumerate(samples)]
    if not out:
        raise InvalidSampleError("training_samples is empty; pass at least one (positive, negative) pair.")
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
    converted = {}
    for side in ("positive", "negative"):
        text = getattr(result, f"{side}_str")
        if isinstance(text, str):
            if not text.strip():
                raise InvalidSampleError(
                    f"training sample {i}: the {side} prompt is empty; remove the sample or give it text."
                )
            continue
        ids = token_id_list(text)
        if ids is None:
            raise InvalidSampleTypeError(
                f"training sample {i}: the {side} prompt is {type(text).__name__}, not a string (or a list / "
                "1-D tensor of token ids); pass both prompts as str."
            )
        if not ids:
            raise InvalidSampleError(f"training sample {i}: the {side} prompt has no token ids; give it some.")
        if not isinstance(text, list):
            converted[f"{side}_str"] = ids
    if converted:  # a copy with lists of ids: the caller's sample is left as it is
        result = dataclasses.replace(result, **converted)
    for side, idx in (
        ("read_positive_token_index", result.read_positive_token_index),
        ("read_negative_token_index", result.read_negative_token_index),
    ):
        if idx is not None and (isinstance(idx, bool) or not isinstance(idx, int)):
            raise InvalidSampleTypeError(
                f"training sample {i}: {side} must be an int or None, got {type(idx).__name__}."
            )
    return result
