"""Conditional steering: a per-row gate, decided on the prompt, that switches a vector on or off.

:func:`conditional_steering` steers only the rows whose prompt activations project past a
threshold onto a condition direction; :func:`fit_condition` picks that direction's layer and
threshold from prompts that should and should not be steered.
"""

from steerlens.conditional.fit import FittedCondition, condition_accuracy, fit_condition
from steerlens.conditional.steering import Condition, condition_scores, conditional_steering

__all__ = [
    "Condition",
    "FittedCondition",
    "condition_accuracy",
    "condition_scores",
    "conditional_steering",
    "fit_condition",
]
