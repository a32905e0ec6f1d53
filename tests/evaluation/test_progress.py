"""Progress bars of long measuring calls: shown at once, never, or only once a call runs long."""

from __future__ import annotations

import time

import steerlens.evaluation.progress as progress
from steerlens.evaluation.progress import progress_bar


def run(bar, cells: int, pause: float = 0.0) -> None:
    for _ in range(cells):
        time.sleep(pause)
        bar.update(1)
    bar.close()


def test_shown_at_once_with_cells_done_and_total(capsys):
    run(progress_bar(3, "Sweeping", True), 3)
    err = capsys.readouterr().err
    assert "Sweeping" in err and "3/3" in err and "cell" in err


def test_never_shown_when_false(capsys, monkeypatch):
    monkeypatch.setattr(progress, "AUTO_DELAY_SECONDS", 0.0)
    run(progress_bar(3, "Sweeping", False), 3, pause=0.01)
    assert capsys.readouterr().err == ""


def test_by_default_a_quick_call_stays_quiet_and_a_long_one_is_shown(capsys, monkeypatch):
    run(progress_bar(3, "Quick", None), 3)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "AUTO_DELAY_SECONDS", 0.05)
    run(progress_bar(4, "Long", None, unit="batch"), 4, pause=0.04)
    err = capsys.readouterr().err
    assert "Long" in err and "4/4" in err and "batch" in err
