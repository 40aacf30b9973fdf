"""Inference prompts packed by the training packer, so train and serve layouts cannot drift.

The conversation so far (``TokenizedTurn``s) is packed by :func:`deeptalk.data.packing.pack_prompt`, which
renders context exactly as training sequences do and ends with the ``ASSISTANT`` row of a text answer
(its task token: ``ASR``, ``AQA`` or ``TQA``). The generator rewrites that row's audio streams for the audio item of a spoken answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from deeptalk.batch import AudioSegments, pad_frames
from deeptalk.data.schema import TTS_PROMPT
from deeptalk.data.packing import TokenizedTurn, pack_prompt
from deeptalk.inference.generator import Prompt
from deeptalk.tokens import TokenLayout


def build_prompt(
    turns: Sequence[TokenizedTurn],
    layout: TokenLayout,
    frames_by_utt: Mapping[str, torch.Tensor],
    n_positions_by_utt: Mapping[str, int],
    max_length: int,
    task: str = "",
) -> Prompt:
    """Pack ``turns`` (ending with the user turn to answer) into a prompt that ends at the ``ASSISTANT`` row.

    ``frames_by_utt`` holds each user utterance's encoder frames ``[F, D]`` (``Engine.encode_audio``).
    Oldest turns are dropped to fit ``max_length`` positions; a prompt whose last user turn alone does not
    fit raises ValueError. ``task="asr"`` asks for a transcript instead of an answer.
    """
    packed = pack_prompt(turns, layout, n_positions_by_utt, speak=False, task=task, max_length=max_length)
    end = len(packed) - 1  # the answer-opening row, unless cutting to max_length removed it
    if packed.input_ids[end, layout.text_stream] != layout.marker("ASSISTANT")[0][-1]:
        raise ValueError(f"the conversation does not fit {max_length} prompt positions; shorten the input")
    audio = None
    if packed.audio:
        refs = packed.audio
        audio = AudioSegments(
            frames=pad_frames([frames_by_utt[r.utt_id] for r in refs]),
            n_positions=torch.tensor([r.n_positions for r in refs], dtype=torch.long),
            batch_index=torch.zeros(len(refs), dtype=torch.long),
            start=torch.tensor([r.start for r in refs], dtype=torch.long),
            frame_lengths=torch.tensor([frames_by_utt[r.utt_id].shape[0] for r in refs], dtype=torch.long),
        )
    return Prompt(input_ids=torch.from_numpy(packed.input_ids.copy()), audio=audio)


class TaskPrompts:
    """User turns of the one-shot tasks, phrased exactly as the corpus phrases them (``deeptalk.data.corpus``):
    ASR is a spoken user turn answered by its transcript; TTS asks to repeat a bracketed sentence."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def asr_turns(self, user_audio: TokenizedTurn) -> list[TokenizedTurn]:
        if user_audio.audio_id is None:
            raise ValueError("ASR needs a spoken user turn")
        return [user_audio]

    def tts_turns(self, text_ids: Sequence[int]) -> list[TokenizedTurn]:
        sentence = self.tokenizer.decode(list(text_ids))
        return [TokenizedTurn("user", tuple(self.tokenizer.encode(TTS_PROMPT.format(text=sentence))))]
