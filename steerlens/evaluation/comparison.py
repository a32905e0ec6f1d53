"""Steered against unsteered next-token distributions, prompt by prompt.

:func:`compare_logits` reports, for each prompt × layer × multiplier, the KL
divergence, the change in log-probability of chosen tokens and the top-k tokens
before and after steering. :func:`ab_behavior_probability` scores multiple-choice
items in the format of contrastive activation addition (CAA): the probability
of the answer letter that matches the behaviour.

Every value is read at each prompt's last real token, with each layer of the
vector applied alone at every position, or groups of layers together
(``layers="joint"``, ``layers=[[2, 3], 4]``; see :func:`steerlens.sweep.iter_steered_logits`).
Target tokens and answer letters are encoded in the context of their prompt: the
token that really follows it (:mod:`steerlens.tokens.targets`), so a SentencePiece
``"A"`` after ``"("`` is ``A``, not ``▁A``.

Damage is always beside the effect: every row has ``kl``, and where the effect is
taken of named tokens (target tokens, answer letters) their total probability steered
and unsteered and a ``degenerate`` flag, True where that mass fell below
:data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION` (0.1) of its unsteered value:
there a share of the tokens can look decisive while the model says none of them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence, Union

import pandas as pd
import torch
from torch import Tensor

from steerlens.backends import backend_for
from steerlens.checks import check_multipliers, token_id_list
from steerlens.errors import InvalidArgumentError, TargetTokenError
from steerlens.evaluation.metrics import (
    TokenGroup,
    argmax_changed,
    damage_warning,
    degenerate,
    group_logprob,
    kl_divergence,
    token_ids,
)
from steerlens.evaluation.sweep import LogitsCell, iter_steered_logits
from steerlens.hooks import Operator
from steerlens.samples.chat import answer_letter, caa_record
from steerlens.tokens import (
    PaddingSide,
    PromptInput,
    Prompts,
    check_prompt_inputs,
    single_target_id,
)
from steerlens.tokens.policy import describe
from steerlens.tokens.starts import SteerFrom
from steerlens.vector import Layers, SteeringVector

Targets = Union[Sequence[Union[str, int]], Mapping[str, TokenGroup], None]


def _target_groups(tokenizer: Any, targets: Targets) -> dict[str, TokenGroup]:
    """Column name -> token group; a list names each target by its string (or decoded id)."""
    if targets is None:
        return {}
    if isinstance(targets, Mapping):
        return {str(name): group for name, group in targets.items()}
    items = [targets] if isinstance(targets, (str, int)) else list(targets)
    out: dict[str, TokenGroup] = {}
    for item in items:
        name = item if isinstance(item, str) else token_str(tokenizer, item)
        if name in out:
            raise InvalidArgumentError(f"target {name!r} is listed twice; use a dict to name targets yourself.")
        out[name] = item
    return out


def _target_ids(tokenizer: Any, targets: Targets, prompts: Sequence[Any]) -> list[dict[str, list[int]]]:
    """For each prompt, column name -> the target ids that follow that prompt (checked before any pass)."""
    groups = _target_groups(tokenizer, targets)
    return [{name: token_ids(tokenizer, group, prompt) for name, group in groups.items()} for prompt in prompts]


def token_str(tokenizer: Any, token_id: int) -> str:
    """A token's text; a partial UTF-8 byte (decoded as "\ufffd") gets its vocabulary entry instead."""
    text = tokenizer.decode([token_id])
    return str(tokenizer.convert_ids_to_tokens(token_id)) if "\ufffd" in text else text


def _top_k(tokenizer: Any, probs: Tensor, k: int) -> list[tuple[str, float]]:
    values, ids = probs.topk(k)
    return [(token_str(tokenizer, i), float(p)) for i, p in zip(ids.tolist(), values.tolist())]


def _ordered(rows: dict[tuple, dict[str, Any]]) -> pd.DataFrame:
    """Rows sorted by their (prompt, layer, multiplier) position keys."""
    return pd.DataFrame([rows[key] for key in sorted(rows)])


def _cells(
    model: Any, vector: SteeringVector, prompts: list[Any], layers: Any, multipliers: list[float], **kwargs: Any
) -> Iterator[tuple[tuple[int, int, int], LogitsCell, int, int]]:
    """Yield ``(key, cell, row_in_cell, prompt_index)`` with a sort key in the caller's order."""
    layer_pos: dict[int, int] = {}
    for cell in iter_steered_logits(model, vector, prompts, layers, multipliers, **kwargs):
        lp = layer_pos.setdefault(cell.layer, len(layer_pos))
        mp = multipliers.index(cell.multiplier)
        for row, index in enumerate(cell.indices):
            yield (index, lp, mp), cell, row, index


