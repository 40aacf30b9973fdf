"""Hearing: CTC collapse, the CTC head's loss, and the LM reading heard units as text (pseudo_text / ctc_tokens)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deeptalk.batch import AudioSegments, SpeechBatch
from deeptalk.model.config import LossConfig, SpeechLMConfig
from deeptalk.model.hearing import collapse, heard_positions
from deeptalk.model.speech_lm import SpeechLM, load_hearing

from .conftest import AUDIO, LAYOUT, tiny_backbone

BLANK = LAYOUT.text_vocab_size


def hearing_model(interface: str, seed: int = 0) -> SpeechLM:
    torch.manual_seed(seed)
    audio = dataclasses.replace(AUDIO, interface=interface)
    return SpeechLM.build(SpeechLMConfig(tiny_backbone(), LAYOUT, audio, LossConfig()))


def logits_for(path: list[int]) -> torch.Tensor:
    """Logits [P, V + 1] whose argmax per position is ``path`` (blank = BLANK)."""
    out = torch.full((len(path), LAYOUT.text_vocab_size + 1), -5.0)
    for p, tok in enumerate(path):
        out[p, tok] = 5.0
    return out


def test_collapse_drops_blanks_and_merges_runs_like_ctc():
    units = collapse(logits_for([BLANK, 7, 7, BLANK, 7, 3, 3, BLANK]), temperature=1.0)
    assert units.tokens.tolist() == [7, 7, 3]  # a blank between two 7s keeps them apart
    assert units.posteriors.shape == (3, LAYOUT.text_vocab_size)
    assert torch.allclose(units.posteriors.sum(-1), torch.ones(3))
    assert units.posteriors.argmax(-1).tolist() == [7, 7, 3]


def test_collapse_of_all_blank_hears_nothing():
    units = collapse(logits_for([BLANK] * 5), temperature=1.0)
    assert len(units) == 0 and units.posteriors.shape == (0, LAYOUT.text_vocab_size)


def test_temperature_sharpens_the_posterior():
    logits = logits_for([4]) + torch.randn(1, LAYOUT.text_vocab_size + 1)
    soft, sharp = collapse(logits, 4.0).posteriors, collapse(logits, 0.25).posteriors
    assert sharp.max() > soft.max()


def force_hearing(model: SpeechLM, path: list[int]) -> None:
    """Make the head hear ``path`` (one token per position) whatever the frames: zero weights, path-shaped bias
    is impossible per position, so replace the head's forward."""
    fixed = logits_for(path)
    model.projector.forward = lambda frames: fixed.expand(frames.shape[0], -1, -1)


@pytest.mark.parametrize("interface", ["ctc_tokens", "pseudo_text"])
def test_lm_reads_heard_units_as_typed_text(interface):
    """A spoken turn whose head hears tokens [7, 3] embeds exactly like the typed tokens 7, 3 (ctc_tokens), or
    like their posterior-weighted rows (pseudo_text), on the text stream with PAD_A on the audio streams."""
    model = hearing_model(interface).eval()
    force_hearing(model, [BLANK, 7, 7, BLANK, 3])
    frames = torch.randn(1, 5 * AUDIO.projector_stride, AUDIO.encoder_dim)
    assert model.audio_positions(frames[0]) == 2
    assert model.transcribe_heard(frames[0]) == [7, 3]
    k = LAYOUT.n_audio_streams
    ids = torch.empty(1, 6, LAYOUT.n_streams, dtype=torch.long)
    for s in range(k):
        ids[..., s] = LAYOUT.audio_special("PAD_A", s)
    ids[0, :, LAYOUT.text_stream] = torch.tensor([1, LAYOUT.text_special("AUDIO_PH"),
                                                  LAYOUT.text_special("AUDIO_PH"), 7, 3, 2])
    audio = AudioSegments(frames=frames, n_positions=torch.tensor([2]), batch_index=torch.tensor([0]),
                          start=torch.tensor([1]), frame_lengths=torch.tensor([frames.shape[1]]))
    with torch.no_grad():
        spoken = model.embed(SpeechBatch(ids, torch.ones(1, 6, dtype=torch.long), None, audio))
        typed = model.embed(SpeechBatch(ids, torch.ones(1, 6, dtype=torch.long)))
    if interface == "ctc_tokens":
        assert torch.allclose(spoken[0, 1:3], typed[0, 3:5], atol=1e-6)
    else:
        units = model.hear(frames, [frames.shape[1]])[0]
        table = model.embed_tokens.weight
        pad = sum(table[LAYOUT.audio_special("PAD_A", s)] for s in range(k))
        expected = (pad + units.posteriors @ table[: LAYOUT.text_vocab_size]) / (k + 1)
        assert torch.allclose(spoken[0, 1:3], expected, atol=1e-5)
    assert torch.allclose(spoken[0, 3:], typed[0, 3:])


