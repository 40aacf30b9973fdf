"""Sequence packing: a conversation → ``[T, K+1]`` ids and labels with the delay pattern (paper.md §1.4).

Every position carries K audio-stream ids (0..K-1) and the text-stream id (K, last). The template, one row
per position; audio streams hold ``PAD_A`` unless noted in brackets (ids from ``TokenLayout``)::

    BOT                                            sequence start
    SYSTEM  text…                                  optional system prompt
    USER    text…                                  user turn given as text, or as speech:
    USER    BOA | AUDIO_PH×n_positions | EOA       (audio streams: BOA, PAD_A…, EOA; text stream: AUDIO_PH)
    ASSISTANT[ASR|AQA|TQA]  text… EOT              text answer (task token on the audio streams: transcribe,
                                                   answer a spoken question, answer a typed one)
    ASSISTANT[ANS_A|VOICE:x]  text… EOT PAD_T…     spoken answer; stream i: i+1 PAD_A, codes_i, EOA, PAD_A

With ``TokenLayout.chat`` (``PackingConfig.prompt_format: chat_template``, the paper's default) the role
markers are the imported LLM's own chat template instead: ``<bos>`` for BOT, ``User: `` text ``\n\n`` for
USER, ``Assistant: `` for ASSISTANT (its last row carries the answer/task token), the model's ``<eos>`` for EOT.

A spoken answer's text stream follows ``TokenLayout.answer_layout`` (its audio streams are the same in both):

* ``text_first`` (the paper's): the whole text from the row after the answer token, then ``EOT``, then
  ``PAD_T`` while the audio continues;
* ``aligned`` (Moshi's "inner monologue"): text token ``k`` sits at row ``r_k = max(f_k, r_{k-1} + 1)``
  after the answer token, where ``f_k`` is the codec frame in which its word starts being spoken
  (:mod:`deeptalk.data.alignment`) — one row before stream 0's code of that frame, which sits at row
  ``f_k + 1`` — ``PAD_T`` between words, ``EOT`` right after the last token, ``PAD_T`` after it.

Earlier assistant turns of a conversation are always rendered as text answers (the reference's multi-turn
inference prepends the generated text), and an inference prompt (:func:`pack_prompt`) is exactly a training
sequence cut after its last ASSISTANT row. Labels are aligned with the inputs (the model shifts by one). Only
answers carry labels: their text, ``EOT``, codes and ``EOA`` (and, in the aligned layout, the ``PAD_T``
between the answer token and ``EOT``: when to say the next word is part of the answer); prompts, delay pads,
other ``PAD_T`` / ``PAD_A`` padding are ``IGNORE_INDEX``.

Packing has two halves so that training can re-draw its random choices every epoch without re-tokenising:
:func:`tokenize_sample` (done once by the pack step) and :func:`pack_tokenized` (done per epoch by the dataset
with an ``rng`` seeded from ``(seed, epoch, sample id)``). :func:`pack_sample` chains them.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from deeptalk.data.config import PackingConfig
from deeptalk.data.schema import Sample
from deeptalk.data.text_tokenizer import SPECIALS as TOKENIZER_SPECIALS
from deeptalk.tokens import IGNORE_INDEX, ChatMarkers, TokenLayout

log = logging.getLogger(__name__)

LAYOUT_FILE = "layout.json"


class TextTokenizerLike(Protocol):
    """What packing needs from ``deeptalk.data.text_tokenizer.TextTokenizer``."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...


class CodecLike(Protocol):
    n_streams: int
    codebook_size: int


# ---- layout ------------------------------------------------------------------------------------------


