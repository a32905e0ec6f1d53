"""Find where a decoder-only Hugging Face model keeps the tensors TransformerLens hooks.

steerlens steers plain ``PreTrainedModel``\\ s with torch hooks on their own modules,
named with TransformerLens hook names. :func:`hf_layout` discovers, from the module
tree alone (no forward pass, no per-family table), which module carries each of
``blocks.{L}.hook_resid_pre`` / ``hook_resid_mid`` / ``hook_resid_post`` /
``hook_attn_out`` / ``hook_mlp_out`` / ``ln1.hook_normalized`` / ``ln2.hook_normalized``:

1. the decoder-layer list is the ``nn.ModuleList`` of ``config.num_hidden_layers``
   blocks (the shallowest one that looks like decoder blocks);
2. in a layer, attention and MLP are children named like ``self_attn`` / ``mlp``
   (class names ending in ``Attention`` / containing ``MLP`` as a fallback), and the
   norms are recognised by name (``input_layernorm``, ``ln_2``, ...);
3. the layer's wiring follows from those names and a few config flags:

   * pre-norm (Llama, GPT-2, ...): attention/MLP outputs are attn_out/mlp_out and
     resid_mid is the input of the pre-MLP norm;
   * sandwich / post-sublayer norm (a ``post_feedforward_layernorm`` child: Gemma 2/3,
     OLMo 2/3, GLM-4): the post-sublayer norms' outputs are attn_out/mlp_out;
   * parallel residual (GPT-J, Phi, Falcon, Cohere, GPT-NeoX/StableLM with
     ``use_parallel_residual``): no resid_mid; attention and MLP may share one norm,
     whose output is ln1 (steering it changes what both read, as in steering-vectors);
   * post-norm (OPT-350m, OpenAI GPT): the residual stream is normalised after each add,
     so only resid_pre/resid_post exist.

steering-vectors' names (``post_attention_layernorm``, ``self_attn``, ...) and
``module:<name>`` resolve to the output of the layer's sub-module of that name
(:meth:`HFLayout.named_site`).

Recording hooks should ``clone()`` what they keep: Falcon adds the attention output
into the MLP output in place after the MLP's hooks have run.
"""

from __future__ import annotations

import inspect
import re
import threading
import weakref
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from steerlens.backends.layer_config import fitting_child
from steerlens.errors import LayerError, UnsupportedModelError
from steerlens.layers import MODULE_LAYER_TYPES, MODULE_PREFIX, check_layer_type, module_name

LayerType = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "ln1", "ln2"]
LAYER_TYPES: tuple[str, ...] = get_args(LayerType)

# Child names, best first. Matching is exact: substring matching would confuse e.g.
# "post_attention_layernorm" with an attention module.
_ATTN_NAMES = ("self_attn", "self_attention", "attn", "attention", "attention_block")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe", "feedforward", "ff", "mlp_block")
# Output projections of an MLP that lives directly on the layer (OPT, XGLM, BioGPT).
_BARE_MLP_OUT_NAMES = ("fc2", "fc_out", "dense_4h_to_h", "down_proj", "c_proj", "w2")
_LN1_NAMES = (
    "input_layernorm",
    "ln_1",
    "ln1",
    "attention_norm",
    "attention_layernorm",
    "self_attn_layer_norm",
    "ln_attn",
    "pre_attention_layernorm",
    "attn_norm",
    "input_layer_norm",
    "norm1",
    "norm_1",
)
_LN2_NAMES = (
    "pre_feedforward_layernorm",
    "post_attention_layernorm",
    "ln_2",
    "ln2",
    "final_layer_norm",
    "ffn_norm",
    "feedforward_layernorm",
    "ln_mlp",
    "pre_mlp_layernorm",
    "mlp_norm",
    "post_attention_layer_norm",
    "norm2",
    "norm_2",
)
# Norms applied to a sublayer's output before the residual add.
_POST_ATTN_NAMES = (
    "post_self_attn_layernorm",
    "post_attn_layernorm",
    "post_attention_norm",
    "post_attn_norm",
    "post_attention_layernorm",
)
_POST_MLP_NAMES = (
    "post_feedforward_layernorm",
    "post_mlp_layernorm",
    "post_feedforward_norm",
    "post_ffw_norm",
    "post_mlp_norm",
)
# Config flags that switch a family to a parallel residual.
_PARALLEL_FLAGS = ("use_parallel_residual", "parallel_residual", "parallel_attn", "new_decoder_architecture")
_FLATTEN_RE = re.compile(r"\.(?:reshape|view)\(\s*-1\s*,")
# The layer puts the MLP's output back into the residual's shape: the MLP may return
# [batch * pos, d_model] rows (Llama 4's MoE).
_UNFLATTEN_RE = re.compile(r"\.(?:reshape|view)\(\s*residual\.shape\s*\)")
_MULTIPLIER_ATTRS = ("residual_multiplier",)


