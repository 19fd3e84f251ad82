"""Named checks shared by the staging and conformed schemas, each in both of its engines.

Every check carries its rule name as pandera's ``error`` so a failure turns into a rejected row with
a stable, human-readable reason (``email_format``, ``date_order``...). Checks that need several
columns are written ``rule@column``: the column is the one the rejected row names.

The staging and conformed schemas run over whole tables in DuckDB (:mod:`staff_pipeline.schemas.sql`
compiles them), and over samples with pandera itself. So a check pandera cannot describe in SQL on
its own (a custom function) carries its SQL twin in ``statistics["sql"]``, and patterns are written
for full-string matching in the subset that Python's ``re`` and DuckDB's RE2 read alike (no
lookarounds, no ``\\Z``, ASCII classes): a test holds the two engines to the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pandas as pd
import pandera.pandas as pa

EMAIL_PATTERN = (
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)
# Spaces, brackets, dots, slashes and dashes as people type them; optional +; at least six digits.
PHONE_PATTERN = r"\+?[0-9 ()./-]{6,25}"
PHONE_MIN_DIGITS = 6
STATE_ID_PATTERN = r"[A-Za-z0-9-]+"
# Names reach two APIs and, through the analysts' copy, spreadsheets: no control characters (NUL,
# terminal escapes, line breaks) and no leading = + - @, which a spreadsheet runs as a formula.
CONTROL_PATTERN = r"[^\x00-\x1f\x7f]*"
FORMULA_PREFIXES = "=+-@"
FORMULA_PATTERN = rf"(?s)[^{re.escape(FORMULA_PREFIXES)}].*"


def literal(text: str) -> str:
    """A SQL string literal (DuckDB reads backslashes literally, so only quotes need doubling)."""
    return "'" + text.replace("'", "''") + "'"


def quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def column_rule(rule: str, ok: Callable[[pd.Series], pd.Series], sql: str) -> pa.Check:
    """A check of one column's values; ``sql`` says the same with ``{column}`` for the column."""
    return pa.Check(ok, error=rule, statistics={"sql": sql})


def _bools(matched: pd.Series) -> pd.Series:
    """A missing value matches nothing (pandera lets it through a nullable column on its own)."""
    return matched.fillna(False).astype(bool)


def full_match(pattern: str, rule: str) -> pa.Check:
    return column_rule(
        rule, lambda s: _bools(s.str.fullmatch(pattern)), f"regexp_full_match({{column}}, {literal(pattern)})"
    )


def is_email(values: pd.Series) -> pd.Series:
    return _bools(values.str.fullmatch(EMAIL_PATTERN))


def email_sql(column: str) -> str:
    return f"regexp_full_match({column}, {literal(EMAIL_PATTERN)})"


def email() -> pa.Check:
    return column_rule("email_format", is_email, email_sql("{column}"))


def is_phone(values: pd.Series) -> pd.Series:
    return _bools(values.str.fullmatch(PHONE_PATTERN)) & (values.str.count("[0-9]") >= PHONE_MIN_DIGITS)


# The digit count as a second full match over the same characters: counting digits with
# ``regexp_replace`` costs 4x the whole rest of the check at a million rows.
_PHONE_DIGITS_PATTERN = rf"\+?(?:[ ()./-]*[0-9]){{{PHONE_MIN_DIGITS}}}[0-9 ()./-]*"


def phone_sql(column: str) -> str:
    return (
        f"(regexp_full_match({column}, {literal(PHONE_PATTERN)}) "
        f"AND regexp_full_match({column}, {literal(_PHONE_DIGITS_PATTERN)}))"
    )


def phone() -> pa.Check:
    return column_rule("phone_format", is_phone, phone_sql("{column}"))


def state_id() -> pa.Check:
    return full_match(STATE_ID_PATTERN, "id_format")


def _formula_sql() -> str:
    """``FORMULA_PATTERN`` as a look at the first code point: a quarter of the regex's cost."""
    codes = ", ".join(str(ord(ch)) for ch in FORMULA_PREFIXES)
    return f"({{column}} <> '' AND ord({{column}}) NOT IN ({codes}))"


def no_control() -> pa.Check:
    """Identifiers and codes hold no control characters (a tab or line end inside is a broken value)."""
    return full_match(CONTROL_PATTERN, "control_character")


def plain_text() -> list[pa.Check]:
    formula = column_rule(
        "formula_prefix", lambda s: _bools(s.str.fullmatch(FORMULA_PATTERN)), _formula_sql()
    )
    return [no_control(), formula]


def max_len(limit: int) -> pa.Check:
    return pa.Check.str_length(max_value=limit, error="too_long")


def one_of(values: tuple[str, ...] | list[str]) -> pa.Check:
    return pa.Check.isin(list(values), error="enum")


def row_rule(rule: str, column: str, ok: Callable[[pd.DataFrame], pd.Series], sql: str) -> pa.Check:
    """A rule over several columns of a row, reported against ``column``; ``sql`` is its twin."""
    return pa.Check(ok, error=f"{rule}@{column}", ignore_na=False, statistics={"sql": sql})


def parsed(column: str, rule: str) -> pa.Check:
    """The text in ``column`` converted (in SQL, ``TRY_CAST``) to the typed ``column__v``."""
    return row_rule(
        rule,
        column,
        lambda d: d[column].isna() | d[f"{column}__v"].notna(),
        f"({quote(column)} IS NULL OR {quote(column + '__v')} IS NOT NULL)",
    )


def flag(rule: str, column: str, flag_column: str) -> pa.Check:
    """A lookup done in SQL (known school, known role) whose boolean result is ``flag_column``."""
    return row_rule(rule, column, lambda d: d[flag_column].astype(bool), quote(flag_column))


def ends_after_begins(begin: str, end: str) -> pa.Check:
    """End dates are exclusive, so an end on or before the begin describes no day at all."""
    return row_rule(
        "date_order",
        end.removesuffix("__v"),
        lambda d: d[end].isna() | d[begin].isna() | (d[end] > d[begin]),
        f"({quote(end)} IS NULL OR {quote(begin)} IS NULL OR {quote(end)} > {quote(begin)})",
    )
