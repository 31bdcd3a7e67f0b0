"""Data for translation (chapter 10): number pairs, a word-level vocabulary,
padded batches with their masks, and a reader for any tab-separated corpus.

The book's task needs no download: numbers written in English words, translated
into French words, generated with ``num2words``::

    "ninety-seven"  ->  "quatre-vingt-dix-sept"
    "seventy-one"   ->  "soixante et onze"

Sentences are split into words and punctuation, so ``quatre-vingt-dix-sept`` is
the seven tokens ``quatre - vingt - dix - sept``: a held-out number is then made
of words seen in training, and the vocabulary stays small.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ._checks import check_int
from .masks import padding_mask

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def tokenize(sentence: str) -> list[str]:
    """Split a sentence into lower-case words and punctuation marks.

    Example:
        >>> tokenize("Quatre-vingt-dix-sept, et onze")
        ['quatre', '-', 'vingt', '-', 'dix', '-', 'sept', ',', 'et', 'onze']
    """
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be a str, got {type(sentence).__name__}")
    return _TOKEN.findall(sentence.lower())


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens back into a sentence: hyphens bind, commas follow their word.

    Example:
        >>> detokenize(["quatre", "-", "vingt", "-", "dix", ",", "et", "onze"])
        'quatre-vingt-dix, et onze'
    """
    text = " ".join(tokens)
    return text.replace(" - ", "-").replace(" ,", ",").replace(" .", ".")


def number_pairs(
    numbers: Iterable[int], *, source: str = "en", target: str = "fr"
) -> list[tuple[str, str]]:
    """Each number written in words in two languages, with ``num2words``.

    Args:
        numbers: non-negative whole numbers.
        source: the source language (a ``num2words`` code).
        target: the target language.

    Example:
        >>> number_pairs([97, 71])
        [('ninety-seven', 'quatre-vingt-dix-sept'), ('seventy-one', 'soixante et onze')]
    """
    from num2words import num2words  # type: ignore[import-untyped]

    pairs = []
    for number in numbers:
        number = check_int("numbers", number)
        pairs.append((num2words(number, lang=source), num2words(number, lang=target)))
    return pairs


