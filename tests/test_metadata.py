"""Metadata tables stay tables whatever the values hold (rejected values are often the odd ones)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from staff_pipeline.metadata import markdown_table


def test_bars_line_ends_and_missing_values_cannot_break_a_table() -> None:
    frame = pd.DataFrame(
        {
            "location": ["a.csv:2", "a.csv:3"],
            "value": ["van|der", "two\nlines\r\nhere"],
            "fte": [1.0, np.nan],
            "begin": [pd.Timestamp("2024-05-17"), pd.NaT],
            "code": ["007", None],
            "leas": [np.array([100001, 100002]), []],  # list columns (stg_eduv_employee_ids.lea_ids)
        }
    )
    lines = markdown_table(frame).value.splitlines()
    assert len(lines) == 2 + len(frame)  # header, rule, one line per row
    assert all(line.count("|") - line.count("\\|") == 7 for line in lines)  # six cells each
    assert "van\\|der" in lines[2] and "2024-05-17 " in lines[2] and "007" in lines[2]
    assert "two⏎lines⏎here" in lines[3] and "nan" not in lines[3] and "NaT" not in lines[3]
