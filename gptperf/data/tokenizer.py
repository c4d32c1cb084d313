"""The default tokenizer: one token per UTF-8 byte (vocab 256), lossless for any text."""

from __future__ import annotations

from collections.abc import Iterable


class ByteTokenizer:
    """Tokens are the bytes of the UTF-8 encoding; decoding replaces a split multi-byte character."""

    vocab_size = 256
    name = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: Iterable[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        """A printable form of one token, for per-token tables."""
        return repr(bytes([token]))[2:-1]
