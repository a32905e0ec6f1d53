"""Attach a Hugging Face tokenizer to a ``HookedTransformer`` without side effects.

``HookedTransformer.set_tokenizer`` may reload the tokenizer by its ``name_or_path``
(a hub download, which fails offline and for tokenizers built in memory) and mutates
it (pad/bos tokens, padding side). steerlens instead attaches a private copy and sets
the same model fields ``set_tokenizer`` would, so the user's tokenizer is never touched.
"""

from __future__ import annotations

import copy as copying

from transformers import PreTrainedTokenizerBase

from steerlens._tl import HookedTransformer
from steerlens.errors import TokenizerError


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, d_vocab: int, copy: bool = True) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` with the pad/bos tokens TransformerLens relies on.

    ``copy=False`` prepares ``tokenizer`` itself: for one the loader has just read and nobody
    else holds (a deep copy of a 50k-token tokenizer costs about as long as reading it).

    Raises :class:`TokenizerError` if it is not a HF tokenizer, if its ids do not fit a
    vocabulary of ``d_vocab`` rows, or if it has no token that could serve as padding.

    Example:
        >>> tok = prepare_tokenizer(AutoTokenizer.from_pretrained("my/folder"), d_vocab=128)
    """
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TokenizerError(
            f"tokenizer must be a transformers tokenizer (PreTrainedTokenizerBase), got {type(tokenizer).__name__}."
        )
    largest_id = max(tokenizer.get_vocab().values(), default=-1)
    if largest_id >= d_vocab:
        raise TokenizerError(
            f"the tokenizer produces token id {largest_id} but the model's vocabulary has only "
            f"{d_vocab} rows; pass the tokenizer that belongs to this model."
        )
    tok = copying.deepcopy(tokenizer) if copy else tokenizer
    if tok.pad_token is None:
        fallback = tok.eos_token or tok.bos_token or tok.unk_token
        if fallback is None:
            raise TokenizerError(
                "the tokenizer has no pad, eos, bos or unk token to pad batches with; "
                "set tokenizer.pad_token before loading the model."
            )
        tok.pad_token = fallback
    if tok.bos_token is None and tok.eos_token is not None:
        # Like TransformerLens: models without a BOS token use EOS when prepend_bos=True.
        tok.bos_token = tok.eos_token
    if tok.padding_side is None:
        tok.padding_side = "right"
    return tok


def attach_tokenizer(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase, copy: bool = True) -> None:
    """Give ``model`` a private copy of ``tokenizer`` (see :func:`prepare_tokenizer`; ``copy=False``: ``tokenizer`` itself)."""
    tok = prepare_tokenizer(tokenizer, model.cfg.d_vocab, copy)
    model.tokenizer = tok
    # TL prepends BOS itself when the tokenizer does not; it needs to know which case applies.
    model.cfg.tokenizer_prepends_bos = len(tok.encode("")) > 0
