"""Text tokenizers behind one small interface (``encode``, ``decode``, ``vocab_size``, ``save``, ``load``).

- ``TextTokenizer``: word level, built from the corpus (tiny/small). Text is lower-cased and split into words
  (``john's`` stays one word), single digits (``144`` → ``1 4 4``, so arithmetic needs only ten number tokens)
  and single punctuation marks. Its own specials (``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``) take ids 0–3;
  the model's stream specials (EOT, PAD_T, …) live in ``deeptalk.tokens`` *after* ``vocab_size``.
- ``HFTextTokenizer``: wraps ``transformers.AutoTokenizer`` from a local directory (paper profile,
  DeepSeek-V2's tokenizer); nothing is downloaded. ``chat_markers()`` reads the role markers off its chat
  template (``packing.prompt_format: chat_template``). ``vocab_size`` is ``len(tokenizer)``; an imported
  checkpoint's text block is its embedding rows, which may be more (``packing.layout_for(text_rows=…)``).

``load_tokenizer(dir)`` picks the right class from what the directory holds.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from deeptalk.tokens import ChatMarkers

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
_SENTINEL = "\u2063CONTENT\u2063"  # message content while rendering a chat template (chat_markers)
VOCAB_FILE = "word_vocab.json"
_TOKEN_RE = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]|[^\sa-z0-9]")
_JOIN_BOTH = {"-", "'", "/"}  # no space on either side when decoding
_JOIN_LEFT = set(".,;:!?)]}%")  # attach to the previous token
_JOIN_RIGHT = set("([{$")  # attach to the next token


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    unk_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def save(self, directory: str | Path) -> None: ...


def normalize(text: str) -> str:
    """The canonical form that ``decode(encode(text))`` returns for in-vocabulary text."""
    return detokenize(split_words(text))


def split_words(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def detokenize(tokens: list[str]) -> str:
    out = ""
    prev = ""
    for tok in tokens:
        glue = (
            not out
            or tok in _JOIN_LEFT
            or tok in _JOIN_BOTH
            or prev in _JOIN_BOTH
            or prev in _JOIN_RIGHT
            or (tok.isdigit() and prev.isdigit())
        )
        out += tok if glue else " " + tok
        prev = tok
    return out


class TextTokenizer:
    """Word-level tokenizer with a closed vocabulary built from corpus text."""

    def __init__(self, vocab: list[str]):
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with the specials {SPECIALS}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate entries")
        self.vocab = list(vocab)
        self._ids = {tok: i for i, tok in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(len(SPECIALS))

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> TextTokenizer:
        """Vocabulary = specials, ten digits, then every word/mark seen ≥ ``min_count`` times, sorted
        (sorting keeps ids independent of corpus order)."""
        counts = Counter(tok for text in texts for tok in split_words(text))
        words = sorted(
            t for t, c in counts.items() if c >= min_count and t not in SPECIALS and not t.isdigit()
        )
        return cls([*SPECIALS, *"0123456789", *words])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(tok, self.unk_id) for tok in split_words(text)]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character span ``[start, end)`` in ``text`` of each token ``encode(text)`` gives (word timings)."""
        lowered = text.lower()
        if len(lowered) != len(text):  # a character whose lower case is longer: spans would shift
            raise ValueError(f"cannot map tokens of {text!r} to characters (lower-casing changes its length)")
        return [m.span() for m in _TOKEN_RE.finditer(lowered)]

    def unknown_words(self, text: str) -> list[str]:
        return [tok for tok in split_words(text) if tok not in self._ids]

    def decode(self, ids: Iterable[int]) -> str:
        """``<pad>``/``<bos>``/``<eos>`` are skipped, ``<unk>`` is shown; ids outside the vocabulary raise."""
        toks = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} outside the text vocabulary (size {len(self.vocab)})")
            if i >= len(SPECIALS) or i == self.unk_id:
                toks.append(self.vocab[i])
        return detokenize(toks)

    def chat_markers(self) -> ChatMarkers:
        raise ValueError("the word-level tokenizer has no chat template: packing.prompt_format 'chat_template' "
                         "needs an imported LLM's tokenizer (data.hf_tokenizer)")

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCAB_FILE).write_text(
            json.dumps({"type": "word", "vocab": self.vocab}, indent=0) + "\n"
        )

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        path = Path(directory) / VOCAB_FILE
        if not path.exists():
            raise ValueError(f"no word tokenizer at {directory} (missing {VOCAB_FILE})")
        return cls(json.loads(path.read_text())["vocab"])


