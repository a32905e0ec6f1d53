"""``steering-vectors``-style layer configs: which module of a Hugging Face model is layer N.

A :data:`ModelLayerConfig` maps a layer type to a :data:`LayerMatcher`: a template
such as ``"model.layers.{num}"`` or a function ``(model, num) -> module path``. The
native HF backend finds layers by itself (:mod:`.hf_layout`); a layer config is for
models whose modules it cannot guess, or to point a layer type somewhere else.
A matched module's *output* is the activation, as in ``steering-vectors``.

:func:`guess_and_enhance_layer_config` guesses templates from module names the way
that library does: every module name ``<prefix>.<number><rest>`` votes for the
template ``<prefix>.{num}<rest>``; the template with the most votes wins, shorter
ones breaking ties; each layer type only counts names that fit it (``mlp`` must
contain "mlp", ``self_attn`` "attn" or "attention", ...).
"""

from __future__ import annotations

import numbers
import re
from collections import Counter
from typing import Callable, Iterable, Mapping, Union

from torch import nn

from steerlens.errors import InvalidArgumentError, LayerError
from steerlens.layers import STEERING_VECTORS_NAMES, LayerType, check_layer_type, module_name

LayerMatcher = Union[str, Callable[[nn.Module, int], str]]
"""A module-path template containing ``{num}``, or ``(model, layer_num) -> module path``."""
ModelLayerConfig = dict[LayerType, LayerMatcher]
"""Layer type -> :data:`LayerMatcher`."""

_NUMBERED = re.compile(r"^([^\d]+)\.(\d+)(.*)$")
_FITS: dict[str, Callable[[str], bool]] = {  # steering-vectors' rule: which module names a layer type may mean
    "decoder_block": lambda t: True,
    "self_attn": lambda t: "attn" in t or "attention" in t,
    "mlp": lambda t: "mlp" in t,
    "input_layernorm": lambda t: "ln_1" in t or "input_layernorm" in t,
    "post_attention_layernorm": lambda t: "ln_2" in t or "post_attention_layernorm" in t,
}


def check_layer_config(layer_config: object) -> None:
    """Raise :class:`InvalidArgumentError` unless ``layer_config`` is None or a mapping.

    ``layer_config`` comes right after the model in steering-vectors' positional order
    (``vec.apply(model, layer_config, operator, multiplier, ...)``), kept for drop-in use,
    so ``vec.apply(model, 2.0)`` passes 2.0 as ``layer_config``: the error says so and
    shows ``multiplier=``.

    Example:
        >>> check_layer_config({"decoder_block": "model.layers.{num}"})
    """
    if layer_config is None or isinstance(layer_config, Mapping):
        return
    if isinstance(layer_config, numbers.Number):
        raise InvalidArgumentError(
            f"{layer_config!r} was taken as layer_config: it is the argument after the model, in steering-vectors' "
            "order (vec.apply(model, layer_config, operator, multiplier, ...)). To steer by "
            f"{layer_config!r}, pass it by name: vec.apply(model, multiplier={layer_config!r})."
        )
    raise InvalidArgumentError(
        f"layer_config must be a dict {{layer_type: module template}} such as "
        f"{{'decoder_block': 'model.layers.{{num}}'}}, got {type(layer_config).__name__} {layer_config!r:.60}; "
        "it is the argument after the model in steering-vectors' order. For a multiplier or an operator, "
        "pass it by name (multiplier=..., operator=...)."
    )


def _as_callable(matcher: LayerMatcher) -> Callable[[nn.Module, int], str]:
    if isinstance(matcher, str):
        if "{num}" not in matcher:
            raise LayerError(
                f"layer matcher {matcher!r} has no '{{num}}'; write a template like 'model.layers.{{num}}' "
                "or pass a function (model, layer_num) -> module path."
            )
        return lambda _model, num: matcher.format(num=num)
    if not callable(matcher):
        raise LayerError(f"a layer matcher must be a template string or a function, got {type(matcher).__name__}.")
    return matcher


