import json

import pytest

from deeptalk.data.text_tokenizer import (
    SPECIALS,
    HFTextTokenizer,
    TextTokenizer,
    load_tokenizer,
    normalize,
    split_words,
)

CORPUS = [
    "What is the capital of Antigua and Barbuda?",
    "The capital of Antigua and Barbuda is St. John's.",
    "What is 12 times 12?",
    "144.",
    "Repeat the sentence inside the brackets without any explanation. [Porto-Novo is in Benin.]",
]


def test_split_words_lowercases_and_splits_digits_and_marks():
    assert split_words("St. John's has 144 rooms!") == [
        "st",
        ".",
        "john's",
        "has",
        "1",
        "4",
        "4",
        "rooms",
        "!",
    ]


def test_roundtrip_gives_normalized_text():
    tok = TextTokenizer.build(CORPUS)
    for text in CORPUS:
        ids = tok.encode(text)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == normalize(text)
    assert tok.decode(tok.encode("What is 12 times 12?")) == "what is 12 times 12?"
    assert normalize("[Porto-Novo is in Benin.]") == "[porto-novo is in benin.]"


def test_specials_digits_and_unknowns():
    tok = TextTokenizer.build(CORPUS)
    assert tok.vocab[: len(SPECIALS)] == list(SPECIALS)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert all(str(d) in tok.vocab for d in range(10))  # every number is encodable
    assert tok.encode("the zebra") == [tok.encode("the")[0], tok.unk_id]
    assert tok.unknown_words("the zebra 7") == ["zebra"]
    assert tok.decode([tok.bos_id, *tok.encode("the"), tok.unk_id, tok.eos_id, tok.pad_id]) == "the <unk>"
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        tok.decode([tok.vocab_size])


def test_vocabulary_does_not_depend_on_corpus_order():
    assert TextTokenizer.build(CORPUS).vocab == TextTokenizer.build(CORPUS[::-1]).vocab


def test_save_load_roundtrip(tmp_path):
    tok = TextTokenizer.build(CORPUS)
    tok.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, TextTokenizer)
    assert loaded.vocab == tok.vocab and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(CORPUS[1]) == tok.encode(CORPUS[1])


def test_bad_vocabularies_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="must start with the specials"):
        TextTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        TextTokenizer([*SPECIALS, "a", "a"])
    with pytest.raises(ValueError, match="no word tokenizer"):
        TextTokenizer.load(tmp_path)


def test_hf_tokenizer_from_a_local_directory(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3, "hello": 4, "world": 5}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(tmp_path / "hf")
    tok = load_tokenizer(tmp_path / "hf")
    assert isinstance(tok, HFTextTokenizer)
    assert tok.encode("hello world") == [4, 5]
    assert tok.decode([4, 5, 3]) == "hello world"
    assert tok.unknown_words("hello mars") == ["mars"]
    assert (tok.vocab_size, tok.pad_id, tok.unk_id) == (6, 1, 0)
    tok.save(tmp_path / "copy")
    assert json.loads((tmp_path / "copy" / "tokenizer.json").read_text())["model"]["vocab"]["world"] == 5
