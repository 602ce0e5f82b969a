"""Layout of docs/RESULTS.md: tables of at most ten columns, paragraphs wrapped.

The page's sections are written by several scripts (``sweep.py``, ``early_pruning.py``,
``vertex_cost.py``, ...); :func:`tidy` is applied to the whole page once, so that each of them
may write a table as wide as its data and a paragraph as one line:

* a Markdown table wider than ``MAX_COLUMNS`` is split into tables that each repeat the key
  columns (the fewest leading columns that tell the rows apart) and take the next columns;
* a paragraph line longer than ``WIDTH`` is wrapped (Markdown joins the lines again).
"""
from __future__ import annotations

import textwrap

MAX_COLUMNS = 10
WIDTH = 100
NO_BREAK = "\u00a0"


def cells(line: str) -> list[str]:
    """The cells of one Markdown table row ``| a | b |`` → ``["a", "b"]``."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def row(values: list[str]) -> str:
    return "| " + " | ".join(values) + " |"


def key_width(rows: list[list[str]], most: int = 3) -> int:
    """The fewest leading columns (1 to ``most``) whose cells tell every row apart."""
    for width in range(1, most + 1):
        if len({tuple(cells_[:width]) for cells_ in rows}) == len(rows):
            return width
    return most


def split_table(lines: list[str], max_columns: int = MAX_COLUMNS) -> list[str]:
    """One Markdown table (header, rule, rows) as tables of at most ``max_columns`` columns,
    separated by a blank line; a table that fits is returned unchanged."""
    header, body = cells(lines[0]), [cells(line) for line in lines[2:]]
    if len(header) <= max_columns:
        return lines
    keys = key_width(body)
    rest = list(range(keys, len(header)))
    step = max_columns - keys
    out: list[str] = []
    for start in range(0, len(rest), step):
        columns = list(range(keys)) + rest[start:start + step]
        if out:
            out.append("")
        out.append(row([header[i] for i in columns]))
        out.append("|" + "---|" * len(columns))
        out += [row([values[i] if i < len(values) else "" for i in columns]) for values in body]
    return out


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """A paragraph line wrapped at ``width``; headings, tables, images, code and short lines
    are left alone. A list item's continuation lines are indented under its text."""
    stripped = line.lstrip()
    if len(line) <= width or stripped.startswith(("#", "|", "!", "```", "    ")):
        return [line]
    indent = ""
    if stripped.startswith(("- ", "* ")):
        indent = " " * (len(line) - len(stripped) + 2)
    glued = line.replace(" %", NO_BREAK + "%")  # keep "45 %" on one line
    return [part.replace(NO_BREAK + "%", " %") for part in
            textwrap.wrap(glued, width=width, subsequent_indent=indent,
                          break_long_words=False, break_on_hyphens=False)]


def tidy(text: str, max_columns: int = MAX_COLUMNS, width: int = WIDTH) -> str:
    """The page with every table split to ``max_columns`` and every paragraph wrapped."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    in_code = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if (not in_code and line.startswith("|") and i + 1 < len(lines)
                and lines[i + 1].startswith("|---")):
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out += split_table(lines[i:end], max_columns)
            i = end
            continue
        out += [line] if in_code else wrap(line, width)
        i += 1
    return "\n".join(out)


__all__ = ["tidy", "split_table", "wrap", "cells", "MAX_COLUMNS", "WIDTH"]
