"""Tests of tinyformer.data: the number pairs, tokens, the vocabulary, padded
batches and their masks, and the tab-separated reader."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyformer.data import (
    Batch,
    TranslationData,
    Vocabulary,
    collate,
    detokenize,
    number_pairs,
    read_parallel,
    split_numbers,
    tokenize,
)


def test_the_pairs_are_english_and_french_words():
    assert number_pairs([97, 71, 1984]) == [
        ("ninety-seven", "quatre-vingt-dix-sept"),
        ("seventy-one", "soixante et onze"),
        ("one thousand, nine hundred and eighty-four", "mille neuf cent quatre-vingt-quatre"),
    ]


def test_train_and_test_numbers_never_overlap():
    for high in (200, 1_000_000):  # by permutation, and by drawing with repeats
        train, test = split_numbers(150, 40, high=high, seed=3)
        assert len(set(train)) == 150 and len(set(test)) == 40
        assert not set(train) & set(test)
        assert all(0 <= n < high for n in train + test)
    assert split_numbers(10, 5, seed=1) == split_numbers(10, 5, seed=1)
    assert split_numbers(10, 5, seed=1) != split_numbers(10, 5, seed=2)
    with pytest.raises(ValueError, match="at most high=10 distinct numbers"):
        split_numbers(8, 5, high=10)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 999_999))
def test_every_number_round_trips_through_tokens_and_ids(number):
    (english, french), = number_pairs([number])
    for sentence in (english, french):
        assert detokenize(tokenize(sentence)) == sentence
    vocab = Vocabulary.build([french])
    ids = vocab.encode(french)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.unk_id not in ids
    assert vocab.decode(ids) == french


def test_the_vocabulary_has_its_specials_first_and_unknown_words():
    vocab = Vocabulary.build(["un deux", "deux trois"])
    assert vocab.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert len(vocab) == 7
    assert vocab.encode("quatre deux", bos=False, eos=False) == [vocab.unk_id, vocab.ids["deux"]]
    assert vocab.decode([vocab.ids["un"], vocab.eos_id, vocab.ids["deux"]]) == "un"  # stops
    assert Vocabulary.build(["a a b"], min_count=2).tokens[4:] == ["a"]
    with pytest.raises(ValueError, match="distinct and not special"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match=r"ids must be in \[0, 7\), got 9"):
        vocab.decode([9])


def test_the_vocabulary_is_saved_and_loaded(tmp_path):
    vocab = Vocabulary.build(w for _, w in number_pairs(range(100)))
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a saved Vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def test_a_batch_is_padded_to_its_longest_with_masks_and_shifted_targets():
    batch = collate([([5, 6, 7, 2], [1, 8, 9, 2]), ([5, 2], [1, 2])])
    assert batch.src.tolist() == [[5, 6, 7, 2], [5, 2, 0, 0]]
    assert batch.src_key_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.tgt_in.tolist() == [[1, 8, 9], [1, 0, 0]]
    assert batch.tgt_out.tolist() == [[8, 9, 2], [2, 0, 0]]
    assert batch.tgt_key_mask.tolist() == [[True] * 3, [True, False, False]]
    assert batch.n_target_tokens == 4
    assert batch.to("meta").src.device.type == "meta"
    with pytest.raises(ValueError, match="at least <bos> and <eos>"):
        collate([([5], [1])])


def test_batches_cover_every_pair_once_in_a_seeded_order():
    pairs = number_pairs(range(50))
    src_vocab = Vocabulary.build(s for s, _ in pairs)
    tgt_vocab = Vocabulary.build(t for _, t in pairs)
    data = TranslationData(pairs, src_vocab, tgt_vocab)
    batches = list(data.batches(16, generator=torch.Generator().manual_seed(0)))
    assert [b.src.shape[0] for b in batches] == [16, 16, 16, 2]
    assert all(isinstance(b, Batch) for b in batches)
    seen = sorted(src_vocab.decode(row) for b in batches for row in b.src)
    assert seen == sorted(s for s, _ in pairs)
    again = list(data.batches(16, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a.src, b.src) for a, b in zip(batches, again, strict=True))


def test_a_malformed_line_is_named(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("one\tun\n\ntwo\tdeux\r\nthree trois\n")
    with pytest.raises(ValueError, match=r"corpus.tsv, line 4: expected 'source<TAB>target'"):
        read_parallel(path)
    path.write_text("one\tun\n\ntwo\tdeux\r\n")
    assert read_parallel(path) == [("one", "un"), ("two", "deux")]
    path.write_text("one\t\n")
    with pytest.raises(ValueError, match="line 1"):
        read_parallel(path)
