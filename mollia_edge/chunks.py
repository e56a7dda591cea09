"""Long texts in chunks: split on sentence boundaries, packed up to a token budget.

One rule for the LLMs (each chunk is scored and the text's signals combine the chunks') and
for the encoder (a text's embedding is the mean of its chunks' embeddings), so a long text is
read whole, never cut silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'’”)\]]*\s+|\n\s*\n")
"""After a sentence's closing punctuation (and closing quotes or brackets) and its spaces, or at
a blank line."""


def split_sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end and at blank lines; the pieces, joined, give the
    text back (whitespace included), none empty."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return [p for p in pieces if p]


def _split_words(sentence: str, count: Callable[[str], int], budget: int) -> list[str]:
    """A sentence longer than the budget, cut between words (a word longer than the budget is
    cut between characters)."""
    out: list[str] = []
    current = ""
    for word in re.findall(r"\S+\s*", sentence) or [sentence]:
        if current and count(current + word) > budget:
            out.append(current)
            current = ""
        while count(word) > budget and len(word) > 1:  # one word over the budget: by characters
            cut = max(1, len(word) * budget // max(count(word), 1))
            out.append(word[:cut])
            word = word[cut:]
        current += word
    if current:
        out.append(current)
    return out


def pack_chunks(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    """``text`` in chunks of at most ``budget`` tokens (``count`` counts a string's tokens):
    whole sentences packed greedily, a longer sentence cut between words. One chunk, the
    text itself, when it fits. Joined, the chunks give the text back."""
    if budget < 1:
        raise ValueError(f"budget must be at least 1 token, got {budget}")
    if count(text) <= budget:
        return [text]
    chunks: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        pieces = [sentence] if count(sentence) <= budget else _split_words(sentence, count, budget)
        for piece in pieces:
            if current and count(current + piece) > budget:
                chunks.append(current)
                current = ""
            current += piece
    if current:
        chunks.append(current)
    return chunks


def chunk_spans(lengths: Sequence[int]) -> list[slice]:
    """Given each text's number of chunks, the slice of each text's chunks in the flat list."""
    spans, start = [], 0
    for n in lengths:
        spans.append(slice(start, start + n))
        start += n
    return spans
