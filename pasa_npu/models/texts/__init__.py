"""Public-domain passages shipped with the package (sources in ``SOURCES.md`` beside this file)."""

from __future__ import annotations

from importlib import resources

__all__ = ["text", "text_names", "long_text"]

_NAMES = ("gettysburg", "tale_of_two_cities", "pride_and_prejudice", "moby_dick", "declaration")


def text_names() -> tuple[str, ...]:
    """Names of the shipped passages."""
    return _NAMES


def text(name: str) -> str:
    """The shipped passage ``name`` (see :func:`text_names`)."""
    if name not in _NAMES:
        raise ValueError(f"name must be one of {_NAMES}, got {name!r}")
    return resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()


def long_text(min_chars: int) -> str:
    """All passages joined by blank lines, the whole repeated until it has at least ``min_chars``
    characters (repeated text is easier to predict: for numerics, not for perplexity)."""
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars <= 0:
        raise ValueError(f"min_chars must be a positive int, got {min_chars!r}")
    one = "\n\n".join(text(n) for n in _NAMES)
    reps = -(-min_chars // len(one))
    return "\n\n".join([one] * reps)
