"""The fit_codec step on a hand-made corpus manifest (schema of deeptalk/data/schema.py)."""

import dataclasses

import pandas as pd
import pytest
import soundfile as sf
import torch
from snac import SNAC

from deeptalk.codec.embedded import EmbeddedCodec
from deeptalk.codec.registry import load_codec
from deeptalk.codec.snac_adapter import SnacCodec, save_snac_checkpoint
from deeptalk.config import load_config
from deeptalk.data.schema import Sample, Turn
from deeptalk.steps import fit_codec

from .test_snac_adapter import TINY_SNAC

ASSISTANT, USER = "espeak:en-us+f3", "espeak:en-gb-x-rp+m7"


def _corpus(root, speech):
    raw = root / "data" / "raw"
    (raw / "audio").mkdir(parents=True)
    utts, samples = [], []
    for i, (wav, sr) in enumerate(speech):
        speaker = ASSISTANT if i % 2 == 0 else USER
        split = "heldout" if i >= len(speech) - 2 else "train"
        path = f"audio/u{i}.wav"
        sf.write(raw / path, wav, sr)
        utts.append(
            {
                "id": f"u{i}",
                "task": "tts",
                "split": split,
                "speaker": speaker,
                "text": f"s{i}",
                "audio_path": path,
                "sample_rate": sr,
                "duration": len(wav) / sr,
                "rms": 0.1,
                "sha256": "",
            }
        )
        if speaker == ASSISTANT:
            turns = (Turn("user", f"say s{i}"), Turn("assistant", f"s{i}", audio_id=f"u{i}", speak=True))
            samples.append(
                {
                    "id": f"s{i}",
                    "task": "tts",
                    "split": split,
                    "fact_id": "",
                    "turns": Sample(f"s{i}", "tts", split, turns).turns_json(),
                }
            )
    pd.DataFrame(utts).to_parquet(raw / "utterances.parquet")
    pd.DataFrame(samples).to_parquet(raw / "samples.parquet")
    return raw


def _cfg(root, small_config, **codec_changes):
    cfg = load_config(root / "params.yaml", profile="tiny", root=root)
    return dataclasses.replace(cfg, threads=1, codec=dataclasses.replace(small_config, **codec_changes))


def test_fits_on_the_assistant_voice(tmp_path, speech, small_config):
    _corpus(tmp_path, speech)
    summary = fit_codec.run(_cfg(tmp_path, small_config))
    assert summary["kind"] == "embedded" and summary["n_streams"] == 7
    assert ASSISTANT in summary["speakers"] and USER not in summary["speakers"]
    assert summary["utterances"] == sum(1 for i in range(len(speech) - 2) if i % 2 == 0)
    codec = load_codec(tmp_path / "models" / "codec")
    assert isinstance(codec, EmbeddedCodec)
    assert codec.encode(*speech[0]).shape[0] == 7


def test_refit_replaces_the_codec_directory(tmp_path, speech, small_config):
    _corpus(tmp_path, speech)
    (tmp_path / "models" / "codec").mkdir(parents=True)
    (tmp_path / "models" / "codec" / "stale.npy").write_bytes(b"x")
    fit_codec.run(_cfg(tmp_path, small_config))
    assert not (tmp_path / "models" / "codec" / "stale.npy").exists()


def test_missing_corpus_is_a_clear_error(tmp_path, small_config):
    with pytest.raises(ValueError, match="generate_data"):
        fit_codec.run(_cfg(tmp_path, small_config))


def test_snac_profile_verifies_and_copies_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    save_snac_checkpoint(SNAC(**TINY_SNAC), TINY_SNAC, tmp_path / "checkpoints" / "snac_24khz")
    cfg = load_config(tmp_path / "params.yaml", profile="paper", root=tmp_path)
    summary = fit_codec.run(dataclasses.replace(cfg, threads=1))
    assert summary["kind"] == "snac"
    assert isinstance(load_codec(tmp_path / "models" / "codec"), SnacCodec)


def test_snac_profile_without_checkpoint(tmp_path):
    cfg = load_config(tmp_path / "params.yaml", profile="paper", root=tmp_path)
    with pytest.raises(ValueError, match="SNAC checkpoint"):
        fit_codec.run(dataclasses.replace(cfg, threads=1))
