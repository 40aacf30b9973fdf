"""Great Expectations validation: a clean corpus passes; each kind of bad record fails with its own message
and leaves previously validated outputs byte-identical."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deeptalk.config import Paths
from deeptalk.data.audio_io import read_wav, sha256_bytes, write_wav
from deeptalk.data.validation import DataValidationError, validate_codes
from deeptalk.steps import validate_data
from tests.data._corpus import small_config, small_corpus


@pytest.fixture(scope="module")
def validated_project(tmp_path_factory):
    """A project root whose corpus passed validation once (data/validated written)."""
    root = tmp_path_factory.mktemp("project")
    cfg = SimpleNamespace(data=small_config(0), paths=Paths(root), seed=0)
    shutil.copytree(small_corpus(0), cfg.paths.raw)
    summary = validate_data.run(cfg)
    return cfg, summary


@pytest.fixture
def project(validated_project, tmp_path):
    """A fresh copy of the validated project to corrupt."""
    cfg, _ = validated_project
    shutil.copytree(cfg.paths.root, tmp_path / "p")
    return SimpleNamespace(data=cfg.data, paths=Paths(tmp_path / "p"), seed=0)


def test_clean_corpus_passes_and_writes_summary_and_docs(validated_project):
    cfg, summary = validated_project
    written = json.loads((cfg.paths.validated / "summary.json").read_text())
    assert written["success"] and written["statistics"]["utterances"] == summary["utterances"] > 0
    assert written["statistics"]["samples_by_task_split"]["aqa/heldout"] == 2
    assert (cfg.paths.reports / "data_docs" / "index.html").is_file()


def _rewrite(path: Path, edit) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df = edit(df)
    df.to_parquet(path, index=False)
    return df


def _utts(cfg):
    return cfg.paths.raw / "utterances.parquet"


def _samples(cfg):
    return cfg.paths.raw / "samples.parquet"


def corrupt_wav(cfg):
    uid, rel = pd.read_parquet(_utts(cfg)).iloc[0][["id", "audio_path"]]
    (cfg.paths.raw / rel).write_bytes(b"RIFF\x00\x00garbage, not a wav file")
    return uid, [
        "utterances: expect_column_values_to_be_in_set(column='file_readable'): 1 of",
        "utterances: expect_column_values_to_be_in_set(column='sha256_matches_file'): 1 of",
    ]


def wrong_sample_rate(cfg):
    utts = pd.read_parquet(_utts(cfg))
    uid, rel = utts.iloc[1][["id", "audio_path"]]
    wav, _ = read_wav(cfg.paths.raw / rel)
    data = write_wav(cfg.paths.raw / rel, wav, 22050)  # re-labelled: a 22.05 kHz file with an honest hash
    utts.loc[1, ["sample_rate", "sha256"]] = [22050, sha256_bytes(data)]
    utts.to_parquet(_utts(cfg), index=False)
    return uid, [
        "utterances: expect_column_values_to_be_in_set(column='sample_rate'): 1 of",
        "utterances: expect_column_values_to_be_in_set(column='file_sample_rate'): 1 of",
    ]


def empty_text(cfg):
    def edit(df):
        turns = json.loads(df.loc[0, "turns"])
        turns[-1]["text"] = " "
        df.loc[0, "turns"] = json.dumps(turns)
        return df

    sid = _rewrite(_samples(cfg), edit).loc[0, "id"]
    return sid, ["samples: expect_column_values_to_be_in_set(column='empty_turn_texts'): 1 of"]


def empty_transcript(cfg):
    def edit(df):
        df.loc[2, "text"] = ""
        return df

    uid = _rewrite(_utts(cfg), edit).loc[2, "id"]
    return uid, ["utterances: expect_column_value_lengths_to_be_between(column='text'): 1 of"]


def nan_duration(cfg):
    def edit(df):
        df.loc[3, "duration"] = np.nan
        return df

    uid = _rewrite(_utts(cfg), edit).loc[3, "id"]
    return uid, ["utterances: expect_column_values_to_not_be_null(column='duration'): 1 of"]


def duplicated_id(cfg):
    def edit(df):
        df.loc[1, "id"] = df.loc[0, "id"]
        return df

    uid = _rewrite(_samples(cfg), edit).loc[0, "id"]
    return uid, ["samples: expect_column_values_to_be_unique(column='id'): 2 of"]


def leaked_heldout_fact(cfg):
    def edit(df):
        held = df[(df.split == "heldout") & (df.task == "aqa")].iloc[0].fact_id
        i = df.index[(df.split == "train") & (df.task == "aqa")][0]
        df.loc[i, "fact_id"] = held
        return df

    df = _rewrite(_samples(cfg), edit)
    sid = df[(df.split == "train") & (df.task == "aqa")].iloc[0].id
    return sid, ["samples: expect_column_values_to_be_in_set(column='shares_fact_with_heldout'): 1 of"]


def heldout_speaker_in_training(cfg):
    def edit(df):
        i = df.index[df.split == "train"][0]
        df.loc[i, "speaker"] = cfg.data.heldout_speakers[0]
        return df

    df = _rewrite(_utts(cfg), edit)
    uid = df[df.split == "train"].iloc[0].id
    return uid, ["utterances: expect_column_values_to_be_in_set(column='heldout_speaker_in_training'): 1 of"]


def out_of_vocabulary(cfg):
    def edit(df):
        turns = json.loads(df.loc[0, "turns"])
        turns[-1]["text"] = "Xylophonic zymurgy."
        df.loc[0, "turns"] = json.dumps(turns)
        return df

    sid = _rewrite(_samples(cfg), edit).loc[0, "id"]
    return sid, ["samples: expect_column_values_to_be_in_set(column='unknown_words'): 1 of"]


def missing_and_extra_columns(cfg):
    def edit(df):
        return df.drop(columns=["rms"]).assign(loudness=1.0)

    _rewrite(_utts(cfg), edit)
    return None, [
        "utterances: expect_table_columns_to_match_set: observed {'missing': ['rms'], 'unexpected': "
        "['loudness']}",
        "utterances: expect_column_values_to_not_be_null(column='rms'): observed 'column is missing'",
    ]


@pytest.mark.parametrize(
    "corruption",
    [
        missing_and_extra_columns,
        corrupt_wav,
        wrong_sample_rate,
        empty_text,
        empty_transcript,
        nan_duration,
        duplicated_id,
        leaked_heldout_fact,
        heldout_speaker_in_training,
        out_of_vocabulary,
    ],
)
def test_bad_record_fails_with_its_expectation_and_keeps_validated_outputs(project, corruption):
    before = (project.paths.validated / "summary.json").read_bytes()
    bad_id, expected = corruption(project)
    with pytest.raises(DataValidationError) as err:
        validate_data.run(project)
    message = str(err.value)
    assert message.startswith("data validation failed:")
    for line in expected:
        assert line in message, message
    if bad_id is not None:
        assert repr(bad_id) in message  # example rows name the offending record
    assert (project.paths.validated / "summary.json").read_bytes() == before
    assert sorted(p.name for p in project.paths.validated.iterdir()) == ["summary.json"]


def test_validate_codes_accepts_in_range_and_names_bad_streams():
    good = {
        "u1": np.random.default_rng(0).integers(0, 16, size=(3, 10)),
        "u2": torch.zeros((3, 4), dtype=torch.long),  # the encode step hands over LongTensors
    }
    assert validate_codes(good, codebook_size=16, n_streams=3).success
    bad = {**good, "u3": np.array([[0, 1], [2, 16], [3, 4]])}
    with pytest.raises(DataValidationError) as err:
        validate_codes(bad, codebook_size=16, n_streams=3)
    assert "codes: expect_column_values_to_be_between(column='max_code'): 1 of 9 rows unexpected" in str(
        err.value
    )
    assert "'u3/1'" in str(err.value)
    with pytest.raises(DataValidationError, match=r"column='n_streams'"):
        validate_codes({"u": np.zeros((2, 5), dtype=np.int64)}, codebook_size=16, n_streams=3)
    with pytest.raises(DataValidationError, match=r"column='is_integer'"):
        validate_codes({"u": np.zeros((3, 5), dtype=np.float32)}, codebook_size=16)
