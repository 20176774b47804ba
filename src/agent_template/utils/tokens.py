"""A token estimate that needs no tokenizer files (nothing is downloaded at run time)."""

from __future__ import annotations

__all__ = ["estimate_tokens"]

_CHARS_PER_TOKEN = 4  # close for English prose and code with the common BPE vocabularies


def estimate_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` takes; providers' reported usage wins when known."""
    return (len(text) + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN
