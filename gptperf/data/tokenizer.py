"""The default tokenizer: one token per UTF-8 byte (vocab 256), lossless for any text."""

from __future__ import annotations

from collections.abc import Iterable

from gptperf.errors import UserError


class ByteTokenizer:
    """Tokens are the bytes of the UTF-8 encoding; decoding replaces a split multi-byte character."""

    vocab_size = 256
    name = "bytes"

    def encode(self, text: str) -> list[int]:
        try:
            return list(text.encode("utf-8"))
        except UnicodeEncodeError as err:  # bytes that were not UTF-8, smuggled in as surrogates
            bad = text[err.start:err.end].encode("utf-8", "surrogateescape")
            raise UserError(f"text {text[:40].encode('utf-8', 'surrogateescape')!r} holds bytes "
                            f"that are not UTF-8 ({bad!r} at character {err.start}); give UTF-8 "
                            "text") from None

    def decode(self, tokens: Iterable[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        """A printable form of one token, for per-token tables."""
        return repr(bytes([token]))[2:-1]
