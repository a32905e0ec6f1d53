"""Progress for long measuring calls: cells done, cells left and an estimate of the time left.

Every verb that steers many cells (sweeps, comparisons, calibration, steerability)
takes ``show_progress``: ``True`` shows a bar at once, ``False`` never, and ``None``
(the default) shows it only once the call has run for :data:`AUTO_DELAY_SECONDS`, so
quick calls stay quiet and a long one is never silent. The bar counts cells (one
layer or group × one multiplier × one batch of prompts), so its estimate of the time
left is the cells left at the pace so far.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

AUTO_DELAY_SECONDS: float = 3.0
"""With ``show_progress=None``, a bar appears once a call has run this long."""


def progress_bar(total: int, desc: str, show: bool | None = None, unit: str = "cell") -> Any:
    """A tqdm bar over ``total`` cells: shown now (True), never (False), or after a few seconds (None).

    Example:
        >>> bar = progress_bar(70, "Sweeping", None)
        >>> bar.update(1); bar.close()
    """
    return tqdm(total=total, desc=desc, unit=unit, disable=show is False, delay=0 if show else AUTO_DELAY_SECONDS)
