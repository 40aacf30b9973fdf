"""Great Expectations suites over the corpus manifests, the audio files and (after encoding) codec codes.

Two tables are validated, each by its own GX Checkpoint that also updates the Data Docs site
(``reports/data_docs/index.html``):

- ``utterances``: the manifest plus columns measured from the files (``file_*``), the sha256 check, the
  tokenizer check (``unknown_words``) and the speaker split check (``heldout_speaker_in_training``);
- ``samples``: the manifest plus derived columns: ``turns_valid``, ``empty_turn_texts``, ``unknown_words``,
  ``missing_audio_refs``, ``shares_fact_with_heldout`` (a non-``text`` train/validation sample whose
  ``fact_id`` a held-out sample also uses) and ``heldout_phrasing_in_text`` (a held-out user turn whose
  exact wording occurs in the ``text`` pretraining task, split ``train``).

Custom checks are plain pandas columns judged by stock GX expectations, so every failure is reported the same
way: expectation, column, count and example rows (by id). ``validate_codes`` does the same for codec codes
and is meant to be called by the encode step.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deeptalk.data.audio_io import sha256_file
from deeptalk.data.config import DataConfig
from deeptalk.data.schema import SAMPLE_COLUMNS, SPLITS, TASKS, UTTERANCE_COLUMNS

log = logging.getLogger(__name__)

DOCS_SITE = "deeptalk_data_docs"
_TYPES = {"string": ["str", "string", "StringDtype"], "int64": ["int64", "Int64"], "float64": ["float64"]}
_MAX_EXAMPLES = 5


class DataValidationError(Exception):
    """Raised when a suite fails; ``failures`` holds every failed expectation with example rows."""

    def __init__(self, failures: list[Failure]):
        self.failures = failures
        lines = [f"data validation failed: {len(failures)} expectation(s) not met"]
        lines += [f"- {f}" for f in failures]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Failure:
    table: str
    expectation: str
    column: str | None
    unexpected_count: int | None
    element_count: int | None
    examples: tuple = ()
    observed: object = None

    def __str__(self) -> str:
        where = f"(column={self.column!r})" if self.column else ""
        text = f"{self.table}: {self.expectation}{where}"
        if self.unexpected_count is not None:
            text += f": {self.unexpected_count} of {self.element_count} rows unexpected"
        if self.examples:
            text += f", e.g. {list(self.examples)}"
        elif self.observed is not None:
            text += f": observed {self.observed!r}"
        return text


@dataclass
class ValidationResult:
    success: bool
    failures: list[Failure]
    statistics: dict = field(default_factory=dict)
    docs_index: Path | None = None

    def raise_on_failure(self) -> None:
        if not self.success:
            raise DataValidationError(self.failures)


# ---- derived columns ------------------------------------------------------------------------------------
def _audio_stats(root: Path, path: str) -> dict:
    import soundfile as sf

    full = root / path
    out = {
        "file_readable": False,
        "file_sample_rate": None,
        "file_channels": None,
        "file_duration": None,
        "file_rms": None,
        "file_sha256": None,
    }
    if not full.is_file():
        return out
    out["file_sha256"] = sha256_file(full)
    try:
        wav, sr = sf.read(str(full), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        log.debug("unreadable %s: %s", full, e)
        return out
    out.update(
        file_readable=wav.shape[0] > 0,
        file_sample_rate=int(sr),
        file_channels=int(wav.shape[1]),
        file_duration=wav.shape[0] / sr,
        file_rms=float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) if wav.size else 0.0,
    )
    return out


def _unknown(tokenizer, texts) -> int:
    if tokenizer is None or not hasattr(tokenizer, "unknown_words"):
        return 0
    return sum(len(tokenizer.unknown_words(t)) for t in texts if isinstance(t, str))


def utterance_table(utts: pd.DataFrame, root: Path, cfg: DataConfig, tokenizer) -> pd.DataFrame:
    df = utts.copy()
    if "audio_path" in df:
        stats = pd.DataFrame(
            [
                _audio_stats(root, p) if isinstance(p, str) else _audio_stats(root, "")
                for p in df["audio_path"]
            ],
            index=df.index,
        )
    else:
        stats = pd.DataFrame([_audio_stats(root, "")] * len(df), index=df.index)
    df = pd.concat([df, stats.astype({"file_readable": bool})], axis=1)
    if "sha256" in df:
        df["sha256_matches_file"] = (
            df["file_sha256"].astype(object).eq(df["sha256"].astype(object)).fillna(False)
        )
    if "duration" in df:
        df["duration_matches_file"] = (df["file_duration"].astype(float) - df["duration"]).abs().le(0.01)
    if "text" in df:
        df["unknown_words"] = [_unknown(tokenizer, [t]) for t in df["text"]]
    if "speaker" in df and "split" in df:
        held = set(cfg.heldout_speakers)
        df["heldout_speaker_in_training"] = df["speaker"].isin(held) & df["split"].isin(
            ["train", "validation"]
        )
    return df.drop(columns=["file_sha256"])


def sample_table(samples: pd.DataFrame, utt_ids: set[str], tokenizer) -> pd.DataFrame:
    df = samples.copy()
    turns: list[list[dict] | None] = []
    for raw in df.get("turns", pd.Series([None] * len(df), index=df.index)):
        try:
            parsed = json.loads(raw)
            ok = (
                isinstance(parsed, list)
                and parsed
                and all(isinstance(t, dict) and "text" in t for t in parsed)
            )
            turns.append(parsed if ok else None)
        except (TypeError, ValueError):
            turns.append(None)
    df["turns_valid"] = [t is not None for t in turns]
    df["empty_turn_texts"] = [sum(not str(x.get("text") or "").strip() for x in t) if t else 0 for t in turns]
    df["unknown_words"] = [_unknown(tokenizer, [x.get("text") for x in t]) if t else 0 for t in turns]
    df["missing_audio_refs"] = [
        sum(bool(x.get("audio_id")) and x["audio_id"] not in utt_ids for x in t) if t else 0 for t in turns
    ]
    if {"task", "split", "fact_id"} <= set(df.columns):
        qa = df["task"] != "text"
        held_facts = set(df.loc[qa & (df["split"] == "heldout"), "fact_id"]) - {""}
        df["shares_fact_with_heldout"] = (
            qa & df["split"].isin(["train", "validation"]) & df["fact_id"].isin(held_facts)
        ).astype(bool)
        text_texts = {  # the pretraining text (split train; held-out text is the perplexity benchmark)
            x.get("text")
            for t, is_text in zip(turns, (df["task"] == "text") & (df["split"] == "train"), strict=False)
            if t and is_text
            for x in t
        }
        df["heldout_phrasing_in_text"] = [
            bool(t)
            and split == "heldout"
            and task != "text"
            and any(x.get("role") == "user" and x.get("text") in text_texts for x in t)
            for t, split, task in zip(turns, df["split"], df["task"], strict=False)
        ]
    return df


# ---- suites ---------------------------------------------------------------------------------------------
def _schema_expectations(columns: dict[str, str], derived: list[str]):
    import great_expectations.expectations as gxe

    yield gxe.ExpectTableColumnsToMatchSet(column_set=[*columns, *derived], exact_match=True)
    for col, typ in columns.items():
        yield gxe.ExpectColumnValuesToNotBeNull(column=col)
        yield gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=_TYPES[typ])


def utterance_expectations(cfg: DataConfig):
    import great_expectations.expectations as gxe

    derived = [
        "file_readable",
        "file_sample_rate",
        "file_channels",
        "file_duration",
        "file_rms",
        "sha256_matches_file",
        "duration_matches_file",
        "unknown_words",
        "heldout_speaker_in_training",
    ]
    yield from _schema_expectations(UTTERANCE_COLUMNS, derived)
    yield gxe.ExpectTableRowCountToBeBetween(min_value=1)
    yield gxe.ExpectColumnValuesToBeUnique(column="id")
    yield gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(TASKS))
    yield gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))
    yield gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1)
    yield gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$")
    yield gxe.ExpectColumnValuesToBeInSet(column="sample_rate", value_set=[cfg.sample_rate])
    yield gxe.ExpectColumnValuesToBeBetween(
        column="duration", min_value=0.05, max_value=cfg.max_utterance_seconds
    )
    yield gxe.ExpectColumnValuesToBeBetween(column="rms", min_value=cfg.min_rms, max_value=1.0)
    yield gxe.ExpectColumnValuesToBeInSet(column="file_readable", value_set=[True])
    yield gxe.ExpectColumnValuesToBeInSet(column="file_sample_rate", value_set=[cfg.sample_rate])
    yield gxe.ExpectColumnValuesToBeInSet(column="file_channels", value_set=[1])
    yield gxe.ExpectColumnValuesToBeBetween(
        column="file_duration", min_value=0.05, max_value=cfg.max_utterance_seconds
    )
    yield gxe.ExpectColumnValuesToBeBetween(column="file_rms", min_value=cfg.min_rms, max_value=1.0)
    yield gxe.ExpectColumnValuesToBeInSet(column="sha256_matches_file", value_set=[True])
    yield gxe.ExpectColumnValuesToBeInSet(column="duration_matches_file", value_set=[True])
    yield gxe.ExpectColumnValuesToBeInSet(column="unknown_words", value_set=[0])
    yield gxe.ExpectColumnValuesToBeInSet(column="heldout_speaker_in_training", value_set=[False])


def sample_expectations(cfg: DataConfig):
    import great_expectations.expectations as gxe

    derived = [
        "turns_valid",
        "empty_turn_texts",
        "unknown_words",
        "missing_audio_refs",
        "shares_fact_with_heldout",
        "heldout_phrasing_in_text",
    ]
    yield from _schema_expectations(SAMPLE_COLUMNS, derived)
    yield gxe.ExpectTableRowCountToBeBetween(min_value=1)
    yield gxe.ExpectColumnValuesToBeUnique(column="id")
    yield gxe.ExpectColumnValuesToBeInSet(column="task", value_set=list(TASKS))
    yield gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))
    yield gxe.ExpectColumnValuesToBeInSet(column="turns_valid", value_set=[True])
    yield gxe.ExpectColumnValuesToBeInSet(column="empty_turn_texts", value_set=[0])
    yield gxe.ExpectColumnValuesToBeInSet(column="unknown_words", value_set=[0])
    yield gxe.ExpectColumnValuesToBeInSet(column="missing_audio_refs", value_set=[0])
    yield gxe.ExpectColumnValuesToBeInSet(column="shares_fact_with_heldout", value_set=[False])
    yield gxe.ExpectColumnValuesToBeInSet(column="heldout_phrasing_in_text", value_set=[False])


def code_expectations(codebook_size: int, n_streams: int | None):
    import great_expectations.expectations as gxe

    yield gxe.ExpectTableRowCountToBeBetween(min_value=1)
    yield gxe.ExpectColumnValuesToNotBeNull(column="min_code")
    yield gxe.ExpectColumnValuesToBeBetween(column="min_code", min_value=0)
    yield gxe.ExpectColumnValuesToBeBetween(column="max_code", max_value=codebook_size - 1)
    yield gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=1)
    yield gxe.ExpectColumnValuesToBeInSet(column="is_integer", value_set=[True])
    if n_streams is not None:
        yield gxe.ExpectColumnValuesToBeInSet(column="n_streams", value_set=[n_streams])


# ---- running --------------------------------------------------------------------------------------------
class _Runner:
    """An ephemeral GX context with one Data Docs site; one checkpoint per table."""

    def __init__(self, docs_dir: Path | None):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.site = None
        if docs_dir is not None:
            docs_dir.mkdir(parents=True, exist_ok=True)
            self.ctx.add_data_docs_site(
                DOCS_SITE,
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
            self.site = docs_dir
        self.source = self.ctx.data_sources.add_pandas("deeptalk")

    def run(self, table: str, df: pd.DataFrame, expectations) -> list[Failure]:
        gx = self.gx
        batch = self.source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(f"{table}_all")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=table))
        for e in expectations:
            suite.add_expectation(e)
        vd = self.ctx.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        actions = (
            [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[DOCS_SITE])] if self.site else []
        )
        id_cols = ["id"] if "id" in df.columns else []
        checkpoint = self.ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{table}_checkpoint",
                validation_definitions=[vd],
                actions=actions,
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": id_cols,
                    "partial_unexpected_count": _MAX_EXAMPLES,
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": df})
        failures = []
        for vr in result.run_results.values():
            for r in vr.results:
                if r.success:
                    continue
                cfg = r.expectation_config
                res = r.result or {}
                column = cfg.kwargs.get("column")
                if column is not None and column not in df.columns:
                    res = {"observed_value": "column is missing"}
                elif r.exception_info and r.exception_info.get("raised_exception"):
                    res = {"observed_value": r.exception_info.get("exception_message")}
                mismatch = (res.get("details") or {}).get("mismatched")
                if mismatch:  # column-set check: name what is missing / extra rather than the whole list
                    res = {"observed_value": {k: sorted(v) for k, v in sorted(mismatch.items()) if v}}
                examples = tuple(
                    _plain(x)
                    for x in res.get("partial_unexpected_index_list")
                    or res.get("partial_unexpected_list")
                    or ()
                )
                failures.append(
                    Failure(
                        table,
                        cfg.type,
                        cfg.kwargs.get("column"),
                        res.get("unexpected_count"),
                        res.get("element_count"),
                        examples[:_MAX_EXAMPLES],
                        res.get("observed_value"),
                    )
                )
        return sorted(failures, key=lambda f: (f.expectation, f.column or ""))


def _plain(value):
    """numpy scalars → Python values, so messages read ``False`` rather than ``np.False_``."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def _statistics(utts: pd.DataFrame, samples: pd.DataFrame) -> dict:
    stats: dict = {"utterances": int(len(utts)), "samples": int(len(samples))}
    if {"duration", "speaker", "rms"} <= set(utts.columns) and len(utts):
        stats.update(
            audio_seconds=round(float(utts["duration"].sum()), 2),
            duration_min=round(float(utts["duration"].min()), 3),
            duration_max=round(float(utts["duration"].max()), 3),
            rms_min=round(float(utts["rms"].min()), 5),
            speakers=sorted(map(str, utts["speaker"].dropna().unique())),
        )
    if {"task", "split"} <= set(samples.columns):
        stats["samples_by_task_split"] = {
            f"{t}/{s}": int(n) for (t, s), n in samples.groupby(["task", "split"]).size().items()
        }
    return stats


