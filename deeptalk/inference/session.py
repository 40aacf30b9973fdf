"""One conversation: history, voice, barge-in, and the event stream of each answer.

``Session.respond`` turns the generator's decode steps into client events: text deltas as tokens appear,
audio chunks as soon as the codec's streaming decoder has final samples, then ``Done`` with timings. Each
session owns its state, its decoding state and its codec decoder; only the network and codec weights are shared
(read-only). Its decode steps run alone, or, when the engine has a scheduler (the service), in the scheduler's
batch together with every other session's (:mod:`deeptalk.inference.scheduler`): the same steps either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from deeptalk.data.packing import TokenizedTurn
from deeptalk.inference.events import AudioChunk, Done, Event, TextDelta, Timings
from deeptalk.inference.generator import Generator, Prompt, undelay_frames
from deeptalk.inference.prompt import TaskPrompts, build_prompt
from deeptalk.inference.scheduler import Scheduler
from deeptalk.tokens import TokenLayout

# The answer to a spoken turn in which a hearing head heard no word (deeptalk.model.hearing).
NOTHING_HEARD = "Sorry, I heard nothing. Please say it again."

log = logging.getLogger(__name__)


class SessionHost(Protocol):
    """What a session uses of the shared, read-only assets (:class:`~deeptalk.inference.engine.Engine` is one)."""

    model: Any  # deeptalk.model.SpeechLM (eval mode)
    codec: Any  # deeptalk.codec.Codec
    tokenizer: Any
    config: Any  # deeptalk.inference.config.ServiceConfig
    tasks: TaskPrompts
    layout: TokenLayout
    device: str
    default_voice: str | None
    max_prompt_positions: int
    scheduler: Scheduler | None  # batches the decode steps of all sessions; None: each decodes alone
    hears_text: bool  # the model has a CTC head (Engine.hears_text)

    def check_voice(self, voice: str | None) -> str | None: ...
    def check_text(self, text: str) -> tuple[int, ...]: ...
    def encode_audio(self, wav: np.ndarray) -> tuple[torch.Tensor, int]: ...


@dataclass
class SessionState:
    """Conversation context: tokenised turns and the encoder frames of the user audio they refer to."""

    turns: list[TokenizedTurn] = field(default_factory=list)
    frames: dict[str, torch.Tensor] = field(default_factory=dict)
    n_positions: dict[str, int] = field(default_factory=dict)
    n_utterances: int = 0

    def reset(self) -> None:
        self.turns.clear()
        self.frames.clear()
        self.n_positions.clear()
        self.n_utterances = 0

    def trim(self, max_turns: int) -> None:
        """Keep the last ``max_turns`` turns, starting at a user turn; forget audio no turn refers to."""
        if len(self.turns) > max_turns:
            self.turns = self.turns[-max_turns:]
            while self.turns and self.turns[0].role != "user":
                self.turns.pop(0)
        used = {t.audio_id for t in self.turns}
        for utt in [u for u in self.frames if u not in used]:
            del self.frames[utt]
            del self.n_positions[utt]


class Session:
    """A conversation with the model. Not thread-safe except :meth:`interrupt`, which any thread may call."""

    def __init__(self, engine: SessionHost, voice: str | None = None):
        self.engine = engine
        self.state = SessionState()
        self.voice = engine.default_voice if voice is None else engine.check_voice(voice)
        self._stop = threading.Event()
        self._generator = Generator(engine.model, engine.config.sampling, engine.device)
        self._decoder = self._generator.decoder  # this session's decoding state, alone or in the scheduler's batch

    # ---- control ------------------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Barge-in: the running answer stops before its next decode step; the session stays usable."""
        self._stop.set()

    def reset(self) -> None:
        self.state.reset()
        self._stop.clear()

    # ---- answers ------------------------------------------------------------------------------------------
    def respond(
        self,
        *,
        audio: np.ndarray | None = None,
        text: str | None = None,
        speak: bool = True,
        voice: str | None = None,
    ) -> Iterator[Event]:
        """Answer a user turn given as 16 kHz mono ``audio`` or as ``text``; the turn and the answer text join
        the history. ``speak=False`` gives a text-only answer.

        Input is checked and the prompt built here, so bad input raises ValueError at the call; an
        ``interrupt()`` after the call (even before the first event is read) stops this answer.
        """
        t0 = time.perf_counter()
        answer_voice = self.voice if voice is None else self.engine.check_voice(voice)
        user, features = self._user_turn(audio, text)
        if features and features[user.audio_id][1] == 0:  # a hearing head heard no word: say so, remember nothing
            return self._nothing_heard(speak, answer_voice)
        prompt = self._prompt([*self.state.turns, user], features)
        self._stop.clear()
        answer: list[int] = []
        events = self._stream(prompt, speak=speak, voice=answer_voice, max_steps=self.engine.config.max_steps,
                              t0=t0, answer=answer)
        return self._remembering(events, user, features, answer)

    def transcribe(self, audio: np.ndarray, source: str | None = None) -> Iterator[Event]:
        """ASR: the transcript of 16 kHz mono ``audio`` as text events (history untouched). ``source`` (default
        ``ServiceConfig.asr_source``): ``lm`` decodes the ASR task; ``ctc`` gives a hearing head's transcript."""
        t0 = time.perf_counter()
        source = source or self.engine.config.asr_source
        user, features = self._user_turn(audio, None)
        frames, n_heard = features[user.audio_id]
        if self.engine.hears_text and (n_heard == 0 or source == "ctc"):
            return self._heard_transcript(frames, t0)
        prompt = self._prompt(self.engine.tasks.asr_turns(user), features, task="asr")
        self._stop.clear()
        return self._stream(prompt, speak=False, voice=None, max_steps=self.engine.config.max_asr_steps, t0=t0)

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[Event]:
        """TTS: speak ``text`` (the model repeats it; events carry the text it actually produced)."""
        t0 = time.perf_counter()
        voice = self.voice if voice is None else self.engine.check_voice(voice)
        prompt = self._prompt(self.engine.tasks.tts_turns(self._text_ids(text)), {})
        self._stop.clear()
        return self._stream(prompt, speak=True, voice=voice, max_steps=self.engine.config.max_steps, t0=t0)

    def heard_text(self, audio: np.ndarray) -> str:
        """What the model's CTC head hears in 16 kHz mono ``audio`` (no decoding: cheap enough to run while the
        user is still speaking); ValueError for a model that reads projected frames."""
        if not self.engine.hears_text:
            raise ValueError("this model has no CTC head (audio_input.interface projector): nothing to transcribe early")
        frames, _ = self.engine.encode_audio(audio)
        return self._heard(frames)

    def _heard(self, frames: torch.Tensor) -> str:
        return self.engine.tokenizer.decode(self.engine.model.transcribe_heard(frames))

    def _heard_transcript(self, frames: torch.Tensor, t0: float) -> Iterator[Event]:
        text = self._heard(frames)
        if text:
            yield TextDelta(text)
        yield Done(text=text, reason="complete", timings=Timings(total_ms=(time.perf_counter() - t0) * 1e3))

    def _nothing_heard(self, speak: bool, voice: str | None) -> Iterator[Event]:
        """The answer to a spoken turn in which no word was heard (silence, a tone, noise): NOTHING_HEARD as
        text and, if asked, spoken by the model; the history is untouched."""
        yield TextDelta(NOTHING_HEARD)
        done = Done(text=NOTHING_HEARD, reason="complete")
        if speak and not self.engine.tokenizer.unknown_words(NOTHING_HEARD):  # spoken if the model has the words
            for event in self.synthesize(NOTHING_HEARD, voice):
                if isinstance(event, AudioChunk):
                    yield event
                elif isinstance(event, Done):
                    done = Done(text=NOTHING_HEARD, reason=event.reason, timings=event.timings, codes=event.codes)
        yield done

    def _remembering(
        self, events: Iterator[Event], user: TokenizedTurn, features: dict, answer: list[int]
    ) -> Iterator[Event]:
        for event in events:
            if isinstance(event, Done):  # record the turn before the client sees Done (it may stop reading)
                self._remember(user, features, answer)
            yield event

    def _remember(self, user: TokenizedTurn, features: dict, answer: list[int]) -> None:
        """History gets the user turn and the answer text as far as it was generated (also when interrupted)."""
        st = self.state
        if features:
            st.frames[user.audio_id], st.n_positions[user.audio_id] = features[user.audio_id]
            st.n_utterances += 1
        st.turns.extend([user, TokenizedTurn("assistant", tuple(answer))])
        st.trim(self.engine.config.max_history_turns)

    # ---- internals ----------------------------------------------------------------------------------------
    def _text_ids(self, text: str) -> tuple[int, ...]:
        return self.engine.check_text(text)

    def _user_turn(
        self, audio: np.ndarray | None, text: str | None
    ) -> tuple[TokenizedTurn, dict[str, tuple[torch.Tensor, int]]]:
        """The user turn, and the features of its audio keyed by a fresh utterance id (empty for text)."""
        if (audio is None) == (text is None):
            raise ValueError("give exactly one of audio or text")
        if text is not None:
            return TokenizedTurn("user", self._text_ids(text)), {}
        utt = f"u{self.state.n_utterances}"
        return TokenizedTurn("user", (), audio_id=utt, speak=True), {utt: self.engine.encode_audio(audio)}

    def _prompt(
        self, turns: list[TokenizedTurn], features: dict[str, tuple[torch.Tensor, int]], task: str = ""
    ) -> Prompt:
        st = self.state
        frames = {**st.frames, **{u: f[0] for u, f in features.items()}}
        n_positions = {**st.n_positions, **{u: f[1] for u, f in features.items()}}
        return build_prompt(
            turns, self.engine.layout, frames, n_positions, self.engine.max_prompt_positions, task=task
        )

    def _stream(
        self,
        prompt: Prompt,
        *,
        speak: bool,
        voice: str | None,
        max_steps: int,
        t0: float,
        answer: list[int] | None = None,
    ) -> Iterator[Event]:
        eng = self.engine
        timings = Timings()
        ms: Callable[[], float] = lambda: (time.perf_counter() - t0) * 1000.0  # noqa: E731
        decoder = eng.codec.decode_stream() if speak else None
        eot = eng.layout.text_special("EOT")
        answer = [] if answer is None else answer
        said = ""
        pending: list[torch.Tensor] = []
        frames: list[torch.Tensor] = []
        rng = (
            None
            if eng.config.sampling.seed is None
            else torch.Generator(device=eng.device).manual_seed(eng.config.sampling.seed)  # where sampling runs
        )
        code = eng.layout.answer_code(voice) if speak else None
        deadline = time.monotonic() + eng.config.max_answer_seconds
        if eng.scheduler is not None:
            steps = eng.scheduler.generate(
                self._decoder, prompt, speak=speak, answer_code=code, max_steps=max_steps, stop=self._stop, rng=rng,
                deadline=deadline,
            )
        else:
            steps = self._generator.generate(
                prompt, speak=speak, answer_code=code, max_steps=max_steps, stop=self._stop, rng=rng,
                deadline=deadline,
            )
        for out in steps:
            timings.steps = out.step + 1
            if out.step == 0:
                timings.prefill_ms = ms()
            if out.text_token is not None and out.text_token != eot:
                answer.append(out.text_token)
                text = eng.tokenizer.decode(answer)
                delta = (
                    text[len(said) :]
                    if text.startswith(said)
                    else " " + eng.tokenizer.decode([out.text_token])
                )
                said = text
                if delta:
                    if timings.first_text_ms is None:
                        timings.first_text_ms = ms()
                    yield TextDelta(delta)
            if decoder is not None and out.frame is not None:
                frame = out.frame.cpu()  # the codec decodes on the CPU whatever device the model is on
                frames.append(frame)
                pending.append(frame)
                if len(pending) >= eng.config.chunk_frames:
                    pcm = decoder.push(torch.stack(pending, dim=1))
                    pending = []
                    if pcm.size:
                        yield self._chunk(pcm, timings, ms)
        reason = self._decoder.state.reason
        if decoder is not None and reason != "interrupted":
            if pending:
                pcm = decoder.push(torch.stack(pending, dim=1))
                if pcm.size:
                    yield self._chunk(pcm, timings, ms)
            pcm = decoder.flush()
            if pcm.size:
                yield self._chunk(pcm, timings, ms)
        timings.total_ms = ms()
        if timings.audio_seconds > 0:
            timings.rtf = timings.total_ms / 1000.0 / timings.audio_seconds
        log.debug("answer done: %s, %d steps, %.0f ms", reason, timings.steps, timings.total_ms)
        codes = undelay_frames(frames, eng.layout.n_audio_streams) if speak else None
        yield Done(text=eng.tokenizer.decode(answer), reason=reason, timings=timings, codes=codes)

    def _chunk(self, pcm: np.ndarray, timings: Timings, ms: Callable[[], float]) -> AudioChunk:
        if timings.first_audio_ms is None:
            timings.first_audio_ms = ms()
        chunk = AudioChunk(pcm=np.asarray(pcm, dtype=np.float32), sample_rate=self.engine.codec.sample_rate)
        timings.audio_seconds += chunk.seconds
        return chunk
