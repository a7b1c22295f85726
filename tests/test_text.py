"""Tokenizer: words in any script, a deterministic vocabulary, fixed-length ids, JSON round trip."""

from hypothesis import given
from hypothesis import strategies as st

from huse_core.data.text import PAD, UNK, Tokenizer, words


def test_words_lowercase_and_split_on_punctuation():
    assert words("Men's Navy-Blue T-Shirt") == ["men", "s", "navy", "blue", "t", "shirt"]
    assert words("<script>alert(1)</script>") == ["script", "alert", "1", "script"]
    assert words("Кроссовки 日本 😀") == ["кроссовки", "日本"]


def test_vocabulary_is_most_frequent_first_ties_alphabetical():
    tok = Tokenizer.fit(["red shirt", "blue shirt", "red dress"], vocab_size=2, max_len=4)
    assert tok.vocab == ["red", "shirt"]
    ids = tok.encode(["red shirt", "blue dress", ""])
    assert ids.tolist() == [[2, 3, PAD, PAD], [UNK, UNK, PAD, PAD], [UNK, PAD, PAD, PAD]]


def test_round_trip_through_dict():
    tok = Tokenizer.fit(["a b c"], 10, 3)
    again = Tokenizer.from_dict(tok.to_dict())
    assert (again.encode(["c b a d"]) == tok.encode(["c b a d"])).all()


@given(st.lists(st.text(max_size=300), min_size=1, max_size=8))
def test_any_text_gives_fixed_length_valid_ids(titles):
    tok = Tokenizer.fit(titles, vocab_size=50, max_len=6)
    ids = tok.encode(titles)
    assert ids.shape == (len(titles), 6)
    assert ids.min() >= 0 and ids.max() < tok.n_tokens
    assert (ids[:, 0] != PAD).all()  # every title, even an empty one, gives at least one token