def validate_corpus(
    raw_dir: str | Path, cfg: DataConfig, docs_dir: str | Path | None = None
) -> ValidationResult:
    """Validate ``raw_dir`` (manifests, audio, tokenizer). Bad data does not raise (``raise_on_failure``)."""
    from deeptalk.data.text_tokenizer import load_tokenizer

    raw_dir = Path(raw_dir)
    for name in ("utterances.parquet", "samples.parquet"):
        if not (raw_dir / name).exists():
            raise FileNotFoundError(f"{raw_dir / name} missing: run the generate_data step first")
    utts = pd.read_parquet(raw_dir / "utterances.parquet")
    samples = pd.read_parquet(raw_dir / "samples.parquet")
    tokenizer = load_tokenizer(raw_dir / "tokenizer") if (raw_dir / "tokenizer").is_dir() else None
    if tokenizer is None:
        log.warning("no tokenizer in %s: vocabulary checks skipped", raw_dir)
    runner = _Runner(Path(docs_dir) if docs_dir is not None else None)
    utt_ids = set(utts["id"].dropna()) if "id" in utts else set()
    failures = runner.run(
        "utterances", utterance_table(utts, raw_dir, cfg, tokenizer), utterance_expectations(cfg)
    )
    failures += runner.run("samples", sample_table(samples, utt_ids, tokenizer), sample_expectations(cfg))
    docs = Path(docs_dir) / "index.html" if docs_dir is not None else None
    return ValidationResult(not failures, failures, _statistics(utts, samples), docs)


