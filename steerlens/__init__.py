"""steerlens: train and apply steering vectors on TransformerLens and Hugging Face models.

The top level holds what a notebook calls: every public name of ``steering-vectors`` 0.12.2,
the loaders, and the verbs (train, sweep, compare, calibrate, read) and operators. Everything
else has one documented home: :mod:`steerlens.evaluation` (measuring steered against
unsteered), :mod:`steerlens.analysis` (looking at a vector on prompts),
:mod:`steerlens.conditional`, :mod:`steerlens.interop` (other tools' formats),
:mod:`steerlens.sae`, :mod:`steerlens.samples`, :mod:`steerlens.backends`, :mod:`steerlens.toy`.

Names are imported on first use (PEP 562), so ``import steerlens`` and the command line start
without loading torch, TransformerLens or transformers.

Example:
    >>> from steerlens import train_steering_vector
    >>> vec = train_steering_vector(model, None, [("I love it", "I hate it")], layers=[2])
    >>> with vec.apply(model, multiplier=4.0):
    ...     model.generate("The film was", max_new_tokens=8)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from steerlens._version import __version__

# Public name -> the subpackage it is imported from (its one documented path besides this one).
_HOMES: dict[str, str] = {
    # steering-vectors 0.12.2's __all__, same meaning
    "Aggregator": "steerlens.training",
    "mean_aggregator": "steerlens.training",
    "pca_aggregator": "steerlens.training",
    "logistic_aggregator": "steerlens.training",
    "LayerType": "steerlens.layers",
    "LayerMatcher": "steerlens.backends",
    "ModelLayerConfig": "steerlens.backends",
    "get_num_matching_layers": "steerlens.backends",
    "guess_and_enhance_layer_config": "steerlens.backends",
    "PatchDeltaOperator": "steerlens.hooks",
    "record_activations": "steerlens.training",
    "SteeringVector": "steerlens.vector",
    "SteeringPatchHandle": "steerlens.hooks",
    "train_steering_vector": "steerlens.training",
    "SteeringVectorTrainingSample": "steerlens.samples",
    "aggregate_activations": "steerlens.training",
    "extract_activations": "steerlens.training",
    "ablation_operator": "steerlens.hooks",
    "addition_operator": "steerlens.hooks",
    "ablation_then_addition_operator": "steerlens.hooks",
    # models
    "load_model": "steerlens.adapter",
    "load_hf_model": "steerlens.adapter",
    # operators beyond steering-vectors'
    "angular_steering_operator": "steerlens.hooks",
    "norm_preserving_addition_operator": "steerlens.hooks",
    "projection_clamp_operator": "steerlens.hooks",
    "multiplicative_operator": "steerlens.hooks",
    # chat-template data
    "caa_pairs": "steerlens.samples",
    "caa_items": "steerlens.samples",
    "chat_prompt": "steerlens.samples",
    # measuring steered against unsteered
    "sweep_layers": "steerlens.evaluation",
    "compare_logits": "steerlens.evaluation",
    "ab_behavior_probability": "steerlens.evaluation",
    "ABItem": "steerlens.evaluation",
    "calibrate": "steerlens.evaluation",
    "continuation_logprob": "steerlens.evaluation",
    "prob_mass": "steerlens.evaluation",
    "prob_share": "steerlens.evaluation",
    "logit_diff": "steerlens.evaluation",
    "attribute_steering": "steerlens.evaluation",
    "generate_grid": "steerlens.evaluation",
    "layer_report": "steerlens.evaluation",
    "steerability": "steerlens.evaluation",
    # looking at a vector on prompts
    "token_projections": "steerlens.analysis",
    "residual_norms": "steerlens.analysis",
    # conditional steering
    "conditional_steering": "steerlens.conditional",
    "fit_condition": "steerlens.conditional",
    # how a call runs: one value for every verb's settings
    "Settings": "steerlens.settings",
}

__all__ = sorted(["__version__", *_HOMES])


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'steerlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from steerlens.adapter import load_hf_model, load_model
    from steerlens.analysis import residual_norms, token_projections
    from steerlens.backends import (
        LayerMatcher,
        ModelLayerConfig,
        get_num_matching_layers,
        guess_and_enhance_layer_config,
    )
    from steerlens.conditional import conditional_steering, fit_condition
    from steerlens.evaluation import (
        ABItem,
        ab_behavior_probability,
        attribute_steering,
        calibrate,
        compare_logits,
        continuation_logprob,
        generate_grid,
        layer_report,
        logit_diff,
        prob_mass,
        prob_share,
        steerability,
        sweep_layers,
    )
    from steerlens.hooks import (
        PatchDeltaOperator,
        SteeringPatchHandle,
        ablation_operator,
        ablation_then_addition_operator,
        addition_operator,
        angular_steering_operator,
        multiplicative_operator,
        norm_preserving_addition_operator,
        projection_clamp_operator,
    )
    from steerlens.layers import LayerType
    from steerlens.samples import SteeringVectorTrainingSample, caa_items, caa_pairs, chat_prompt
    from steerlens.settings import Settings
    from steerlens.training import (
        Aggregator,
        aggregate_activations,
        extract_activations,
        logistic_aggregator,
        mean_aggregator,
        pca_aggregator,
        record_activations,
        train_steering_vector,
    )
    from steerlens.vector import SteeringVector
