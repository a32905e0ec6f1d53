"""steerlens: train and apply steering vectors on TransformerLens and Hugging Face models.

The package follows the data: ``samples`` (contrast pairs) → ``tokens`` → ``training``
(activations, aggregated into a vector) → ``vector`` → ``hooks`` (steering at chosen
layers, through a model kind's ``backends``) → ``evaluation``; file formats live in
``formats``, the command line in ``cli``, HF → HookedTransformer conversion in ``adapter``.

Example:
    >>> from steerlens import train_steering_vector
    >>> vec = train_steering_vector(model, None, [("I love it", "I hate it")], layers=[2])
    >>> with vec.apply(model, multiplier=4.0):
    ...     model.generate("The film was", max_new_tokens=8)
"""

from steerlens import _moved
from steerlens._version import __version__
from steerlens.adapter import load_hf_model, load_model
from steerlens.backends import steering_hooks_on
from steerlens.backends.layer_config import (
    LayerMatcher,
    ModelLayerConfig,
    get_num_matching_layers,
    guess_and_enhance_layer_config,
)
from steerlens.backends.speed import fast_generation
from steerlens.evaluation import (
    ABItem,
    ab_behavior_probability,
    compare_logits,
    logit_diff,
    prob_mass,
    prob_share,
    sweep_layers,
)
from steerlens.evaluation.calibration import Calibration, CalibrationCell, calibrate
from steerlens.evaluation.conditions import FittedCondition, fit_condition
from steerlens.evaluation.continuation import continuation_logprob
from steerlens.evaluation.layer_report import layer_report
from steerlens.evaluation.projections import projections_html, token_projections
from steerlens.evaluation.strength import relative_vector, residual_norms
from steerlens.hooks import (
    PatchDeltaOperator,
    SteeringHandle,
    SteeringPatchHandle,
    ablation_operator,
    ablation_then_addition_operator,
    addition_operator,
)
from steerlens.hooks.conditional import Condition, condition_scores, conditional_steering
from steerlens.hooks.operators import angular_steering_operator, norm_preserving_addition_operator
from steerlens.layers import LayerType
from steerlens.samples import SteeringVectorTrainingSample
from steerlens.samples.chat import caa_items, caa_pairs, chat_prompt
from steerlens.tokens import TokenPolicy
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

_moved.install()

__all__ = [
    "ABItem",
    "Aggregator",
    "Calibration",
    "CalibrationCell",
    "Condition",
    "FittedCondition",
    "LayerMatcher",
    "LayerType",
    "ModelLayerConfig",
    "PatchDeltaOperator",
    "SteeringHandle",
    "SteeringPatchHandle",
    "SteeringVector",
    "SteeringVectorTrainingSample",
    "TokenPolicy",
    "__version__",
    "ab_behavior_probability",
    "ablation_operator",
    "ablation_then_addition_operator",
    "addition_operator",
    "aggregate_activations",
    "angular_steering_operator",
    "caa_items",
    "caa_pairs",
    "calibrate",
    "chat_prompt",
    "compare_logits",
    "condition_scores",
    "conditional_steering",
    "continuation_logprob",
    "extract_activations",
    "fast_generation",
    "fit_condition",
    "get_num_matching_layers",
    "guess_and_enhance_layer_config",
    "layer_report",
    "load_hf_model",
    "load_model",
    "logistic_aggregator",
    "logit_diff",
    "mean_aggregator",
    "norm_preserving_addition_operator",
    "pca_aggregator",
    "prob_mass",
    "prob_share",
    "projections_html",
    "record_activations",
    "relative_vector",
    "residual_norms",
    "steering_hooks_on",
    "sweep_layers",
    "token_projections",
    "train_steering_vector",
]
