"""Stages 3-4, activations to a vector: read contrast-pair activations and aggregate them."""

from steerlens.training.activations import extract_activations
from steerlens.training.aggregators import Aggregator, logistic_aggregator, mean_aggregator, pca_aggregator
from steerlens.training.record import record_activations
from steerlens.training.train import aggregate_activations, train_steering_vector

__all__ = [
    "Aggregator",
    "aggregate_activations",
    "extract_activations",
    "logistic_aggregator",
    "mean_aggregator",
    "pca_aggregator",
    "record_activations",
    "train_steering_vector",
]
