"""TokenLayout: every id maps back to (stream, local index); per-stream logit slices partition the head."""

from __future__ import annotations

import pytest

from deeptalk.tokens import AUDIO_SPECIALS, TEXT_SPECIALS, TokenLayout

LAYOUTS = [
    TokenLayout(text_vocab_size=50, n_audio_streams=3, codebook_size=16, voices=("joe", "amy")),
    TokenLayout(text_vocab_size=1200, n_audio_streams=7, codebook_size=1024),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_audio_id_maps_back_to_stream_and_code(layout):
    seen = set()
    for stream in range(layout.n_audio_streams):
        for code in range(layout.codebook_size):
            token = layout.audio_id(stream, code)
            assert layout.locate(token) == (stream, code)
            assert layout.is_code(code)
            seen.add(token)
        for name in AUDIO_SPECIALS + tuple(f"VOICE:{v}" for v in layout.voices):
            token = layout.audio_special(name, stream)
            s, local = layout.locate(token)
            assert s == stream and not layout.is_code(local) and local == layout.audio_special_code(name)
            assert token not in seen
            seen.add(token)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_ids_and_specials_map_to_the_text_stream(layout):
    for token in range(layout.text_vocab_size):
        assert layout.locate(layout.text_id(token)) == (layout.text_stream, token)
    specials = [layout.text_special(name) for name in TEXT_SPECIALS]
    assert len(set(specials)) == len(specials)
    assert all(layout.text_vocab_size <= s < layout.text_block_size for s in specials)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stream_slices_partition_the_head(layout):
    covered = []
    for stream in range(layout.n_streams):
        sl = layout.stream_slice(stream)
        covered.extend(range(sl.start, sl.stop))
        assert all(layout.locate(i)[0] == stream for i in (sl.start, sl.stop - 1))
    assert sorted(covered) == list(range(layout.vocab_size))
    assert layout.text_block_size % 64 == 0 and layout.audio_block_size % 64 == 0


def test_reference_geometry():
    layout = TokenLayout(text_vocab_size=102400, n_audio_streams=7, codebook_size=4096)
    assert layout.text_block_size == 102464 and layout.audio_block_size == 4160
    assert layout.vocab_size == 131584
    assert layout.audio_id(2, 5) == 102464 + 2 * 4160 + 5  # the reference's codec_layer_shift


def test_serialisation_round_trip_and_bad_input():
    layout = LAYOUTS[0]
    assert TokenLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(ValueError, match="unknown TokenLayout fields"):
        TokenLayout.from_dict({**layout.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="outside the codebook"):
        layout.audio_id(0, layout.codebook_size)
    with pytest.raises(ValueError, match="text stream"):
        layout.audio_id(layout.text_stream, 0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        layout.locate(layout.vocab_size)
    with pytest.raises(ValueError, match="unknown voice"):
        layout.audio_special("VOICE:bob", 0)
