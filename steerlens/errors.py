"""Error classes raised by steerlens.

Every error a user can trigger with bad input derives from :class:`SteerlensError`
and from ``ValueError`` (or ``TypeError`` for wrong kinds of objects), so
``except ValueError`` keeps working in user code. Messages name the problem and
the fix.
"""

from __future__ import annotations


class SteerlensError(Exception):
    """Base class of every error steerlens raises on purpose."""


class InvalidSampleError(SteerlensError, ValueError):
    """A training sample or training set is malformed (empty, not a pair, empty string...)."""


class InvalidSampleTypeError(SteerlensError, TypeError):
    """A training sample is not a (positive, negative) pair of strings."""


class LayerError(SteerlensError, ValueError):
    """Requested layers are out of range, duplicated or of an unknown layer type."""


class TokenIndexError(SteerlensError, ValueError):
    """A read or steer token index falls outside a prompt."""


class TokenizerError(SteerlensError, ValueError):
    """The tokenizer does not fit the model (vocabulary too large, missing, ...)."""


class TargetTokenError(TokenizerError):
    """A target string is not exactly one token (or not tokens at all) where it follows its prompt."""


class PromptTooLongError(SteerlensError, ValueError):
    """A prompt is longer than the model's context window."""


class NonFiniteError(SteerlensError, ValueError):
    """A vector, activation or multiplier holds NaN or infinity."""


class ModelMismatchError(SteerlensError, ValueError):
    """A vector does not fit the model it is applied to (d_model, layers, hook points)."""


class VectorFileError(SteerlensError, ValueError):
    """A steering-vector file is corrupt, truncated, too large or fails schema checks."""


class PairsFileError(SteerlensError, ValueError):
    """A JSONL file of contrast pairs has a malformed line."""


class UnsupportedModelError(SteerlensError, ValueError):
    """A model, architecture or checkpoint that steerlens cannot adapt."""


class ModelLoadError(SteerlensError, ValueError):
    """A model source could not be found or loaded (offline, missing files, ...)."""


class AggregatorError(SteerlensError, ValueError):
    """An aggregator was given unusable activations or returned a bad vector."""


class InvalidArgumentError(SteerlensError, ValueError):
    """Any other argument with a value steerlens cannot use."""


class NumberTypeError(SteerlensError, TypeError):
    """A numeric argument (multiplier, threshold, ...) is not a number at all, e.g. the string ``"2"``."""


class MissingDependencyError(SteerlensError, ImportError):
    """An optional dependency (an extra such as ``steerlens[sae]``) is not installed; the message names the pip line."""


class ModelNameWarning(UserWarning):
    """A vector is applied to a model other than the one it was trained on (by fingerprint, else by name)."""


class LayerRouteWarning(UserWarning):
    """An ``ln1``/``ln2`` vector trained on one kind of model (HookedTransformer / native HF) is applied to the other."""


class PromptsFileError(SteerlensError, ValueError):
    """A prompts text file is unreadable or has no prompts."""


class GGUFFileError(ModelLoadError):
    """A GGUF model file is empty, truncated, not GGUF, damaged, or not a model (e.g. a control vector)."""


class OperatorError(SteerlensError, TypeError, ValueError):
    """A steering operator is not callable, or returns a delta whose shape does not fit the activation."""


class SteeringThreadError(SteerlensError, RuntimeError):
    """A thread steers a model that another live thread is steering (hooks are per model, not per thread)."""


class UnknownKeywordError(SteerlensError, TypeError):
    """A verb was given a keyword it does not take (a misspelt setting, or one the verb does not use)."""


__all__ = [
    "SteerlensError",
    "InvalidSampleError",
    "InvalidSampleTypeError",
    "LayerError",
    "TokenIndexError",
    "TokenizerError",
    "TargetTokenError",
    "PromptTooLongError",
    "NonFiniteError",
    "ModelMismatchError",
    "VectorFileError",
    "PairsFileError",
    "UnsupportedModelError",
    "ModelLoadError",
    "AggregatorError",
    "InvalidArgumentError",
    "NumberTypeError",
    "MissingDependencyError",
    "ModelNameWarning",
    "LayerRouteWarning",
    "PromptsFileError",
    "GGUFFileError",
    "OperatorError",
    "SteeringThreadError",
    "UnknownKeywordError",
]
