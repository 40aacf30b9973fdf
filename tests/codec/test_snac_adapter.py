import json

import numpy as np
import pytest
import torch
from snac import SNAC

from deeptalk.codec.config import CodecConfig
from deeptalk.codec.registry import load_codec
from deeptalk.codec.snac_adapter import SnacCodec, is_snac_dir, save_snac_checkpoint

# SNAC 24 kHz geometry (hop 512, strides 4/2/1, 4096 codes) with tiny layer widths
TINY_SNAC = dict(
    sampling_rate=24000,
    encoder_dim=8,
    encoder_rates=[2, 4, 8, 8],
    decoder_dim=32,
    decoder_rates=[8, 8, 4, 2],
    attn_window_size=None,
    codebook_size=4096,
    codebook_dim=8,
    vq_strides=[4, 2, 1],
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("snac_24khz")
    save_snac_checkpoint(SNAC(**TINY_SNAC), TINY_SNAC, path)
    return path


@pytest.fixture(scope="module")
def wav():
    t = np.arange(30000) / 24000
    return (0.4 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)


def test_plain_snac_directory_loads(checkpoint, wav):
    assert is_snac_dir(checkpoint)
    codec = load_codec(checkpoint)
    assert isinstance(codec, SnacCodec)
    assert (codec.n_streams, codec.codebook_size, codec.sample_rate) == (7, 4096, 24000)
    assert codec.frames_per_second == pytest.approx(24000 / 2048)
    codes = codec.encode(wav, 24000)
    assert codes.shape == (7, -(-len(wav) // 2048)) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 4096


def test_rows_follow_snac_levels(checkpoint, wav):
    """Row 0 is the 12 Hz level, rows 1-2 the 24 Hz level, rows 3-6 the 48 Hz level, frame-interleaved."""
    codec = SnacCodec.from_checkpoint(checkpoint)
    rows = codec.encode(wav, 24000)
    with torch.inference_mode():
        levels = codec.model.encode(torch.from_numpy(wav)[None, None])
    assert torch.equal(rows[0], levels[0][0])
    assert torch.equal(rows[1:3].T.reshape(-1), levels[1][0])
    assert torch.equal(rows[3:7].T.reshape(-1), levels[2][0])


def test_save_load_round_trip(checkpoint, wav, tmp_path):
    codec = SnacCodec.from_checkpoint(checkpoint)
    codec.save(tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert json.loads((tmp_path / "codec" / "config.json").read_text())["kind"] == "snac"
    codes = codec.encode(wav, 24000)
    assert torch.equal(loaded.encode(wav, 24000), codes)
    np.testing.assert_array_equal(loaded.decode(codes), codec.decode(codes))


@pytest.mark.parametrize("step", [1, 3, 100])
def test_streaming_equals_offline(checkpoint, wav, step):
    codec = SnacCodec.from_checkpoint(checkpoint)
    codes = codec.encode(np.tile(wav, 2), 24000)
    offline = codec.decode(codes)
    assert len(offline) == codes.shape[1] * 2048
    stream = codec.decode_stream()
    parts = [stream.push(codes[:, i : i + step]) for i in range(0, codes.shape[1], step)] + [stream.flush()]
    np.testing.assert_allclose(np.concatenate(parts), offline, rtol=0, atol=1e-6)


def test_out_of_range_codes(checkpoint):
    codec = SnacCodec.from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(torch.full((7, 3), 4096))


def test_geometry_mismatch(checkpoint):
    with pytest.raises(ValueError, match="geometry"):
        SnacCodec.from_checkpoint(checkpoint, CodecConfig(kind="snac", checkpoint="x", codebook_size=1024))


def test_wrong_weights(tmp_path):
    other = dict(TINY_SNAC, decoder_dim=64)
    save_snac_checkpoint(SNAC(**TINY_SNAC), other, tmp_path)
    with pytest.raises(ValueError, match="do not load"):
        load_codec(tmp_path)


def test_missing_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_SNAC))
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        load_codec(tmp_path)


def test_snac_runs_on_the_device_it_is_loaded_on_and_hands_back_cpu_arrays(tmp_path):
    from deeptalk.codec.registry import load_codec
    from deeptalk.testing.mini_checkpoints import build_snac

    build_snac(tmp_path / "snac")
    codec = load_codec(tmp_path / "snac", device="cpu")
    assert codec.device == torch.device("cpu") and codec.to("cpu") is codec
    wav = (0.1 * np.sin(np.arange(24000) / 7)).astype(np.float32)
    codes = codec.encode(wav, 24000)
    assert codes.device.type == "cpu"
    decoder = codec.decode_stream()
    audio = np.concatenate([decoder.push(codes), decoder.flush()])
    assert audio.dtype == np.float32 and audio.size > 0
