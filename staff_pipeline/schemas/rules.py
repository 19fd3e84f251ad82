"""Named checks shared by the staging and conformed schemas.

Every check carries its rule name as pandera's ``error`` so a failure turns into a rejected row with
a stable, human-readable reason (``email_format``, ``date_order``...). Checks that need several
columns are written ``rule@column``: the column is the one the rejected row names.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pandera.pandas as pa

EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
# At least six digits; spaces, brackets, dots, slashes and dashes as people type them; optional +.
PHONE_PATTERN = r"^(?=(?:\D*\d){6})\+?[0-9 ()./-]{6,25}$"
STATE_ID_PATTERN = r"^[A-Za-z0-9-]+$"


def email() -> pa.Check:
    return pa.Check.str_matches(EMAIL_PATTERN, error="email_format")


def phone() -> pa.Check:
    return pa.Check.str_matches(PHONE_PATTERN, error="phone_format")


# Names reach two APIs and, through the analysts' copy, spreadsheets: no control characters (NUL,
# terminal escapes, line breaks) and no leading = + - @, which a spreadsheet runs as a formula.
CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*\Z"
FORMULA_PATTERN = r"^[^=+\-@]"


def plain_text() -> list[pa.Check]:
    return [
        pa.Check.str_matches(CONTROL_PATTERN, error="control_character"),
        pa.Check.str_matches(FORMULA_PATTERN, error="formula_prefix"),
    ]


def max_len(limit: int) -> pa.Check:
    return pa.Check.str_length(max_value=limit, error="too_long")


def one_of(values: tuple[str, ...] | list[str]) -> pa.Check:
    return pa.Check.isin(list(values), error="enum")


def row_rule(rule: str, column: str, ok: Callable[[pd.DataFrame], pd.Series]) -> pa.Check:
    """A rule over several columns of a row, reported against ``column``."""
    return pa.Check(ok, error=f"{rule}@{column}")


def parsed(column: str, rule: str) -> pa.Check:
    """The text in ``column`` converted (in SQL, ``TRY_CAST``) to the typed ``column__v``."""
    return row_rule(rule, column, lambda d: d[column].isna() | d[f"{column}__v"].notna())


def flag(rule: str, column: str, flag_column: str) -> pa.Check:
    """A lookup done in SQL (known school, known role) whose boolean result is ``flag_column``."""
    return row_rule(rule, column, lambda d: d[flag_column].astype(bool))


def ends_after_begins(begin: str, end: str) -> pa.Check:
    """End dates are exclusive, so an end on or before the begin describes no day at all."""
    return row_rule(
        "date_order", end.removesuffix("__v"), lambda d: d[end].isna() | d[begin].isna() | (d[end] > d[begin])
    )