def split_numbers(
    n_train: int, n_test: int, *, high: int = 1_000_000, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Distinct numbers below ``high``, drawn at random: a training set and a test
    set that shares no number with it.

    Example:
        >>> train, test = split_numbers(100, 20, high=1000)
        >>> len(train), len(test), set(train) & set(test)
        (100, 20, set())
    """
    n_train, n_test = check_int("n_train", n_train), check_int("n_test", n_test)
    high = check_int("high", high, minimum=1)
    if n_train + n_test > high:
        raise ValueError(
            f"n_train + n_test must be at most high={high} distinct numbers, "
            f"got {n_train} + {n_test}"
        )
    gen = torch.Generator().manual_seed(seed)
    if high <= 10 * (n_train + n_test):  # a permutation is cheap enough
        drawn = torch.randperm(high, generator=gen)[: n_train + n_test].tolist()
    else:  # draw with replacement and drop repeats, in order
        seen: dict[int, None] = {}
        while len(seen) < n_train + n_test:
            for number in torch.randint(high, (n_train + n_test,), generator=gen).tolist():
                seen.setdefault(number)
        drawn = list(seen)[: n_train + n_test]
    return drawn[:n_train], drawn[n_train:]


class Vocabulary:
    """Tokens and their ids; ids 0 to 3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.

    Args:
        tokens: the ordinary tokens, in id order (the specials come first).

    Example:
        >>> vocab = Vocabulary.build(["vingt et un", "vingt-deux"])
        >>> vocab.encode("vingt et un")
        [1, 8, 6, 7, 2]
        >>> vocab.decode([1, 8, 6, 7, 2])
        'vingt et un'
        >>> vocab.encode("trente")  # not seen: <unk>
        [1, 3, 2]
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"tokens must be non-empty strings, got {token!r}")
        repeated = [token for token, count in Counter(tokens).items() if count > 1]
        if repeated or set(tokens) & set(SPECIALS):
            raise ValueError(
                f"tokens must be distinct and not special, got repeats {repeated[:5]} "
                f"and specials {sorted(set(tokens) & set(SPECIALS))}"
            )
        self.tokens = [*SPECIALS, *tokens]
        self.ids = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, sentences: Iterable[str], *, min_count: int = 1) -> Vocabulary:
        """The tokens of ``sentences`` seen at least ``min_count`` times, sorted."""
        min_count = check_int("min_count", min_count, minimum=1)
        counts = Counter(token for sentence in sentences for token in tokenize(sentence))
        return cls(sorted(token for token, count in counts.items() if count >= min_count))

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def encode(self, sentence: str, *, bos: bool = True, eos: bool = True) -> list[int]:
        """The ids of ``sentence``'s tokens, between ``<bos>`` and ``<eos>``."""
        ids = [self.ids.get(token, self.unk_id) for token in tokenize(sentence)]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The sentence of ``ids``, up to the first ``<eos>``, without specials."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"ids must be in [0, {len(self.tokens)}), got {i}")
            if i not in (self.pad_id, self.bos_id):
                words.append(self.tokens[i])
        return detokenize(words)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON."""
        Path(path).write_text(json.dumps({"tokens": self.tokens[len(SPECIALS):]}, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise ValueError(f"{path} is not a saved Vocabulary (no 'tokens' list)")
        return cls(data["tokens"])


@dataclass
class Batch:
    """A padded batch of sentence pairs, batch-first.

    Shape:
        - src, src_key_mask: ``(batch, n_src)``; token ids and True on real tokens
        - tgt_in, tgt_out, tgt_key_mask: ``(batch, n_tgt)``: the target from
          ``<bos>`` (the decoder's input) and shifted by one, to ``<eos>`` (what
          it must predict); True on real tokens

    Example:
        >>> batch = collate([([5, 6, 2], [1, 7, 2]), ([5, 2], [1, 7, 8, 2])])
        >>> batch.src.shape, batch.tgt_in.shape, batch.n_target_tokens
        (torch.Size([2, 3]), torch.Size([2, 3]), 5)
    """

    src: torch.Tensor
    src_key_mask: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_key_mask: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))

    @property
    def n_target_tokens(self) -> int:
        """The real target tokens, the ones the loss counts."""
        return int(self.tgt_key_mask.sum())


def pad(sequences: Sequence[Sequence[int]], pad_id: int = Vocabulary.pad_id) -> torch.Tensor:
    """Right-pad lists of ids to the longest one: ``(batch, longest)``, int64.

    Shape:
        - output: ``(len(sequences), longest)``, int64, ``pad_id`` after each end

    Example:
        >>> pad([[1, 5, 2], [1, 2]])
        tensor([[1, 5, 2],
                [1, 2, 0]])
    """
    longest = max((len(s) for s in sequences), default=0)
    return torch.tensor([list(s) + [pad_id] * (longest - len(s)) for s in sequences],
                        dtype=torch.long).reshape(len(sequences), longest)


def collate(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int = Vocabulary.pad_id
) -> Batch:
    """A :class:`Batch` from (source ids, target ids) pairs, each target from
    ``<bos>`` to ``<eos>``; every sequence is padded to its batch's longest.

    Shape:
        - src, src_key_mask: ``(batch, n_src)``, ``n_src`` the longest source
        - tgt_in, tgt_out, tgt_key_mask: ``(batch, n_tgt)``, ``n_tgt`` the
          longest target less one

    Example:
        >>> batch = collate([([5, 6, 2], [1, 7, 2]), ([5, 2], [1, 7, 8, 2])])
        >>> batch.tgt_in  # from <bos> (1); a shorter target's <eos> becomes <pad>
        tensor([[1, 7, 0],
                [1, 7, 8]])
        >>> batch.tgt_out  # shifted by one, to <eos> (2)
        tensor([[7, 2, 0],
                [7, 8, 2]])
    """
    if not pairs:
        raise ValueError("pairs must hold at least one pair")
    sources = [list(src) for src, _ in pairs]
    targets = [list(tgt) for _, tgt in pairs]
    if min(len(t) for t in targets) < 2:
        raise ValueError("each target must have at least <bos> and <eos>")
    src = pad(sources, pad_id)
    tgt = pad(targets, pad_id)
    lengths = torch.tensor([len(s) for s in sources])
    tgt_key_mask = padding_mask(torch.tensor([len(t) - 1 for t in targets]), tgt.shape[1] - 1)
    return Batch(
        src=src, src_key_mask=padding_mask(lengths, src.shape[1]),
        # The input stops before <eos>: a shorter target's <eos> becomes padding.
        tgt_in=torch.where(tgt_key_mask, tgt[:, :-1], pad_id), tgt_out=tgt[:, 1:],
        tgt_key_mask=tgt_key_mask,
    )


class TranslationData:
    """Sentence pairs encoded with a source and a target vocabulary, served as
    padded batches.

    Args:
        pairs: (source sentence, target sentence) pairs.
        src_vocab, tgt_vocab: the vocabularies (build them from the training pairs).

    Shape:
        - each :class:`Batch` of :meth:`batches`: ``src``, ``src_key_mask``
          ``(batch, n_src)`` and ``tgt_in``, ``tgt_out``, ``tgt_key_mask``
          ``(batch, n_tgt)``, with ``batch = batch_size`` (the last may be
          smaller) and each batch padded to its own longest sentences

    Example:
        >>> pairs = number_pairs(range(30))
        >>> src_vocab = Vocabulary.build(s for s, _ in pairs)
        >>> tgt_vocab = Vocabulary.build(t for _, t in pairs)
        >>> data = TranslationData(pairs, src_vocab, tgt_vocab)
        >>> batch = next(data.batches(8, shuffle=False))
        >>> batch.src.shape[0], batch.tgt_in.shape == batch.tgt_out.shape
        (8, True)
    """

    def __init__(
        self, pairs: Sequence[tuple[str, str]], src_vocab: Vocabulary, tgt_vocab: Vocabulary
    ) -> None:
        self.pairs = list(pairs)
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.encoded = [
            (src_vocab.encode(src, bos=False), tgt_vocab.encode(tgt)) for src, tgt in self.pairs
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def batches(
        self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """One pass over the pairs in batches of ``batch_size`` (the last may be
        smaller), in a random order when ``shuffle``."""
        batch_size = check_int("batch_size", batch_size, minimum=1)
        order = (torch.randperm(len(self), generator=generator).tolist() if shuffle
                 else range(len(self)))
        order = list(order)
        for start in range(0, len(order), batch_size):
            yield collate([self.encoded[i] for i in order[start:start + batch_size]],
                          self.tgt_vocab.pad_id)


def read_parallel(path: str | Path) -> list[tuple[str, str]]:
    """Read a parallel corpus: one ``source<TAB>target`` pair per line.

    Blank lines are skipped; a line without exactly one tab, or with an empty
    side, is an error that names the file and the line.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pairs.tsv")
        >>> _ = open(path, "w").write("one\\tun\\ntwo\\tdeux\\n")
        >>> read_parallel(path)
        [('one', 'un'), ('two', 'deux')]
    """
    path = Path(path)
    pairs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(
                    f"{path}, line {number}: expected 'source<TAB>target' with two "
                    f"non-empty sides, got {len(fields)} field(s): {line[:60]!r}"
                )
            pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs
