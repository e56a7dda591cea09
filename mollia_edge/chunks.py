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


def _split_long_word(word: str, tokens: int, count: Callable[[str], int], budget: int) -> list[str]:
    """A word of ``tokens`` tokens, over the budget, cut between characters: into runs of as many
    characters as its tokens per character allow (counted once, not once per cut: a
    100,000-character word took minutes), each run shortened until it fits."""
    size = max(1, len(word) * budget // max(tokens, 1))
    out = []
    start = 0
    while start < len(word):
        end = min(len(word), start + size)
        while end - start > 1 and count(word[start:end]) > budget:
            end = start + max(1, (end - start) * 3 // 4)
        out.append(word[start:end])
        start = end
    return out


def _split_words(sentence: str, count: Callable[[str], int], budget: int) -> list[str]:
    """A sentence longer than the budget, cut between words (a word longer than the budget is
    cut between characters)."""
    out: list[str] = []
    current = ""
    for word in re.findall(r"\S+\s*", sentence) or [sentence]:
        if current and count(current + word) > budget:
            out.append(current)
            current = ""
        tokens = count(word) if len(word) > 1 else 0
        if tokens > budget:  # one word over the budget: by characters
            *whole, word = _split_long_word(word, tokens, count, budget)
            out.extend(whole)
        current += word
    if current:
        out.append(current)
    return out


def pack_chunks(text: str, count: Callable[[str], int], budget: int, most: int | None = None) -> list[str]:
    """``text`` in chunks of at most ``budget`` tokens (``count`` counts a string's tokens):
    whole sentences packed greedily, a longer sentence cut between words. One chunk, the
    text itself, when it fits. Joined, the chunks give the text back. ``most``: stop once
    there are more than ``most`` chunks (the first ``most`` are the same; the rest is not read)."""
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
                if most is not None and len(chunks) > most:
                    return chunks
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
