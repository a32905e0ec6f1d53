"""Shared argument checks: a value that is no number names its type; NaN/inf stay NonFiniteError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_vector

from steerlens import angular_steering_operator
from steerlens.checks import check_multipliers, finite_number
from steerlens.conditional import Condition
from steerlens.errors import InvalidArgumentError, NonFiniteError, NumberTypeError


@pytest.mark.parametrize(
    "value, named",
    [
        ("2", "a str '2'"),
        ([1.0], "a list [1.0]"),
        (None, "a NoneType None"),
        (True, "a bool True"),
        (torch.ones(2), "Tensor of shape (2,)"),
    ],
)
def test_finite_number_names_the_type_it_got(value, named):
    with pytest.raises(NumberTypeError) as info:
        finite_number(value, "multiplier")
    assert isinstance(info.value, TypeError) and not isinstance(info.value, NonFiniteError)
    assert named in str(info.value) and "must be a number" in str(info.value)


def test_finite_number_keeps_numbers_and_non_finite_errors():
    assert finite_number(np.float32(2.5)) == 2.5 and finite_number(torch.tensor(3)) == 3.0
    with pytest.raises(NonFiniteError, match="finite number, got nan"):
        finite_number(float("nan"))


def test_string_multiplier_on_apply_is_a_type_error(model):
    vec = random_vector(model)
    with pytest.raises(NumberTypeError, match="multiplier must be a number .* got a str '2'"):
        with vec.apply(model, multiplier="2"):
            pass


def test_every_numeric_argument_names_the_type():
    with pytest.raises(NumberTypeError, match="degrees .* got a str '30'"):
        angular_steering_operator("30")  # type: ignore[arg-type]
    with pytest.raises(NumberTypeError, match="threshold .* got a str"):
        Condition(torch.ones(4), 1, "resid_post", threshold="0.5")  # type: ignore[arg-type]
    with pytest.raises(NumberTypeError, match="multipliers .* got a str '-4,4'"):
        check_multipliers("-4,4")  # type: ignore[arg-type]
    with pytest.raises(NumberTypeError, match="got a str 'a'"):
        check_multipliers([1.0, "a"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="finite number"):
        check_multipliers([1.0, float("inf")])
