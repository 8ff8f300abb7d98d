"""The text layout SQLite held a datetime column in, and PostgreSQL SQL rendering it.

SQLite applications write datetimes as ISO text, each library its own way: a
space or a `T` between date and time, a fraction of a second always
(SQLAlchemy) or only when it is not zero (`str(datetime)`, Django). After the
migration the column is a timestamp; where SQL reads it as text again (a view's
`substr(at, 1, 7)`, a write-back into the SQLite file), PostgreSQL renders that
layout so the text is what SQLite held.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeldText:
    """How a column's datetime or time text was written: learnt from its values."""

    t_separator: bool = False  # 'T' between date and time (isoformat()), else a space
    fraction_always: bool = False  # '.ffffff' even when zero (SQLAlchemy), else only when not


def held_text(count: int, with_t: int, with_fraction: int) -> HeldText:
    """The layout most values had. A fraction is written always only when every value
    had one: Python's isoformat() (Django, the sqlite3 adapter) omits a zero one."""
    return HeldText(
        t_separator=count > 0 and 2 * with_t > count,
        fraction_always=count > 0 and with_fraction == count,
    )


def layout(held: HeldText) -> str:
    """How the plan keeps a layout: "T" or "space", then "always" or "nonzero"."""
    return (
        f"{'T' if held.t_separator else 'space'},{'always' if held.fraction_always else 'nonzero'}"
    )


def from_layout(text: str) -> HeldText:
    """The layout the plan kept ("" for none: str(datetime)'s, the usual one)."""
    sep, _, fraction = text.partition(",")
    return HeldText(t_separator=sep == "T", fraction_always=fraction == "always")


def fraction_sql(value: str, held: HeldText) -> str:
    if held.fraction_always:
        return f"to_char({value}, '.US')"
    return f"CASE WHEN date_trunc('second', {value}) = {value} THEN '' ELSE to_char({value}, '.US') END"


def datetime_sql(value: str, held: HeldText) -> str:
    sep = '"T"' if held.t_separator else " "
    return f"to_char({value}, 'YYYY-MM-DD{sep}HH24:MI:SS') || {fraction_sql(value, held)}"


def datetime_text_sql(held: HeldText) -> str:
    """PostgreSQL expression template ({0}: a timestamp) rendering the text SQLite held:
    what views and indexes that read a datetime column as text (substr, LIKE, ||) see."""
    return "(" + datetime_sql("{0}", held) + ")"
