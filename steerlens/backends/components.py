"""Per-component outputs of one forward pass, read at each row's last real token, on any model kind.

Attributing a steering effect (:mod:`steerlens.evaluation.attribution`) needs, for an
unsteered and a steered pass, what every attention layer (or head) and MLP adds to the
residual stream at the token the next-token metric is read at, the residual the final norm
receives there and that norm's scale; then a way to read a residual-stream direction through
the final norm and the unembedding, and to re-run the model with one component's output
replaced. :func:`component_reader` gives that for each model kind:

* a HookedTransformer through its hook points: ``blocks.{L}.hook_attn_out``,
  ``blocks.{L}.hook_mlp_out``, and per head ``blocks.{L}.attn.hook_z`` (times ``W_O[L, h]``
  that is head h's output); the final norm's scale is ``ln_final.hook_scale``;
* a Hugging Face model at module level, where :mod:`.hf_layout` finds attention and MLP
  outputs; per head where the attention module ends in an output projection
  (``o_proj``/``out_proj``/``dense``, an ``nn.Linear``) whose input is the heads' outputs side
  by side (Llama family): head h's output is its slice of that input times the matching
  columns of the projection's weight (checked to sum to the module's output, else that layer
  is read per layer only, and :attr:`ComponentReader.heads_note` says why). The final norm
  has no hook for its scale: its affine form ``gain * centre(x) / scale + bias`` is probed once
  (see :class:`NormForm`) and the scale is read from each pass's own input and output.

This module is where the kind is decided; nothing above ``backends`` asks.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Protocol

import torch
from jaxtyping import Float
from torch import Tensor, nn

from steerlens.backends.hf import HFBackend, replayed, site_tensor, with_first
from steerlens.backends.hf_layout import hf_layout
from steerlens.backends.hooked import HookedBackend
from steerlens.errors import LayerError, UnsupportedModelError
from steerlens.hooks import SteeringSpec
from steerlens.tokens import PromptBatch

PatchKind = Literal["attn", "mlp", "head", "resid"]


@dataclass
class ComponentRun:
    """One forward pass, read at each row's last real token (float32, detached)."""

    attn: dict[int, Float[Tensor, "batch d_model"]]
    """Attention output per layer (what the layer adds to the residual stream)."""
    z: dict[int, Float[Tensor, "batch n_heads d_head"]]
    """Per-head outputs before the output projection, for the layers whose heads are exposed."""
    mlp: dict[int, Float[Tensor, "batch d_model"]]
    resid: Float[Tensor, "batch d_model"]
    """The final norm's input (the residual after the last layer)."""
    normed: Float[Tensor, "batch d_model"]
    """The final norm's output (what the unembedding reads)."""
    scale: Float[Tensor, "batch"]
    """The final norm's scale (``ln_final.hook_scale``; 1 without a final norm)."""
    logits: Float[Tensor, "batch d_vocab"]
    states: dict[int, Any] = field(default_factory=dict)
    """Layer -> what that layer received in this pass (all positions), for later passes to resume from."""


@dataclass(frozen=True)
class Patch:
    """Replace one component's value at each row's last real token by ``value`` (one row per batch row).

    ``attn``/``mlp``: the layer's output ``[batch, d_model]``; ``head``: the head's output before
    the output projection ``[batch, d_head]``; ``resid``: the final norm's input ``[batch, d_model]``.
    """

    kind: PatchKind
    layer: int
    head: int | None
    value: Tensor


