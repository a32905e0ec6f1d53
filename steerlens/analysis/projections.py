"""Where a concept lives in a text: each token's activation projected on the steering vector.

For every prompt, token and layer, the activation at the vector's hook point
(``resid_post`` by default) is projected on the vector's unit direction at that
layer: how far along the concept the model's representation of that token sits, in
the units of the activation itself. Reading it token by token shows *where* in a
text the concept appears (a sentiment vector lights up at " wonderful" and goes
dark at " awful") and at which layers. :func:`projections_html` colours the tokens
for a notebook; :func:`steerlens.evaluation.plots.plot_token_projections` draws the
same for static documents.
"""

from __future__ import annotations

import html
from typing import Any, Iterable

import numpy as np
import pandas as pd
from typing_extensions import Unpack

from steerlens.analysis.prompt_activations import (
    as_cpu,
    iter_prompt_activations,
    unit,
    vector_layers,
)
from steerlens.errors import InvalidArgumentError
from steerlens.settings import PROMPT_READING, Run, SettingsKeywords, open_run
from steerlens.tokens import Prompts
from steerlens.vector import SteeringVector

COLUMNS = ["prompt_index", "prompt", "position", "token_id", "token", "is_bos", "layer", "projection", "cosine"]


def token_projections(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts,
    layers: int | Iterable[int] | None = None,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """One row per (prompt, token position, layer): the activation's projection on the unit vector.

    Columns: ``prompt_index, prompt, position`` (0 = first token, BOS included when
    the model adds one), ``token_id, token`` (its text), ``is_bos``, ``layer``, ``projection``
    (``activation · vector / |vector|``, in activation units) and ``cosine`` (the
    same divided by the activation's norm: direction only). ``layers`` defaults to
    every layer of the vector (negative layers count from the end); the activation is
    read at ``vector.layer_type``. Prompts are strings (chat templates too) or token ids.
    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 32), ``padding_side``, ``prepend_bos`` (None: the model's default;
    see :class:`~steerlens.tokens.TokenPolicy`)) or ``settings=``, see :mod:`steerlens.settings`.
    Works on HookedTransformers and Hugging Face models (pass ``tokenizer``).

    Example:
        >>> df = token_projections(model, vec, ["The food was wonderful", "The food was awful"], layers=[2])
        >>> df.pivot(index="position", columns="prompt_index", values="projection")
    """
    run = open_run(model, settings, "token_projections", PROMPT_READING, batch_size=32)
    return projection_frame(run, vector, prompts, layers)


def projection_frame(
    run: Run, vector: SteeringVector, prompts: Prompts, layers: int | Iterable[int] | None = None
) -> pd.DataFrame:
    """:func:`token_projections` on ``run``'s model, prompts read and batched as its settings say."""
    backend = run.backend
    prepared = run.prepare(prompts)
    prompt_list = prepared.prompts
    directions = vector_layers(backend, vector, layers)
    units = {layer: unit(direction, layer).to(backend.device) for layer, direction in directions.items()}
    rows: list[dict[str, Any]] = []
    decode = _decoder(backend.tokenizer)
    for item in iter_prompt_activations(backend, prepared, list(units), vector.layer_type, run.batch_size):
        texts = [decode(i) for i in item.token_ids]
        for layer, direction in units.items():
            acts = item.acts[layer]
            projection = as_cpu(acts @ direction.to(acts.device)).numpy()
            norms = as_cpu(acts.norm(dim=-1)).numpy()
            cosine = np.divide(projection, norms, out=np.zeros_like(projection), where=norms > 0)
            for position, (token_id, text) in enumerate(zip(item.token_ids, texts)):
                rows.append(
                    {
                        "prompt_index": item.index,
                        "prompt": prompt_list[item.index],
                        "position": position,
                        "token_id": token_id,
                        "token": text,
                        "is_bos": item.bos and position == 0,
                        "layer": layer,
                        "projection": float(projection[position]),
                        "cosine": float(cosine[position]),
                    }
                )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.sort_values(["prompt_index", "layer", "position"], ignore_index=True)
    frame.attrs["layer_type"] = vector.layer_type
    return frame


def _decoder(tokenizer: Any) -> Any:
    """Token id -> its text (``" film"``), special tokens shown as they are named."""

    def decode(token_id: int) -> str:
        return tokenizer.decode([token_id])

    return decode


def select_layer(frame: pd.DataFrame, layer: int | None, value: str) -> tuple[pd.DataFrame, int]:
    """The rows of one layer (the only one, or ``layer``) of a token_projections frame, and that layer."""
    missing = [c for c in ("prompt_index", "position", "token", "layer", value) if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(
            f"the frame has no column(s) {missing}; pass a token_projections DataFrame (columns {list(frame.columns)})."
        )
    layers = sorted(frame["layer"].unique())
    if layer is None:
        if len(layers) != 1:
            raise InvalidArgumentError(f"the frame holds layers {layers}; pass layer=... to pick one.")
        layer = int(layers[0])
    if layer not in layers:
        raise InvalidArgumentError(f"layer {layer} is not in the frame; it has {layers}.")
    return frame[frame["layer"] == layer], int(layer)


def projection_colour(value: float, bound: float, css: bool = True) -> Any:
    """Colour of a projection: blue for negative, red for positive, white at zero, by ``|value| / bound``.

    A CSS string, or with ``css=False`` an ``(r, g, b)`` tuple in 0..1 (for matplotlib).

    Example:
        >>> projection_colour(1.0, 2.0)
        'rgb(255,128,128)'
    """
    strength = 0.0 if bound <= 0 else min(abs(value) / bound, 1.0)
    fade = int(round(255 * (1 - strength)))
    rgb = (255, fade, fade) if value > 0 else (fade, fade, 255)
    return "rgb({},{},{})".format(*rgb) if css else tuple(c / 255 for c in rgb)


def projections_html(
    frame: pd.DataFrame,
    layer: int | None = None,
    *,
    value: str = "projection",
    bound: float | None = None,
    show_bos: bool = False,
) -> str:
    """HTML with one line per prompt, each token's background coloured by its projection.

    Red is positive (towards the concept), blue negative, white zero; ``bound`` is the
    value that gets full colour (default: the largest ``|value|`` shown, BOS
    excluded unless ``show_bos``). Hovering a token shows its value. The string is
    what ``IPython.display.HTML`` takes; it also renders as it is in any browser.

    Example:
        >>> from IPython.display import HTML
        >>> HTML(projections_html(token_projections(model, vec, prompts, layers=[2])))
    """
    rows, layer = select_layer(frame, layer, value)
    if not show_bos and "is_bos" in rows:
        rows = rows[~rows["is_bos"].astype(bool)]
    if bound is None:
        bound = float(rows[value].abs().max()) if len(rows) else 1.0
    lines = []
    for _, tokens in rows.groupby("prompt_index", sort=True):
        spans = []
        for token, x in zip(tokens["token"], tokens[value]):
            text = html.escape(str(token)).replace(" ", "&nbsp;").replace("\n", "↵")
            spans.append(
                f'<span title="{x:.3f}" style="background:{projection_colour(float(x), bound)};'
                f'padding:1px 0;border-radius:2px">{text}</span>'
            )
        lines.append(f'<div style="font-family:monospace;line-height:1.9">{"".join(spans)}</div>')
    legend = (
        f'<div style="font-size:smaller;color:#555">{html.escape(value)} at layer {layer} '
        f"({html.escape(str(frame.attrs.get('layer_type', '')))}); full colour at ±{bound:.3g}: "
        f'<span style="background:{projection_colour(1, 1)}">&nbsp;positive&nbsp;</span> '
        f'<span style="background:{projection_colour(-1, 1)}">&nbsp;negative&nbsp;</span></div>'
    )
    return f"<div>{legend}{''.join(lines)}</div>"
