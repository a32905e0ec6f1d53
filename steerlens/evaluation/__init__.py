"""Stage 6, steered against unsteered: sweeps, logit comparison, metrics, generations and plots."""

from steerlens.evaluation.comparison import ABItem, ab_behavior_probability, compare_logits
from steerlens.evaluation.metrics import logit_diff, prob_mass, prob_share
from steerlens.evaluation.sweep import sweep_layers

__all__ = ["ABItem", "ab_behavior_probability", "compare_logits", "logit_diff", "prob_mass", "prob_share", "sweep_layers"]
