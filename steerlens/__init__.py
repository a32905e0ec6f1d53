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
from steerlens.adapter import load_model
from steerlens.backends import steering_hooks_on
from steerlens.backends.layer_config import (
    LayerMatcher,
    ModelLayerConfig,
    get_num_matching_layers,
    guess_and_enhance_layer_config,
)
from steerlens.evaluation import (
    ABItem,
    ab_behavior_probability,
    compare_logits,
    logit_diff,
    prob_mass,
    prob_share,
    sweep_layers,
)
from steerlens.hooks import (
    PatchDeltaOperator,
    SteeringHandle,
    SteeringPatchHandle,
    ablation_operator,
    ablation_then_addition_operator,
    addition_operator,
)
from steerlens.layers import LayerType
from steerlens.samples import SteeringVectorTrainingSample
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
    "LayerMatcher",
    "LayerType",
    "ModelLayerConfig",
    "PatchDeltaOperator",
    "SteeringHandle",
    "SteeringPatchHandle",
    "SteeringVector",
    "SteeringVectorTrainingSample",
    "__version__",
    "ab_behavior_probability",
    "ablation_operator",
    "ablation_then_addition_operator",
    "addition_operator",
    "aggregate_activations",
    "compare_logits",
    "extract_activations",
    "get_num_matching_layers",
    "guess_and_enhance_layer_config",
    "load_model",
    "logistic_aggregator",
    "logit_diff",
    "mean_aggregator",
    "pca_aggregator",
    "prob_mass",
    "prob_share",
    "record_activations",
    "steering_hooks_on",
    "sweep_layers",
    "train_steering_vector",
]