@dataclass(frozen=True)
class ModuleSite:
    """Where an HF model carries one TL hook point's tensor: a module path and its input or output.

    (Not :data:`steerlens.backends.Site`, the ``(layer, layer_type)`` key a backend reads at.)

    ``io`` is ``"input"`` for the module's first input (``args[0]`` or ``hidden_states=``)
    and ``"output"`` for its output (the first element if it returns a tuple).
    """

    path: str
    """``get_submodule`` path from the root model."""
    io: Literal["input", "output"]
    steerable: bool
    """Editing that tensor in a torch hook steers the layer type (not resid_mid: the layer
    keeps its own reference to the residual, so only what the norm reads would change)."""
    flattened: bool = False
    """The tensor is ``[batch * pos, d_model]`` (OPT's MLP half); ``layer_path``'s input
    has the real shape."""
    layer_path: str = ""
    """The decoder layer's path."""


@dataclass(frozen=True)
class LayerParts:
    """The sub-modules of one kind of decoder layer (paths relative to the layer)."""

    layer_class: str
    children: tuple[str, ...]
    attn: str | None
    mlp: str | None
    ln1: str | None
    ln2: str | None
    resid_mid: str | None
    flattened: frozenset[str] = frozenset()
    why_missing: tuple[tuple[str, str], ...] = ()
    """(layer type, reason) for layer types this kind of layer has no site for."""