def layout_for(
    tokenizer: TextTokenizerLike,
    codec: CodecLike,
    voices: Sequence[str] = (),
    answer_layout: str = "text_first",
    text_rows: int | None = None,
    chat: ChatMarkers | None = None,
) -> TokenLayout:
    """The pipeline's token layout: text vocabulary from the tokenizer, audio blocks from the codec.

    ``text_rows``: the embedding rows of an imported checkpoint (``backbone.checkpoint_vocab_rows``). They,
    not the tokenizer's length, are the text vocabulary then: DeepSeek-V2's ~100 k tokens sit in 102,400 rows,
    and its layout is 102464 + 7 × 4160 = 131,584 only when the specials follow the rows. Every step builds
    the layout through here (or reads the ``layout.json`` the pack step writes), so ids agree. ``chat``: role
    markers from the LLM's chat template (``PackingConfig.prompt_format``).
    """
    if text_rows is not None and text_rows < tokenizer.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the checkpoint only {text_rows} "
                         "embedding rows: they do not belong together")
    return TokenLayout(
        text_vocab_size=int(tokenizer.vocab_size if text_rows is None else text_rows),
        n_audio_streams=int(codec.n_streams),
        codebook_size=int(codec.codebook_size),
        voices=tuple(sorted(voices)),
        answer_layout=answer_layout,
        chat=chat,
    )


def save_layout(layout: TokenLayout, directory: str | Path) -> Path:
    path = Path(directory) / LAYOUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(layout.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_layout(directory: str | Path) -> TokenLayout:
    path = Path(directory) / LAYOUT_FILE
    if not path.exists():
        raise ValueError(f"no token layout at {path}; run the pack step first")
    return TokenLayout.from_dict(json.loads(path.read_text()))


# ---- records -----------------------------------------------------------------------------------------------


class AudioRef(NamedTuple):
    """A user-audio segment in a packed sequence: features of ``utt_id`` fill ``n_positions`` positions from
    ``start`` (the first feature position, after ``BOA``); ``text`` is what was said (the turn's text ids: the
    CTC target while S1 trains a hearing head; empty when unknown, as for served audio)."""

    utt_id: str
    start: int
    n_positions: int
    text: tuple[int, ...] = ()


@dataclass
class PackedSample:
    input_ids: np.ndarray  # [T, S] int64 global ids
    labels: np.ndarray  # [T, S] int64 global ids or IGNORE_INDEX
    audio: list[AudioRef] = field(default_factory=list)
    sample_id: str = ""
    task: str = ""

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class TokenizedTurn:
    role: str
    ids: tuple[int, ...]  # text-tokenizer ids of the turn's text
    audio_id: str | None = None
    speak: bool = False
    voice: str | None = None  # assistant speech: a name in layout.voices, or None for ANS_A


@dataclass(frozen=True)
class TokenizedSample:
    id: str
    task: str
    turns: tuple[TokenizedTurn, ...]

    def turns_json(self) -> str:
        return json.dumps(
            [
                {
                    "role": t.role,
                    "ids": list(t.ids),
                    "audio_id": t.audio_id,
                    "speak": t.speak,
                    "voice": t.voice,
                }
                for t in self.turns
            ],
            separators=(",", ":"),
        )

    @staticmethod
    def parse_turns(text: str) -> tuple[TokenizedTurn, ...]:
        return tuple(
            TokenizedTurn(
                role=t["role"],
                ids=tuple(t["ids"]),
                audio_id=t["audio_id"],
                speak=t["speak"],
                voice=t["voice"],
            )
            for t in json.loads(text)
        )


def tokenize_sample(
    sample: Sample, tokenizer: TextTokenizerLike, voice_by_utt: Mapping[str, str] | None = None
) -> TokenizedSample:
    """Tokenise every turn's text; assistant speech turns get their voice name from ``voice_by_utt``."""
    voice_by_utt = voice_by_utt or {}
    turns = []
    for turn in sample.turns:
        voice = None
        if turn.role == "assistant" and turn.speak and turn.audio_id is not None:
            voice = voice_by_utt.get(turn.audio_id)
        turns.append(
            TokenizedTurn(turn.role, tuple(tokenizer.encode(turn.text)), turn.audio_id, turn.speak, voice)
        )
    return TokenizedSample(sample.id, sample.task, tuple(turns))


# ---- blocks: each returns (input rows [n, S], label rows [n, S]) -------------------------------------------


class _Block(NamedTuple):
    inputs: np.ndarray
    labels: np.ndarray
    audio: tuple[AudioRef, ...] = ()  # start relative to the block


def _audio_row(layout: TokenLayout, name: str) -> np.ndarray:
    """Global ids of one audio special (or ``VOICE:x``) on every audio stream."""
    return np.array([layout.audio_special(name, s) for s in range(layout.n_audio_streams)], dtype=np.int64)


def _rows(layout: TokenLayout, text_ids: Sequence[int], audio: str = "PAD_A") -> np.ndarray:
    """Rows with the given text-stream ids and one audio special on every audio stream."""
    rows = np.empty((len(text_ids), layout.n_streams), dtype=np.int64)
    rows[:, : layout.n_audio_streams] = _audio_row(layout, audio)
    rows[:, layout.text_stream] = np.asarray(text_ids, dtype=np.int64)
    return rows


def _ignored(inputs: np.ndarray) -> np.ndarray:
    return np.full_like(inputs, IGNORE_INDEX)


def _check_text(layout: TokenLayout, ids: Sequence[int], where: str) -> None:
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= layout.text_vocab_size):
        raise ValueError(f"{where}: text ids outside the text vocabulary [0, {layout.text_vocab_size})")


