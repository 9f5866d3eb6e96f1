"""The text checks decisions and imports share, so a label typed by a person and one imported from
a catalogue are held to the same rules."""

from __future__ import annotations

MAX_VALUE_LENGTH = 100  # a longer "label" is a misplaced description, not a class name


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored as TEXT on both dialects, or None."""
    if "\x00" in text:
        return "contains a NUL character (Postgres cannot store it)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None
