"""The one canonical map of token ids.

Every position of a DeepTalk sequence carries K+1 ids: K audio-codec streams (index 0..K-1) and one text
stream (index K, the last, as in the reference). All streams share one embedding table / tied head:

    [ text block: text tokenizer ids | text specials | pad to a multiple of 64 ]
    [ audio block 0: codebook codes | audio specials (64 slots) ]
    ...
    [ audio block K-1 ]

The id of audio code c in stream i is ``text_block + i * audio_block + c`` (the reference's
``codec_layer_shift``). With the reference's numbers (102400 text ids, 4096 codes, 7 streams) this gives
102464 + 7 * 4160 = 131584 rows. Nothing else in the code base defines a token id: ask the layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

IGNORE_INDEX = -100  # label value skipped by the loss (torch CrossEntropyLoss default)
SPECIAL_SLOTS = 64  # slots reserved per block for special tokens, as in the reference
# How a spoken answer's text stream lines up with its audio (deeptalk.data.packing): "text_first" = the
# paper's (all text, EOT, then PAD_T while the audio goes on); "aligned" = each text token at the codec frame
# where its word starts, PAD_T between words (Moshi's "inner monologue").
ANSWER_LAYOUTS = ("text_first", "aligned")

# Specials on the text stream, in id order after the text tokenizer's ids.
TEXT_SPECIALS = (
    "EOT",  # end of the assistant's text
    "PAD_T",  # text stream idles while audio continues
    "BOT",  # begin of text (start of a turn)
    "ANS_T",  # start of an assistant text answer
    "AUDIO_PH",  # text stream at positions that carry user-audio features
    "USER",  # role marker: user turn
    "ASSISTANT",  # role marker: assistant turn
    "SYSTEM",  # role marker: system prompt
)
# Specials inside every audio block, in id order after the codebook; voice tokens follow them.
AUDIO_SPECIALS = (
    "EOA",  # end of audio on this stream
    "PAD_A",  # audio stream idles (text-only positions, delay pads)
    "BOA",  # begin of user audio
    "ANS_A",  # start of a spoken answer in the default voice
    "ASR",  # task token: transcribe the audio (no speech target)
    "AQA",  # task token: text answer to a spoken question
    "TQA",  # task token: text answer to a typed question
)


@dataclass(frozen=True)
class ChatMarkers:
    """Role markers as an imported chat LLM's own chat template renders them, in text-tokenizer ids.

    With markers (``TokenLayout.chat``) packing writes ``bos`` instead of ``BOT``, ``user`` + text + ``user_end``
    instead of ``USER`` + text, ``system`` + text + ``system_end``, ``assistant`` before an answer (its last
    position is the answer-opening row that carries the task/voice token) and ``eot`` (the model's end of
    sequence) instead of a new ``EOT`` row: the model reads prompts the way it was trained to
    (``HFTextTokenizer.chat_markers`` derives them).
    """

    bos: tuple[int, ...]
    user: tuple[int, ...]
    user_end: tuple[int, ...]
    assistant: tuple[int, ...]
    eot: int
    system: tuple[int, ...] = ()
    system_end: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("bos", "user", "user_end", "assistant", "system", "system_end"):
            object.__setattr__(self, name, tuple(int(i) for i in getattr(self, name)))
        if not self.assistant:
            raise ValueError("chat markers need a non-empty assistant marker (it opens every answer)")

    def ids(self) -> tuple[int, ...]:
        return (*self.bos, *self.user, *self.user_end, *self.assistant, self.eot, *self.system, *self.system_end)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# marker name → (ChatMarkers field before the content, field after it)
_CHAT_FIELDS = {"BOT": ("bos", None), "USER": ("user", "user_end"), "SYSTEM": ("system", "system_end"),
                "ASSISTANT": ("assistant", None)}


def check_answer_layout(name: str) -> str:
    if name not in ANSWER_LAYOUTS:
        raise ValueError(f"unknown answer_layout {name!r}; expected one of {ANSWER_LAYOUTS}")
    return name


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class TokenLayout:
    """Vocabulary layout for K audio streams plus one text stream.

    ``voices`` names the assistant voices; each gets an audio special written on every audio stream at the
    position before a spoken answer (the reference's M29/F10). ``ANS_A`` is the default voice.
    ``answer_layout`` (one of ``ANSWER_LAYOUTS``) says how spoken answers were packed, so that a checkpoint
    carries it to the generator.
    """

    text_vocab_size: int
    n_audio_streams: int = 7
    codebook_size: int = 4096
    voices: tuple[str, ...] = field(default_factory=tuple)
    answer_layout: str = "text_first"
    chat: ChatMarkers | None = None  # role markers of the LLM's chat template; None: the TEXT_SPECIALS markers

    def __post_init__(self) -> None:
        if isinstance(self.chat, dict):
            object.__setattr__(self, "chat", ChatMarkers(**self.chat))
        if self.chat is not None and any(not 0 <= i < self.text_vocab_size for i in self.chat.ids()):
            raise ValueError(f"chat marker ids must lie in the text vocabulary [0, {self.text_vocab_size})")
        if self.text_vocab_size <= 0 or self.codebook_size <= 0 or self.n_audio_streams <= 0:
            raise ValueError(f"TokenLayout sizes must be positive, got {self}")
        object.__setattr__(self, "voices", tuple(self.voices))
        if len(set(self.voices)) != len(self.voices):
            raise ValueError(f"duplicate voice names in {self.voices}")
        if len(AUDIO_SPECIALS) + len(self.voices) > SPECIAL_SLOTS:
            raise ValueError(f"{len(self.voices)} voices do not fit the {SPECIAL_SLOTS} audio special slots")
        check_answer_layout(self.answer_layout)

    # ---- block geometry -------------------------------------------------------------------------------
    @property
    def text_block_size(self) -> int:
        """Text ids + special slots, padded to a multiple of 64 (102400 → 102464 for DeepSeek)."""
        return _round_up(self.text_vocab_size + SPECIAL_SLOTS, 64)

    @property
    def audio_block_size(self) -> int:
        """Codebook + special slots per stream, padded to a multiple of 64 (4096 → 4160)."""
        return _round_up(self.codebook_size + SPECIAL_SLOTS, 64)

    @property
    def vocab_size(self) -> int:
        return self.text_block_size + self.n_audio_streams * self.audio_block_size

    @property
    def n_streams(self) -> int:
        return self.n_audio_streams + 1

    @property
    def text_stream(self) -> int:
        """Index of the text stream in the last dimension of packed ids (the last one)."""
        return self.n_audio_streams

    def stream_offset(self, stream: int) -> int:
        """First global id of a stream's block; a stream's local index l has global id offset + l."""
        self._check_stream(stream)
        if stream == self.text_stream:
            return 0
        return self.text_block_size + stream * self.audio_block_size

    def stream_size(self, stream: int) -> int:
        self._check_stream(stream)
        return self.text_block_size if stream == self.text_stream else self.audio_block_size

    def stream_slice(self, stream: int) -> slice:
        """Slice of the tied head's rows (and of full-vocab logits) that belongs to one stream."""
        start = self.stream_offset(stream)
        return slice(start, start + self.stream_size(stream))

    # ---- ids --------------------------------------------------------------------------------------------
    def text_id(self, token: int) -> int:
        if not 0 <= token < self.text_vocab_size:
            raise ValueError(f"text token {token} outside the text vocabulary [0, {self.text_vocab_size})")
        return token

    def audio_id(self, stream: int, code: int) -> int:
        if stream == self.text_stream:
            raise ValueError(f"stream {stream} is the text stream, not an audio stream")
        if not 0 <= code < self.codebook_size:
            raise ValueError(f"codec code {code} outside the codebook [0, {self.codebook_size})")
        return self.stream_offset(stream) + code

    def text_special(self, name: str) -> int:
        """Id of a text special; with chat markers ``EOT`` is the chat model's own end of sequence."""
        if name not in TEXT_SPECIALS:
            raise ValueError(f"unknown text special {name!r}; known: {', '.join(TEXT_SPECIALS)}")
        if name == "EOT" and self.chat is not None:
            return self.chat.eot
        return self.text_vocab_size + TEXT_SPECIALS.index(name)

    def marker(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(ids before, ids after)`` a turn's text for role marker ``BOT``, ``USER``, ``SYSTEM`` or
        ``ASSISTANT``: the chat template's (``chat``) or the single text special and nothing after."""
        if name not in _CHAT_FIELDS:
            raise ValueError(f"unknown role marker {name!r}; known: {', '.join(_CHAT_FIELDS)}")
        if self.chat is None:
            return (self.text_special(name),), ()
        before, after = _CHAT_FIELDS[name]
        return getattr(self.chat, before), (getattr(self.chat, after) if after else ())

    def audio_special_code(self, name: str) -> int:
        """Local index (within any audio block) of an audio special or of a voice token ``VOICE:<name>``."""
        if name.startswith("VOICE:"):
            return self.codebook_size + len(AUDIO_SPECIALS) + self.voice_index(name[len("VOICE:") :])
        if name not in AUDIO_SPECIALS:
            raise ValueError(f"unknown audio special {name!r}; known: {', '.join(AUDIO_SPECIALS)}")
        return self.codebook_size + AUDIO_SPECIALS.index(name)

    def audio_special(self, name: str, stream: int) -> int:
        """Global id of an audio special on one audio stream."""
        if stream == self.text_stream:
            raise ValueError(f"audio special {name!r} does not exist on the text stream")
        return self.stream_offset(stream) + self.audio_special_code(name)

    def voice_index(self, voice: str) -> int:
        if voice not in self.voices:
            raise ValueError(f"unknown voice {voice!r}; available: {', '.join(self.voices) or 'none'}")
        return self.voices.index(voice)

    def answer_code(self, voice: str | None) -> int:
        """Local audio code of the token that opens a spoken answer: ``ANS_A`` or a voice token."""
        return self.audio_special_code("ANS_A" if voice is None else f"VOICE:{voice}")

    def locate(self, token_id: int) -> tuple[int, int]:
        """Map a global id back to ``(stream, local index)``: the inverse of ``stream_offset + local``."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} outside the vocabulary [0, {self.vocab_size})")
        if token_id < self.text_block_size:
            return self.text_stream, token_id
        stream, local = divmod(token_id - self.text_block_size, self.audio_block_size)
        return stream, local

    def is_code(self, local: int) -> bool:
        """True when a local audio index is a codebook code, not a special."""
        return 0 <= local < self.codebook_size

    # ---- serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data["voices"] = list(self.voices)
        if self.chat is None:
            del data["chat"]  # layouts without markers serialise as before
        else:
            data["chat"] = self.chat.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TokenLayout:
        known = {"text_vocab_size", "n_audio_streams", "codebook_size", "voices", "answer_layout", "chat"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TokenLayout fields {sorted(unknown)}")
        return cls(**{**data, "voices": tuple(data.get("voices", ()))})

    def _check_stream(self, stream: int) -> None:
        if not 0 <= stream < self.n_streams:
            raise ValueError(f"stream {stream} outside [0, {self.n_streams})")