def _text_turn(layout: TokenLayout, marker: str, ids: Sequence[int]) -> _Block:
    """A role marker around text (``TokenLayout.marker``: one special, or the chat template's ids)."""
    before, after = layout.marker(marker)
    inputs = _rows(layout, [*before, *ids, *after])
    return _Block(inputs, _ignored(inputs))


def _speech_turn(layout: TokenLayout, utt_id: str, n_positions: int, text: Sequence[int] = ()) -> _Block:
    """USER marker, BOA, ``n_positions`` feature positions (AUDIO_PH), EOA (then the marker's closing ids).
    Zero positions is a turn in which a hearing head heard nothing (silence, noise)."""
    if n_positions < 0:
        raise ValueError(f"user audio {utt_id!r} cannot occupy {n_positions} positions")
    ph = layout.text_special("AUDIO_PH")
    before, after = layout.marker("USER")
    inputs = np.concatenate(
        [
            _rows(layout, before),
            _rows(layout, [ph], audio="BOA"),
            _rows(layout, [ph] * n_positions),
            _rows(layout, [ph], audio="EOA"),
            _rows(layout, after),
        ]
    )
    return _Block(inputs, _ignored(inputs), (AudioRef(utt_id, len(before) + 1, n_positions, tuple(text)),))


def _heard_turn(layout: TokenLayout, ids: Sequence[int]) -> _Block:
    """A spoken user turn as a hearing interface gives it to the LM (``deeptalk.model.hearing``, ``ctc_tokens``):
    BOA, the heard words on the text stream, EOA — here simulated from a typed turn."""
    ph = layout.text_special("AUDIO_PH")
    before, after = layout.marker("USER")
    inputs = np.concatenate([_rows(layout, before), _rows(layout, [ph], audio="BOA"), _rows(layout, ids),
                             _rows(layout, [ph], audio="EOA"), _rows(layout, after)])
    return _Block(inputs, _ignored(inputs))


def simulate_word_errors(ids: Sequence[int], wer: float, rng: random.Random, vocab: tuple[int, int]) -> tuple[int, ...]:
    """``ids`` as a recogniser with word error rate ~``wer`` might hear them: each word is, with probability
    ``wer``, substituted (1/2), deleted (1/4) or followed by an inserted word (1/4); new words are drawn
    uniformly from ``range(*vocab)``."""
    out: list[int] = []
    for tok in ids:
        if rng.random() >= wer:
            out.append(tok)
            continue
        op = rng.random()
        if op < 0.5:
            out.append(rng.randrange(*vocab))
        elif op >= 0.75:
            out.extend((tok, rng.randrange(*vocab)))
    return tuple(out)


