"""Which TransformerLens major is installed, and the ``HookedTransformer`` names only 3.x has.

steerlens supports ``transformer-lens>=3.0,<5``. TransformerLens 4 removed
``HookedTransformer`` (and its config, loaders and weight converters) in favour of
``TransformerBridge``; everything else steerlens does works on both majors. Modules
that build HookedTransformers import those names from here instead of from
``transformer_lens``, so ``import steerlens`` works on either major: on 4.x the names
are stand-ins that are never an instance's class and raise
:class:`~steerlens.errors.UnsupportedModelError` (saying which major is needed) when used.

Example:
    >>> from steerlens._tl import HAS_HOOKED_TRANSFORMER, TL_MAJOR
    >>> TL_MAJOR, HAS_HOOKED_TRANSFORMER
    (3, True)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, NoReturn

from steerlens.errors import UnsupportedModelError


def _installed_version() -> str:
    try:
        return version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - a source checkout on sys.path
        import transformer_lens

        return str(getattr(transformer_lens, "__version__", "0"))


TL_VERSION: str = _installed_version()
"""The installed TransformerLens version, e.g. ``"3.9.0"``."""

TL_MAJOR: int = int(TL_VERSION.split(".")[0] or 0)
"""Its major version: 3 (``HookedTransformer`` and ``TransformerBridge``) or 4 (``TransformerBridge`` only)."""

HAS_HOOKED_TRANSFORMER: bool = TL_MAJOR < 4
"""Whether ``HookedTransformer`` exists (TransformerLens 3.x)."""


def needs_hooked_transformer(what: str) -> UnsupportedModelError:
    """The error for using ``what`` (a HookedTransformer-only feature) on TransformerLens 4.

    Example:
        >>> raise needs_hooked_transformer("steerlens.load_model")
        Traceback (most recent call last):
        UnsupportedModelError: steerlens.load_model needs a TransformerLens HookedTransformer, ...
    """
    return UnsupportedModelError(
        f"{what} needs a TransformerLens HookedTransformer, which TransformerLens 4 removed "
        f"(transformer-lens {TL_VERSION} is installed). Install TransformerLens 3 "
        "(pip install 'transformer-lens>=3.9,<4') to convert models, or keep this version and pass the "
        "Hugging Face model itself (steerlens.load_hf_model(...) or AutoModelForCausalLM.from_pretrained(...)) "
        "or a TransformerBridge (TransformerBridge.boot_transformers(name, hf_model=...)): "
        "training, steering, sweeps and generation work on both."
    )


def require_hooked_transformer(what: str) -> None:
    """Raise :func:`needs_hooked_transformer`'s error unless TransformerLens 3.x is installed.

    Example:
        >>> require_hooked_transformer("steerlens.load_model")  # returns on TransformerLens 3
    """
    if not HAS_HOOKED_TRANSFORMER:
        raise needs_hooked_transformer(what)


class _Removed(type):
    """Metaclass of the 4.x stand-ins: building one, or reading any attribute, raises the 3.x error."""

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise needs_hooked_transformer(f"transformer_lens.{cls.__name__}")

    def __getattr__(cls, name: str) -> NoReturn:
        raise needs_hooked_transformer(f"transformer_lens.{cls.__name__}.{name}")


def _removed_function(name: str) -> Callable[..., NoReturn]:
    def removed(*args: Any, **kwargs: Any) -> NoReturn:
        raise needs_hooked_transformer(f"transformer_lens {name}")

    removed.__name__ = name
    return removed


if HAS_HOOKED_TRANSFORMER:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_official_model_name
else:

    class HookedTransformer(metaclass=_Removed):  # type: ignore[no-redef]
        """Stand-in on TransformerLens 4: no model is an instance of it; using it raises."""

    class HookedTransformerConfig(metaclass=_Removed):  # type: ignore[no-redef]
        """Stand-in on TransformerLens 4: using it raises."""

    def get_official_model_name(model_name: str) -> str:  # type: ignore[misc]
        """No TransformerLens-official names on 4.x (they name HookedTransformer checkpoints)."""
        raise ValueError(f"{model_name!r} is not a TransformerLens 3 official model name on TransformerLens 4.")


def __getattr__(name: str) -> Any:
    """TransformerLens 3's weight converters (``convert_llama_weights``...); stand-ins raising on 4.x."""
    if name.startswith("convert_") and name.endswith("_weights"):
        if HAS_HOOKED_TRANSFORMER:
            return getattr(importlib.import_module("transformer_lens.pretrained.weight_conversions"), name)
        return _removed_function(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HAS_HOOKED_TRANSFORMER",
    "HookedTransformer",
    "HookedTransformerConfig",
    "TL_MAJOR",
    "TL_VERSION",
    "get_official_model_name",
    "needs_hooked_transformer",
    "require_hooked_transformer",
]
