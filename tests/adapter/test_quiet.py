"""TransformerLens' deprecation noise is silenced only around the code that builds models."""

from __future__ import annotations

import warnings

from steerlens.adapter._quiet import quiet_transformer_lens


def test_only_deprecation_warnings_are_silenced_and_only_inside():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_transformer_lens():
            warnings.warn("HookedTransformer is deprecated", DeprecationWarning)
            warnings.warn("something else", UserWarning)
        warnings.warn("after the block", DeprecationWarning)
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, "something else"),
        (DeprecationWarning, "after the block"),
    ]


def test_building_a_hooked_transformer_inside_warns_nothing_deprecated():
    from helpers import make_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_transformer_lens():
            make_model(n_layers=1)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