@dataclass(frozen=True)
class HFLayout:
    """Where one HF model's decoder layers and their sublayers live.

    Module fields are paths relative to one decoder layer, ``None`` when the layer has
    no such module. They describe the most common kind of layer; ``per_layer`` (when
    set) holds each layer's own parts, for hybrid models whose layers differ.
    """

    layers_path: str
    n_layers: int
    attn: str | None
    """Module whose output is attn_out (a post-attention norm in sandwich layers)."""
    mlp: str | None
    """Module whose output is mlp_out (a post-MLP norm in sandwich layers; OPT: ``fc2``)."""
    ln1: str | None
    """Norm in front of attention."""
    ln2: str | None
    """Norm in front of the MLP (None when a parallel layer feeds ln1's output to both)."""
    resid_mid: str | None
    """Module whose input is resid_mid."""
    parallel: bool
    flattened: frozenset[str]
    model_class: str = ""
    layer_class: str = ""
    per_layer: tuple[LayerParts, ...] = field(default=(), repr=False)

    def _parts(self, layer: int) -> LayerParts:
        if self.per_layer:
            return self.per_layer[layer]
        return LayerParts(
            self.layer_class,
            (),
            attn=self.attn,
            mlp=self.mlp,
            ln1=self.ln1,
            ln2=self.ln2,
            resid_mid=self.resid_mid,
            flattened=self.flattened,
        )

    def site(self, layer: int, layer_type: str) -> ModuleSite:
        """The module and side holding ``blocks.{layer}.hook_{layer_type}`` (``layer`` >= 0).

        Raises :class:`LayerError` for an unknown layer type, a layer out of range, or a
        layer type this model has no exact site for (the message says why and what to use).
        """
        if layer_type not in LAYER_TYPES:
            raise LayerError(f"unknown layer type {layer_type!r}; use one of {', '.join(LAYER_TYPES)}.")
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise LayerError(
                f"layer {layer!r} is out of range for {self.model_class or 'this model'} with "
                f"{self.n_layers} layers; use 0..{self.n_layers - 1}."
            )
        parts = self._parts(layer)
        layer_path = f"{self.layers_path}.{layer}"
        if layer_type in ("resid_pre", "resid_post"):
            io = "input" if layer_type == "resid_pre" else "output"
            return ModuleSite(layer_path, io, True, False, layer_path)
        relative, io, steerable = {
            "attn_out": (parts.attn, "output", True),
            "mlp_out": (parts.mlp, "output", True),
            # HF layers keep their own reference to the residual, so editing this
            # module's input changes what the module reads, not the residual stream.
            "resid_mid": (parts.resid_mid, "input", False),
            # A parallel layer may feed one norm's output to attention and MLP: steering
            # it changes what both read (steering-vectors' input_layernorm does the same).
            "ln1": (parts.ln1, "output", True),
            "ln2": (parts.ln2, "output", True),
        }[layer_type]
        if relative is None:
            raise LayerError(self._missing_message(layer, layer_type, parts))
        return ModuleSite(f"{layer_path}.{relative}", io, steerable, layer_type in parts.flattened, layer_path)

    def named_site(self, layer: int, layer_type: str) -> ModuleSite:
        """The site of any layer-type name: canonical, steering-vectors' or ``module:<name>``.

        A steering-vectors name (``post_attention_layernorm``, ``self_attn``, ``mlp``,
        ``input_layernorm``) is the output of the layer's sub-module of that name, as in
        steering-vectors, where the layer has one, else its canonical layer type;
        ``module:<name>`` is that sub-module's output or a :class:`LayerError`.
        """
        module = module_name(layer_type)
        canonical = check_layer_type(layer_type)
        if module is None:
            return self.site(layer, canonical)
        self.site(layer, "resid_pre")  # checks the layer index
        found = self._module_site(layer, module)
        if found is not None:
            return found
        if canonical.startswith(MODULE_PREFIX):
            parts = self._parts(layer)
            raise LayerError(
                f"{self.model_class or 'this model'} has no {canonical} at layer {layer}: its decoder layer "
                f"({parts.layer_class or 'layer'} at {self.layers_path}.{layer}) has no sub-module named "
                f"{module!r}, only {', '.join(parts.children) or '(unknown)'}. This vector was trained on another "
                "architecture; train it on this model."
            )
        return self.site(layer, canonical)

    def stored_name(self, layer_type: str, layers: Collection[int]) -> str:
        """The name a vector trained at ``layer_type`` on ``layers`` is stored under.

        The canonical name, unless ``layer_type`` is a steering-vectors name whose module
        carries another tensor than its canonical name on this model (Gemma 2's
        ``post_attention_layernorm`` is not its ln2): then ``module:<name>``, which keeps
        that meaning when the vector is saved, loaded and applied.
        """
        canonical = check_layer_type(layer_type)
        module = module_name(layer_type)
        if module is None or canonical.startswith(MODULE_PREFIX):
            return canonical
        for layer in layers:
            named = self._module_site(layer, module)
            if named is not None and not self._same_site(layer, canonical, named):
                return MODULE_PREFIX + module
        return canonical

    def _same_site(self, layer: int, layer_type: str, named: ModuleSite) -> bool:
        try:
            site = self.site(layer, layer_type)
        except LayerError:
            return False
        return (site.path, site.io) == (named.path, named.io)

    def _module_site(self, layer: int, module: str) -> ModuleSite | None:
        """The output of decoder layer ``layer``'s child named ``module``, or None if it has none."""
        parts = self._parts(layer)
        children = parts.children or tuple(
            name for name in (parts.attn, parts.mlp, parts.ln1, parts.ln2, parts.resid_mid) if name
        )
        if module not in children:
            # No child of that very name: the one steering-vectors' guesser would pick (Bloom's self_attention).
            module = fitting_child(children, module)
            if module is None:
                return None
        flattened = any(_relative(parts, t) == module for t in parts.flattened if t != "resid_mid")
        layer_path = f"{self.layers_path}.{layer}"
        return ModuleSite(f"{layer_path}.{module}", "output", True, flattened, layer_path)

    def _missing_message(self, layer: int, layer_type: str, parts: LayerParts) -> str:
        reason = dict(parts.why_missing).get(layer_type) or _default_reason(layer_type, self.parallel)
        available = [t for t in LAYER_TYPES if t in ("resid_pre", "resid_post") or _relative(parts, t)]
        children = ", ".join(parts.children) or "(unknown)"
        return (
            f"{self.model_class or 'this model'} has no {layer_type} hook point at layer {layer}: "
            f"{reason}. Its decoder layer ({parts.layer_class or 'layer'} at {self.layers_path}.{layer}) "
            f"has sub-modules: {children}. Use {_or_list(available)} instead."
        )

    def describe(self) -> str:
        """Human-readable table: one line per layer type saying which HF tensor carries it.

        Then one line per steering-vectors name that means another tensor here than its
        canonical layer type (Gemma 2's ``post_attention_layernorm`` is not its ln2).
        """
        kind = "parallel residual" if self.parallel else "sequential"
        lines = [
            f"{self.model_class or 'model'}: {self.n_layers} decoder layers at "
            f"{self.layers_path} ({self.layer_class or '?'}), {kind}"
        ]
        typical = self._typical_layer()
        for layer_type in LAYER_TYPES:
            try:
                site = self.site(typical, layer_type)
            except LayerError:
                reason = dict(self._parts(typical).why_missing).get(layer_type) or _default_reason(
                    layer_type, self.parallel
                )
                lines.append(f"  {layer_type:<10}  not available: {reason}")
                continue
            path = f"{self.layers_path}.{{L}}" + site.path[len(site.layer_path) :]
            note = "" if site.steerable else " (read only)"
            if layer_type == "ln1" and self.parallel and self._parts(typical).ln2 is None:
                note += " (read by attention and MLP)"
            if site.flattened:
                note += " [batch*pos rows]"
            lines.append(f"  {layer_type:<10}  {site.io} of {path}{note}")
        for module_type in MODULE_LAYER_TYPES:
            name = module_type[len(MODULE_PREFIX) :]
            if self.stored_name(name, [typical]) == module_type:
                site = self._module_site(typical, name)
                child = site.path[len(f"{self.layers_path}.{typical}.") :] if site is not None else name
                lines.append(
                    f"  steering-vectors' {name}: output of {self.layers_path}.{{L}}.{child}, not "
                    f"{check_layer_type(name)}; its vectors are stored as {module_type}"
                )
        odd = [layer for layer in range(len(self.per_layer)) if not self._is_typical(layer)]
        if odd:
            lines.append(
                f"  layers {odd} differ: "
                + "; ".join(
                    f"{layer}: {p.layer_class} attn={p.attn} mlp={p.mlp} ln1={p.ln1} ln2={p.ln2} "
                    f"resid_mid={p.resid_mid}"
                    for layer, p in ((i, self.per_layer[i]) for i in odd)
                )
            )
        return "\n".join(lines)

    def _is_typical(self, layer: int) -> bool:
        p = self._parts(layer)
        return (p.attn, p.mlp, p.ln1, p.ln2, p.resid_mid) == (self.attn, self.mlp, self.ln1, self.ln2, self.resid_mid)

    def _typical_layer(self) -> int:
        return next((layer for layer in range(self.n_layers) if self._is_typical(layer)), 0)


