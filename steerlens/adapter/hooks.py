"""Record the activations of an HF model at TL hook points (the native backend's capture hooks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from steerlens.backends.hf import HFBackend

Site = tuple[int, str]


@contextlib.contextmanager
def record_hf_activations(hf_model: nn.Module, sites: Iterable[Site]) -> Iterator[dict[Site, torch.Tensor]]:
    """Collect detached ``[batch, pos, d_model]`` copies of the HF tensors at TL hook points.

    Example:
        >>> with record_hf_activations(hf, [(0, "resid_post")]) as acts:
        ...     hf(input_ids)
        >>> acts[(0, "resid_post")].shape  # [batch, pos, d_model]
    """
    backend = HFBackend(hf_model, None)
    recorded: dict[Site, torch.Tensor] = {}
    handles: list = []
    try:
        for key in sites:
            handles += backend.capture(key, lambda t, key=key: recorded.__setitem__(key, t.detach().clone()))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