def test_a_segment_packed_with_more_positions_than_heard_is_refused():
    model = hearing_model("ctc_tokens").eval()
    force_hearing(model, [7, BLANK, 3])
    frames = torch.randn(1, 3 * AUDIO.projector_stride, AUDIO.encoder_dim)
    ids = torch.full((1, 6, LAYOUT.n_streams), 1, dtype=torch.long)
    audio = AudioSegments(frames=frames, n_positions=torch.tensor([4]), batch_index=torch.tensor([0]),
                          start=torch.tensor([1]), frame_lengths=torch.tensor([frames.shape[1]]))
    with pytest.raises(ValueError, match="hears 2 units"):
        model.embed(SpeechBatch(ids, torch.ones(1, 6, dtype=torch.long), None, audio))


def ctc_batch(targets: list[list[int]], frames: torch.Tensor) -> SpeechBatch:
    n = len(targets)
    padded = torch.zeros(n, max(len(t) for t in targets), dtype=torch.long)
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.tensor(t)
    audio = AudioSegments(
        frames=frames, n_positions=torch.ones(n, dtype=torch.long), batch_index=torch.arange(n),
        start=torch.ones(n, dtype=torch.long), frame_lengths=torch.full((n,), frames.shape[1]),
        targets=padded, target_lengths=torch.tensor([len(t) for t in targets]),
    )
    ids = torch.full((n, 4, LAYOUT.n_streams), 1, dtype=torch.long)
    return SpeechBatch(ids, torch.ones(n, 4, dtype=torch.long), ids.clone(), audio)


def test_align_only_trains_the_head_to_hear_the_transcript():
    """S1 with a hearing interface: CTC alone, gradients reach only the head, and it learns to hear."""
    torch.manual_seed(0)
    model = hearing_model("ctc_tokens").train()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.projector.parameters():
        p.requires_grad_(True)
    model.projector.dropout.p = 0.0
    model.cfg = dataclasses.replace(model.cfg, audio_input=dataclasses.replace(
        model.cfg.audio_input, ctc_time_masks=0, ctc_channel_masks=0))
    model.projector.cfg = model.cfg.audio_input
    frames = torch.randn(2, 6 * AUDIO.projector_stride, AUDIO.encoder_dim)
    batch = ctc_batch([[5, 9], [11]], frames)
    opt = torch.optim.Adam(model.projector.parameters(), lr=3e-2)
    first = None
    for _ in range(60):
        out = model(batch, align_only=True)
        assert set(out.stream_losses) == {"ctc"} and out.logits is None
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else float(out.loss.detach())
    assert float(out.loss.detach()) < 0.2 * first
    model.eval()
    assert model.transcribe_heard(frames[0]) == [5, 9]
    assert model.transcribe_heard(frames[1]) == [11]


def test_projector_interface_ignores_align_only(model):
    """With the frame projector, S1 aligns through the LM loss: align_only changes nothing."""
    from .conftest import random_batch

    batch = random_batch()
    with torch.no_grad():
        assert torch.allclose(model(batch, align_only=True).loss, model(batch).loss)


def test_heard_positions_and_saved_head_round_trip(tmp_path):
    """The counts packing uses come from the saved head exactly as the loaded model hears at serving time."""
    model = hearing_model("pseudo_text", seed=3).eval()
    model.save_pretrained(tmp_path / "m")
    head, temperature = load_hearing(tmp_path / "m")
    g = torch.Generator().manual_seed(0)
    clips = {f"u{i}": torch.randn(4 * (i + 2), AUDIO.encoder_dim, generator=g) for i in range(5)}
    counts = heard_positions(head, clips, clips.__getitem__, temperature)
    loaded = SpeechLM.from_pretrained(tmp_path / "m")
    assert counts == {u: loaded.audio_positions(f) for u, f in clips.items()}
    assert load_hearing(tmp_path / "nothing") is None


def test_unknown_interface_is_an_error():
    with pytest.raises(ValueError, match="interface"):
        dataclasses.replace(AUDIO, interface="ears")


def test_s1_replaces_the_base_models_audio_interface_with_the_profiles(tmp_path):
    """A text LLM saved with the frame projector starts S1 with a fresh CTC head when the profile asks for one
    (and the frozen encoder is kept), so switching the interface needs no new text pretraining."""
    base = hearing_model("projector")
    encoder = {k: v.clone() for k, v in base.audio_encoder.state_dict().items()}
    torch.manual_seed(0)
    model = base.with_new_audio_interface(dataclasses.replace(AUDIO, interface="pseudo_text"))
    assert model.hears_text and model.projector.n_units == LAYOUT.text_vocab_size
    assert all(torch.equal(v, model.audio_encoder.state_dict()[k]) for k, v in encoder.items())
    model.save_pretrained(tmp_path / "s1")
    assert SpeechLM.from_pretrained(tmp_path / "s1").cfg.audio_input.interface == "pseudo_text"
    with pytest.raises(ValueError, match="same encoder"):
        model.with_new_audio_interface(dataclasses.replace(AUDIO, encoder_dim=AUDIO.encoder_dim * 2))
