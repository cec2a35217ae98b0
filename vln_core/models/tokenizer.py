"""Instruction tokenizers that need no files and no downloads, plus an adapter for HF tokenizers.

Every tokenizer here has the same small interface the model and the trainer use::

    ids, mask = tokenizer.encode(["go to the red chair"], max_length=32)
    ids:  (B, L) long, padded with ``tokenizer.pad_id``
    mask: (B, L) bool, True on real tokens

``L`` is the longest encoded text of the batch, capped at ``max_length`` (texts longer than that
are truncated, keeping the beginning). Encoding is deterministic across processes and machines:
no Python ``hash`` (salted per process), no vocabulary files.
"""
from __future__ import annotations

import re
import zlib
from typing import Any, Sequence

import torch

from vln_core.errors import InputError

__all__ = ["ByteTokenizer", "HashedWordTokenizer", "HFTokenizerAdapter"]

_WORD_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]", re.IGNORECASE)


def _pad_batch(sequences: list[list[int]], max_length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to a ``(B, L)`` long tensor and its ``(B, L)`` bool mask."""
    if max_length < 1:
        raise InputError(f"max_length must be >= 1, got {max_length}")
    sequences = [seq[:max_length] for seq in sequences]
    length = max(1, max((len(s) for s in sequences), default=1))
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = True
    return ids, mask


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("encode() takes a list of strings, got a single str (wrap it in a list)")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] must be a str, got {type(text).__name__}")
    return texts


class ByteTokenizer:
    """UTF-8 bytes as tokens: id = byte + 3; 0 = pad, 1 = begin, 2 = end. Vocabulary 259."""

    pad_id = 0
    bos_id = 1
    eos_id = 2
    vocab_size = 259

    def encode(self, texts: Sequence[str], max_length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts.

        Returns:
            ``(ids (B, L) long, mask (B, L) bool)``; each row is ``[bos, bytes..., eos]`` truncated
            to ``max_length``.
        """
        texts = _check_texts(texts)
        seqs = [[self.bos_id] + [b + 3 for b in t.encode("utf-8")] + [self.eos_id] for t in texts]
        return _pad_batch(seqs, max_length, self.pad_id)


class HashedWordTokenizer:
    """Lower-cased words and punctuation hashed (CRC32) into ``vocab_size - 3`` buckets.

    Ids 0/1/2 are pad/begin/end. Different words can share a bucket (a hash collision); with a
    vocabulary of a few thousand buckets that is rare for navigation instructions.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2

    def __init__(self, vocab_size: int = 4096) -> None:
        if vocab_size < 16:
            raise InputError(f"vocab_size must be >= 16, got {vocab_size}")
        self.vocab_size = int(vocab_size)

    def word_id(self, word: str) -> int:
        """Bucket id of one word (lower-cased), in ``[3, vocab_size)``."""
        return 3 + zlib.crc32(word.lower().encode("utf-8")) % (self.vocab_size - 3)

    def encode(self, texts: Sequence[str], max_length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts.

        Returns:
            ``(ids (B, L) long, mask (B, L) bool)``; rows are ``[bos, words..., eos]``.
        """
        texts = _check_texts(texts)
        seqs = [[self.bos_id] + [self.word_id(w) for w in _WORD_RE.findall(t)] + [self.eos_id] for t in texts]
        return _pad_batch(seqs, max_length, self.pad_id)


class HFTokenizerAdapter:
    """Gives a Hugging Face tokenizer (loaded from a local path) the ``encode`` interface above."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf_tokenizer = hf_tokenizer
        pad = hf_tokenizer.pad_token_id
        if pad is None:
            pad = hf_tokenizer.eos_token_id if hf_tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.vocab_size = len(hf_tokenizer)

    def encode(self, texts: Sequence[str], max_length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts with the wrapped tokenizer; returns ``(ids (B, L) long, mask (B, L) bool)``."""
        texts = _check_texts(texts)
        seqs = [self.hf_tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
        return _pad_batch([list(s) for s in seqs], max_length, self.pad_id)
