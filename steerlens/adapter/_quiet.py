"""Silence TransformerLens 3.x deprecation noise around code that builds models."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_transformer_lens() -> Iterator[None]:
    """Suppress the ``DeprecationWarning``s TransformerLens 3.x emits when we build models.

    ``HookedTransformer`` and its loaders warn that they are deprecated in favour of
    ``TransformerBridge``; steerlens builds ``HookedTransformer`` on purpose, so users
    should not see that warning for models we construct.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield
