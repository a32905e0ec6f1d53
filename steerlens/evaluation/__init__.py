"""Steered against unsteered: layer × multiplier sweeps, logit comparison, A/B behaviour
probabilities, the layer report (layers ranked by what steering does), per-item steerability,
calibration under a damage budget, continuation log-probabilities, metrics, generations and plots."""

from steerlens.evaluation.attribution import AttributionWarning, attribute_steering, plot_attribution, target_logprob
from steerlens.evaluation.calibration import Calibration, CalibrationCell, Search, calibrate
from steerlens.evaluation.comparison import ABItem, ab_behavior_probability, compare_logits
from steerlens.evaluation.continuation import continuation_logprob
from steerlens.evaluation.generation import generate_grid, generate_text, steered_and_unsteered
from steerlens.evaluation.layer_report import layer_report
from steerlens.evaluation.metrics import logit_diff, prob_mass, prob_share
from steerlens.evaluation.plots import (
    plot_calibration,
    plot_metric_vs_multiplier,
    plot_sweep_heatmap,
    plot_token_projections,
    plot_top_k_shift,
)
from steerlens.evaluation.steerability import plot_steerability, steerability, steerability_summary
from steerlens.evaluation.sweep import sweep_layers

__all__ = [
    "ABItem",
    "AttributionWarning",
    "attribute_steering",
    "plot_attribution",
    "target_logprob",
    "Calibration",
    "CalibrationCell",
    "Search",
    "ab_behavior_probability",
    "calibrate",
    "compare_logits",
    "continuation_logprob",
    "generate_grid",
    "generate_text",
    "layer_report",
    "logit_diff",
    "plot_calibration",
    "plot_metric_vs_multiplier",
    "plot_steerability",
    "plot_sweep_heatmap",
    "plot_token_projections",
    "plot_top_k_shift",
    "prob_mass",
    "prob_share",
    "steerability",
    "steerability_summary",
    "steered_and_unsteered",
    "sweep_layers",
]
