"""The TransformerLens shim: the installed major, the HookedTransformer names only 3.x has, and the
error that says which major a feature needs."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import transformer_lens

import steerlens._tl as tl
from steerlens.errors import UnsupportedModelError


def test_the_installed_version_and_what_it_provides():
    assert tl.TL_VERSION == version("transformer-lens")
    assert tl.TL_MAJOR == int(version("transformer-lens").split(".")[0])
    assert tl.HAS_HOOKED_TRANSFORMER == hasattr(transformer_lens, "HookedTransformer")


@pytest.mark.skipif(not tl.HAS_HOOKED_TRANSFORMER, reason="TransformerLens 3.x only")
def test_on_3x_the_names_are_transformer_lens_own():
    from transformer_lens.pretrained import weight_conversions

    assert tl.HookedTransformer is transformer_lens.HookedTransformer
    assert tl.HookedTransformerConfig is transformer_lens.HookedTransformerConfig
    assert tl.convert_llama_weights is weight_conversions.convert_llama_weights
    tl.require_hooked_transformer("steerlens.load_model")  # returns
    with pytest.raises(AttributeError, match="no attribute 'convert_llama'"):
        tl.convert_llama  # noqa: B018


def test_the_error_names_the_feature_the_installed_version_and_both_ways_out(monkeypatch):
    monkeypatch.setattr(tl, "HAS_HOOKED_TRANSFORMER", False)
    with pytest.raises(UnsupportedModelError) as info:
        tl.require_hooked_transformer("steerlens.load_model")
    message = str(info.value)
    assert message.startswith("steerlens.load_model needs a TransformerLens HookedTransformer")
    assert f"transformer-lens {tl.TL_VERSION} is installed" in message
    assert "transformer-lens>=3.9,<4" in message and "load_hf_model" in message and "TransformerBridge" in message


def test_the_4x_stand_ins_raise_that_error_when_built_or_read():
    class HookedTransformer(metaclass=tl._Removed):
        pass

    with pytest.raises(UnsupportedModelError, match="transformer_lens.HookedTransformer needs"):
        HookedTransformer()
    with pytest.raises(UnsupportedModelError, match="transformer_lens.HookedTransformer.from_pretrained needs"):
        HookedTransformer.from_pretrained  # noqa: B018
    removed = tl._removed_function("convert_llama_weights")
    assert removed.__name__ == "convert_llama_weights"
    with pytest.raises(UnsupportedModelError, match="transformer_lens convert_llama_weights needs"):
        removed(None, None)
    assert not isinstance(object(), HookedTransformer)