def answer_token(task: str, user_spoke: bool, voice: str | None = None, speak: bool = False) -> str:
    """The audio special that opens an answer, naming what is asked (paper.md §1.4, the reference's task tokens).

    Spoken answers open with their voice (``ANS_A`` or ``VOICE:<name>``); text answers with a task token:
    ``ASR`` to transcribe, ``AQA`` to answer a spoken question, ``TQA`` to answer a typed one. A TTS request
    needs no token of its own: it is a spoken answer to a typed "repeat …" turn.
    """
    if speak:
        return "ANS_A" if voice is None else f"VOICE:{voice}"
    if voice is not None:
        raise ValueError("a voice only applies to spoken answers (speak=True)")
    if task == "asr":
        return "ASR"
    return "AQA" if user_spoke else "TQA"


def _answer_open(layout: TokenLayout, token: str) -> np.ndarray:
    """The ASSISTANT marker; its last row, the last prompt position, carries ``token`` (:func:`answer_token`)."""
    before, _ = layout.marker("ASSISTANT")
    return np.concatenate([_rows(layout, before[:-1]), _rows(layout, before[-1:], audio=token)])


def _text_answer(layout: TokenLayout, ids: Sequence[int], labelled: bool, token: str) -> _Block:
    head = _answer_open(layout, token)
    body = _rows(layout, [*ids, layout.text_special("EOT")])
    inputs = np.concatenate([head, body])
    labels = _ignored(inputs)
    if labelled:
        labels[len(head):, layout.text_stream] = body[:, layout.text_stream]
    return _Block(inputs, labels)


def delay_codes(layout: TokenLayout, codes: np.ndarray, n_text: int) -> tuple[np.ndarray, np.ndarray]:
    """Audio-stream rows of a spoken answer, from the position after the answer token.

    Stream i holds i+1 ``PAD_A`` (delay, label IGNORE), its codes, ``EOA``, then ``PAD_A`` (label IGNORE)
    up to ``max(n_text + 1, T + K + 1)`` rows, the answer block's length. Returns ``(inputs, labels)``,
    both ``[L, K]``.
    """
    codes = np.asarray(codes, dtype=np.int64)
    k = layout.n_audio_streams
    if codes.ndim != 2 or codes.shape[0] != k:
        raise ValueError(f"codes must have shape [{k}, T], got {tuple(codes.shape)}")
    if codes.size and (codes.min() < 0 or codes.max() >= layout.codebook_size):
        raise ValueError(f"codec codes outside the codebook [0, {layout.codebook_size})")
    t = codes.shape[1]
    length = max(n_text + 1, t + k + 1)
    inputs = np.empty((length, k), dtype=np.int64)
    labels = np.full((length, k), IGNORE_INDEX, dtype=np.int64)
    for i in range(k):
        offset = layout.stream_offset(i)
        pad, eoa = layout.audio_special("PAD_A", i), layout.audio_special("EOA", i)
        inputs[:, i] = pad
        inputs[i + 1 : i + 1 + t, i] = codes[i] + offset
        inputs[i + 1 + t, i] = eoa
        labels[i + 1 : i + 2 + t, i] = inputs[i + 1 : i + 2 + t, i]
    return inputs, labels


