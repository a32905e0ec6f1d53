"""Stage 1, what goes in: contrast pairs, CAA pairs and A/B items in a tokenizer's chat template,
and the bundled chat data sets (:mod:`.bundled`)."""

from steerlens.samples.bundled import (
    ab_items,
    chat_contrast_pairs,
    chat_contrast_records,
    list_behaviours,
    list_chat_contrasts,
    neutral_chat_prompts,
)
from steerlens.samples.chat import caa_items, caa_pairs, chat_prompt
from steerlens.samples.sample import SampleLike, SteeringVectorTrainingSample, normalize_samples

__all__ = [
    "SampleLike",
    "SteeringVectorTrainingSample",
    "ab_items",
    "caa_items",
    "caa_pairs",
    "chat_contrast_pairs",
    "chat_contrast_records",
    "chat_prompt",
    "list_behaviours",
    "list_chat_contrasts",
    "neutral_chat_prompts",
    "normalize_samples",
]
