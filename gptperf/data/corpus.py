"""Training text as token arrays: the embedded corpus, any UTF-8 file, or nanoGPT train.bin/val.bin.

`load_corpus()` with no source gives the English text of `pydoc_data.topics` (ships with every
Python, ~465 kB), one token per byte. A batch is `batch` random windows of `seq + 1` tokens;
the windows come from a `torch.Generator`, whose state is all a checkpoint needs to continue
the same stream of batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import torch

from gptperf.data.tokenizer import ByteTokenizer
from gptperf.errors import UserError

EMBEDDED = "pydoc-topics"
SPLITS: tuple[str, ...] = ("train", "val")


def embedded_text() -> str:
    """The English text of Python's own documentation topics, in a fixed order."""
    return "\n".join(topics[key] for key in sorted(topics))


@dataclass
class Corpus:
    """Token arrays for training and validation, and how to read text out of them."""

    name: str
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer: ByteTokenizer | None = None  # None: token files made by another tokenizer
    notes: list[str] = field(default_factory=list)

    def split(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return self.train if split == "train" else self.val

    def check_sequence(self, seq: int) -> None:
        """Raise a UserError unless both splits hold at least one window of `seq + 1` tokens."""
        if seq <= 0:
            raise UserError(f"sequence length must be positive, got {seq}")
        for split in SPLITS:
            n = len(self.split(split))
            if n < seq + 1:
                raise UserError(
                    f"corpus {self.name}: the {split} split has {n} tokens, fewer than one "
                    f"sequence of {seq} + 1; use a longer text or a smaller --seq"
                )

    def get_batch(
        self,
        split: str,
        batch: int,
        seq: int,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch` random windows: inputs x (batch, seq) and next-token targets y, int64.

        `generator` is a CPU torch.Generator (its state advances) or an int seed.
        """
        data = self.split(split)
        self.check_sequence(seq)
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        starts = torch.randint(len(data) - seq, (batch,), generator=generator).numpy()
        window = data[starts[:, None] + np.arange(seq + 1)].astype(np.int64)
        xy = torch.from_numpy(window)
        x, y = xy[:, :-1], xy[:, 1:]
        if device is not None and torch.device(device).type == "cuda":
            return (x.pin_memory().to(device, non_blocking=True),
                    y.pin_memory().to(device, non_blocking=True))
        return x.contiguous(), y.contiguous()

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train):,} train + {len(self.val):,} val tokens, "
                f"vocab {self.vocab_size}")


def load_corpus(
    source: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    vocab_size: int | None = None,
) -> Corpus:
    """None: the embedded corpus; a file: UTF-8 text, one token per byte; a folder: nanoGPT
    `train.bin` (and `val.bin`) uint16 tokens. Text is split into train and the last
    `val_fraction` as validation; a folder without val.bin is split the same way."""
    if isinstance(val_fraction, bool) or not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    path = Path(source).expanduser() if source is not None else None
    if vocab_size is not None and (path is None or not path.is_dir()):
        what = "the embedded corpus" if path is None else f"text file {str(source)!r}"
        raise UserError(f"--vocab-size {vocab_size} applies to a folder of nanoGPT token files; "
                        f"{what} is read one byte per token (vocabulary 256): drop --vocab-size")
    if source is None:
        return _from_text(embedded_text().encode("utf-8"), EMBEDDED, val_fraction)
    if not str(source).strip():  # Path("") is "." and would read the current folder
        raise UserError(f"data {str(source)!r} is empty; give a UTF-8 text file or a folder with "
                        "train.bin/val.bin (or no --data for the embedded corpus)")
    assert path is not None
    if not path.exists():
        raise UserError(f"data {str(source)!r} not found; give a UTF-8 text file or a folder "
                        "with train.bin/val.bin (or no --data for the embedded corpus)")
    if path.is_dir():
        return _from_bin_dir(path, val_fraction, vocab_size)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read data file {str(path)!r}: {err.strerror}") from None
    if not raw:
        raise UserError(f"data file {str(path)!r} is empty; give a UTF-8 text file with content")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"data file {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason}); "
            "for token files give their folder with train.bin/val.bin"
        ) from None
    return _from_text(raw, str(path), val_fraction)


def _from_text(raw: bytes, name: str, val_fraction: float) -> Corpus:
    tokens = np.frombuffer(raw, dtype=np.uint8)
    n_val = max(1, int(len(tokens) * val_fraction))
    if len(tokens) - n_val < 1:
        raise UserError(f"data {name!r} has {len(tokens)} bytes, too few to split into "
                        "train and validation")
    tok = ByteTokenizer()
    return Corpus(name=name, train=tokens[:-n_val], val=tokens[-n_val:],
                  vocab_size=tok.vocab_size, tokenizer=tok)


def _memmap(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"token file {str(path)!r} is empty")
    if size % 2:
        raise UserError(f"token file {str(path)!r} has an odd size ({size} bytes); "
                        "expected uint16 tokens as nanoGPT's prepare.py writes them")
    return np.memmap(path, dtype=np.uint16, mode="r")


def _from_bin_dir(path: Path, val_fraction: float, vocab_size: int | None) -> Corpus:
    train_file, val_file = path / "train.bin", path / "val.bin"
    if not train_file.is_file():
        raise UserError(f"folder {str(path)!r} has no train.bin; give a folder with nanoGPT "
                        "train.bin/val.bin (uint16 tokens) or a UTF-8 text file")
    notes: list[str] = []
    train = _memmap(train_file)
    if val_file.is_file():
        val = _memmap(val_file)
    else:
        n_val = max(1, int(len(train) * val_fraction))
        if len(train) - n_val < 1:
            raise UserError(f"{str(train_file)!r} has {len(train)} tokens, too few to split")
        train, val = train[:-n_val], train[-n_val:]
        notes.append(f"no val.bin in {path}: the last {val_fraction:.0%} of train.bin is "
                     "the validation split")
    if vocab_size is None:
        # meta.pkl is never read (unpickling runs code); the vocabulary is inferred instead.
        vocab_size = int(max(train.max(), val.max())) + 1
        notes.append(f"vocabulary of {path} inferred as largest token + 1 = {vocab_size}; "
                     "pass --vocab-size to set it")
    elif isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise UserError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    elif vocab_size > 65536:
        raise UserError(f"vocab_size {vocab_size} exceeds what uint16 token files can hold "
                        "(65536)")
    else:
        for file, tokens in ((train_file, train), (val_file if val_file.is_file() else train_file, val)):
            top = int(tokens.max())
            if top >= vocab_size:  # the embedding lookup would fail with an IndexError mid-run
                raise UserError(f"token file {str(file)!r} holds token id {top}, not below "
                                f"--vocab-size {vocab_size}; pass --vocab-size {top + 1} or more "
                                "(or leave it out to infer it)")
    return Corpus(name=str(path), train=train, val=val, vocab_size=vocab_size,
                  tokenizer=None, notes=notes)
