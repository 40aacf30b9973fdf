import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from deeptalk.evaluation.asr_scorer import AsrScorer, normalize_text, wer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The capital of France is Paris.", "the capital of france is paris"),
        ("Copper has atomic number 29!", "copper has atomic number twenty nine"),
        ("It costs 1,250 dollars", "it costs one thousand two hundred fifty dollars"),
        ("Porto-Novo, Benin's capital", "porto novo benin's capital"),
        ("  'Quoted'   words ", "quoted words"),
        ("100%", "one hundred percent"),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_wer_counts_edits_over_reference_words():
    assert wer(["the cat sat", "a dog"], ["The cat sat.", "a dog"]) == 0.0
    assert wer(["one two three four"], ["one 2 three"]) == pytest.approx(0.25)
    assert wer(["hello world"], [""]) == pytest.approx(1.0)


def test_wer_rejects_bad_input():
    with pytest.raises(ValueError, match="as many"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        wer([], [])


def test_missing_model_directory(tmp_path):
    with pytest.raises(ValueError, match="model.bin"):
        AsrScorer(model_dir=tmp_path)


@pytest.fixture(scope="module")
def scorer():
    return AsrScorer(cpu_threads=1)


def test_transcribes_clean_speech(scorer, tmp_path):
    text = "The weather today is bright and sunny."
    path = tmp_path / "s.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True, capture_output=True)
    wav, sr = sf.read(path, dtype="float32")
    score, hyps = scorer.score([(wav, sr)], [text])
    assert score <= 0.15, hyps
    assert scorer.transcribe(wav, sr) == hyps[0]  # greedy decoding is deterministic


def test_silence_gives_little_text(scorer):
    assert len(normalize_text(scorer.transcribe(np.zeros(16000, np.float32), 16000)).split()) <= 3


def test_rejects_nan_audio(scorer):
    with pytest.raises(ValueError, match="NaN"):
        scorer.transcribe(np.full(1600, np.nan, np.float32), 16000)


def test_load_scorer_names_what_to_put_where_a_model_is_missing(tmp_path):
    from deeptalk.evaluation.asr_scorer import load_scorer

    with pytest.raises(ValueError, match=r"no directory .*whisper-large-v3.*Whisper-large-v3.*'base', 'tiny.en'"):
        load_scorer("checkpoints/whisper-large-v3", root=tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="not a Whisper"):
        load_scorer("other", root=tmp_path)


def test_a_transformers_whisper_dir_scores(tmp_path):
    """The mini Whisper (random weights) loads and decodes through the transformers path, deterministically."""
    from deeptalk.evaluation.asr_scorer import HFWhisperScorer, load_scorer
    from deeptalk.testing.mini_checkpoints import build_whisper

    build_whisper(tmp_path / "whisper")
    scorer = load_scorer("whisper", root=tmp_path)
    assert isinstance(scorer, HFWhisperScorer) and len(scorer.prompt) == 4  # multilingual: <|en|><|transcribe|>
    scorer.max_tokens = 8
    wav = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    text = scorer.transcribe(wav, 16000)
    assert isinstance(text, str) and text == scorer.transcribe(wav, 16000)
    value, hyps = scorer.score([(wav, 16000)], ["hello"])
    assert hyps == [text] and value >= 0


def test_transformers_scorer_batches_with_a_kv_cache_as_it_decodes_one_clip_without(tmp_path):
    """Batched, cached greedy decoding gives each clip the tokens of a plain uncached loop over that clip."""
    from deeptalk.evaluation.asr_scorer import HFWhisperScorer
    from deeptalk.testing.mini_checkpoints import build_whisper

    build_whisper(tmp_path / "whisper")
    scorer = HFWhisperScorer(tmp_path / "whisper", device="cpu", batch_size=2)
    scorer.max_tokens = 12
    clips = [((0.1 * np.sin(np.arange(n) / p)).astype(np.float32), 16000)
             for n, p in ((16000, 5), (8000, 3), (24000, 9))]

    def uncached(wav):  # the scorer's decoding rule, one clip, the whole prefix every step
        feats = scorer.features(wav, sampling_rate=16000, return_tensors="pt").input_features
        encoded = scorer.model.get_encoder()(feats)
        ids, out = torch.tensor([scorer.prompt]), []
        for _ in range(min(scorer.max_tokens, 16 + int(10 * len(wav) / 16000))):
            logits = scorer.model(encoder_outputs=encoded, decoder_input_ids=ids).logits[0, -1]
            logits[scorer.eot + 1 :] = -float("inf")
            nxt = int(logits.argmax())
            if nxt == scorer.eot:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        return scorer.tokenizer.decode(out).strip()

    with torch.inference_mode():
        want = [uncached(wav) for wav, _ in clips]
    assert any(want)  # random weights still produce tokens
    assert scorer.transcribe_many(clips) == want  # 2 + 1 clips: a full batch and a partial one
    assert [scorer.transcribe(wav, sr) for wav, sr in clips] == want