def _relative(parts: LayerParts, layer_type: str) -> str | None:
    return {
        "attn_out": parts.attn,
        "mlp_out": parts.mlp,
        "resid_mid": parts.resid_mid,
        "ln1": parts.ln1,
        "ln2": parts.ln2,
    }.get(layer_type)


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _default_reason(layer_type: str, parallel: bool) -> str:
    if layer_type == "resid_mid" and parallel:
        return "attention and MLP both read the layer input (parallel residual)"
    if layer_type == "ln2" and parallel:
        return "attention and MLP share the norm in front of attention (its output is ln1)"
    return f"no sub-module of the decoder layer carries {layer_type}"


# ---------------------------------------------------------------- discovery


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, HFLayout]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def hf_layout(model: torch.nn.Module) -> HFLayout:
    """Discover where ``model``'s decoder layers and their sublayers are.

    Cached per model object; a cached layout is reused while the layer list is the same
    object with the same length. Raises :class:`UnsupportedModelError` when no list of
    decoder layers can be found or the model is an encoder-decoder.

    Example:
        >>> hf_layout(llama).site(1, "mlp_out")
        ModuleSite(path='model.layers.1.mlp', io='output', steerable=True, flattened=False, layer_path='model.layers.1')
    """
    with _LOCK:
        cached = _CACHE.get(model)
    if cached is not None:
        layers, layout = cached
        try:
            current = model.get_submodule(layout.layers_path)
        except AttributeError:
            current = None
        if current is layers and len(layers) == layout.n_layers:  # type: ignore[arg-type]
            return layout
    layers, layout = _discover(model)
    with _LOCK:
        _CACHE[model] = (layers, layout)
    return layout


