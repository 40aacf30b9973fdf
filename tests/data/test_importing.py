"""Importing user manifests (paper profile) from a local directory or S3."""

import shutil

import pandas as pd
import pytest

from deeptalk.data.audio_io import read_wav, resample, sha256_bytes, sha256_file, write_wav
from deeptalk.data.importing import import_corpus
from tests._moto import CREDENTIALS, moto_s3
from tests.data._corpus import small_config, small_corpus


@pytest.fixture
def source(tmp_path):
    """A user corpus: the generated one, with one utterance stored at 22.05 kHz under another path."""
    src = tmp_path / "src"
    shutil.copytree(small_corpus(0), src)
    shutil.rmtree(src / "tokenizer")
    utts = pd.read_parquet(src / "utterances.parquet")
    wav, _ = read_wav(src / utts.loc[0, "audio_path"])
    data = write_wav(src / "wavs" / "first.wav", resample(wav, 16000, 22050), 22050)
    utts.loc[0, ["audio_path", "sample_rate", "sha256"]] = ["wavs/first.wav", 22050, sha256_bytes(data)]
    utts.to_parquet(src / "utterances.parquet", index=False)
    return src, len(wav)


def _check_imported(dest, n_samples_first):
    utts = pd.read_parquet(dest / "utterances.parquet")
    assert (utts.sample_rate == 16000).all()
    assert utts.loc[0, "audio_path"] == f"audio/{utts.loc[0, 'id']}.wav"
    for row in utts.itertuples():
        assert sha256_file(dest / row.audio_path) == row.sha256
    wav, sr = read_wav(dest / utts.loc[0, "audio_path"])
    assert sr == 16000 and abs(len(wav) - n_samples_first) <= 2  # resampled back to 16 kHz
    assert pd.read_parquet(dest / "samples.parquet").equals(
        pd.read_parquet(small_corpus(0) / "samples.parquet")
    )
    assert (dest / "tokenizer" / "word_vocab.json").is_file()


def test_import_from_local_directory_resamples_and_rehashes(source, tmp_path):
    src, n = source
    summary = import_corpus(str(src), tmp_path / "raw", small_config(0))
    assert summary["utterances"] == len(pd.read_parquet(src / "utterances.parquet"))
    _check_imported(tmp_path / "raw", n)


def test_import_rejects_corrupt_audio_and_missing_columns(source, tmp_path):
    src, _ = source
    (src / "wavs" / "first.wav").write_bytes(b"not the file the manifest hashed")
    with pytest.raises(ValueError, match="does not match its manifest sha256"):
        import_corpus(str(src), tmp_path / "raw", small_config(0))
    assert not (tmp_path / "raw").exists()  # nothing half-written
    pd.read_parquet(src / "samples.parquet").drop(columns=["turns"]).to_parquet(src / "samples.parquet")
    with pytest.raises(ValueError, match=r"samples.parquet: missing column\(s\) \['turns'\]"):
        import_corpus(str(src), tmp_path / "raw", small_config(0))


@pytest.mark.slow
def test_import_from_s3(source, tmp_path, monkeypatch):
    import s3fs

    src, n = source
    with moto_s3() as endpoint:
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("corpus-bucket")
        fs.put(str(src), "corpus-bucket/user-corpus", recursive=True)
        import_corpus("s3://corpus-bucket/user-corpus", tmp_path / "raw", small_config(0))
        s3fs.S3FileSystem.clear_instance_cache()
    _check_imported(tmp_path / "raw", n)


def test_import_copies_a_local_hf_tokenizer(source, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from deeptalk.data.text_tokenizer import HFTextTokenizer, load_tokenizer

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "the": 1}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(tmp_path / "llm")
    src, _ = source
    summary = import_corpus(str(src), tmp_path / "raw", small_config(0, hf_tokenizer=str(tmp_path / "llm")))
    tok = load_tokenizer(tmp_path / "raw" / "tokenizer")
    assert isinstance(tok, HFTextTokenizer) and summary["vocab_size"] == tok.vocab_size == 2
    assert tok.encode("the") == [1]