def matching_layer_names(model: nn.Module, layer_matcher: LayerMatcher) -> list[str]:
    """Module paths of layers 0, 1, ... that ``layer_matcher`` names and ``model`` has, until the first gap."""
    match = _as_callable(layer_matcher)
    names = set(dict(model.named_modules()))
    found: list[str] = []
    while (path := match(model, len(found))) in names:
        found.append(path)
    return found


def get_num_matching_layers(model: nn.Module, layer_matcher: LayerMatcher) -> int:
    """How many layers of ``model`` ``layer_matcher`` names (0, 1, ... without a gap).

    Example:
        >>> get_num_matching_layers(gpt2, "transformer.h.{num}")
        12
    """
    return len(matching_layer_names(model, layer_matcher))


def _guess(names: Iterable[str], fits: Callable[[str], bool]) -> str | None:
    votes = Counter(
        template
        for name in names
        if (m := _NUMBERED.match(name)) and fits(template := f"{m.group(1)}.{{num}}{m.group(3)}")
    )
    if not votes:
        return None
    return max(votes, key=lambda t: (votes[t], -len(t)))


def guess_and_enhance_layer_config(
    model: nn.Module,
    layer_config: ModelLayerConfig | None = None,
    layer_type: LayerType | None = None,
) -> ModelLayerConfig:
    """``layer_config`` with guessed templates for the layer types it lacks (only ``layer_type``, if given).

    Keys use steering-vectors' names (``decoder_block``, ``self_attn``, ``mlp``,
    ``input_layernorm``, ``post_attention_layernorm``); a steerlens name is accepted
    for ``layer_type`` and in ``layer_config``.

    Example:
        >>> guess_and_enhance_layer_config(llama)["decoder_block"]
        'model.layers.{num}'
    """
    config: ModelLayerConfig = {_sv_name(k): v for k, v in (layer_config or {}).items()}  # type: ignore[misc]
    wanted = [_sv_name(layer_type)] if layer_type is not None else list(_FITS)
    names = list(dict(model.named_modules()))
    for kind in wanted:
        if kind not in config and kind in _FITS and (guess := _guess(names, _FITS[kind])) is not None:
            config[kind] = guess  # type: ignore[index]
    return config


def _sv_name(layer_type: str) -> str:
    """steering-vectors' name of a layer type (itself where there is none, e.g. ``resid_pre``)."""
    canonical = _config_key(layer_type)
    return STEERING_VECTORS_NAMES.get(canonical, canonical)


def _config_key(layer_type: str) -> str:
    """The canonical name a layer_config entry is found under (``module:mlp`` is found under ``mlp``)."""
    module = module_name(layer_type)
    return check_layer_type(module if module is not None else layer_type)


def configured_matcher(layer_config: ModelLayerConfig | None, layer_type: str) -> LayerMatcher | None:
    """The matcher ``layer_config`` gives for ``layer_type`` under either of its names, or None."""
    if not layer_config:
        return None
    canonical = _config_key(layer_type)
    for key, matcher in layer_config.items():
        if _config_key(key) == canonical:
            return matcher
    return None


def matcher_path(model: nn.Module, matcher: LayerMatcher, layer: int) -> str:
    """Module path of ``layer`` under ``matcher``, checked to exist in ``model``."""
    path = _as_callable(matcher)(model, layer)
    try:
        model.get_submodule(path)
    except AttributeError:
        raise LayerError(
            f"layer_config names module {path!r} for layer {layer}, but the model has no such module; "
            "check the template against model.named_modules()."
        ) from None
    return path


__all__ = [
    "LayerMatcher",
    "ModelLayerConfig",
    "check_layer_config",
    "get_num_matching_layers",
    "guess_and_enhance_layer_config",
    "matching_layer_names",
]


def fitting_child(children: Iterable[str], layer_type: str) -> str | None:
    """The one child module name that steering-vectors' rule matches to ``layer_type`` (Bloom's
    ``self_attention`` for ``self_attn``), or None when none or several do."""
    fits = _FITS.get(layer_type)
    found = [name for name in children if fits is not None and fits(name)]
    if len(found) > 1 and layer_type in ("self_attn", "mlp"):  # post_attention_layernorm is not attention
        found = [name for name in found if "norm" not in name and not name.startswith("ln")]
    return found[0] if len(found) == 1 else None