class HFTextTokenizer:
    """A Hugging Face tokenizer from a local directory, exposed through the same interface."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.vocab_size = len(tokenizer)
        self.unk_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else -1
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id
        self.bos_id, self.eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id

    @classmethod
    def load(cls, directory: str | Path) -> HFTextTokenizer:
        from transformers import AutoTokenizer

        if not Path(directory).is_dir():
            raise ValueError(f"HF tokenizer directory {directory} does not exist")
        return cls(AutoTokenizer.from_pretrained(str(directory), local_files_only=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character span ``[start, end)`` in ``text`` of each token ``encode(text)`` gives (word timings)."""
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    def unknown_words(self, text: str) -> list[str]:
        if self.unk_id < 0:
            return []
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [
            text[a:b]
            for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=False)
            if i == self.unk_id
        ]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def chat_markers(self) -> ChatMarkers:
        """The role markers this tokenizer's chat template puts around message contents, as token ids.

        Rendered with a sentinel content and cut around it: DeepSeek-V2-Chat gives ``<bos>``, ``"User: "`` …
        ``"\n\n"``, ``"Assistant: "`` … ``<eos>``. Each piece is tokenised on its own (as packing tokenises the
        content on its own), so a byte-level BPE may split a boundary differently from the whole rendered string.
        """
        if not getattr(self.tok, "chat_template", None):
            raise ValueError("prompt_format 'chat_template' needs a tokenizer with a chat template "
                             "(tokenizer_config.json: chat_template)")

        def render(messages: list[dict]) -> str:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

        def added(longer: list[dict], shorter: list[dict], where: str) -> tuple[str, str]:
            """What rendering ``longer`` adds to rendering its prefix ``shorter``, cut at the sentinel."""
            full, prefix = render(longer), render(shorter)
            if not full.startswith(prefix) or full[len(prefix):].count(_SENTINEL) != 1:
                raise ValueError(f"cannot find the {where} marker in the chat template's output {full!r}")
            before, after = full[len(prefix):].split(_SENTINEL)
            return before, after

        def ids(text: str) -> tuple[int, ...]:
            return tuple(self.tok.encode(text, add_special_tokens=False)) if text else ()

        user, answer = {"role": "user", "content": _SENTINEL}, {"role": "assistant", "content": _SENTINEL}
        user_before, user_end = added([user, user], [user], "user")
        first = render([user])
        if not first.endswith(user_before + _SENTINEL + user_end):
            raise ValueError(f"the chat template renders a first user turn unlike later ones: {first!r}")
        bos = first[: len(first) - len(user_before + _SENTINEL + user_end)]
        assistant_before, eot = added([user, answer], [user], "assistant")
        eot_ids = ids(eot)
        if len(eot_ids) != 1:
            raise ValueError(f"the chat template ends an answer with {eot!r}, not one token ({eot_ids})")
        system_before = system_end = ""
        try:
            with_system = render([{"role": "system", "content": _SENTINEL}, user])
        except Exception:  # noqa: BLE001 - templates that refuse system turns raise their own exceptions
            with_system = None
        if with_system is not None and with_system.startswith(bos) and with_system.endswith(first[len(bos):]):
            system = with_system[len(bos): len(with_system) - len(first) + len(bos)]
            if system.count(_SENTINEL) == 1:
                system_before, system_end = system.split(_SENTINEL)
        return ChatMarkers(bos=ids(bos), user=ids(user_before), user_end=ids(user_end),
                           assistant=ids(assistant_before), eot=eot_ids[0], system=ids(system_before),
                           system_end=ids(system_end))

    def save(self, directory: str | Path) -> None:
        self.tok.save_pretrained(str(directory))


def load_tokenizer(directory: str | Path) -> TextTokenizer | HFTextTokenizer:
    """Word tokenizer if ``word_vocab.json`` is there, else a Hugging Face tokenizer directory."""
    if (Path(directory) / VOCAB_FILE).exists():
        return TextTokenizer.load(directory)
    return HFTextTokenizer.load(directory)