def _text_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:  # wrappers (PEFT, torch.compile) keep the HF model below the root
        config = next((m.config for m in model.modules() if hasattr(m, "config")), None)
    if config is not None and hasattr(config, "get_text_config"):
        try:
            return config.get_text_config(decoder=True)
        except (TypeError, ValueError):
            return config.get_text_config()
    return config


def _discover(model: nn.Module) -> tuple[nn.ModuleList, HFLayout]:
    config = _text_config(model)
    model_class = type(model).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{model_class} is an encoder-decoder model; steerlens steers decoder-only models (e.g. *ForCausalLM)."
        )
    expected = getattr(config, "num_hidden_layers", None) if config is not None else None
    path, layers = _find_layers(model, expected if isinstance(expected, int) else None)
    kinds: dict[tuple[Any, ...], LayerParts] = {}
    per_layer: list[LayerParts] = []
    for layer in layers:
        key = (type(layer), tuple((name, type(child)) for name, child in layer.named_children()))
        if key not in kinds:
            kinds[key] = _analyse_layer(layer, config)
        per_layer.append(kinds[key])
    common = Counter(per_layer).most_common(1)[0][0]
    layout = HFLayout(
        layers_path=path,
        n_layers=len(layers),
        attn=common.attn,
        mlp=common.mlp,
        ln1=common.ln1,
        ln2=common.ln2,
        resid_mid=common.resid_mid,
        parallel=_is_parallel(layers[0], config),
        flattened=common.flattened,
        model_class=model_class,
        layer_class=common.layer_class,
        per_layer=tuple(per_layer),
    )
    return layers, layout


def _find_layers(model: nn.Module, expected: int | None) -> tuple[str, nn.ModuleList]:
    """The ``nn.ModuleList`` of decoder blocks.

    Prefers lists of ``expected`` blocks, then blocks with attention/MLP children, then
    paths under the base model, then shallow paths (an MoE's expert list can have as
    many entries as the model has layers).
    """
    prefix = getattr(model, "base_model_prefix", "") or ""
    candidates = [
        (path, module)
        for path, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and path
        and all(len(list(block.children())) > 0 for block in module)
    ]

    def rank(item: tuple[str, nn.ModuleList]) -> tuple[Any, ...]:
        path, module = item
        under_base = bool(prefix) and (path == prefix or path.startswith(prefix + "."))
        return (not _looks_like_block(module[0]), not under_base, path.count("."), path)

    exact = sorted((c for c in candidates if len(c[1]) == expected), key=rank)
    if exact and _looks_like_block(exact[0][1][0]):
        return exact[0]
    # No config count (or none matching): the longest list of identical decoder-like blocks.
    uniform = [c for c in candidates if len({type(b) for b in c[1]}) == 1 and _looks_like_block(c[1][0])]
    if uniform:
        return min(uniform, key=lambda c: (-len(c[1]), *rank(c)))
    if exact:
        return exact[0]
    wanted = f"{expected} decoder blocks (config.num_hidden_layers)" if expected else "decoder blocks"
    raise UnsupportedModelError(
        f"cannot find the decoder layers of {type(model).__name__}: it has no nn.ModuleList of "
        f"{wanted} with attention or MLP sub-modules. steerlens steers decoder-only transformers "
        "whose layers sit in one list (e.g. model.layers, transformer.h)."
    )


def _looks_like_block(block: nn.Module) -> bool:
    children = dict(block.named_children())
    return _find_attn(children) is not None or _find_mlp(children) is not None


def _is_norm(module: nn.Module | None) -> bool:
    return module is not None and "norm" in type(module).__name__.lower()


