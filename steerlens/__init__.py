"""steerlens: train and apply steering vectors on TransformerLens models.

Example:
    >>> from steerlens import train_steering_vector
    >>> vec = train_steering_vector(model, None, [("I love it", "I hate it")], layers=[2])
    >>> with vec.apply(model, multiplier=4.0):
    ...     model.generate("The film was", max_new_tokens=8)
"""

from steerlens.adapter import load_model
from steerlens.aggregators import logistic_aggregator, mean_aggregator, pca_aggregator
from steerlens.comparison import ABItem, ab_behavior_probability, compare_logits
from steerlens.metrics import logit_diff, prob_mass, prob_share
from steerlens.operators import ablation_operator, ablation_then_addition_operator, addition_operator
from steerlens.samples import SteeringVectorTrainingSample
from steerlens.steering import SteeringHandle, steering_hooks_on
from steerlens.sweep import sweep_layers
from steerlens.training import aggregate_activations, extract_activations, train_steering_vector
from steerlens.vector import SteeringVector

__version__ = "0.1.0"

__all__ = [
    "ABItem",
    "SteeringHandle",
    "SteeringVector",
    "SteeringVectorTrainingSample",
    "ab_behavior_probability",
    "ablation_operator",
    "ablation_then_addition_operator",
    "addition_operator",
    "aggregate_activations",
    "compare_logits",
    "extract_activations",
    "load_model",
    "logistic_aggregator",
    "logit_diff",
    "mean_aggregator",
    "pca_aggregator",
    "prob_mass",
    "prob_share",
    "steering_hooks_on",
    "sweep_layers",
    "train_steering_vector",
]
