"""Stage 4, the value everything revolves around: one direction per layer, and how to apply,
combine and store it (applying goes through the model's backend, storing through
:mod:`steerlens.formats.vector_file`)."""

from __future__ import annotations

import numbers
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Union

import torch
from torch import Tensor

from steerlens.backends import Backend, backend_for
from steerlens.backends.layer_config import ModelLayerConfig
from steerlens.errors import (
    InvalidArgumentError,
    LayerError,
    LayerRouteWarning,
    ModelMismatchError,
    ModelNameWarning,
    NonFiniteError,
)
from steerlens.formats.vector_file import DEFAULT_MAX_BYTES, encode_vector_file, load_vector_file, save_vector_file
from steerlens.hooks import Operator, SteeringPatchHandle, SteeringSpec, TokenIndices, make_spec
from steerlens.layers import LayerType, as_layer_index, check_layer_type, parse_hook_name, resolve_layers

_VECTOR_TYPE = "the vector's layer_type"
"""Where the layer type a hook name is checked against comes from, in errors."""


@dataclass(repr=False)
class SteeringVector:
    """Per-layer steering directions, applied at ``blocks.{L}.hook_{layer_type}``.

    Example:
        >>> vec = SteeringVector({2: torch.randn(64)})
        >>> with vec.apply(model, multiplier=4.0):
        ...     logits = model("The film was")
    """

    layer_activations: dict[int, Tensor]
    layer_type: LayerType = "decoder_block"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # steering-vectors' names ("decoder_block", ...) are stored under the canonical one.
        self.layer_type = check_layer_type(self.layer_type)  # type: ignore[assignment]
        if not self.layer_activations:
            raise LayerError("a SteeringVector needs at least one layer.")
        dims = set()
        for layer, vec in self.layer_activations.items():
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise LayerError(f"layer keys must be ints (negative ones count from the end), got {layer!r}.")
            if not isinstance(vec, Tensor) or vec.dim() != 1 or not vec.is_floating_point():
                raise InvalidArgumentError(
                    f"layer {layer}: expected a 1-D float tensor of size d_model, got "
                    f"{getattr(vec, 'shape', type(vec).__name__)}."
                )
            if vec.shape[0] == 0:
                raise InvalidArgumentError(f"layer {layer}: the vector is empty (0 values); it needs d_model values.")
            if not torch.isfinite(vec).all():
                raise NonFiniteError(f"layer {layer}: the vector contains NaN or inf; it cannot steer.")
            dims.add(vec.shape[0])
        if len(dims) != 1:
            raise InvalidArgumentError(f"all layers must have the same d_model, got sizes {sorted(dims)}.")

    def __repr__(self) -> str:
        first = next(iter(self.layer_activations.values()))
        norms = ", ".join(f"{layer}: {norm:.3g}" for layer, norm in self.norms().items())
        model = self.metadata.get("model_name")
        return (
            f"SteeringVector(layer_type={self.layer_type!r}, d_model={self.d_model}, dtype={first.dtype}, "
            f"norms={{{norms}}}" + (f", model_name={model!r}" if model else "") + ")"
        )

    @property
    def layers(self) -> list[int]:
        return sorted(self.layer_activations)

    @property
    def d_model(self) -> int:
        return next(iter(self.layer_activations.values())).shape[0]

    # -- applying -----------------------------------------------------------------

    def patch_activations(
        self,
        model: Any,
        layer_config: ModelLayerConfig | None = None,
        operator: Operator | None = None,
        multiplier: float = 1.0,
        min_token_index: int | None = None,
        token_indices: TokenIndices = None,
    ) -> SteeringPatchHandle:
        """Steer ``model`` until ``handle.remove()`` is called (or the handle's ``with`` block ends).

        Positions (``min_token_index``, ``token_indices``) are absolute positions in the
        sequence, also during ``generate`` with a KV cache; by default every position is
        steered. ``token_indices`` is a list of positions, a slice, or a mask tensor
        (bool or 0/1, ``[pos]`` or ``[batch, pos]``). Negative layer keys count from the
        end of ``model``. ``layer_config`` points a Hugging Face model's layer types at
        modules of your choice (see :func:`steerlens.guess_and_enhance_layer_config`).

        Example:
            >>> handle = vec.patch_activations(model, multiplier=2.0)
            >>> ...
            >>> handle.remove()
        """
        backend = backend_for(model, layer_config=layer_config)
        return backend.patch(self._spec(backend, operator, multiplier, min_token_index, token_indices))

    patch = patch_activations

    @contextmanager
    def apply(
        self,
        model: Any,
        layer_config: ModelLayerConfig | None = None,
        operator: Operator | None = None,
        multiplier: float = 1.0,
        min_token_index: int = 0,
        token_indices: TokenIndices = None,
    ) -> Iterator[Any]:
        """Steer ``model`` inside a ``with`` block; the hooks are gone on exit, also on error.

        Arguments as for :meth:`patch_activations`.

        Example:
            >>> with vec.apply(model, multiplier=-2.0):
            ...     print(model.generate("I think", max_new_tokens=8))
        """
        backend = backend_for(model, layer_config=layer_config)
        with backend.apply(self._spec(backend, operator, multiplier, min_token_index, token_indices)):
            yield model

    def _spec(
        self,
        backend: Any,
        operator: Operator | None,
        multiplier: float,
        min_token_index: int | None,
        token_indices: TokenIndices,
    ) -> SteeringSpec:
        """Validated steering arguments, with negative layer keys resolved against the model."""
        self._warn_if_other_model(backend)
        self._warn_if_other_route(backend)
        vectors = self.resolved(backend.n_layers).layer_activations
        return make_spec(vectors, self.layer_type, multiplier, operator, min_token_index or 0, token_indices)

    def resolved(self, n_layers: int) -> "SteeringVector":
        """This vector with its layer keys as a model of ``n_layers`` layers numbers them (none negative).

        Negative keys count from the end (``-1`` is layer ``n_layers - 1``), as everywhere in
        steerlens; the one place where they are turned into layers. A negative key past the
        model, or one naming a layer the vector also has (``-1`` and ``3`` on 4 layers), is a
        :class:`LayerError`; positive keys are kept (a backend refuses those past the model).

        Example:
            >>> SteeringVector({-1: v}).resolved(n_layers=4).layers
            [3]
        """
        keys = list(self.layer_activations)
        if all(k >= 0 for k in keys):
            return self
        negative = [k for k in keys if k < 0]
        try:
            positive = dict(zip(negative, resolve_layers(negative, n_layers)))
        except LayerError as error:
            raise LayerError(f"this vector's layer keys {keys} do not fit the model: {error}") from None
        clash = [k for k in negative if positive[k] in self.layer_activations]
        if clash:
            raise LayerError(
                f"this vector's keys {clash} count from the end and name layers {[positive[k] for k in clash]} of "
                f"this {n_layers}-layer model, which it also has: those layers are requested twice. Keep one key "
                "per layer."
            )
        vectors = {positive.get(k, k): v for k, v in self.layer_activations.items()}
        return replace(self, layer_activations=vectors)

    def _warn_if_other_model(self, backend: Any) -> None:
        """Warn when the model differs from the one the vector was trained on.

        Decided by the stored :func:`model_fingerprint` (the same checkpoint loaded natively
        or converted to a HookedTransformer matches, whatever the names); vectors without one
        (older files, hand-made vectors) fall back to comparing model names.
        """
        trained_on, model_name = self.metadata.get("model_name"), backend.model_name
        differs = fingerprint_difference(self.metadata.get(FINGERPRINT_KEY), backend)
        if differs is None:  # no usable fingerprint on one side: the names are all there is
            differs = (
                f"names differ ({trained_on!r} vs {model_name!r})"
                if (trained_on and model_name and trained_on != model_name)
                else ""
            )
        if differs:
            warnings.warn(
                f"this vector was trained on {trained_on or 'another model'!r} and is applied to "
                f"{model_name or 'a model'!r}, a different model ({differs}); the shapes fit, but a direction read "
                "from one model rarely means the same in another. Train the vector on this model.",
                ModelNameWarning,
                stacklevel=5,
            )

    def _warn_if_other_route(self, backend: Any) -> None:
        """Warn when an ``ln1``/``ln2`` vector crosses between a HookedTransformer and a native HF model.

        TransformerLens' ``ln1.hook_normalized`` is read before the norm's gain (and bias), the
        HF module output after it, so the same direction means different things on the two.
        """
        trained, here = self.metadata.get(BACKEND_KEY), backend_kind(backend)
        if self.layer_type not in ("ln1", "ln2") or trained not in _ROUTES or here not in _ROUTES or trained == here:
            return
        warnings.warn(
            f"this {self.layer_type} vector was trained on {_ROUTES[trained]} and is applied to {_ROUTES[here]}: "
            f"there {self.layer_type} is read {_LN_READ[here]}, where it was trained {_LN_READ[trained]}, so the "
            "direction is scaled differently per dimension. Train it on this kind of model, or use a residual "
            "layer type (resid_pre / resid_mid / resid_post), which both kinds read alike.",
            LayerRouteWarning,
            stacklevel=5,
        )

    # -- algebra ------------------------------------------------------------------

    def _combine(self, other: "SteeringVector", sign: float) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented  # type: ignore[return-value]
        if other.layer_type != self.layer_type:
            raise InvalidArgumentError(
                f"cannot combine a {self.layer_type} vector with a {other.layer_type} vector; "
                "train both at the same layer_type."
            )
        if other.d_model != self.d_model:
            raise ModelMismatchError(f"cannot combine vectors of d_model {self.d_model} and {other.d_model}.")
        out: dict[int, Tensor] = {k: v.clone() for k, v in self.layer_activations.items()}
        for layer, vec in other.layer_activations.items():
            # Layers missing on one side count as zero there.
            out[layer] = out[layer] + sign * vec.to(out[layer]) if layer in out else sign * vec.clone()
        return SteeringVector(out, self.layer_type, _shared_metadata(self.metadata, other.metadata))

    def __add__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, 1.0)

    def __radd__(self, other: Any) -> "SteeringVector":
        # sum([v, w]) starts from 0.
        if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
            return self
        return self._combine(other, 1.0)

    def __sub__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, -1.0)

    def __mul__(self, k: float) -> "SteeringVector":
        if isinstance(k, bool) or not isinstance(k, (numbers.Real, Tensor)):
            return NotImplemented  # type: ignore[return-value]
        if isinstance(k, Tensor) and k.numel() != 1:
            raise InvalidArgumentError(
                f"a SteeringVector can be scaled by a number or a one-element tensor, got shape {tuple(k.shape)}."
            )
        return self._map(lambda v: v * k)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> "SteeringVector":
        return self * (1.0 / k)

    def __neg__(self) -> "SteeringVector":
        return self * -1.0

    def _map(self, fn: Any) -> "SteeringVector":
        return replace(self, layer_activations={k: fn(v) for k, v in self.layer_activations.items()})

    def to(self, *args: Any, **kwargs: Any) -> "SteeringVector":
        """Move/cast every layer, as ``Tensor.to`` does."""
        return self._map(lambda v: v.to(*args, **kwargs))

    def normalized(self) -> "SteeringVector":
        """Each layer scaled to unit L2 norm (a zero layer is an error)."""
        for layer, vec in self.layer_activations.items():
            if vec.norm() == 0:
                raise InvalidArgumentError(f"layer {layer} is the zero vector and cannot be normalised.")
        return self._map(lambda v: v / v.norm())

    def select_layers(self, layers: int | str | Iterable[int | str]) -> "SteeringVector":
        """A vector with only the given layers (numpy/torch integers, and negative keys it holds, too).

        A string is one TransformerLens hook name (``"blocks.2.hook_resid_post"`` is layer 2),
        whose layer type must be this vector's.

        Example:
            >>> vec.select_layers([2]).layers
            [2]
            >>> vec.select_layers("blocks.2.hook_resid_post").layers
            [2]
        """
        scalar_tensor = isinstance(layers, Tensor) and layers.dim() == 0
        single = isinstance(layers, str) or not hasattr(layers, "__iter__") or scalar_tensor
        listed = [layers] if single else list(layers)  # type: ignore[arg-type]
        wanted = [as_layer_index(layer, self.layer_type, _VECTOR_TYPE) for layer in listed]
        missing = [layer for layer in wanted if layer not in self.layer_activations]
        if missing or not wanted:
            raise LayerError(f"layers {missing or wanted} are not in this vector; it has {self.layers}.")
        return replace(self, layer_activations={k: self.layer_activations[k] for k in wanted})

    def norms(self) -> dict[int, float]:
        return {k: float(v.norm()) for k, v in sorted(self.layer_activations.items())}

    def cosine_similarity(self, other: "SteeringVector") -> dict[int, float]:
        """Cosine similarity per layer the two vectors share."""
        shared = sorted(set(self.layer_activations) & set(other.layer_activations))
        if not shared:
            raise LayerError(f"no shared layers: {self.layers} vs {other.layers}.")
        return {
            layer: float(
                torch.nn.functional.cosine_similarity(
                    self.layer_activations[layer].double(),
                    other.layer_activations[layer].double().to(self.layer_activations[layer].device),
                    dim=0,
                )
            )
            for layer in shared
        }

    # -- files --------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors file with JSON metadata (no pickle)."""
        save_vector_file(path, encode_vector_file(self.layer_activations, self.layer_type, self.metadata))

    @classmethod
    def load(cls, path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> "SteeringVector":
        """Read a file written by :meth:`save`, validating it; never executes code."""
        vectors, layer_type, metadata = load_vector_file(path, max_bytes=max_bytes)
        return cls(vectors, layer_type, metadata)


# -- which of a vector's layers a function steers or reads ---------------------------------

LayerGroup = tuple[int, ...]
Layers = Union[int, str, Iterable[Union[int, str, Iterable[Union[int, str]]]], None]
"""Cells of a sweep: a layer, layers each alone, ``"joint"``, or layers and groups (``[[2, 3], 4]``);
a layer may be a TransformerLens hook name (``"blocks.2.hook_resid_post"``)."""


def resolve_layer_groups(
    layers: Layers,
    vector_layers: Iterable[int],
    n_layers: int,
    layer_type: str | None = None,
    source: str = "layer_type",
) -> list[LayerGroup]:
    """The groups of layers steered together, one per cell, in the caller's order (layers non-negative).

    ``None``: each of ``vector_layers`` (the vector's layers, non-negative: see
    :meth:`SteeringVector.resolved`) alone; ``"joint"``: all of them as one group;
    otherwise layers (each alone) and groups of layers, negative ones counting from the
    end of a model of ``n_layers`` layers. A layer may be a TransformerLens hook name,
    whose layer type must be ``layer_type`` when it is given (``source`` names it in the error).

    Example:
        >>> resolve_layer_groups([[2, 3], -1], [2, 3], n_layers=4)
        [(2, 3), (3,)]
        >>> resolve_layer_groups("joint", [1, 3], n_layers=4)
        [(1, 3)]
        >>> resolve_layer_groups(["blocks.2.hook_resid_post"], [2, 3], n_layers=4, layer_type="resid_post")
        [(2,)]
    """
    available = list(vector_layers)
    if layers is None:
        return [(layer,) for layer in available]
    if isinstance(layers, str) and layers == "joint":
        return [tuple(available)]
    if isinstance(layers, str):
        try:
            parse_hook_name(layers)
        except LayerError as error:
            raise LayerError(f"layers must be None, 'joint', a layer or a list of layers and groups: {error}") from None
    single = isinstance(layers, str) or not hasattr(layers, "__iter__") or getattr(layers, "ndim", 1) == 0
    items = [layers] if single else list(layers)  # type: ignore[arg-type]
    if items and all(not _is_group(item) for item in items):
        return [(layer,) for layer in resolve_layers(items, n_layers, layer_type, source)]
    groups = [
        tuple(resolve_layers(item if _is_group(item) else [item], n_layers, layer_type, source)) for item in items
    ]
    if not groups:
        raise LayerError("layers is empty; pass at least one layer or group, or None for every layer.")
    for group in groups:
        if groups.count(group) > 1 or any(set(group) == set(other) and group != other for other in groups):
            raise LayerError(f"layer group {list(group)} is listed twice; list each group once.")
    return groups


def _is_group(item: object) -> bool:
    return hasattr(item, "__iter__") and not isinstance(item, (str, bytes)) and getattr(item, "ndim", 1) != 0


def vector_groups(vector: SteeringVector, layers: Layers, n_layers: int) -> tuple[list[LayerGroup], dict[int, Tensor]]:
    """The cells ``layers`` asks for and ``{layer: direction}`` of every layer they steer, keys non-negative.

    The one resolution of "which of this vector's layers" for every function that takes a
    vector: its negative keys and negative ``layers`` both count from the end of the model,
    so ``SteeringVector({-1: v})`` with ``layers=[3]`` (or ``[-1]``) on 4 layers is layer 3.
    A layer the vector has no direction at is a :class:`LayerError` naming it.

    Example:
        >>> vector_groups(SteeringVector({-1: v, 1: w}), [[1, -1]], n_layers=4)[0]
        [(1, 3)]
    """
    resolved = vector.resolved(n_layers).layer_activations
    groups = resolve_layer_groups(layers, sorted(resolved), n_layers, vector.layer_type, _VECTOR_TYPE)
    wanted = list(dict.fromkeys(layer for group in groups for layer in group))
    missing = [layer for layer in wanted if layer not in resolved]
    if missing:
        raise LayerError(
            f"layers {missing} are not in this vector: it has no direction at layers {missing}, only at "
            f"{sorted(resolved)}. Train it at those layers (layers=None trains every layer) or ask for layers it has."
        )
    return groups, {layer: resolved[layer] for layer in wanted}


def vector_directions(vector: SteeringVector, layers: int | Iterable[int] | None, n_layers: int) -> dict[int, Tensor]:
    """``{layer: direction}`` of ``vector`` at ``layers`` (None: all of its layers, in order), keys non-negative.

    For functions that look at one layer at a time (projections, norms, calibration):
    ``"joint"`` and groups are refused. See :func:`vector_groups`.

    Example:
        >>> list(vector_directions(SteeringVector({-1: v}), [3], n_layers=4))
        [3]
    """
    if isinstance(layers, str) or (
        layers is not None and hasattr(layers, "__iter__") and any(_is_group(item) for item in layers)
    ):
        raise LayerError(
            f"layers must be a layer, a list of layers or None here, got {layers!r}; groups and "
            "'joint' are for sweeps and comparisons."
        )
    groups, directions = vector_groups(vector, layers, n_layers)
    resolve_layers(list(directions), n_layers)  # a layer past the model is a LayerError here
    return {group[0]: directions[group[0]] for group in groups}


# -- which model a vector belongs to ----------------------------------------------------

FINGERPRINT_KEY = "model_fingerprint"
BACKEND_KEY = "backend"
_ROUTES = {"hooked": "a TransformerLens HookedTransformer", "hf": "a native Hugging Face model"}
_LN_READ = {"hooked": "before the norm's gain (ln.hook_normalized)", "hf": "after the gain (the norm module's output)"}
_SAMPLE_ROWS = 4  # embedding rows sampled ...
_SAMPLE_COLS = 8  # ... and columns of each: 32 numbers stored with a vector
_SAMPLE_TOLERANCE = 0.05  # relative L2 distance; bf16 copies differ by ~0.005, other models by ~1.4


def backend_kind(backend: Any) -> str | None:
    """``"hooked"`` (HookedTransformer) or ``"hf"`` (native HF model or TransformerBridge); None otherwise."""
    return getattr(backend, "kind", None)


def _embedding_sample(weight: Tensor, rows: list[int]) -> list[float]:
    """``_SAMPLE_COLS`` spread entries of each row, centred and scaled to unit norm.

    Centring and scaling make the sample the same for a native checkpoint and its
    TransformerLens conversion with ``process_weights=True`` (centred writing weights) or
    an embedding scale folded in (Gemma); dtype copies differ only by rounding.
    """
    with torch.no_grad():
        picked = weight.detach()[rows].to("cpu", torch.float64)
        picked = picked - picked.mean(dim=-1, keepdim=True)
        picked = picked / picked.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        cols = torch.linspace(0, weight.shape[1] - 1, _SAMPLE_COLS).round().long()
        return [float(f"{x:.6g}") for x in picked[:, cols].reshape(-1).tolist()]


def model_fingerprint(model: Any) -> dict[str, Any] | None:
    """What identifies a model's weights, cheaply: config essentials and a 32-number embedding sample.

    The same checkpoint loaded natively (Hugging Face) or converted to a HookedTransformer
    (with or without weight processing), in any dtype or on any device, gets a matching
    fingerprint; see :func:`fingerprint_difference`. None when the embedding holds no
    numbers (e.g. offloaded to the ``meta`` device).

    Example:
        >>> model_fingerprint(model)["n_layers"]
        4
    """
    return backend_fingerprint(backend_for(model))


def backend_fingerprint(backend: Backend) -> dict[str, Any] | None:
    """:func:`model_fingerprint` of a model whose backend is resolved already."""
    weight = backend.token_embedding
    if weight is None:
        return None
    d_vocab = int(weight.shape[0])
    rows = sorted({d_vocab * (i + 1) // (_SAMPLE_ROWS + 1) for i in range(_SAMPLE_ROWS)})
    return {
        "d_model": int(backend.d_model),
        "n_layers": int(backend.n_layers),
        "d_vocab": d_vocab,
        "rows": rows,
        "embedding": _embedding_sample(weight, rows),
    }


def fingerprint_difference(stored: Any, model: Any) -> str | None:
    """How ``model`` differs from a stored fingerprint: ``""`` when it matches, None when either side has none."""
    backend = backend_for(model)
    if not _valid_fingerprint(stored):
        return None
    if stored["n_layers"] != backend.n_layers:  # (another d_model is an error when the vector is checked)
        return f"{stored['n_layers']} layers vs {backend.n_layers}"
    weight = backend.token_embedding
    if weight is None:
        return None
    if max(stored["rows"]) >= weight.shape[0]:
        return f"vocabulary of {weight.shape[0]} tokens is smaller than the trained model's"
    a = torch.tensor(stored["embedding"], dtype=torch.float64)
    b = torch.tensor(_embedding_sample(weight, stored["rows"]), dtype=torch.float64)
    distance = float((a - b).norm() / a.norm().clamp_min(1e-30))
    return "" if distance <= _SAMPLE_TOLERANCE else f"their token embeddings differ (relative distance {distance:.2f})"


def _valid_fingerprint(stored: Any) -> bool:
    """Whether ``stored`` is a fingerprint as :func:`model_fingerprint` writes it (anything else is ignored)."""
    if not isinstance(stored, dict):
        return False
    ints = [stored.get("d_model"), stored.get("n_layers"), *(stored.get("rows") or [None])]
    sample = stored.get("embedding")
    return (
        all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ints)
        and isinstance(sample, list)
        and len(sample) == len(stored["rows"]) * _SAMPLE_COLS
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in sample)
    )


def model_metadata(model: Any) -> dict[str, Any]:
    """The metadata a vector trained on ``model`` carries: name (for display), shape, backend kind, fingerprint.

    Example:
        >>> SteeringVector({1: direction}, "resid_post", model_metadata(model))
    """
    return backend_metadata(backend_for(model))


def backend_metadata(backend: Backend) -> dict[str, Any]:
    """:func:`model_metadata` of a model whose backend is resolved already (a verb's run)."""
    return {
        "model_name": backend.model_name,
        "architecture": backend.architecture,
        "d_model": backend.d_model,
        "n_layers": backend.n_layers,
        BACKEND_KEY: backend_kind(backend),
        FINGERPRINT_KEY: backend_fingerprint(backend),
    }


def _shared_metadata(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What two vectors' metadata agree on (as ``2 * v`` keeps all of ``v``'s, ``v + v`` keeps all too)."""
    return {k: v for k, v in a.items() if k in b and b[k] == v}