def validate(cfg) -> ValidationResult:
    """Validate the project's raw corpus (``cfg.paths.raw``) and build Data Docs in ``reports/data_docs``."""
    return validate_corpus(cfg.paths.raw, cfg.data, cfg.paths.reports / "data_docs")


def code_table(codes) -> pd.DataFrame:
    """One row per (utterance, stream) from ``{utt_id: [K, T] codes}``, a ``[K, T]`` array, or a DataFrame
    with columns ``id`` and ``codes`` (each a [K, T] array)."""
    if isinstance(codes, pd.DataFrame):
        if not {"id", "codes"} <= set(codes.columns):
            raise ValueError("codes DataFrame needs columns 'id' and 'codes'")
        items = list(zip(codes["id"], codes["codes"], strict=False))
    elif isinstance(codes, dict):
        items = list(codes.items())
    else:
        items = [("codes", codes)]
    rows = []
    for uid, arr in items:
        a = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
        if a.ndim != 2:
            raise ValueError(f"codes for {uid} must be [K, T], got shape {a.shape}")
        for k in range(a.shape[0]):
            row = a[k]
            rows.append(
                {
                    "id": f"{uid}/{k}",
                    "utterance": str(uid),
                    "stream": k,
                    "n_streams": a.shape[0],
                    "n_frames": int(row.size),
                    "is_integer": bool(np.issubdtype(a.dtype, np.integer)),
                    "min_code": int(row.min()) if row.size else None,
                    "max_code": int(row.max()) if row.size else None,
                }
            )
    return pd.DataFrame(
        rows,
        columns=["id", "utterance", "stream", "n_streams", "n_frames", "is_integer", "min_code", "max_code"],
    )