def compare_logits(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts,
    multipliers: float | Iterable[float] = (1.0,),
    layers: Layers = None,
    target_tokens: Targets = None,
    top_k: int = 5,
    *,
    tokenizer: Any = None,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
    operator: Operator | None = None,
    show_progress: bool | None = None,
    prepend_bos: bool | None = None,
    steer_from: SteerFrom = None,
) -> pd.DataFrame:
    """Steered vs unsteered next-token distribution: one row per prompt × layer × multiplier.

    Columns: ``prompt_index, prompt, layer, multiplier``; ``kl`` = KL(steered ‖
    unsteered) in nats; ``argmax_changed`` (bool); ``top_k_before`` / ``top_k_after``
    = lists of ``(token_str, prob)``, most likely first. For each target ``<name>``:
    ``logprob_before[<name>]``, ``logprob_after[<name>]`` and ``delta_logprob[<name>]``
    (after − before, natural log). With targets, the damage beside them:
    ``target_mass`` and ``target_mass_unsteered`` = the total next-token probability
    of all targets together (each token once), steered and unsteered, and
    ``degenerate`` = ``target_mass < 0.1 * target_mass_unsteered``
    (:data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION`): the targets' log-odds
    there describe a model that no longer says any of them. One warning counts the
    degenerate rows (and says when the targets hold under 1% of the probability even
    unsteered). ``show_progress`` (default None): a bar of cells with the time left,
    shown once the call has run a few seconds.

    ``target_tokens`` is a list of token strings or ids (a target is named by its
    string, an id by its decoded text, see :func:`token_str`) or a dict ``name -> token or list of tokens``;
    a group's probability is the sum of its tokens' probabilities. Each string is the
    token that follows the prompt (encoded in context); a string that is several
    tokens there raises :class:`~steerlens.errors.TargetTokenError` (score such
    strings with :func:`~steerlens.evaluation.continuation.continuation_logprob`).
    ``layers=None`` takes each layer of ``vector`` separately; ``"joint"`` or groups
    (``[[2, 3], 4]``) steer layers together, labelled ``"2+3"``. Prompts are strings
    (chat templates too) or token ids, encoded with ``prepend_bos`` (None: the
    model's default; see :class:`~steerlens.tokens.TokenPolicy`). ``steer_from``: where
    steering starts in each prompt (``"answer"``: from the assistant's turn, as in CAA;
    see :mod:`steerlens.tokens.starts`).

    Example:
        >>> df = compare_logits(model, vec, ["I think the film was"], multipliers=[-4, 4],
        ...                     target_tokens={"positive": [" good", " great"], "negative": [" bad"]})
        >>> df[["multiplier", "kl", "delta_logprob[positive]"]]
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive int, got {top_k!r}.")
    backend = backend_for(model, tokenizer)
    backend.check_tokenizer()
    tok = backend.tokenizer
    prompt_list, mults = check_prompt_inputs(prompts), check_multipliers(multipliers)
    targets = _target_ids(tok, target_tokens, prompt_list)
    rows: dict[tuple, dict[str, Any]] = {}
    for key, cell, row, index in _cells(
        backend,
        vector,
        prompt_list,
        layers,
        mults,
        batch_size=batch_size,
        padding_side=padding_side,
        operator=operator,
        show_progress=show_progress,
        prepend_bos=prepend_bos,
        steer_from=steer_from,
    ):
        rows[key] = _comparison_row(tok, cell, row, prompt_list[index], index, targets[index], top_k)
    frame = _ordered(rows)
    if targets and targets[0]:
        frame["degenerate"] = _flag_and_warn(frame, "target_mass", "target_mass_unsteered", "the target tokens")
    return frame


def _flag_and_warn(frame: pd.DataFrame, steered: str, unsteered: str, tokens: str) -> Any:
    """The ``degenerate`` column of ``frame`` from its two mass columns; one warning if any row is degenerate."""
    flags = degenerate(torch.tensor(frame[steered].to_numpy()), torch.tensor(frame[unsteered].to_numpy())).numpy()
    message = damage_warning(int(flags.sum()), len(frame), float(frame[unsteered].mean()), "rows", tokens)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return flags


def _comparison_row(
    tok: Any, cell: LogitsCell, row: int, prompt: Any, index: int, targets: dict[str, list[int]], top_k: int
) -> dict[str, Any]:
    after, before = cell.steered[row : row + 1], cell.unsteered[row : row + 1]
    lp_after, lp_before = torch.log_softmax(after, -1), torch.log_softmax(before, -1)
    k = min(top_k, after.shape[-1])
    out: dict[str, Any] = {
        "prompt_index": index,
        "prompt": prompt,
        "layer": cell.layer,
        "multiplier": cell.multiplier,
        "kl": float(kl_divergence(after, before)[0]),
        "argmax_changed": bool(argmax_changed(after, before)[0]),
        "top_k_before": _top_k(tok, lp_before[0].exp(), k),
        "top_k_after": _top_k(tok, lp_after[0].exp(), k),
    }
    for name, ids in targets.items():
        b, a = float(group_logprob(lp_before, ids)[0]), float(group_logprob(lp_after, ids)[0])
        out[f"logprob_before[{name}]"] = b
        out[f"logprob_after[{name}]"] = a
        out[f"delta_logprob[{name}]"] = a - b
    if targets:
        every = list(dict.fromkeys(i for ids in targets.values() for i in ids))
        out["target_mass"] = float(lp_after[0, every].exp().sum())
        out["target_mass_unsteered"] = float(lp_before[0, every].exp().sum())
    return out


# -- A/B behaviour items ------------------------------------------------------------

Letter = Literal["A", "B"]


@dataclass(frozen=True)
class ABItem:
    """A two-choice item: ``prompt`` ends right before the answer letter; ``matching`` is "A" or "B".

    ``matching`` is the letter of the answer that shows the behaviour being steered.

    Example:
        >>> ABItem.from_choices("Do you like cats?", "Yes, a lot", "Not at all", matching="A").prompt
        'Do you like cats?\\n\\nChoices:\\n(A) Yes, a lot\\n(B) Not at all\\nAnswer: ('
    """

    prompt: str | list[int]
    """Text (a chat-template string too) or token ids, which the model gets as they are."""
    matching: Letter

    def __post_init__(self) -> None:
        ids = None if isinstance(self.prompt, str) else token_id_list(self.prompt)
        if ids is not None:
            object.__setattr__(self, "prompt", ids)
        if not (isinstance(self.prompt, str) or ids is not None) or not self.prompt:
            raise InvalidArgumentError(
                f"an ABItem needs a non-empty prompt (a string or token ids), got {self.prompt!r:.80}."
            )
        if self.matching not in ("A", "B"):
            raise InvalidArgumentError(f"matching must be 'A' or 'B', got {self.matching!r}.")

    @classmethod
    def from_choices(cls, question: str, choice_a: str, choice_b: str, matching: Letter) -> "ABItem":
        """Build the prompt ``question / Choices: (A) .. (B) .. / Answer: (``."""
        return cls(f"{question}\n\nChoices:\n(A) {choice_a}\n(B) {choice_b}\nAnswer: (", matching)

    @classmethod
    def from_caa(cls, record: Mapping[str, str], template: str = "{question}\nAnswer: (") -> "ABItem":
        """From a CAA dataset record: ``question`` (choices included), ``answer_matching_behavior`` like "(A)"."""
        question, answer = caa_record(record, InvalidArgumentError)
        letter = answer_letter(answer)
        if letter is None:
            raise InvalidArgumentError(f"answer_matching_behavior must be '(A)' or '(B)', got {answer!r}.")
        return cls(template.format(question=question), letter)  # type: ignore[arg-type]


ItemLike = Union[ABItem, Mapping[str, str], tuple[str, str]]


def as_ab_items(items: Iterable[ItemLike]) -> list[ABItem]:
    """Items as :class:`ABItem` (from ABItems, CAA records or ``(prompt, letter)`` pairs)."""
    out = []
    for item in items:
        if isinstance(item, ABItem):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(ABItem.from_caa(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            out.append(ABItem(*item))
        else:
            raise InvalidArgumentError(
                f"an item must be an ABItem, a CAA dict or a (prompt, letter) pair, got {item!r}."
            )
    if not out:
        raise InvalidArgumentError("no items given; pass at least one ABItem.")
    return out


def ab_behavior_probability(
    model: Any,
    vector: SteeringVector,
    items: Iterable[ItemLike],
    multipliers: float | Iterable[float] = (-1.0, 1.0),
    layers: Layers = None,
    *,
    letters: tuple[str | int, str | int] = ("A", "B"),
    tokenizer: Any = None,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
    operator: Operator | None = None,
    show_progress: bool | None = None,
    prepend_bos: bool | None = None,
    steer_from: SteerFrom = None,
) -> pd.DataFrame:
    """Normalised probability of the behaviour-matching answer letter, steered and unsteered.

    For each item × layer × multiplier: ``p_matching_* = P(matching) / (P(A) + P(B))``
    of the next token after the prompt, and ``ab_mass_* = P(A) + P(B)`` (low values
    mean the model is not answering with a letter). Damage beside the effect: ``kl`` =
    KL(steered ‖ unsteered) of the next-token distribution (nats), and ``degenerate`` =
    ``ab_mass_steered < 0.1 * ab_mass_unsteered``
    (:data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION`): steering has moved the
    model off the letters, and ``p_matching_steered`` is a ratio of two vanishing
    probabilities. One warning counts the degenerate rows (and says when the letters
    hold under 1% of the probability even unsteered). ``show_progress`` (default
    None): a bar of cells with the time left, shown once the call has run a few seconds. ``letters`` are the two letters
    (strings or token ids); each string is the token that really follows the item's
    prompt (on a SentencePiece tokenizer ``A`` after ``"("``, not ``▁A``), and a
    :class:`~steerlens.errors.TargetTokenError` names any letter that is not one
    token there. Items are :class:`ABItem`, CAA records (dicts) or ``(prompt,
    letter)`` pairs; prompts may be chat-template strings or token ids, encoded with
    ``prepend_bos`` (None: the model's default). ``layers`` as in :func:`compare_logits` (groups too).
    ``steer_from="answer"`` steers from the assistant's turn on, as CAA does (default:
    every position; see :mod:`steerlens.tokens.starts`).

    Columns: ``item_index, prompt, matching, layer, multiplier, p_matching_unsteered,
    p_matching_steered, ab_mass_unsteered, ab_mass_steered, kl, degenerate``.

    Example:
        >>> df = ab_behavior_probability(model, vec, items, multipliers=[-2, 0, 2])
        >>> df.groupby(["layer", "multiplier"]).p_matching_steered.mean()
    """
    item_list = as_ab_items(items)
    backend = backend_for(model, tokenizer)
    backend.check_tokenizer()
    tok = backend.tokenizer
    prompts = [item.prompt for item in item_list]
    letter_ids = [letter_pair(tok, prompt, letters) for prompt in prompts]
    mults = check_multipliers(multipliers)
    rows: dict[tuple, dict[str, Any]] = {}
    for key, cell, row, index in _cells(
        backend,
        vector,
        prompts,
        layers,
        mults,
        batch_size=batch_size,
        padding_side=padding_side,
        operator=operator,
        show_progress=show_progress,
        prepend_bos=prepend_bos,
        steer_from=steer_from,
    ):
        item = item_list[index]
        choice = 0 if item.matching == "A" else 1
        p_un, mass_un = letter_probability(cell.unsteered[row], letter_ids[index], choice)
        p_st, mass_st = letter_probability(cell.steered[row], letter_ids[index], choice)
        rows[key] = {
            "item_index": index,
            "prompt": item.prompt,
            "matching": item.matching,
            "layer": cell.layer,
            "multiplier": cell.multiplier,
            "p_matching_unsteered": p_un,
            "p_matching_steered": p_st,
            "ab_mass_unsteered": mass_un,
            "ab_mass_steered": mass_st,
            "kl": float(kl_divergence(cell.steered[row : row + 1], cell.unsteered[row : row + 1])[0]),
        }
    frame = _ordered(rows)
    frame["degenerate"] = _flag_and_warn(frame, "ab_mass_steered", "ab_mass_unsteered", "the answer letters")
    return frame


def letter_pair(tokenizer: Any, prompt: PromptInput, letters: tuple[str | int, str | int]) -> list[int]:
    """The ids of the two letters right after ``prompt``; distinct, one token each."""
    if len(letters) != 2:
        raise InvalidArgumentError(f"letters must be two letters (strings or ids), got {letters!r}.")
    ids = [single_target_id(tokenizer, prompt, letter) for letter in letters]
    if ids[0] == ids[1]:
        raise TargetTokenError(
            f"letters {letters!r} are the same token after prompt {describe(prompt)}; pass two different letters."
        )
    return ids


def letter_probability(logits: Tensor, letter_ids: list[int], choice: int) -> tuple[float, float]:
    """(P(choice) / (P(A) + P(B)), P(A) + P(B)) from one row of next-token logits."""
    pair = logits[letter_ids].float()
    normalised = torch.softmax(pair, -1)[choice]
    mass = torch.softmax(logits.float(), -1)[letter_ids].sum()
    return float(normalised), float(mass)
