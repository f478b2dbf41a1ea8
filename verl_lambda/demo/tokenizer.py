"""A character-level tokenizer built locally: no files, no downloads."""

from __future__ import annotations

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
CHARACTERS = "0123456789+=:"


class CharTokenizer:
    """One token per character of :data:`CHARACTERS`, plus padding, begin and end tokens."""

    def __init__(self, characters: str = CHARACTERS):
        self.vocab = [PAD, BOS, EOS, *characters]
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2
        self._ids = {token: index for index, token in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode_prompt(self, text: str) -> list[int]:
        """``<bos>`` followed by the characters of ``text``."""
        return [self.bos_token_id] + [self._ids[char] for char in text]

    def encode_response(self, text: str) -> list[int]:
        """The characters of ``text`` followed by ``<eos>``."""
        return [self._ids[char] for char in text] + [self.eos_token_id]

    def decode(self, ids) -> str:
        """Characters up to the first ``<eos>``; special tokens are dropped."""
        chars = []
        for index in ids:
            index = int(index)
            if index == self.eos_token_id:
                break
            if index > self.eos_token_id:
                chars.append(self.vocab[index])
        return "".join(chars)