class ComponentReader(Protocol):
    """What :mod:`steerlens.evaluation.attribution` needs from one model kind."""

    @property
    def has_mlp(self) -> bool: ...

    @property
    def heads_note(self) -> str:
        """Empty when every attention layer's heads are read one by one, else why (some) are not."""
        ...

    def head_layers(self, layers: list[int]) -> list[int]:
        """Those of ``layers`` whose per-head outputs are exposed."""
        ...

    def head_weights(self, layer: int) -> Float[Tensor, "n_heads d_head d_model"]:
        """Each head's slice of the output projection: head output = ``z[h] @ W[h]``."""
        ...

    def run(
        self,
        batch: PromptBatch,
        spec: SteeringSpec | None,
        layers: list[int],
        *,
        patch: Patch | None = None,
        scale: Tensor | None = None,
        keep: tuple[int, ...] = (),
        resume: tuple[int, ComponentRun] | None = None,
    ) -> ComponentRun:
        """One pass (steered by ``spec`` when given) reading the components of ``layers``.

        ``patch`` replaces one component's value at the last tokens; ``scale`` freezes the final
        norm's scale at the last tokens to that value (one per row). ``keep`` (layers >= 1) keeps
        what those layers receive in :attr:`ComponentRun.states`; ``resume=(layer, run)`` starts the
        pass at ``layer`` from ``run``'s state there (the layers before it are not computed: the
        caller makes sure nothing before ``layer`` differs from ``run``, steering and patch included).
        """
        ...

    def readout(self, run: ComponentRun, grad_logits: Float[Tensor, "batch d_vocab"]) -> Float[Tensor, "batch d_model"]:
        """Direction ``r`` per row with ``grad · Δlogits ≈ r · Δresid``: the unembedding read through the
        final norm with its scale frozen at ``run``'s (a linear map, exact for that scale)."""
        ...

    def head(self, resid: Tensor, like: ComponentRun, scale: Tensor | None = None) -> Float[Tensor, "batch d_vocab"]:
        """Logits of final residuals ``resid`` (last tokens of the pass ``like``), the norm's scale
        frozen at ``scale`` when given."""
        ...


def component_reader(backend: Any) -> ComponentReader:
    """The :class:`ComponentReader` of a backend (HookedTransformer or Hugging Face model).

    Example:
        >>> reader = component_reader(backend_for(model))
        >>> run = reader.run(batch, None, layers=[2, 3])
        >>> run.mlp[3].shape
        torch.Size([4, 64])
    """
    if isinstance(backend, HookedBackend):
        return HookedComponents(backend)
    if isinstance(backend, HFBackend):
        return HFComponents(backend)
    raise UnsupportedModelError(
        f"per-component outputs are not available on a {type(backend).__name__}; attribute on a HookedTransformer "
        "(steerlens.load_model) or on the Hugging Face model itself (steerlens.load_hf_model)."
    )


def _last(act: Tensor, last: Tensor) -> Tensor:
    rows = torch.arange(act.shape[0], device=act.device)
    return act[rows, last.to(act.device)]


def _put_last(act: Tensor, last: Tensor, value: Tensor) -> Tensor:
    out = act.clone()
    rows = torch.arange(act.shape[0], device=act.device)
    out[rows, last.to(act.device)] = value.to(out.device, out.dtype)
    return out


# ---------------------------------------------------------------------------- HookedTransformer