def _first(children: dict[str, nn.Module], names: tuple[str, ...], exclude: Collection[str] = ()) -> str | None:
    return next((n for n in names if n not in exclude and children.get(n) is not None), None)


def _find_attn(children: dict[str, nn.Module]) -> str | None:
    return _first(children, _ATTN_NAMES) or next(
        (n for n, m in children.items() if type(m).__name__.endswith(("Attention", "Attn"))), None
    )


def _find_mlp(children: dict[str, nn.Module]) -> str | None:
    return _first(children, _MLP_NAMES) or next(
        (
            n
            for n, m in children.items()
            if any(k in type(m).__name__ for k in ("MLP", "Moe", "MoE", "FeedForward", "Experts"))
        ),
        None,
    )


def position_wise_mlp(layer: nn.Module) -> nn.Module | None:
    """The decoder layer's MLP sub-module, when it maps each position on its own from one input.

    None for layers without an MLP child (OPT's flattened ``fc1``/``fc2``) and for MLPs
    that take the residual and add it themselves (Bloom, MPT).
    """
    children = {name: child for name, child in layer.named_children() if child is not None}
    name = _find_mlp(children)
    if name is None or _adds_own_residual(children[name]):
        return None
    return children[name]


def _norm(children: dict[str, nn.Module], names: tuple[str, ...], exclude: Collection[str] = ()) -> str | None:
    name = _first(children, names, exclude)
    return name if name is not None and _is_norm(children[name]) else None