def validate_codes(
    codes, codebook_size: int, n_streams: int | None = None, docs_dir: str | Path | None = None
) -> ValidationResult:
    """Check codec codes are integers in ``[0, codebook_size)`` with ``n_streams`` rows; raises
    ``DataValidationError`` listing the offending utterance/streams, else returns the result."""
    if codebook_size <= 0:
        raise ValueError(f"codebook_size must be positive, got {codebook_size}")
    table = code_table(codes)
    runner = _Runner(Path(docs_dir) if docs_dir is not None else None)
    failures = runner.run("codes", table, code_expectations(codebook_size, n_streams))
    result = ValidationResult(
        not failures,
        failures,
        {"streams": int(len(table))},
        Path(docs_dir) / "index.html" if docs_dir is not None else None,
    )
    result.raise_on_failure()
    return result


def write_summary(result: ValidationResult, raw_dir: Path, out_dir: Path) -> Path:
    """Atomically write ``out_dir/summary.json`` (only called for a passing result)."""
    if not result.success:
        raise ValueError("refusing to write a validated summary for a failing result")
    summary = {
        "success": True,
        "statistics": result.statistics,
        "manifests": {n: sha256_file(raw_dir / n) for n in ("utterances.parquet", "samples.parquet")},
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        staged = Path(tmp) / "v"
        staged.mkdir()
        (staged / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            backup = Path(tmp) / "old"
            out_dir.rename(backup)
        staged.rename(out_dir)
    return out_dir / "summary.json"