@dataclass
class HookedComponents:
    """Components of a HookedTransformer, through its hook points."""

    backend: HookedBackend

    @property
    def model(self) -> Any:
        return self.backend.model

    @property
    def has_mlp(self) -> bool:
        return "blocks.0.hook_mlp_out" in self.model.hook_dict

    @property
    def heads_note(self) -> str:
        return ""

    def head_layers(self, layers: list[int]) -> list[int]:
        return list(layers)

    def head_weights(self, layer: int) -> Tensor:
        return self.model.blocks[layer].attn.W_O.detach()

    def _names(self, layer: int) -> dict[str, str]:
        names = {"attn": f"blocks.{layer}.hook_attn_out", "z": f"blocks.{layer}.attn.hook_z"}
        if self.has_mlp:
            names["mlp"] = f"blocks.{layer}.hook_mlp_out"
        return names

    @torch.no_grad()
    def run(
        self,
        batch: PromptBatch,
        spec: SteeringSpec | None,
        layers: list[int],
        *,
        patch: Patch | None = None,
        scale: Tensor | None = None,
        keep: tuple[int, ...] = (),
        resume: tuple[int, ComponentRun] | None = None,
    ) -> ComponentRun:
        model, last = self.model, batch.last
        kept: dict[tuple[str, int], Tensor] = {}
        states: dict[int, Any] = {}

        def grab(key: tuple[str, int]) -> Callable[[Tensor, Any], None]:
            def keep_last(act: Tensor, hook: Any) -> None:
                kept[key] = _last(act, last).detach().float()

            return keep_last

        def state(layer: int) -> Callable[[Tensor, Any], None]:
            def keep_state(act: Tensor, hook: Any) -> None:
                states[layer] = act.detach()

            return keep_state

        hooks = [(name, grab((kind, layer))) for layer in layers for kind, name in self._names(layer).items()]
        # What block L receives is block L-1's output, after any hook on it (steering included).
        hooks += [(f"blocks.{layer - 1}.hook_resid_post", state(layer)) for layer in keep if layer >= 1]
        if patch is not None and patch.kind != "resid":
            kind = "z" if patch.kind == "head" else patch.kind
            hooks.append((self._names(patch.layer)[kind], _tl_replace(last, patch)))
        n_layers = model.cfg.n_layers
        with self.backend.apply(spec) if spec is not None else nullcontext():
            with model.hooks(fwd_hooks=hooks):
                if resume is None or resume[0] == 0:
                    final = model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=n_layers)
                else:
                    start, origin = resume
                    final = model(
                        origin.states[start],
                        start_at_layer=start,
                        stop_at_layer=n_layers,
                        attention_mask=batch.attention_mask,
                    )
        if resume is not None:
            states.update({layer: value for layer, value in resume[1].states.items() if layer <= resume[0]})
        resid = _last(final, last).float()
        if patch is not None and patch.kind == "resid":
            resid = patch.value.to(resid)
        logits, normed, found = self._head(resid, scale)
        return ComponentRun(
            attn={layer: kept[("attn", layer)] for layer in layers},
            z={layer: kept[("z", layer)] for layer in layers},
            mlp={layer: kept[("mlp", layer)] for layer in layers if ("mlp", layer) in kept},
            resid=resid,
            normed=normed,
            scale=found,
            logits=logits,
            states=states,
        )

    def _head(self, resid: Tensor, scale: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """TransformerLens' own final norm, unembedding and soft-cap on ``resid``; (logits, normed, scale)."""
        model = self.model
        kept: dict[str, Tensor] = {}

        def at_scale(act: Tensor, hook: Any) -> Tensor:
            if scale is not None:
                act = scale.detach().reshape(act.shape).to(act)
            kept["scale"] = act.detach().reshape(-1).float()
            return act

        def at_normed(act: Tensor, hook: Any) -> None:
            kept["normed"] = act.detach()[:, 0].float()

        hooks = []
        if "ln_final.hook_scale" in model.hook_dict:
            hooks = [("ln_final.hook_scale", at_scale), ("ln_final.hook_normalized", at_normed)]
        dtype = model.cfg.dtype
        with model.hooks(fwd_hooks=hooks):
            logits = model(resid.to(dtype)[:, None], start_at_layer=model.cfg.n_layers)[:, 0].float()
        normed = kept.get("normed", resid)
        return logits, normed, kept.get("scale", torch.ones(resid.shape[0], device=resid.device))

    def head(self, resid: Tensor, like: ComponentRun, scale: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            return self._head(resid, scale)[0]

    def readout(self, run: ComponentRun, grad_logits: Tensor) -> Tensor:
        model = self.model
        frozen = run.scale.detach()

        def at_scale(act: Tensor, hook: Any) -> Tensor:
            return frozen.reshape(act.shape).to(act)

        hooks = [("ln_final.hook_scale", at_scale)] if "ln_final.hook_scale" in model.hook_dict else []
        with torch.enable_grad():
            x = run.resid.detach().to(model.cfg.dtype)[:, None].clone().requires_grad_(True)
            with model.hooks(fwd_hooks=hooks):
                logits = model(x, start_at_layer=model.cfg.n_layers)[:, 0].float()
            (grad,) = torch.autograd.grad((logits * grad_logits.to(logits)).sum(), x)
        return grad[:, 0].float()


def _tl_replace(last: Tensor, patch: Patch) -> Callable[[Tensor, Any], Tensor]:
    def replace(act: Tensor, hook: Any) -> Tensor:
        if patch.kind != "head":
            return _put_last(act, last, patch.value)
        out = act.clone()
        rows = torch.arange(act.shape[0], device=act.device)
        out[rows, last.to(act.device), patch.head] = patch.value.to(out.device, out.dtype)
        return out

    return replace


# ---------------------------------------------------------------------------- Hugging Face

_OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense")
_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm")


@dataclass
class NormForm:
    """A final norm of the form ``gain * centre(x) / scale(x) + bias``, probed once from the module itself.

    ``bias`` is the norm of a zero input, ``centred`` whether adding a constant to every feature
    leaves the output unchanged (LayerNorm) or not (RMSNorm), and ``gain`` is read on a ±1 probe,
    up to one common factor: the scale of a pass is then ``|gain * centre(x)| / |y - bias|`` from its
    own input and output, in the same units, so ``gain / scale`` (all the readout needs) is exact.
    """

    gain: Tensor
    bias: Tensor
    centred: bool

    @classmethod
    @torch.no_grad()
    def probe(cls, norm: nn.Module, d_model: int, like: Tensor) -> "NormForm":
        dtype, device = like.dtype, like.device
        zero = torch.zeros(1, 1, d_model, dtype=dtype, device=device)
        bias = norm(zero).reshape(-1).float()
        ramp = torch.sin(torch.arange(d_model, dtype=torch.float32, device=device) * 0.37 + 0.5) + 0.3
        shifted = norm((ramp + 2.0).to(dtype)[None, None]).reshape(-1).float()
        plain = norm(ramp.to(dtype)[None, None]).reshape(-1).float()
        centred = bool(torch.allclose(shifted, plain, rtol=1e-3, atol=1e-4 * float(plain.abs().max())))
        signs = torch.ones(d_model, dtype=torch.float32, device=device)
        signs[1::2] = -1.0
        probe = signs - signs.mean() if centred else signs
        gain = (norm(signs.to(dtype)[None, None]).reshape(-1).float() - bias) / probe
        return cls(gain, bias, centred)

    def centre(self, x: Tensor) -> Tensor:
        return x - x.mean(-1, keepdim=True) if self.centred else x

    def scale(self, x: Tensor, y: Tensor) -> Tensor:
        """Per row: the scale the norm divided ``x`` by to give ``y``."""
        return (self.gain * self.centre(x.float())).norm(dim=-1) / (y.float() - self.bias).norm(dim=-1)

    def apply(self, x: Tensor, scale: Tensor) -> Tensor:
        return self.gain * self.centre(x.float()) / scale[:, None] + self.bias


@dataclass
class HFComponents:
    """Components of a Hugging Face model, at module level (per head where the architecture exposes them)."""

    backend: HFBackend
    _form: NormForm | None = field(default=None, init=False, repr=False)
    _head_notes: dict[int, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend.layer_config is not None:
            raise UnsupportedModelError(
                "a layer_config points layer types at modules of your choice, so where steering enters the "
                "residual stream is not known here; attribute without layer_config (steerlens finds the layers)."
            )
        self.layout = hf_layout(self.backend.model)
        self.norm_path = self._final_norm_path()
        self.head_note = ""

    # -- structure ---------------------------------------------------------------------

    @property
    def model(self) -> Any:
        return self.backend.model

    def _site(self, layer: int, kind: str) -> Any:
        try:
            return self.layout.site(layer, f"{kind}_out")
        except LayerError as error:
            raise UnsupportedModelError(
                f"cannot split {type(self.model).__name__}'s residual stream into attention and MLP outputs: {error}"
            ) from None

    @property
    def has_mlp(self) -> bool:
        try:
            self._site(0, "mlp")
        except UnsupportedModelError:
            return False
        return True

    def _final_norm_path(self) -> str:
        parent = self.layout.layers_path.rpartition(".")[0]
        holder = self.model.get_submodule(parent) if parent else self.model
        children = dict(holder.named_children())
        for name in _FINAL_NORM_NAMES:
            if name in children and "norm" in type(children[name]).__name__.lower():
                return f"{parent}.{name}" if parent else name
        norms = [n for n, m in children.items() if "norm" in type(m).__name__.lower()]
        if len(norms) == 1:
            return f"{parent}.{norms[0]}" if parent else norms[0]
        raise UnsupportedModelError(
            f"cannot find the final norm of {type(self.model).__name__} next to its decoder layers "
            f"({self.layout.layers_path}); attribute on the HookedTransformer from steerlens.load_model instead."
        )

    def _n_heads(self) -> int | None:
        config = self.model.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        for name in ("num_attention_heads", "n_head", "num_heads"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _out_proj(self, layer: int) -> tuple[nn.Linear | None, str]:
        """The output projection whose input holds layer ``layer``'s heads side by side, or (None, why not)."""
        site = self._site(layer, "attn")
        module = self.model.get_submodule(site.path)
        name = next((n for n in _OUT_PROJ_NAMES if isinstance(getattr(module, n, None), nn.Linear)), None)
        if name is None:
            what = type(module).__name__
            return None, (
                f"{what} (the module whose output is attn_out) has no nn.Linear output projection named "
                f"{'/'.join(_OUT_PROJ_NAMES)} whose input holds the heads side by side (a post-attention norm, a "
                "fused or transposed projection): attention is split per layer only"
            )
        n_heads = self._n_heads()
        proj = getattr(module, name)
        if not n_heads or proj.in_features % n_heads:
            return None, f"the number of attention heads is unknown or does not divide {name}'s input"
        return proj, ""

    def head_layers(self, layers: list[int]) -> list[int]:
        out = []
        for layer in layers:
            if layer in self._head_notes:
                continue
            proj, why = self._out_proj(layer)
            if proj is None:
                self._head_notes[layer] = why
            else:
                out.append(layer)
        return out

    @property
    def heads_note(self) -> str:
        if not self._head_notes:
            return ""
        layers = sorted(self._head_notes)
        return f"layers {layers}: " + "; ".join(dict.fromkeys(self._head_notes.values()))

    def head_weights(self, layer: int) -> Tensor:
        proj, _ = self._out_proj(layer)
        assert proj is not None
        n_heads = self._n_heads()
        weight = proj.weight.detach().float()  # [d_model, n_heads * d_head]
        d_head = weight.shape[1] // n_heads  # type: ignore[operator]
        return weight.T.reshape(n_heads, d_head, weight.shape[0])  # type: ignore[arg-type]

    # -- passes ------------------------------------------------------------------------

    @property
    def form(self) -> NormForm:
        """The final norm's probed form (probed on first use, never inside a pass: the probe calls the norm)."""
        if self._form is None:
            norm = self.model.get_submodule(self.norm_path)
            like = next(norm.parameters(), self.model.get_input_embeddings().weight)
            self._form = NormForm.probe(norm, self.backend.d_model, like)
        return self._form

    @torch.no_grad()
    def run(
        self,
        batch: PromptBatch,
        spec: SteeringSpec | None,
        layers: list[int],
        *,
        patch: Patch | None = None,
        scale: Tensor | None = None,
        keep: tuple[int, ...] = (),
        resume: tuple[int, ComponentRun] | None = None,
    ) -> ComponentRun:
        model, last = self.model, batch.last
        shape = batch.tokens.shape
        form = self.form
        kept: dict[Any, Tensor] = {}
        states: dict[int, Any] = {}
        decoder = model.get_submodule(self.layout.layers_path)
        handles: list[Any] = []
        heads = set(self.head_layers(layers))

        def output_hook(key: Any, site: Any, value: Tensor | None) -> Any:
            def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
                tensor = site_tensor(site, args, kwargs, output)
                full = tensor.view(*shape, -1) if site.flattened else tensor
                if key is not None:
                    kept[key] = _last(full, last).detach().float()
                if value is None:
                    return None
                return with_first(output, _put_last(full, last, value).view(tensor.shape))

            return hook

        def z_hook(layer: int, head: int | None, value: Tensor | None) -> Any:
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> Any:
                x = args[0] if args else kwargs["input"]
                n_heads = self._n_heads()
                if head is None:
                    kept[("z", layer)] = _last(x, last).detach().float().view(x.shape[0], n_heads, -1)
                    return None
                d_head = x.shape[-1] // n_heads  # type: ignore[operator]
                out = x.clone()
                rows = torch.arange(x.shape[0], device=x.device)
                out[rows, last.to(x.device), head * d_head : (head + 1) * d_head] = value.to(out)  # type: ignore[union-attr]
                return ((out, *args[1:]), kwargs) if args else (args, {**kwargs, "input": out})

            return hook

        def norm_in(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            if patch is not None and patch.kind == "resid":
                x = _put_last(x, last, patch.value)
                kept["resid"] = _last(x, last).detach().float()
                return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
            kept["resid"] = _last(x, last).detach().float()
            return None

        def norm_out(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            y = output[0] if isinstance(output, (tuple, list)) else output
            y_last = _last(y, last).float()
            own = form.scale(kept["resid"], y_last)
            if scale is None:
                kept["normed"], kept["scale"] = y_last, own
                return None
            frozen = form.bias + (y_last - form.bias) * (own / scale.to(own))[:, None]
            kept["normed"], kept["scale"] = frozen, scale.to(own)
            return with_first(output, _put_last(y, last, frozen))

        try:
            for layer in layers:
                for kind in ("attn", "mlp") if self.has_mlp else ("attn",):
                    site = self._site(layer, kind)
                    module = model.get_submodule(site.path)
                    handles.append(
                        module.register_forward_hook(output_hook((kind, layer), site, None), with_kwargs=True)
                    )
                if layer in heads:
                    proj, _ = self._out_proj(layer)
                    handles.append(proj.register_forward_pre_hook(z_hook(layer, None, None), with_kwargs=True))  # type: ignore[union-attr]
            if patch is not None and patch.kind in ("attn", "mlp"):
                site = self._site(patch.layer, patch.kind)
                module = model.get_submodule(site.path)
                handles.append(module.register_forward_hook(output_hook(None, site, patch.value), with_kwargs=True))
            elif patch is not None and patch.kind == "head":
                proj, why = self._out_proj(patch.layer)
                if proj is None:
                    raise UnsupportedModelError(f"cannot patch a head of layer {patch.layer}: {why}.")
                handles.append(
                    proj.register_forward_pre_hook(z_hook(patch.layer, patch.head, patch.value), with_kwargs=True)
                )
            norm = model.get_submodule(self.norm_path)
            handles.append(norm.register_forward_pre_hook(norm_in, with_kwargs=True))
            handles.append(norm.register_forward_hook(norm_out, with_kwargs=True))
            with self.backend.apply(spec) if spec is not None else nullcontext():
                # A layer's own output, before any steering hook on it (those are prepended too, earlier):
                # a pass resuming there replays it and the steering hook adds its vector again.
                for layer in keep:
                    if layer >= 1:
                        handles.append(
                            decoder[layer - 1].register_forward_hook(
                                lambda module, args, output, layer=layer: states.__setitem__(layer, output),
                                prepend=True,
                            )
                        )
                with _replaying(decoder, resume):
                    logits = self.backend._logits_at(self.backend._forward_inputs(batch), last).float()
        finally:
            for handle in handles:
                handle.remove()
        if resume is not None:
            states.update({layer: value for layer, value in resume[1].states.items() if layer <= resume[0]})
        self._check_sums(heads, kept)
        self._check_head(kept, logits)
        return ComponentRun(
            attn={layer: kept[("attn", layer)] for layer in layers},
            z={layer: kept[("z", layer)] for layer in heads if ("z", layer) in kept},
            mlp={layer: kept[("mlp", layer)] for layer in layers if ("mlp", layer) in kept},
            resid=kept["resid"],
            normed=kept["normed"],
            scale=kept["scale"],
            logits=logits,
            states=states,
        )

    def _check_sums(self, heads: set[int], kept: dict[Any, Tensor]) -> None:
        """Drop per-head reading on a layer whose heads do not add up to its attention output."""
        for layer in heads:
            z = kept[("z", layer)]
            proj, _ = self._out_proj(layer)
            total = torch.einsum("bhd,hdm->bm", z, self.head_weights(layer))
            if proj is not None and proj.bias is not None:
                total = total + proj.bias.detach().float()
            out = kept[("attn", layer)]
            if (total - out).norm() > 1e-3 * (out.norm() + 1e-6):
                self._head_notes[layer] = (
                    "the heads' outputs through the output projection do not add up to the attention output "
                    "(the module does more after its projection): attention is split per layer only"
                )
                del kept[("z", layer)]

    def _check_head(self, kept: dict[Any, Tensor], logits: Tensor) -> None:
        """Note whether the model's logits are the LM head's own output (no soft-cap or scaling after it)."""
        if self.head_note or not isinstance(self.model.get_output_embeddings(), nn.Module):
            return
        with torch.no_grad():
            own = self._lm_head(kept["normed"])
        if not torch.allclose(own, logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max())):
            self.head_note = (
                f"{type(self.model).__name__} transforms the LM head's logits (soft-cap or scaling): the linear split "
                "reads the head's own output, and the residual term holds the difference"
            )

    def _lm_head(self, normed: Tensor) -> Tensor:
        lm_head = self.model.get_output_embeddings()
        return lm_head(normed.to(lm_head.weight.dtype)).float()

    def head(self, resid: Tensor, like: ComponentRun, scale: Tensor | None = None) -> Tensor:
        form = self.form
        with torch.no_grad():
            if scale is None:
                norm = self.model.get_submodule(self.norm_path)
                weight = next(norm.parameters(), like.resid)
                normed = norm(resid.to(weight.dtype)[:, None])[:, 0].float()
            else:
                normed = form.apply(resid, scale)
            return self._lm_head(normed)

    def readout(self, run: ComponentRun, grad_logits: Tensor) -> Tensor:
        form = self.form
        with torch.enable_grad():
            y = run.normed.detach().clone().requires_grad_(True)
            logits = self._lm_head(y)
            (direction,) = torch.autograd.grad((logits * grad_logits.to(logits)).sum(), y)
        return form.centre(direction.float() * form.gain) / run.scale[:, None]


@contextmanager
def _replaying(decoder: nn.Module, resume: tuple[int, ComponentRun] | None) -> Iterator[None]:
    """Decoder layers ``0..layer-1`` return the kept output of layer ``layer - 1`` instead of computing.

    Their hooks still run (and return new tensors: nothing kept is edited), so only the last
    replayed layer's output, as its hooks leave it, reaches layer ``layer``.
    """
    if resume is None or resume[0] == 0:
        yield
        return
    start, origin = resume
    with replayed([decoder[i] for i in range(start)], origin.states[start]):
        yield


__all__ = [
    "ComponentReader",
    "ComponentRun",
    "HFComponents",
    "HookedComponents",
    "NormForm",
    "Patch",
    "component_reader",
]