def _adds_own_residual(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes the residual and returns residual + output (Bloom, MPT)."""
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return False
    return any(name.startswith("residual") for name in params[1:])


def _forward_source(layer: nn.Module) -> str:
    """The source of the layer's ``forward`` ("" when it cannot be read)."""
    try:
        return inspect.getsource(type(layer).forward)
    except (OSError, TypeError):
        return ""


def _flattens(layer: nn.Module) -> bool:
    return _FLATTEN_RE.search(_forward_source(layer)) is not None


def _normalised_sum(layer: nn.Module, norms: Collection[str]) -> str | None:
    """A norm child the layer applies to a sum, e.g. OpenAI GPT's ``ln_1(x + a)`` (post-norm), or None."""
    source = _forward_source(layer)
    for name in norms:
        for argument in re.findall(rf"self\.{re.escape(name)}\(([^()]*)\)", source):
            if "+" in argument:
                return f"{name}({argument.strip()})"
    return None


def _is_parallel(layer: nn.Module, config: Any) -> bool:
    for flag in _PARALLEL_FLAGS:
        value = getattr(config, flag, None)
        if isinstance(value, bool) and value:
            return True
    if any(isinstance(getattr(config, flag, None), bool) for flag in _PARALLEL_FLAGS[:3]):
        return False  # the family has a switch and it is off
    children = dict(layer.named_children())
    norms = [n for n, m in children.items() if _is_norm(m)]
    # One norm in front of both sublayers (GPT-J, Phi, Cohere): nothing separates them.
    return len(norms) == 1 and _find_attn(children) is not None and _find_mlp(children) is not None


def _analyse_layer(layer: nn.Module, config: Any) -> LayerParts:
    """Name the sub-modules of one decoder layer that carry each layer type."""
    children = {name: child for name, child in layer.named_children() if child is not None}
    names = tuple(children)
    layer_class = type(layer).__name__
    why: dict[str, str] = {}
    parallel = _is_parallel(layer, config)
    attn_module = _find_attn(children)
    mlp_module = _find_mlp(children)
    flattened: frozenset[str] = frozenset()
    if attn_module is None:
        why["attn_out"] = why["ln1"] = "the layer has no attention sub-module"
    if mlp_module is None:
        bare = next((n for n in _BARE_MLP_OUT_NAMES if isinstance(children.get(n), nn.Linear)), None)
        if bare is not None:
            mlp_module = bare  # the MLP's last projection's output is what gets added
            if _flattens(layer):
                flattened = frozenset({"resid_mid", "ln2", "mlp_out"})
        else:
            why["mlp_out"] = "the layer has no MLP sub-module"
    elif _UNFLATTEN_RE.search(_forward_source(layer)):
        flattened = frozenset({"mlp_out"})

    post_norm = _normalised_sum(layer, [n for n, m in children.items() if _is_norm(m)])
    if getattr(config, "do_layer_norm_before", True) is False or post_norm is not None:
        # Classic post-LN (e.g. OPT-350m, OpenAI GPT): the residual stream is normalised after
        # each add, so the layer has no pre-sublayer norms and no TL-style residual stream.
        why_post = "do_layer_norm_before=False" if post_norm is None else f"{layer_class} computes {post_norm}"
        reason = f"post-layer-norm layers ({why_post}) normalise the residual after each sublayer"
        why.update({t: reason for t in ("attn_out", "mlp_out", "resid_mid", "ln1", "ln2")})
        no_sites = dict.fromkeys(("attn", "mlp", "ln1", "ln2", "resid_mid"))
        return LayerParts(layer_class, names, **no_sites, why_missing=tuple(why.items()))

    attn = mlp = ln1 = ln2 = resid_mid = None
    post_mlp = _norm(children, _POST_MLP_NAMES)
    if post_mlp is not None:
        # Sandwich / post-sublayer norm: each sublayer's output is normalised before the add.
        post_attn = _norm(children, _POST_ATTN_NAMES)
        attn, mlp = post_attn, post_mlp
        ln1 = _norm(children, _LN1_NAMES, {post_attn})
        ln2 = _norm(children, _LN2_NAMES, {post_attn})
        # Without a pre-MLP norm (OLMo 2) the MLP itself reads resid_mid.
        resid_mid = ln2 or (mlp_module if not parallel else None)
        if ln1 is None:
            why["ln1"] = "attention reads the residual stream directly (its output is normalised instead)"
        if ln2 is None:
            why["ln2"] = "the MLP reads the residual stream directly (its output is normalised instead)"
    else:
        attn, mlp = attn_module, mlp_module
        ln1 = _norm(children, _LN1_NAMES)
        ln2 = _norm(children, _LN2_NAMES)
        if not parallel:
            resid_mid = ln2
            if ln2 is None:
                why["resid_mid"] = why["ln2"] = "no norm in front of the MLP was recognised"
    if parallel:
        why["resid_mid"] = _default_reason("resid_mid", True)
        if ln2 is None and ln1 is not None:
            why["ln2"] = _default_reason("ln2", True)

    for layer_type, child_name in (("attn_out", attn_module), ("mlp_out", mlp_module)):
        if child_name is not None and _adds_own_residual(children[child_name]):
            # Bloom's and MPT's sublayers take the residual and return residual + output,
            # so no module output is what the sublayer adds.
            why[layer_type] = (
                f"{type(children[child_name]).__name__} adds the residual inside itself, "
                "so its output is not what the sublayer adds"
            )
            attn, mlp = (None, mlp) if layer_type == "attn_out" else (attn, None)
    multiplier = next(
        (getattr(config, a) for a in _MULTIPLIER_ATTRS if isinstance(getattr(config, a, None), (int, float))), 1.0
    )
    if multiplier != 1.0:
        # Granite adds residual_multiplier * output: the module output is not what is
        # added, and a vector added to it would reach the residual stream scaled.
        reason = (
            f"the layer scales sublayer outputs by residual_multiplier={multiplier} before adding "
            "them, so no module output is exactly what is added"
        )
        why["attn_out"] = why["mlp_out"] = reason
        attn = mlp = None
    if attn is None and "attn_out" not in why:
        why["attn_out"] = "no module carrying the normalised attention output was recognised"
    if ln1 is None and "ln1" not in why:
        why["ln1"] = "no norm in front of attention was recognised"
    if ln2 is None and "ln2" not in why:
        why["ln2"] = "no norm in front of the MLP was recognised"
    return LayerParts(
        layer_class,
        names,
        attn=attn,
        mlp=mlp,
        ln1=ln1,
        ln2=ln2,
        resid_mid=resid_mid,
        flattened=flattened,
        why_missing=tuple(why.items()),
    )


__all__ = ["LAYER_TYPES", "HFLayout", "LayerParts", "LayerType", "ModuleSite", "hf_layout", "position_wise_mlp"]
