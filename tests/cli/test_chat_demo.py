"""The chat demo's choices: the best cell without damage, and the behaviour table's verdict.

The demo itself runs on SmolLM2 in ``tests/test_real_model.py``; these check its choices on hand-made frames.
"""

from __future__ import annotations

import pandas as pd

from steerlens.cli.chat_demo import behaviour_table, best_undamaged_cell


def sweep_frame(cells: dict[tuple[int, float], tuple[float, float, bool]]) -> pd.DataFrame:
    """``{(layer, multiplier): (share, kl, degenerate)}`` as a sweep frame."""
    return pd.DataFrame(
        [
            {"layer": layer, "multiplier": m, "share": share, "kl": kl, "degenerate": bad}
            for (layer, m), (share, kl, bad) in cells.items()
        ]
    )


CELLS = {
    (9, -0.2): (0.1, 0.5, False),
    (9, -0.1): (0.3, 0.1, False),
    (9, 0.0): (0.5, 0.0, False),
    (9, 0.1): (0.7, 0.1, False),
    (9, 0.2): (0.9, 0.5, False),  # swing 0.8
    (12, -0.2): (0.0, 3.0, False),
    (12, -0.1): (0.2, 0.2, False),
    (12, 0.0): (0.5, 0.0, False),
    (12, 0.1): (0.75, 0.2, False),  # swing 0.55
    (12, 0.2): (1.0, 3.0, True),  # swing 1.0, but degenerate and KL 3
}


def test_the_widest_swing_within_the_kl_limit_and_not_degenerate():
    sweep = sweep_frame(CELLS)
    assert best_undamaged_cell(sweep, "share", max_kl=1.0) == (9, 0.2)
    assert best_undamaged_cell(sweep, "share", max_kl=0.3) == (12, 0.1)  # 9 at 0.2 now costs too much
    assert best_undamaged_cell(sweep, "share", max_kl=0.05) == (9, 0.1)  # nothing qualifies: the smallest strength
    no_flags = sweep_frame({k: (s, 0.0, False) for k, (s, _, _) in CELLS.items()})
    assert best_undamaged_cell(no_flags, "share", max_kl=1.0) == (12, 0.2)


def ab_frame(p: dict[int, dict[float, float]], base: dict[int, float]) -> pd.DataFrame:
    rows = []
    for layer, by_m in p.items():
        for m, value in by_m.items():
            for item in range(2):
                rows.append(
                    {
                        "layer": layer,
                        "multiplier": m,
                        "item": item,
                        "p_matching_steered": value,
                        "p_matching_unsteered": base[layer],
                        "ab_mass_steered": 0.9,
                        "ab_mass_unsteered": 0.95,
                        "kl": abs(m),
                    }
                )
    return pd.DataFrame(rows)


def test_the_behaviour_table_says_where_the_vector_does_not_steer():
    ab = ab_frame({9: {-0.2: 0.3, 0.2: 0.7}, 12: {-0.2: 0.49, 0.2: 0.52}}, {9: 0.5, 12: 0.5})
    text = behaviour_table(ab)
    lines = text.splitlines()
    assert "layer 9: moves P(matching) by +0.400 between -0.2 and +0.2" in lines
    assert lines[-1].startswith("layer 12: does not steer this behaviour here (P(matching) 0.490 / 0.500 / 0.520")
    # A large effect whose unsteered value is outside the steered range is no steering either.
    odd = behaviour_table(ab_frame({9: {-0.2: 0.3, 0.2: 0.7}}, {9: 0.8}))
    assert "layer 9: does not steer" in odd
    assert "unsteered" in lines[1] and "0.950" in text and "0.900" in text  # the letters' mass beside the effect
