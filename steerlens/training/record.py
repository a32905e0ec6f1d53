"""Record a model's activations on every forward pass, at one layer type (steering-vectors' API)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from torch import Tensor

from steerlens.backends import backend_for
from steerlens.backends.layer_config import ModelLayerConfig
from steerlens.layers import LayerType, check_layer_name, resolve_layers


@contextmanager
def record_activations(
    model: Any,
    layer_type: LayerType = "decoder_block",
    layer_config: ModelLayerConfig | None = None,
    clone_activations: bool = True,
    layer_nums: Sequence[int] | None = None,
) -> Iterator[dict[int, list[Tensor]]]:
    """Inside the ``with`` block, collect ``{layer: [activation of each forward pass]}``.

    Each activation is ``[batch, pos, d_model]`` at ``layer_type`` (e.g. ``decoder_block``
    = ``resid_post``, the output of decoder layer L), on a HookedTransformer or a Hugging
    Face model; with steering applied, the steered values. ``layer_nums`` (negative ones
    count from the end) limits the layers; ``clone_activations=False`` keeps references.

    Example:
        >>> with record_activations(model, "decoder_block", layer_nums=[0, -1]) as acts:
        ...     model(tokens)
        >>> acts[0][0].shape
        torch.Size([1, 5, 64])
    """
    backend = backend_for(model, layer_config=layer_config)
    layers = resolve_layers(layer_nums, backend.n_layers, layer_type)
    # The name as given: on a Hugging Face model a steering-vectors name is its module's output.
    with backend.record(check_layer_name(layer_type), layers, clone_activations) as records:
        yield records
