"""Stages 3-4, activations to a vector: read contrast-pair activations and aggregate them."""

from steerlens.training.activations import extract_activations
from steerlens.training.aggregators import logistic_aggregator, mean_aggregator, pca_aggregator
from steerlens.training.train import aggregate_activations, train_steering_vector

__all__ = [
    "aggregate_activations",
    "extract_activations",
    "logistic_aggregator",
    "mean_aggregator",
    "pca_aggregator",
    "train_steering_vector",
]
