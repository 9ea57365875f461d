"""The one error type of :mod:`monai_dclcstp.data` and the helper that lists bad files in its message."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DatalistError", "format_file_problems"]


class DatalistError(ValueError):
    """A datalist, dataset folder or image file cannot be used; the message names each bad file and the problem."""


def format_file_problems(header: str, problems: Sequence[tuple[str, str]], max_lines: int = 20) -> str:
    """Build a message ``header`` followed by one ``path: problem`` line per entry, capped at ``max_lines``.

    Args:
        header: first line, e.g. ``"3 of 120 items failed the pre-flight check:"``.
        problems: ``(path, problem)`` pairs.
        max_lines: list at most this many; the rest is summarised as ``... and N more``.
    """
    lines = [header]
    lines += [f"  {path}: {problem}" for path, problem in problems[:max_lines]]
    if len(problems) > max_lines:
        lines.append(f"  ... and {len(problems) - max_lines} more")
    return "\n".join(lines)
