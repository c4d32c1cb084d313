"""Corpus loading (embedded, text file, nanoGPT bin folder), batches, and bad inputs."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from hardening import one_line_user_error

from gptperf.data.corpus import EMBEDDED, embedded_text, load_corpus
from gptperf.data.tokenizer import ByteTokenizer


def test_byte_tokenizer_round_trip() -> None:
    tok = ByteTokenizer()
    text = "plain ASCII, accents é à ü, symbols ✓ →, emoji 🙂, CJK 漢字\n\ttabs"
    tokens = tok.encode(text)
    assert all(0 <= t < tok.vocab_size for t in tokens)
    assert len(tokens) == len(text.encode("utf-8"))
    assert tok.decode(tokens) == text


def test_embedded_corpus_is_deterministic_and_split_at_the_tail() -> None:
    corpus = load_corpus()
    raw = embedded_text().encode("utf-8")
    assert corpus.name == EMBEDDED and corpus.vocab_size == 256
    assert len(raw) > 400_000  # the pydoc topics text is ~465 kB
    assert len(corpus.train) + len(corpus.val) == len(raw)
    assert len(corpus.val) == int(len(raw) * 0.1)
    assert corpus.train.tobytes() + corpus.val.tobytes() == raw
    assert np.issubdtype(corpus.train.dtype, np.integer)
    assert corpus.tokenizer is not None
    assert corpus.tokenizer.decode(corpus.train[:200].tolist()) == raw[:200].decode("utf-8")
    again = load_corpus()
    assert np.array_equal(again.val, corpus.val)


def test_text_file_and_val_fraction(tmp_path) -> None:
    text = "ünïcode text, " * 200
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(str(path), val_fraction=0.25)
    raw = text.encode("utf-8")
    assert corpus.name == str(path)
    assert len(corpus.val) == int(len(raw) * 0.25)
    assert corpus.train.tobytes() + corpus.val.tobytes() == raw


def test_bin_folder_with_inferred_and_given_vocab(tmp_path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 1000, size=5000, dtype=np.uint16)
    val = rng.integers(0, 1000, size=800, dtype=np.uint16)
    train[17] = 4321  # the largest token sets the inferred vocabulary
    train.tofile(tmp_path / "train.bin")
    val.tofile(tmp_path / "val.bin")
    corpus = load_corpus(str(tmp_path))
    assert corpus.vocab_size == 4322 and corpus.tokenizer is None
    assert any("inferred" in n for n in corpus.notes)
    assert np.array_equal(corpus.train, train) and np.array_equal(corpus.val, val)
    assert load_corpus(str(tmp_path), vocab_size=50257).vocab_size == 50257
    x, y = corpus.get_batch("train", 3, 16, 0)
    assert x.dtype == torch.int64 and int(x.max()) < corpus.vocab_size


def test_bin_folder_without_val_bin_holds_out_the_tail(tmp_path) -> None:
    train = np.arange(1000, dtype=np.uint16)
    train.tofile(tmp_path / "train.bin")
    corpus = load_corpus(str(tmp_path), val_fraction=0.2)
    assert corpus.val.tolist() == list(range(800, 1000))
    assert any("val.bin" in n for n in corpus.notes)


def test_meta_pkl_is_never_unpickled(tmp_path) -> None:
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 65, "x": Evil()}))
    np.arange(300, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "val.bin")
    corpus = load_corpus(str(tmp_path))
    assert corpus.vocab_size == 300
    assert not marker.exists()


def test_batches_are_shifted_windows_and_reproducible() -> None:
    corpus = load_corpus()
    gen = torch.Generator().manual_seed(7)
    x, y = corpus.get_batch("val", 5, 32, gen)
    assert x.shape == y.shape == (5, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    text = corpus.val.tobytes()
    for row_x, row_y in zip(x, y, strict=True):
        # each row is a contiguous window of the validation text, and y is the next window
        window = bytes(row_x.tolist()) + bytes(row_y[-1:].tolist())
        assert window in text
    x2, _ = corpus.get_batch("val", 5, 32, 7)  # an int seed gives the same batch
    assert torch.equal(x, x2)


def test_generator_state_continues_the_same_stream() -> None:
    corpus = load_corpus()
    gen = torch.Generator().manual_seed(3)
    corpus.get_batch("train", 4, 16, gen)
    saved = gen.get_state()
    expected = [corpus.get_batch("train", 4, 16, gen)[0] for _ in range(3)]
    resumed = torch.Generator()
    resumed.set_state(saved)
    got = [corpus.get_batch("train", 4, 16, resumed)[0] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_bad_inputs_give_one_line_errors(tmp_path) -> None:
    one_line_user_error(lambda: load_corpus(str(tmp_path / "missing.txt")), "missing.txt", "not found")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    one_line_user_error(lambda: load_corpus(str(empty)), "empty")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"ok\xff\xfe\x00")
    one_line_user_error(lambda: load_corpus(str(binary)), "UTF-8")
    folder = tmp_path / "tokens"
    folder.mkdir()
    one_line_user_error(lambda: load_corpus(str(folder)), "train.bin")
    (folder / "train.bin").write_bytes(b"\x01\x00\x02")
    one_line_user_error(lambda: load_corpus(str(folder)), "odd size")
    one_line_user_error(lambda: load_corpus(None, val_fraction=1.0), "val_fraction")
    short = tmp_path / "short.txt"
    short.write_text("x" * 100)
    corpus = load_corpus(str(short))
    one_line_user_error(lambda: corpus.get_batch("train", 2, 64), "fewer than one sequence", "64")
    one_line_user_error(lambda: corpus.check_sequence(64), "val")
    one_line_user_error(lambda: corpus.get_batch("test", 2, 4), "split")
