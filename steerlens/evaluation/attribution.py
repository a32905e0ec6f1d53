"""Why a vector steers: the steered change of a next-token metric, split over the components after the steered layer.

Steering adds ``multiplier × vector`` to the residual stream at one site. Everything after it
only adds to the stream, so at the token the metric is read at (each prompt's last real token)
the final residual of the steered run differs from the unsteered one by exactly

    Δresid = multiplier × vector  (the *direct path*)  +  Σ over later heads and MLPs of Δ(their output).

The metric reads that residual through the final norm and the unembedding. With the norm's
scale frozen at the steered run's value that map is linear, so with the metric linearised at the
steered logits (its gradient ``g`` there; exact for a single-token logit difference) each part
contributes ``r · Δpart`` with ``r`` the unembedding direction of ``g`` read back through the frozen
norm. What that linear split misses (the norm's scale change between the runs, the curvature of a
token group's log-sum-exp or of a log-probability, float rounding) is the ``residual`` row, so the
rows always add up to the measured change. :func:`attribute_steering` returns that split per prompt
or averaged, and checks the largest parts by activation patching: the component's steered output
put into the unsteered run (and its unsteered output into the steered run), at the read token.

Both model kinds: a HookedTransformer through hook points (per head via ``hook_z`` × ``W_O``), a
Hugging Face model at module level (per head where the attention ends in an ``o_proj``-style
projection; see :mod:`steerlens.backends.components`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, Union

import pandas as pd
import torch
from torch import Tensor
from typing_extensions import Unpack

from steerlens.backends.components import ComponentReader, ComponentRun, Patch, component_reader
from steerlens.errors import InvalidArgumentError, LayerError
from steerlens.evaluation.metrics import (
    BoundMetric,
    TokenGroup,
    TokenMetric,
    bind_metric,
    group_logprob,
    kl_divergence,
    metric_rows,
)
from steerlens.hooks import SteeringSpec, make_spec
from steerlens.settings import Run, SettingsKeywords, open_run
from steerlens.tokens import PromptBatch, Prompts, check_prompt_inputs
from steerlens.vector import Layers, SteeringVector, vector_groups

MetricOrTargets = Union[TokenMetric, TokenGroup]
Key = tuple[str, int, Union[int, None]]
"""``(component, layer, head)`` of one row."""

# Layer type -> (layer offset and kind of the first component that reads the steered value,
# whether the vector itself enters the residual stream there).
_ENTRY: dict[str, tuple[int, str, bool]] = {
    "resid_pre": (0, "attn", True),
    "ln1": (0, "attn", False),
    "attn_out": (0, "mlp", True),
    "resid_mid": (0, "mlp", True),
    "ln2": (0, "mlp", False),
    "mlp_out": (1, "attn", True),
    "resid_post": (1, "attn", True),
}
_KIND_ORDER = {"direct": 0, "head": 1, "attn": 1, "mlp": 2, "residual": 3}
_USES = frozenset({"tokenizer", "batch_size", "padding_side", "prepend_bos", "steer_from"})
"""What :func:`attribute_steering` reads: how prompts are encoded and where steering starts (by addition)."""


class AttributionWarning(UserWarning):
    """Part of the split is coarser or less exact than asked (heads not exposed, a transformed head)."""


def _logprob_score(logprobs: Tensor, groups: list[list[int]]) -> Tensor:
    return group_logprob(logprobs, groups[0])


def target_logprob(targets: TokenGroup) -> TokenMetric:
    """log P(targets) of the next token (a token group's summed probability), per prompt.

    Example:
        >>> attribute_steering(model, vec, prompts, 4.0, target_logprob([" good", " great"]))
    """
    return TokenMetric("logprob", (targets,), _logprob_score)


def _as_metric(metric_or_targets: MetricOrTargets) -> TokenMetric:
    if isinstance(metric_or_targets, TokenMetric):
        name = metric_or_targets.name.removeprefix("delta_")
        return replace(metric_or_targets, relative=False, name=name)
    if callable(metric_or_targets) or metric_or_targets is None or isinstance(metric_or_targets, (dict, float)):
        raise InvalidArgumentError(
            f"metric_or_targets must be a token metric (logit_diff(...), prob_share(...), prob_mass(...)) or target "
            f"tokens (a token or a list of them, scored as their log-probability), got {metric_or_targets!r:.80}."
        )
    return target_logprob(metric_or_targets)


@dataclass(frozen=True)
class _Cell:
    """The one steered cell: ``{layer: direction}`` (steered together), their layer type and the multiplier."""

    vectors: dict[int, Tensor]
    layer_type: str
    multiplier: float


@dataclass(frozen=True)
class _Sites:
    """What is read after the steered site: the components in forward order, their layers, the layers read per
    head, and the layers whose inputs are kept for the patching passes."""

    reader: ComponentReader
    components: list[tuple[int, str]]
    comp_layers: list[int]
    head_layers: set[int]
    kept: tuple[int, ...]


@dataclass
class _Batch:
    """One batch's two passes and what was measured on them."""

    batch: PromptBatch
    spec: SteeringSpec
    steered: ComponentRun
    unsteered: ComponentRun
    value_steered: Tensor
    value_unsteered: Tensor
    change: Tensor
    parts: dict[Key, Tensor]


def attribute_steering(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts,
    multiplier: float,
    metric_or_targets: MetricOrTargets,
    layers: Layers = None,
    *,
    freeze_norm: bool = False,
    heads: bool | None = None,
    patch_top: int = 0,
    per_prompt: bool = False,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """Split the steered change of a next-token metric over the direct path and the later heads and MLPs.

    For each prompt, ``change = metric(steered) − metric(unsteered)`` at its last real token, with
    ``vector`` (at ``layers``: a layer of the vector, or several steered together; None: a one-layer
    vector's layer) added at ``multiplier`` from ``steer_from`` on (see :mod:`steerlens.tokens.starts`).
    Rows (``component``, ``layer``, ``head``):

    * ``direct``: the added vector itself, read through the final norm and the unembedding;
    * ``head`` (or ``attn`` per layer) and ``mlp``: each component after the steered site, the
      difference of its output between the two runs, read the same way;
    * ``residual``: the change minus all of the above (the final norm's scale change, the
      metric's curvature, rounding), so the rows add up to the change exactly.

    The readout is the metric's gradient at the steered logits, through the unembedding and the final
    norm with its scale frozen at the steered run's value; for a single-token ``logit_diff`` the split
    is then exact but for the scale change. ``freeze_norm=True`` measures the change with the
    unsteered run's final-norm scale frozen at the steered value too, which leaves only the
    metric's curvature in the residual. ``metric_or_targets`` is a token metric
    (:func:`~steerlens.evaluation.metrics.logit_diff`, ``prob_share``, ``prob_mass``; ``relative``
    makes no difference) or target tokens, scored as their log-probability. Strings are encoded
    after each prompt. ``heads`` (None: where the model exposes them, with an
    :class:`AttributionWarning` where it does not; False: attention per layer).

    ``patch_top=k`` checks the k largest parts by patching at the read token: ``patch_into_unsteered``
    is the metric's change when the part's steered value replaces its unsteered one in the unsteered
    run, ``patch_into_steered`` the drop when its unsteered value goes into the steered run (for the
    direct path: the vector added to, or taken from, the final residual). Both are in the units of
    ``contribution``; a part that carries the effect moves the metric the way its contribution says.

    Returns, averaged over prompts, one row per part with ``component, layer, head, name,
    contribution, contribution_std, share`` (contribution / mean change), ``rank`` (by size, the
    residual unranked), the patch columns with ``patch_top`` and ``n_prompts``; with
    ``per_prompt=True`` one row per prompt × part with ``prompt_index`` and per-prompt shares.
    ``df.attrs`` holds the change, the metric before and after, the KL divergence of the next-token
    distributions (the damage), the mass of the metric's tokens, the direct path's share and notes.

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``, ``batch_size``
    (default 16), ``padding_side``, ``prepend_bos``, ``steer_from``) or ``settings=``, see
    :mod:`steerlens.settings`.

    Example:
        >>> df = attribute_steering(model, vec, prompts, 4.0, logit_diff(" good", " bad"), patch_top=5)
        >>> df.sort_values("rank").head()[["name", "contribution", "share", "patch_into_unsteered"]]
        >>> df.attrs["change"], df.attrs["direct_share"], df.attrs["kl"]
    """
    run = open_run(model, settings, "attribute_steering", _USES, batch_size=16)
    backend = run.backend
    backend.check_tokenizer()
    reader = component_reader(backend)
    prompt_list = check_prompt_inputs(prompts)
    if isinstance(patch_top, bool) or not isinstance(patch_top, int) or patch_top < 0:
        raise InvalidArgumentError(f"patch_top must be a non-negative int, got {patch_top!r}.")
    if heads is not None and not isinstance(heads, bool):
        raise InvalidArgumentError(f"heads must be True, False or None, got {heads!r}.")
    cell = _Cell(*_steered_layers(backend, vector, layers), multiplier)
    sites = _sites(reader, cell, heads, patch_top, backend.n_layers)
    metric = bind_metric(_as_metric(metric_or_targets), backend.tokenizer, prompt_list)
    done, damage = _measured(run, prompt_list, cell, sites, metric, freeze_norm=freeze_norm)
    _merge_heads(done)
    notes = _notes(sites, heads, done)
    frame = _per_prompt_frame(done)
    patched: dict[Key, dict[str, list[tuple[int, float]]]] = {}
    if patch_top:
        patched = _patch_top(reader, done, frame, patch_top, metric, cell)
    out = frame if per_prompt else _mean_frame(frame)
    _add_patches(out, patched, per_prompt)
    changes = torch.cat([b.change for b in done])
    mean_change = float(changes.mean())
    direct_total = float(frame[frame.component == "direct"].contribution.sum()) / len(prompt_list)
    out.attrs.update(
        {
            "metric": metric.name,
            "multiplier": float(multiplier),
            "layers": sorted(cell.vectors),
            "layer_type": cell.layer_type,
            "route": backend.kind,
            "change": mean_change,
            "change_std": float(changes.std()) if len(changes) > 1 else 0.0,
            "metric_unsteered": float(torch.cat([b.value_unsteered for b in done]).mean()),
            "metric_steered": float(torch.cat([b.value_steered for b in done]).mean()),
            "kl": sum(damage["kl"]) / len(damage["kl"]),
            "metric_mass_unsteered": sum(damage["mass_unsteered"]) / len(prompt_list),
            "metric_mass_steered": sum(damage["mass_steered"]) / len(prompt_list),
            "direct_share": direct_total / mean_change if mean_change else float("nan"),
            "freeze_norm": bool(freeze_norm),
            "n_prompts": len(prompt_list),
            "notes": notes,
        }
    )
    return out


# -- which layers, which components -------------------------------------------------------


def _steered_layers(backend: Any, vector: SteeringVector, layers: Layers) -> tuple[dict[int, Tensor], str]:
    """The one cell's ``{layer: direction}`` (non-negative keys) and its layer type, checked against the model."""
    if not isinstance(vector, SteeringVector):
        raise InvalidArgumentError(f"vector must be a SteeringVector, got {type(vector).__name__}.")
    groups, vectors = vector_groups(vector, "joint" if layers is None else layers, backend.n_layers)
    if layers is None and len(groups[0]) > 1:
        raise LayerError(
            f"this vector has layers {list(groups[0])}; attribution explains one steered cell: pass layers=L for one "
            "of them, or layers=[[a, b]] (or 'joint') to steer several together."
        )
    if len(groups) != 1:
        raise LayerError(
            f"layers={layers!r} asks for {len(groups)} cells; attribution explains one: pass one layer, or one group "
            "of layers steered together (e.g. [[2, 3]])."
        )
    layer_type = vector.layer_type
    if layer_type not in _ENTRY:
        raise LayerError(
            f"cannot attribute a vector at layer_type {layer_type!r}: it is a Hugging Face module's output, not a "
            f"site of the residual stream; train at one of {', '.join(_ENTRY)}."
        )
    chosen = {layer: vectors[layer] for layer in groups[0]}
    backend.check_vector(chosen, layer_type)
    return chosen, layer_type


def _components(vectors: dict[int, Tensor], layer_type: str, n_layers: int, has_mlp: bool) -> list[tuple[int, str]]:
    """``(layer, "attn" | "mlp")`` of every component that can see the steered value, in forward order."""
    offset, kind, _ = _ENTRY[layer_type]
    first = min(2 * (layer + offset) + (kind == "mlp") for layer in vectors)
    out = []
    for layer in range(n_layers):
        for index, name in ((2 * layer, "attn"), (2 * layer + 1, "mlp")):
            if index >= first and (name == "attn" or has_mlp):
                out.append((layer, name))
    return out


def _sites(reader: ComponentReader, cell: _Cell, heads: bool | None, patch_top: int, n_layers: int) -> _Sites:
    """The components after ``cell``'s site (per head where asked and exposed), and what patching will resume from."""
    components = _components(cell.vectors, cell.layer_type, n_layers, reader.has_mlp)
    comp_layers = sorted({layer for layer, _ in components})
    head_layers = set(reader.head_layers(comp_layers)) if heads is not False else set()
    start = min(cell.vectors)
    kept = tuple(sorted({layer for layer in comp_layers if layer > start})) if patch_top else ()
    return _Sites(reader, components, comp_layers, head_layers, kept)


# -- measuring ---------------------------------------------------------------------------------


def _measured(
    run: Run, prompt_list: list[Any], cell: _Cell, sites: _Sites, metric: BoundMetric, *, freeze_norm: bool
) -> tuple[list[_Batch], dict[str, list[float]]]:
    """Every batch's split, and the damage per prompt (KL, the metric's tokens' mass unsteered and steered)."""
    prepared = run.prepare(prompt_list)
    starts = run.starts(prepared.encoded)
    done: list[_Batch] = []
    damage: dict[str, list[float]] = {"kl": [], "mass_unsteered": [], "mass_steered": []}
    for batch in prepared.batches(run.batch_size):
        first: int | Tensor = 0 if starts is None else torch.tensor([starts[i] for i in batch.indices])
        spec = make_spec(cell.vectors, cell.layer_type, cell.multiplier, None, first, None)
        measured = _measured_batch(sites, batch, spec, cell, metric, freeze_norm=freeze_norm)
        done.append(measured)
        damage["kl"] += kl_divergence(measured.steered.logits, measured.unsteered.logits).tolist()
        damage["mass_unsteered"] += _mass(metric, measured.unsteered.logits, batch.indices)
        damage["mass_steered"] += _mass(metric, measured.steered.logits, batch.indices)
    return done, damage


def _measured_batch(
    sites: _Sites, batch: PromptBatch, spec: SteeringSpec, cell: _Cell, metric: BoundMetric, *, freeze_norm: bool
) -> _Batch:
    """One batch's unsteered and steered passes, the metric's change and its split over the parts."""
    reader, start = sites.reader, min(cell.vectors)
    # The steered pass resumes where steering starts; patching passes where their part is.
    unsteered = reader.run(batch, None, sites.comp_layers, keep=tuple(sorted({start, *sites.kept} - {0})))
    steered = reader.run(batch, spec, sites.comp_layers, keep=sites.kept, resume=(start, unsteered) if start else None)
    value_st, grad = _value_and_grad(metric, steered.logits, batch.indices)
    value_un = _values(metric, unsteered.logits, batch.indices)
    baseline = value_un
    if freeze_norm:
        frozen = reader.head(unsteered.resid, unsteered, scale=steered.scale)
        baseline = _values(metric, frozen, batch.indices)
    readout = reader.readout(steered, grad).double()
    parts: dict[Key, Tensor] = {}
    if _ENTRY[cell.layer_type][2]:  # the vector itself enters the residual stream
        for layer, vec in sorted(cell.vectors.items()):
            parts[("direct", layer, None)] = float(cell.multiplier) * (readout @ vec.to(readout))
    batch_heads = sites.head_layers & set(steered.z) & set(unsteered.z)
    for layer, kind in sites.components:
        if kind == "attn" and layer in batch_heads:
            delta = (steered.z[layer] - unsteered.z[layer]).double()
            outputs = torch.einsum("bhd,hdm->bhm", delta, reader.head_weights(layer).double().to(delta.device))
            for head, values in enumerate(torch.einsum("bhm,bm->hb", outputs, readout)):
                parts[("head", layer, head)] = values
        else:
            runs = (steered.attn, unsteered.attn) if kind == "attn" else (steered.mlp, unsteered.mlp)
            parts[(kind, layer, None)] = ((runs[0][layer] - runs[1][layer]).double() * readout).sum(-1)
    change = value_st - baseline
    parts[("residual", -1, None)] = change - sum(parts.values())
    return _Batch(
        batch=batch,
        spec=spec,
        steered=steered,
        unsteered=unsteered,
        value_steered=value_st,
        value_unsteered=value_un,
        change=change,
        parts=parts,
    )


# -- the metric ------------------------------------------------------------------------------


def _values(metric: BoundMetric, logits: Tensor, indices: list[int]) -> Tensor:
    with torch.no_grad():
        return (
            metric_rows(metric.fn, metric.bound, logits.float(), logits.float(), indices).detach().double().reshape(-1)
        )


def _value_and_grad(metric: BoundMetric, logits: Tensor, indices: list[int]) -> tuple[Tensor, Tensor]:
    """The metric per row and its gradient with respect to the logits."""
    with torch.enable_grad():
        x = logits.detach().float().requires_grad_(True)
        values = metric_rows(metric.fn, metric.bound, x, x, indices).reshape(-1)
        (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach().double(), grad


def _mass(metric: BoundMetric, logits: Tensor, indices: list[int]) -> list[float]:
    """Per row: the next-token probability of all the metric's tokens together."""
    probs = torch.softmax(logits.float(), -1)
    out = []
    for row, index in enumerate(indices):
        ids = (metric.bound[index] if metric.bound is not None else metric.fn).ids  # type: ignore[union-attr]
        flat = sorted({i for group in ids for i in group})
        out.append(float(probs[row, flat].sum()))
    return out


# -- frames ------------------------------------------------------------------------------------


def _merge_heads(done: list[_Batch]) -> None:
    """A layer read per head in some batches only (a failed per-head check) becomes one ``attn`` row everywhere."""
    everywhere = set.intersection(*({k[1] for k in b.parts if k[0] == "head"} for b in done))
    for b in done:
        for layer in sorted({k[1] for k in b.parts if k[0] == "head"} - everywhere):
            keys = [k for k in b.parts if k[0] == "head" and k[1] == layer]
            b.parts[("attn", layer, None)] = sum(b.parts.pop(k) for k in keys)


def _notes(sites: _Sites, heads: bool | None, done: list[_Batch]) -> list[str]:
    """What is coarser than asked (attention per layer where heads were wanted), also as warnings."""
    reader, components = sites.reader, sites.components
    notes = []
    per_head = {k[1] for k in done[0].parts if k[0] == "head"}
    attn_layers = [layer for layer, kind in components if kind == "attn"]
    if heads is not False and set(attn_layers) - per_head:
        missing = sorted(set(attn_layers) - per_head)
        note = (
            f"attention is split per layer, not per head, at layers {missing}: "
            f"{reader.heads_note or 'the per-head outputs did not add up to the attention output'}"
        )
        notes.append(note)
        warnings.warn(note, AttributionWarning, stacklevel=3)
    head_note = getattr(reader, "head_note", "")
    if head_note:
        notes.append(head_note)
        warnings.warn(head_note, AttributionWarning, stacklevel=3)
    return notes


def _name(component: str, layer: int, head: int | None) -> str:
    if component == "head":
        return f"L{layer}H{head}"
    if component == "residual":
        return "residual"
    return {"direct": f"direct@{layer}", "attn": f"attn{layer}", "mlp": f"mlp{layer}"}[component]


def _per_prompt_frame(done: list[_Batch]) -> pd.DataFrame:
    rows = []
    for b in done:
        for (component, layer, head), values in b.parts.items():
            for row, index in enumerate(b.batch.indices):
                change = float(b.change[row])
                value = float(values[row])
                rows.append(
                    {
                        "prompt_index": index,
                        "component": component,
                        "layer": layer if component != "residual" else None,
                        "head": head,
                        "name": _name(component, layer, head),
                        "contribution": value,
                        "share": value / change if change else float("nan"),
                        "_order": (_KIND_ORDER[component], 0) if component in ("direct", "residual") else (1, layer),
                        "_sub": (component == "mlp", -1 if head is None else head),
                    }
                )
    frame = pd.DataFrame(rows)
    frame = frame.sort_values(["_order", "_sub", "prompt_index"], kind="stable", ignore_index=True)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["head"] = frame["head"].astype("Int64")
    frame.attrs["change_by_prompt"] = {
        int(i): float(c) for b in done for i, c in zip(b.batch.indices, b.change.tolist())
    }
    return frame.drop(columns=["_order", "_sub"])


def _mean_frame(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["component", "layer", "head", "name"]
    grouped = frame.groupby(keys, sort=False, dropna=False).contribution
    out = pd.DataFrame(
        {"contribution": grouped.mean(), "contribution_std": grouped.std().fillna(0.0), "n_prompts": grouped.size()}
    ).reset_index()
    mean_change = sum(frame.attrs["change_by_prompt"].values()) / len(frame.attrs["change_by_prompt"])
    out["share"] = out.contribution / mean_change if mean_change else float("nan")
    ranked = out[out.component != "residual"].contribution.abs().rank(ascending=False, method="first")
    out["rank"] = pd.array([pd.NA] * len(out), dtype="Int64")
    out.loc[ranked.index, "rank"] = ranked.astype(int).to_numpy()
    return out[["component", "layer", "head", "name", "contribution", "contribution_std", "share", "rank", "n_prompts"]]


# -- patching ---------------------------------------------------------------------------------


def _patch_top(
    reader: Any,
    done: list[_Batch],
    frame: pd.DataFrame,
    k: int,
    metric: BoundMetric,
    cell: _Cell,
) -> dict[Key, dict[str, list[tuple[int, float]]]]:
    """For the k largest parts: per prompt, the metric moved by patching that part at the read token."""
    means = frame[frame.component != "residual"].groupby(["component", "layer", "head"], dropna=False).contribution
    sizes = means.mean().abs().sort_values(ascending=False, kind="stable")
    top = [(c, int(layer), None if pd.isna(head) else int(head)) for c, layer, head in sizes.index[:k]]
    out: dict[Key, dict[str, list[tuple[int, float]]]] = {}
    for key in top:
        effects: dict[str, list[tuple[int, float]]] = {"patch_into_unsteered": [], "patch_into_steered": []}
        for b in done:
            into_un, into_st = _patched_logits(reader, b, key, cell)
            up = _values(metric, into_un, b.batch.indices) - b.value_unsteered
            down = b.value_steered - _values(metric, into_st, b.batch.indices)
            effects["patch_into_unsteered"] += list(zip(b.batch.indices, up.tolist()))
            effects["patch_into_steered"] += list(zip(b.batch.indices, down.tolist()))
        out[key] = effects
    return out


def _patched_logits(reader: Any, b: _Batch, key: Key, cell: _Cell) -> tuple[Tensor, Tensor]:
    """Logits of the unsteered run with the part's steered value, and of the steered run with its unsteered value."""
    component, layer, head = key
    st, un = b.steered, b.unsteered
    if component == "direct":
        added = float(cell.multiplier) * cell.vectors[layer].to(st.resid)
        return reader.head(un.resid + added, un), reader.head(st.resid - added, st)
    if component == "head":
        into_un = Patch("head", layer, head, st.z[layer][:, head])
        into_st = Patch("head", layer, head, un.z[layer][:, head])
    else:
        runs = (st.attn, un.attn) if component == "attn" else (st.mlp, un.mlp)
        into_un = Patch(component, layer, None, runs[0][layer])  # type: ignore[arg-type]
        into_st = Patch(component, layer, None, runs[1][layer])  # type: ignore[arg-type]
    return (
        reader.run(b.batch, None, [], patch=into_un, resume=(layer, un) if layer in un.states else None).logits,
        reader.run(b.batch, b.spec, [], patch=into_st, resume=(layer, st) if layer in st.states else None).logits,
    )


def _add_patches(out: pd.DataFrame, patched: dict[Key, dict[str, list[tuple[int, float]]]], per_prompt: bool) -> None:
    if not patched:
        return
    for column in ("patch_into_unsteered", "patch_into_steered"):
        values = []
        for component, layer, head, *rest in out[["component", "layer", "head"]].itertuples(index=False):
            key = (component, -1 if pd.isna(layer) else int(layer), None if pd.isna(head) else int(head))
            effects = patched.get(key)
            if effects is None:
                values.append(float("nan"))
            elif per_prompt:
                values.append(dict(effects[column]).get(int(out.prompt_index.iloc[len(values)]), float("nan")))
            else:
                values.append(sum(v for _, v in effects[column]) / len(effects[column]))
        out[column] = values


# -- plot --------------------------------------------------------------------------------------


def plot_attribution(frame: pd.DataFrame, top: int = 12, *, kind: str = "bar", title: str | None = None) -> Any:
    """Bar chart of the largest parts of a steering effect (``kind="bar"``), or a layer × head heatmap (``"heads"``).

    ``frame`` is :func:`attribute_steering`'s (per-prompt frames are averaged). The bar chart shows
    the ``top`` parts by size and the residual, with the patching figures as markers when the frame
    has them; the heatmap shows each head's contribution (and each MLP's, in the last column).

    Example:
        >>> fig = plot_attribution(attribute_steering(model, vec, prompts, 4.0, logit_diff(" good", " bad")))
        >>> fig.savefig("attribution.png")
    """
    from steerlens.evaluation.plots import _figure

    if "contribution" not in frame.columns or "component" not in frame.columns:
        raise InvalidArgumentError("pass the DataFrame attribute_steering returns (columns component, contribution).")
    if kind not in ("bar", "heads"):
        raise InvalidArgumentError(f"kind must be 'bar' or 'heads', got {kind!r}.")
    if "prompt_index" in frame.columns:
        columns = [c for c in ("contribution", "patch_into_unsteered", "patch_into_steered") if c in frame.columns]
        keys = ["component", "layer", "head", "name"]
        frame = frame.groupby(keys, sort=False, dropna=False)[columns].mean().reset_index()
    metric = frame.attrs.get("metric", "metric")
    change = frame.attrs.get("change")
    heading = title or (
        f"{metric} change {change:+.3g}, split over components" if change is not None else f"{metric}: contributions"
    )
    if kind == "heads":
        return _heads_heatmap(frame, heading, _figure)
    parts = frame[frame.component != "residual"]
    chosen = parts.reindex(parts.contribution.abs().sort_values(ascending=False).index[:top])
    chosen = pd.concat([chosen, frame[frame.component == "residual"]])
    fig = _figure(figsize=(6.4, 0.9 + 0.32 * len(chosen)), layout="constrained")
    ax = fig.add_subplot()
    positions = list(range(len(chosen)))[::-1]
    colours = [
        "#888888" if c == "residual" else ("#c0504d" if v < 0 else "#4f81bd")
        for c, v in zip(chosen.component, chosen.contribution)
    ]
    ax.barh(positions, chosen.contribution.to_numpy(dtype=float), color=colours, label="contribution")
    ax.set_yticks(positions, list(chosen["name"]))
    for column, marker in (("patch_into_unsteered", "o"), ("patch_into_steered", "x")):
        if column in chosen.columns:
            ax.scatter(
                chosen[column].to_numpy(dtype=float),
                positions,
                marker=marker,
                color="black",
                zorder=3,
                label=column.replace("_", " "),
            )
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(f"contribution to the change of {metric}")
    ax.set_title(heading)
    if any(c in chosen.columns for c in ("patch_into_unsteered", "patch_into_steered")):
        ax.legend(loc="best", fontsize="small")
    return fig


def _heads_heatmap(frame: pd.DataFrame, heading: str, figure: Any) -> Any:
    import numpy as np

    heads = frame[frame.component == "head"]
    attn = frame[frame.component == "attn"]
    mlps = frame[frame.component == "mlp"]
    layers = sorted({int(x) for x in pd.concat([heads.layer, attn.layer, mlps.layer]).dropna()})
    if not layers:
        raise InvalidArgumentError("the frame has no head, attention or MLP rows to draw.")
    n_heads = int(heads["head"].max()) + 1 if len(heads) else 0
    labels = [f"H{h}" for h in range(n_heads)] + (["attn"] if len(attn) else []) + (["MLP"] if len(mlps) else [])
    grid = np.full((len(layers), len(labels)), np.nan)
    row = {layer: i for i, layer in enumerate(layers)}
    for layer, head, value in heads[["layer", "head", "contribution"]].itertuples(index=False):
        grid[row[int(layer)], int(head)] = value
    for offset, part in ((n_heads, attn), (len(labels) - 1, mlps)):
        for layer, value in part[["layer", "contribution"]].itertuples(index=False):
            grid[row[int(layer)], offset] = value
    fig = figure(figsize=(1.5 + 0.45 * len(labels), 1.2 + 0.3 * len(layers)), layout="constrained")
    ax = fig.add_subplot()
    bound = float(np.nanmax(np.abs(grid))) or 1.0
    image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(heading)
    fig.colorbar(image, ax=ax, label="contribution")
    return fig


__all__ = ["AttributionWarning", "attribute_steering", "plot_attribution", "target_logprob"]