def aligned_rows(frames: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rows (after the answer token) of a spoken answer's text tokens in the aligned layout.

    Token ``k`` goes to its word's start frame ``f_k``, later only where earlier tokens still occupy the
    rows: ``r_k = max(f_k, r_{k-1} + 1)`` (tokens of one word, a number's digits, punctuation follow each
    other; rows strictly increase).
    """
    frames = np.asarray(frames, dtype=np.int64)
    if frames.ndim != 1:
        raise ValueError(f"token frames must be 1-D, got shape {tuple(frames.shape)}")
    if frames.size and frames.min() < 0:
        raise ValueError("token frames must be non-negative")
    rows = np.empty_like(frames)
    last = -1
    for k, f in enumerate(frames.tolist()):
        last = max(f, last + 1)
        rows[k] = last
    return rows


def _speech_answer(
    layout: TokenLayout,
    ids: Sequence[int],
    codes: np.ndarray,
    voice: str | None,
    frames: Sequence[int] | np.ndarray | None = None,
) -> _Block:
    """ASSISTANT[voice] row, then the answer in ``layout.answer_layout`` (see the module docstring);
    ``frames``: the codec frame where each text token's word starts (aligned layout only)."""
    head = _answer_open(layout, answer_token("", False, voice, speak=True))
    if layout.answer_layout == "aligned":
        if frames is None or len(frames) != len(ids):
            raise ValueError(
                f"the aligned layout needs one start frame per text token: {len(ids)} tokens, "
                f"{'no' if frames is None else len(frames)} frames"
            )
        rows = aligned_rows(frames)
    else:
        rows = np.arange(len(ids), dtype=np.int64)
    n_text = int(rows[-1]) + 1 if len(rows) else 0  # rows up to the last text token; EOT goes next
    audio_in, audio_lab = delay_codes(layout, codes, n_text)
    length = audio_in.shape[0]
    text_in = np.full(length, layout.text_special("PAD_T"), dtype=np.int64)
    text_in[rows] = np.asarray(ids, dtype=np.int64)
    text_in[n_text] = layout.text_special("EOT")
    text_lab = np.full(length, IGNORE_INDEX, dtype=np.int64)
    text_lab[: n_text + 1] = text_in[: n_text + 1]  # text_first: exactly the ids and EOT
    body_in = np.concatenate([audio_in, text_in[:, None]], axis=1)
    body_lab = np.concatenate([audio_lab, text_lab[:, None]], axis=1)
    return _Block(np.concatenate([head, body_in]), np.concatenate([_ignored(head), body_lab]))


# ---- the packer --------------------------------------------------------------------------------------------


def _speaks(turn: TokenizedTurn) -> bool:
    return turn.role == "assistant" and turn.speak and turn.audio_id is not None


def _last_user_spoke(user_speech: Sequence[bool], turns: Sequence[TokenizedTurn]) -> bool:
    """Whether the latest user turn before an answer was given as speech (False when there is none)."""
    spoke = [s for s, t in zip(user_speech, turns, strict=False) if t.role == "user"]
    return bool(spoke and spoke[-1])


def choose_target(sample: TokenizedSample, rng: random.Random, train: bool) -> int:
    """Index of the assistant turn the sequence ends with (reference ``get_item``).

    Conversations with speech answers end at a random spoken assistant turn in training, the last in eval;
    text-only conversations end at their last assistant turn.
    """
    assistant = [i for i, t in enumerate(sample.turns) if t.role == "assistant"]
    if not assistant:
        raise ValueError(f"sample {sample.id!r} has no assistant turn to learn from")
    spoken = [i for i in assistant if _speaks(sample.turns[i])]
    if spoken:
        return rng.choice(spoken) if train else spoken[-1]
    return assistant[-1]


def _user_speaks(
    turn: TokenizedTurn, task: str, rng: random.Random, config: PackingConfig, train: bool
) -> bool:
    """Speech or text input. Training re-draws it for ``random_speech_tasks`` (reference ``get_item``);
    evaluation keeps the corpus's own draw (``turn.speak``) so eval sets are fixed."""
    if turn.audio_id is None:
        if turn.speak:
            raise ValueError(f"user turn {turn!r} asks for speech input but has no audio_id")
        return False
    if train and task in config.random_speech_tasks:
        return rng.random() < config.user_speech_prob
    return turn.speak


def pack_tokenized(
    sample: TokenizedSample,
    layout: TokenLayout,
    codes_by_utt: Mapping[str, np.ndarray | torch.Tensor],
    n_positions_by_utt: Mapping[str, int],
    rng: random.Random,
    *,
    train: bool = True,
    config: PackingConfig | None = None,
    token_frames_by_utt: Mapping[str, np.ndarray] | None = None,
) -> PackedSample:
    """Pack one tokenised conversation (see the module docstring for the template).

    Spoken answers are laid out as ``layout.answer_layout`` says; the aligned layout reads the codec frame
    where each answer token's word starts from ``token_frames_by_utt`` (``ProcessedStore.token_frames``).

    Random choices (training only), drawn from ``rng`` in a fixed order: the target assistant turn (see
    :func:`choose_target`), then speech-vs-text for each user turn of ``config.random_speech_tasks``.
    A conversation whose last turn speaks has targets only on that turn (``use_last_turn_if_codec``);
    a text-only conversation has targets on every assistant turn. Sequences longer than
    ``config.max_length`` drop their oldest turns, then are cut (a cut user-audio segment keeps the
    positions that remain).
    """
    config = config or PackingConfig()
    target = choose_target(sample, rng, train)
    turns = sample.turns[: target + 1]
    spoken_target = _speaks(turns[-1])
    user_speech = [
        _user_speaks(t, sample.task, rng, config, train) if t.role == "user" else False for t in turns
    ]
    if train and config.heard_text_prob > 0 and sample.task in config.heard_text_tasks:
        turns, user_speech = _simulate_heard(turns, user_speech, rng, config, layout)
    blocks = _context_blocks(
        sample.id, turns[:-1], user_speech, layout, n_positions_by_utt, labelled_answers=not spoken_target,
        task=sample.task,
    )
    answer = turns[-1]
    where = f"sample {sample.id!r} turn {len(turns) - 1}"
    _check_text(layout, answer.ids, where)
    if spoken_target:
        if answer.audio_id not in codes_by_utt:
            raise ValueError(f"{where}: no codec codes for the spoken answer {answer.audio_id!r}")
        codes = codes_by_utt[answer.audio_id]
        codes = codes.numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        frames = None
        if layout.answer_layout == "aligned":
            if token_frames_by_utt is None or answer.audio_id not in token_frames_by_utt:
                raise ValueError(f"{where}: no word timings for the spoken answer {answer.audio_id!r}")
            frames = token_frames_by_utt[answer.audio_id]
            if len(frames) != len(answer.ids):
                raise ValueError(
                    f"{where}: {len(frames)} word timings for {len(answer.ids)} text tokens of "
                    f"{answer.audio_id!r} (timings made with another tokenizer? rerun encode)"
                )
        blocks.append(_speech_answer(layout, answer.ids, codes, answer.voice, frames))
    else:
        token = answer_token(sample.task, _last_user_spoke(user_speech, turns))
        blocks.append(_text_answer(layout, answer.ids, labelled=True, token=token))
    return _fit(blocks, [t.role for t in turns], sample, config.max_length)


def _simulate_heard(turns, user_speech, rng: random.Random, config: PackingConfig, layout: TokenLayout):
    """Typed user turns drawn to be heard speech: their ids get simulated word errors and no audio, and they
    count as spoken (``_context_blocks`` packs them with :func:`_heard_turn`)."""
    turns, user_speech = list(turns), list(user_speech)
    vocab = (len(TOKENIZER_SPECIALS), layout.text_vocab_size)  # any word, never <pad>/<unk>/<bos>/<eos>
    for i, turn in enumerate(turns):
        if turn.role == "user" and not user_speech[i] and rng.random() < config.heard_text_prob:
            heard = simulate_word_errors(turn.ids, config.heard_text_wer, rng, vocab)
            turns[i] = TokenizedTurn("user", heard)
            user_speech[i] = True
    return tuple(turns), user_speech


def pack_prompt(
    turns: Sequence[TokenizedTurn],
    layout: TokenLayout,
    n_positions_by_utt: Mapping[str, int],
    *,
    speak: bool,
    voice: str | None = None,
    task: str = "",
    max_length: int | None = None,
    sample_id: str = "prompt",
) -> PackedSample:
    """An inference prompt: the conversation so far, then the ASSISTANT row that opens the answer.

    Rendered exactly like the context of a training sequence: user turns with an ``audio_id`` are speech
    (their ids ignored), assistant turns are text answers. The last row carries the answer/voice token
    (``speak=True``) or the task token of a text answer (:func:`answer_token`; ``task="asr"`` asks for a
    transcript), so a model continues with the answer's first token. Labels are all ``IGNORE_INDEX``. Too
    long prompts lose their oldest turns first.
    """
    if not turns or turns[-1].role != "user":
        raise ValueError("a prompt must end with a user turn")
    if voice is not None and not speak:
        raise ValueError("a voice only applies to spoken answers (speak=True)")
    turns = tuple(turns)
    user_speech = [t.role == "user" and t.audio_id is not None for t in turns]
    blocks = _context_blocks(
        sample_id, turns, user_speech, layout, n_positions_by_utt, labelled_answers=False, task=task
    )
    head = _answer_open(layout, answer_token(task, user_speech[-1], voice, speak))
    blocks.append(_Block(head, _ignored(head)))
    roles = [t.role for t in turns] + ["assistant"]
    return _fit(blocks, roles, TokenizedSample(sample_id, "", turns), max_length or 2**62)


def _context_blocks(
    sample_id: str,
    turns: Sequence[TokenizedTurn],
    user_speech: Sequence[bool],
    layout: TokenLayout,
    n_positions_by_utt: Mapping[str, int],
    labelled_answers: bool,
    task: str,
) -> list[_Block]:
    """BOT, then one block per turn; assistant turns are text answers (labelled only if asked) opened with the
    task token their user turn asks for."""
    blocks = [_text_turn(layout, "BOT", ())]
    for i, (turn, speech_in) in enumerate(zip(turns, user_speech, strict=False)):
        where = f"sample {sample_id!r} turn {i}"
        _check_text(layout, turn.ids, where)
        if turn.role == "system":
            blocks.append(_text_turn(layout, "SYSTEM", turn.ids))
        elif turn.role == "assistant":
            token = answer_token(task, _last_user_spoke(user_speech[:i], turns[:i]))
            blocks.append(_text_answer(layout, turn.ids, labelled=labelled_answers, token=token))
        elif speech_in and turn.audio_id is None:  # simulated heard speech (PackingConfig.heard_text_prob)
            blocks.append(_heard_turn(layout, turn.ids))
        elif speech_in:
            if turn.audio_id not in n_positions_by_utt:
                raise ValueError(f"{where}: no input features for utterance {turn.audio_id!r}")
            blocks.append(_speech_turn(layout, turn.audio_id, int(n_positions_by_utt[turn.audio_id]), turn.ids))
        else:
            blocks.append(_text_turn(layout, "USER", turn.ids))
    return blocks


def _fit(blocks: list[_Block], roles: list[str], sample: TokenizedSample, max_length: int) -> PackedSample:
    """Drop the oldest turns, then cut, so the sequence fits ``max_length`` (``blocks[0]`` is BOT)."""
    n_system = next((i for i, r in enumerate(roles) if r != "system"), len(roles))
    prefix = blocks[: 1 + n_system]  # BOT and leading system turns are kept whatever the length
    body, dropped = _drop_oldest(prefix, blocks[1 + n_system :], roles[n_system:], max_length)
    packed = _concat(prefix + body, sample)
    if dropped:
        log.debug("sample %s: dropped %d oldest turns to fit %d positions", sample.id, dropped, max_length)
    if len(packed) > max_length:
        log.debug("sample %s: cut from %d to %d positions", sample.id, len(packed), max_length)
        packed = truncate(packed, max_length)
    return packed


def pack_sample(
    sample: Sample,
    layout: TokenLayout,
    tokenizer: TextTokenizerLike,
    codes_by_utt: Mapping[str, np.ndarray | torch.Tensor],
    n_positions_by_utt: Mapping[str, int],
    rng: random.Random,
    *,
    train: bool = True,
    config: PackingConfig | None = None,
    voice_by_utt: Mapping[str, str] | None = None,
    token_frames_by_utt: Mapping[str, np.ndarray] | None = None,
) -> PackedSample:
    """Tokenise and pack one conversation: :func:`tokenize_sample` then :func:`pack_tokenized`."""
    tokenized = tokenize_sample(sample, tokenizer, voice_by_utt)
    return pack_tokenized(
        tokenized, layout, codes_by_utt, n_positions_by_utt, rng, train=train, config=config,
        token_frames_by_utt=token_frames_by_utt,
    )


def _drop_oldest(
    prefix: list[_Block], body: list[_Block], roles: list[str], max_length: int
) -> tuple[list[_Block], int]:
    """Drop leading context turns (never the final user turn and answer) until the sequence fits."""
    fixed = sum(len(b.inputs) for b in prefix)
    dropped = 0
    while len(body) > 2 and fixed + sum(len(b.inputs) for b in body) > max_length:
        body, roles = body[1:], roles[1:]
        dropped += 1
        while len(body) > 2 and roles[0] != "user":  # a context window starts with a user turn
            body, roles = body[1:], roles[1:]
            dropped += 1
    return body, dropped


def _concat(blocks: Sequence[_Block], sample: TokenizedSample) -> PackedSample:
    audio, offset = [], 0
    for block in blocks:
        audio.extend(ref._replace(start=offset + ref.start) for ref in block.audio)
        offset += len(block.inputs)
    return PackedSample(
        input_ids=np.concatenate([b.inputs for b in blocks]),
        labels=np.concatenate([b.labels for b in blocks]),
        audio=audio,
        sample_id=sample.id,
        task=sample.task,
    )


def truncate(packed: PackedSample, max_length: int) -> PackedSample:
    """Cut to ``max_length`` positions; an audio segment cut short keeps the positions left (the model uses
    the first ``n_positions`` encoder frames), one cut away entirely is dropped."""
    if len(packed) <= max_length:
        return packed
    audio = [
        a._replace(n_positions=min(a.n_positions, max_length - a.start))
        for a in packed.audio
        if a.start < max_length
    ]
    return PackedSample(
        packed.input_ids[:max_length].copy(),
        packed.labels[:max_length].copy(),
        audio,
        packed.sample_id,
        packed.task,
    )


# ---- inverse helpers ---------------------------------------------------------------------------------------


def answer_start(input_ids: np.ndarray | torch.Tensor, layout: TokenLayout) -> int:
    """Position of the last answer-opening row: the ASSISTANT marker's last row, the only kind of row whose
    audio streams carry an answer/voice or task token (``ANS_A``, ``VOICE:*``, ``ASR``, ``AQA``, ``TQA``)."""
    ids = np.asarray(input_ids)
    assistant = layout.marker("ASSISTANT")[0][-1]
    opening = [layout.audio_special(n, 0) for n in ("ANS_A", "ASR", "AQA", "TQA")]
    opening += [layout.audio_special(f"VOICE:{v}", 0) for v in layout.voices]
    hits = np.flatnonzero((ids[:, layout.text_stream] == assistant) & np.isin(ids[:, 0], opening))
    if hits.size == 0:
        raise ValueError("sequence has no ASSISTANT marker")
    return int(hits[-1])


def undelay(audio_ids: np.ndarray | torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Codec codes ``[K, T]`` from the audio-stream ids of a spoken answer (inverse of :func:`delay_codes`).

    ``audio_ids`` is ``[T', K]`` (or ``[T', K+1]``; the text column is ignored) of global ids starting at
    the position right after the answer token. Stream i's codes start after its i+1 delay pads and end at
    its first non-code token (``EOA``); only frames complete on every stream are returned, so a partly
    generated answer gives the frames decodable so far.
    """
    ids = audio_ids.cpu().numpy() if isinstance(audio_ids, torch.Tensor) else np.asarray(audio_ids)
    k = layout.n_audio_streams
    if ids.ndim != 2 or ids.shape[1] not in (k, k + 1):
        raise ValueError(f"audio_ids must have shape [T, {k}] or [T, {k + 1}], got {tuple(ids.shape)}")
    streams = []
    for i in range(k):
        local = ids[i + 1 :, i].astype(np.int64) - layout.stream_offset(i)
        is_code = (local >= 0) & (local < layout.codebook_size)
        n = int(np.argmin(is_code)) if not is_code.all() else len(local)
        streams.append(local[:n])
    frames = min(len(s) for s in streams)
    return torch.from_numpy(np.stack([s[:frames] for s in streams]).astype(np.int64))
