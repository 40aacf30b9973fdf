"""encode → pack on a tiny hand-made corpus with a real (tiny) embedded codec: contents, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import WhisperConfig, WhisperModel

from deeptalk.codec.config import CodecConfig
from deeptalk.codec.embedded import EmbeddedCodec
from deeptalk.codec.registry import load_codec
from deeptalk.config import load_config
from deeptalk.data.audio_io import read_wav, write_wav
from deeptalk.data.dataset import SequenceDataset
from deeptalk.data.features import SpeechFeatureExtractor
from deeptalk.data.packing import answer_start, load_layout, undelay
from deeptalk.data.processed import ProcessedStore
from deeptalk.data.schema import SAMPLE_COLUMNS, UTTERANCE_COLUMNS, Sample, Turn
from deeptalk.data.text_tokenizer import TextTokenizer
from deeptalk.model.audio_encoder import build_audio_encoder, encode_trimmed
from deeptalk.steps import encode, pack

# a small random Whisper in the layout prepare_encoder writes (the real tiny.en is tested in tests/model)
ENCODER = {"encoder_layers": 1, "encoder_dim": 16, "encoder_heads": 2, "encoder_ffn_dim": 32}

UTTS = {  # id: (text, speaker, seconds, pitch)
    "uq1": ("what is the capital of france", "espeak:en-us", 0.9, 180.0),
    "uq2": ("what is two plus two", "flite:slt", 0.7, 220.0),
    "ua1": ("the capital of france is paris", "piper:joe", 1.1, 120.0),
    "ua2": ("two plus two is four", "piper:joe", 0.8, 130.0),
    "us1": ("hello world", "espeak:en-us", 0.5, 200.0),
}
SAMPLES = [
    Sample(
        "aqa-train-0",
        "aqa",
        "train",
        (
            Turn("user", UTTS["uq1"][0], "uq1", True),
            Turn("assistant", UTTS["ua1"][0], "ua1", True),
            Turn("user", UTTS["uq2"][0], "uq2", True),
            Turn("assistant", UTTS["ua2"][0], "ua2", True),
        ),
    ),
    Sample(
        "asr-train-0",
        "asr",
        "train",
        (Turn("user", "hello world", "us1", True), Turn("assistant", "hello world")),
    ),
    Sample(
        "rqa-validation-0",
        "rqa",
        "validation",
        (Turn("user", UTTS["uq2"][0], "uq2", False), Turn("assistant", "four")),
    ),
    Sample(
        "tts-heldout-0",
        "tts",
        "heldout",
        (Turn("user", "repeat [two plus two is four]"), Turn("assistant", UTTS["ua2"][0], "ua2", True)),
    ),
]


def voice(seconds: float, pitch: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    wav = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in (1, 2, 3)) * env
    return (0.2 * wav).astype(np.float32)


def write_corpus(raw: Path) -> None:
    rows = []
    for uid, (text, speaker, seconds, pitch) in UTTS.items():
        wav = voice(seconds, pitch)
        data = write_wav(raw / "audio" / f"{uid}.wav", wav, 16000)
        rows.append(
            dict(
                id=uid,
                task="aqa",
                split="train",
                speaker=speaker,
                text=text,
                audio_path=f"audio/{uid}.wav",
                sample_rate=16000,
                duration=seconds,
                rms=float(np.sqrt((wav**2).mean())),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    pd.DataFrame(rows).astype(UTTERANCE_COLUMNS).to_parquet(raw / "utterances.parquet", index=False)
    samples = pd.DataFrame(
        [dict(id=s.id, task=s.task, split=s.split, fact_id=s.fact_id, turns=s.turns_json()) for s in SAMPLES]
    ).astype(SAMPLE_COLUMNS)
    samples.to_parquet(raw / "samples.parquet", index=False)
    texts = [t.text for s in SAMPLES for t in s.turns]
    TextTokenizer.build(texts).save(raw / "tokenizer")


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def save_encoder(cfg) -> None:
    torch.manual_seed(0)
    config = WhisperConfig(
        num_mel_bins=80, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, max_source_positions=1500,
    )
    WhisperModel(config).save_pretrained(cfg.audio_input.encoder_checkpoint)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(
        root / "params.yaml",
        profile="tiny",
        root=root,
        overrides={"audio_input": {"max_seconds": 2.0, **ENCODER}, "seed": 5},
    )
    save_encoder(cfg)
    write_corpus(cfg.paths.raw)
    codec_cfg = CodecConfig(codebook_size=16, kmeans_iters=2, kmeans_max_frames=2000)
    fit_audio = [(voice(s, p), 16000) for _, _, s, p in UTTS.values()]
    EmbeddedCodec.fit(fit_audio, codec_cfg, seed=0).save(cfg.paths.codec)
    summary = encode.run(cfg)
    return cfg, summary


def test_encode_writes_codes_and_features(project):
    cfg, summary = project
    assert summary["inputs"] == 3 and summary["targets"] == 2
    store = ProcessedStore(cfg.paths.processed)
    codec = load_codec(cfg.paths.codec)
    assert store.targets == {"ua1", "ua2"} and set(store.n_positions) == {"uq1", "uq2", "us1"}
    for uid in ("ua1", "ua2"):
        expect = codec.encode(*read_wav(cfg.paths.raw / "audio" / f"{uid}.wav")).numpy()
        assert np.array_equal(store.codes[uid], expect)
    encoder = build_audio_encoder(cfg.audio_input)  # the checkpoint at models/encoder
    extractor = SpeechFeatureExtractor(cfg.audio_input, lambda mel: encode_trimmed(encoder, mel))
    wav, sr = read_wav(cfg.paths.raw / "audio" / "uq1.wav")
    features = extractor(wav, sr)
    np.testing.assert_allclose(store.frames("uq1"), features.frames, atol=2e-3)  # float16 storage
    assert store.n_positions["uq1"] == features.n_positions == cfg.audio_input.n_positions(len(wav))
    assert store.frames("uq1").shape == (cfg.audio_input.projector_stride * features.n_positions, 16)


def test_encode_and_pack_are_byte_deterministic(project):
    cfg, _ = project
    pack.run(cfg)
    first = tree_hash(cfg.paths.processed), tree_hash(cfg.paths.sequences)
    encode.run(cfg)
    pack.run(cfg)
    assert (tree_hash(cfg.paths.processed), tree_hash(cfg.paths.sequences)) == first


def test_pack_writes_datasets_the_trainer_can_read(project):
    cfg, _ = project
    summary = pack.run(cfg)
    assert summary["samples"] == len(SAMPLES)
    layout = load_layout(cfg.paths.sequences)
    assert layout.voices == ("piper:joe",) and layout.n_audio_streams == 7 and layout.codebook_size == 16
    train = SequenceDataset(cfg, "train")
    assert train.tasks == ("asr", "aqa") and len(train) == 2
    batch = train.collate([train[(0, i)] for i in range(len(train))])
    assert batch.input_ids.shape[2] == 8 and batch.audio is not None
    heldout = SequenceDataset(cfg, "heldout")
    ex = heldout[0]
    p0 = answer_start(ex.packed.input_ids, layout)
    assert ex.packed.input_ids[p0, 0] == layout.audio_special("VOICE:piper:joe", 0)
    store = ProcessedStore(cfg.paths.processed)
    assert torch.equal(undelay(ex.packed.input_ids[p0 + 1 :], layout), torch.as_tensor(store.codes["ua2"]))
    val = SequenceDataset(cfg, "validation")
    assert val[0].packed.audio == []  # the corpus typed this rqa question; eval keeps that


def test_encode_rejects_missing_utterances_and_too_long_audio(project, tmp_path):
    cfg, _ = project
    broken = load_config(
        tmp_path / "params.yaml",
        profile="tiny",
        root=tmp_path,
        overrides={"audio_input": {"max_seconds": 0.8, **ENCODER}},
    )
    save_encoder(broken)
    write_corpus(broken.paths.raw)
    broken.paths.codec.parent.mkdir(parents=True, exist_ok=True)
    broken.paths.codec.symlink_to(cfg.paths.codec)
    with pytest.raises(ValueError, match="uq1.*exceeds the encoder window"):
        encode.run(broken)
    utts = pd.read_parquet(broken.paths.raw / "utterances.parquet")
    utts[utts["id"] != "uq2"].to_parquet(broken.paths.raw / "utterances.parquet", index=False)
    with pytest.raises(ValueError, match="not in the manifest"):
        encode.run(broken)
