"""Tests of tinyformer.training and tinyformer.decoding: the schedule, the loss
over real tokens, a run that learns, checkpoints that resume exactly, greedy
decoding."""

from __future__ import annotations

import itertools

import pytest
import torch

from tinyformer import Transformer
from tinyformer.data import TranslationData, Vocabulary, number_pairs
from tinyformer.decoding import beam_search, greedy_decode, sample
from tinyformer.training import (
    load_checkpoint,
    make_optimizer,
    paper_learning_rate,
    save_checkpoint,
    train,
    translation_loss,
)

TINY = {"d_model": 16, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
        "d_ff": 32, "dropout": 0.0}


def tiny_data(n=40):
    pairs = number_pairs(range(n))
    src_vocab = Vocabulary.build(s for s, _ in pairs)
    tgt_vocab = Vocabulary.build(t for _, t in pairs)
    return TranslationData(pairs, src_vocab, tgt_vocab)


def tiny_model(data, seed=0):
    torch.manual_seed(seed)
    return Transformer(len(data.src_vocab), len(data.tgt_vocab), **TINY)


def test_the_schedule_rises_for_warmup_steps_then_falls_like_one_over_sqrt_step():
    rates = [paper_learning_rate(s, d_model=64, warmup=100) for s in range(1, 1001)]
    assert max(rates) == rates[99]
    assert all(a < b for a, b in itertools.pairwise(rates[:100]))  # rising
    assert rates[399] == pytest.approx(rates[99] / 2)
    model = torch.nn.Linear(2, 2)
    optimizer, schedule = make_optimizer(model, d_model=64, warmup=100, scale=2.0)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([2.0 * r for r in rates[:5]])


def test_the_loss_counts_real_tokens_only():
    logits = torch.randn(2, 4, 7)
    targets = torch.randint(7, (2, 4))
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    loss = translation_loss(logits, targets, mask)
    junk = logits.clone()
    junk[~mask] = 1e4 * torch.randn_like(junk[~mask])
    assert loss == translation_loss(junk, targets, mask)
    expected = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    torch.testing.assert_close(loss, expected)
    smoothed = translation_loss(logits, targets, mask, label_smoothing=0.1)
    assert smoothed != loss
    wide = translation_loss(logits.double(), targets, mask)  # float64 stays float64
    assert wide.dtype == torch.float64
    assert translation_loss(logits.bfloat16(), targets, mask).dtype == torch.float32
    with pytest.raises(ValueError, match="logits must be"):
        translation_loss(logits[0], targets, mask)


def test_a_short_run_learns_to_translate_its_training_numbers():
    data = tiny_data(20)
    model = tiny_model(data)
    history = train(model, data, steps=150, batch_size=20, warmup=30, lr_scale=3.0,
                    label_smoothing=0.0, eval_data=data, eval_every=75, progress=False)
    assert history.loss[-1] < history.loss[0] / 4
    assert history.eval_step == [75, 150]
    assert history.exact_match[-1] >= 0.5
    assert len(history.lr) == 150 and history.lr[29] == max(history.lr)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    data = tiny_data(64)  # eight batches of eight: one epoch covers the six steps
    options = {"batch_size": 8, "warmup": 10, "progress": False}
    straight = tiny_model(data)
    train(straight, data, steps=6, seed=1, **options)

    first = tiny_model(data)
    optimizer, schedule = make_optimizer(first, d_model=16, warmup=10)
    train(first, data, steps=3, seed=1, optimizer=optimizer, schedule=schedule, **options)
    save_checkpoint(tmp_path / "run.pt", model=first, optimizer=optimizer, schedule=schedule,
                    step=3, src_vocab=data.src_vocab, tgt_vocab=data.tgt_vocab)
    loaded = load_checkpoint(tmp_path / "run.pt", warmup=10)
    assert loaded["step"] == 3 and loaded["tgt_vocab"] == data.tgt_vocab
    assert loaded["optimizer"].param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    resumed = loaded["model"]
    for ours, theirs in zip(resumed.state_dict().values(), first.state_dict().values(),
                            strict=True):
        assert torch.equal(ours, theirs)
    # The next three steps see the batches the straight run saw as its steps 4 to 6.
    generator = torch.Generator().manual_seed(1)
    batches = list(data.batches(8, generator=generator))
    assert len(batches) >= 6
    model, optimizer, schedule = resumed, loaded["optimizer"], loaded["schedule"]
    for batch in batches[3:6]:
        logits = model(batch.src, batch.tgt_in, src_key_mask=batch.src_key_mask,
                       tgt_key_mask=batch.tgt_key_mask)
        loss = translation_loss(logits, batch.tgt_out, batch.tgt_key_mask, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    for ours, theirs in zip(model.parameters(), straight.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)
    assert not (tmp_path / "run.pt.tmp").exists()


def test_greedy_decoding_stops_at_eos_and_matches_a_step_by_step_argmax():
    data = tiny_data()
    model = tiny_model(data).eval()
    batch = next(data.batches(5, shuffle=False))
    tokens = greedy_decode(model, batch.src, max_len=7, bos_id=1, eos_id=2,
                           src_key_mask=batch.src_key_mask)
    assert tokens.shape[0] == 5 and tokens.shape[1] <= 7
    memory = model.encode(batch.src, src_key_mask=batch.src_key_mask)
    prefix = torch.ones(5, 1, dtype=torch.long)
    for t in range(tokens.shape[1]):  # each token is the argmax given the ones before
        logits = model.decode(prefix, memory, src_key_mask=batch.src_key_mask)[:, -1]
        done = (prefix[:, 1:] == 2).any(dim=1)
        expected = torch.where(done, 2, logits.argmax(-1))
        assert torch.equal(tokens[:, t], expected)
        prefix = torch.cat([prefix, tokens[:, t:t + 1]], dim=1)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoding_with_a_cache_gives_the_logits_of_the_whole_prefix(norm_first):
    torch.manual_seed(2)
    model = Transformer(11, 13, d_model=16, n_heads=2, n_encoder_layers=2,
                        n_decoder_layers=3, d_ff=32, dropout=0.0,
                        norm_first=norm_first).double().eval()
    src, tgt = torch.randint(11, (3, 6)), torch.randint(13, (3, 7))
    src_key_mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] + [False] * 5])
    memory = model.encode(src, src_key_mask=src_key_mask)
    whole = model.decode(tgt, memory, src_key_mask=src_key_mask)
    cache = model.new_cache()
    pieces = [model.decode(tgt[:, :3], memory, src_key_mask=src_key_mask, cache=cache)]
    for t in range(3, 7):  # then one token at a time
        pieces.append(model.decode(tgt[:, t:t + 1], memory, src_key_mask=src_key_mask,
                                   cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole)
    assert len(cache[0][0]) == 7 and len(cache[0][1]) == 6  # target keys; memory keys
    calls = []  # the memory's keys are projected once, at the first call
    hook = model.decoder.layers[0].cross_attn.k_proj.register_forward_hook(
        lambda *_: calls.append(1))
    cache = model.new_cache()
    for t in range(7):
        model.decode(tgt[:, t:t + 1], memory, src_key_mask=src_key_mask, cache=cache)
    hook.remove()
    assert len(calls) == 1


def test_greedy_decoding_is_the_same_with_and_without_the_cache():
    data = tiny_data()
    model = tiny_model(data)
    train(model, data, steps=40, batch_size=20, warmup=10, lr_scale=3.0, progress=False)
    model.eval()
    batch = next(data.batches(16, shuffle=False))
    kwargs = {"max_len": 12, "bos_id": 1, "eos_id": 2, "src_key_mask": batch.src_key_mask}
    cached = greedy_decode(model, batch.src, use_cache=True, **kwargs)
    assert torch.equal(cached, greedy_decode(model, batch.src, use_cache=False, **kwargs))
    assert (cached == 2).any(dim=1).float().mean() > 0  # some sequences stop
    after_eos = (cached == 2).long().cumsum(dim=1) > 0
    assert (cached[after_eos] == 2).all()  # a finished sequence only repeats eos
    if cached.shape[1] < 12:  # it stopped early: every sequence finished
        assert after_eos[:, -1].all()


def trained_tiny():
    data = tiny_data()
    model = tiny_model(data)
    train(model, data, steps=40, batch_size=20, warmup=10, lr_scale=3.0, progress=False)
    batch = next(data.batches(16, shuffle=False))
    return model.eval(), batch


def sequence_log_prob(model, batch, tokens, eos_id=2):
    """log p(tokens | source) up to and including the first eos."""
    tgt_in = torch.cat([torch.ones_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
    log_probs = model(batch.src, tgt_in, src_key_mask=batch.src_key_mask).log_softmax(-1)
    picked = log_probs.gather(-1, tokens[..., None])[..., 0]
    after_eos = (tokens == eos_id).cumsum(dim=1) - (tokens == eos_id).long() > 0
    return picked.masked_fill(after_eos, 0.0).sum(dim=1)


def test_top_k_keeps_exactly_k_tokens_even_when_they_tie():
    class Tied(torch.nn.Module):  # every step: five tokens tie for the top logit
        d_model = 4

        def encode(self, src, src_key_mask=None):
            return torch.zeros(src.shape[0], 1, 4)

        def new_cache(self):
            return None

        def decode(self, tgt, memory, src_key_mask=None, cache=None):
            logits = torch.full((tgt.shape[0], tgt.shape[1], 8), -5.0)
            logits[..., 3:8] = 1.0
            return logits

    src = torch.zeros(200, 1, dtype=torch.long)
    kwargs = {"max_len": 1, "bos_id": 1, "eos_id": 2, "use_cache": False}
    greedy = greedy_decode(Tied(), src, **kwargs)
    assert torch.equal(sample(Tied(), src, top_k=1, **kwargs), greedy)
    drawn = sample(Tied(), src, top_k=2, generator=torch.Generator().manual_seed(0), **kwargs)
    assert len(drawn.unique()) == 2  # two of the five tied tokens, not all five


def test_beam_search_is_the_same_with_and_without_the_cache():
    model, batch = trained_tiny()
    kwargs = {"max_len": 12, "bos_id": 1, "eos_id": 2, "src_key_mask": batch.src_key_mask,
              "beam_size": 3}
    cached = beam_search(model, batch.src, use_cache=True, **kwargs)
    assert torch.equal(cached, beam_search(model, batch.src, use_cache=False, **kwargs))


def test_beam_size_one_top_k_one_and_a_tiny_top_p_are_greedy():
    model, batch = trained_tiny()
    kwargs = {"max_len": 12, "bos_id": 1, "eos_id": 2, "src_key_mask": batch.src_key_mask}
    greedy = greedy_decode(model, batch.src, **kwargs)
    assert torch.equal(beam_search(model, batch.src, beam_size=1, **kwargs), greedy)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample(model, batch.src, top_k=1, generator=gen, **kwargs), greedy)
    assert torch.equal(sample(model, batch.src, top_p=1e-9, generator=gen, **kwargs), greedy)


def test_beam_search_finds_translations_at_least_as_probable_as_greedy_here():
    # Not a theorem (greedy's prefix can be pruned by prefixes that end worse), but
    # what a working beam search does on a small trained model; the cache changes
    # nothing.
    model, batch = trained_tiny()
    kwargs = {"max_len": 12, "bos_id": 1, "eos_id": 2, "src_key_mask": batch.src_key_mask}
    greedy = greedy_decode(model, batch.src, **kwargs)
    beam = beam_search(model, batch.src, beam_size=4, length_penalty=0.0, **kwargs)
    assert torch.equal(beam, beam_search(model, batch.src, beam_size=4, length_penalty=0.0,
                                         use_cache=False, **kwargs))
    n = max(beam.shape[1], greedy.shape[1])
    pad_to = lambda t: torch.nn.functional.pad(t, (0, n - t.shape[1]), value=2)  # noqa: E731
    beam_score = sequence_log_prob(model, batch, pad_to(beam))
    greedy_score = sequence_log_prob(model, batch, pad_to(greedy))
    finished = (greedy == 2).any(dim=1) & (beam == 2).any(dim=1)
    assert finished.any()
    assert (beam_score[finished] >= greedy_score[finished] - 1e-5).all()


def test_a_seeded_sample_is_reproducible_and_temperature_matters():
    model, batch = trained_tiny()
    kwargs = {"max_len": 12, "bos_id": 1, "eos_id": 2, "src_key_mask": batch.src_key_mask}

    def draw(seed, **options):
        gen = torch.Generator().manual_seed(seed)
        return sample(model, batch.src, generator=gen, **kwargs, **options)

    assert torch.equal(draw(3), draw(3))
    assert torch.equal(draw(3), draw(3, use_cache=False))
    hot = [draw(seed, temperature=5.0) for seed in range(3)]
    assert not all(torch.equal(hot[0], other) for other in hot[1:])
    with pytest.raises(ValueError, match="temperature must be positive"):
        draw(0, temperature=0.0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        draw(0, top_p=1.5)


def test_the_history_keeps_each_steps_epoch_and_each_epochs_mean_loss():
    data = tiny_data(40)
    history = train(tiny_model(data), data, steps=5, batch_size=20, warmup=5, progress=False)
    assert history.epoch == [0, 0, 1, 1, 2]
    assert history.epoch_loss == pytest.approx([sum(history.loss[:2]) / 2,
                                                sum(history.loss[2:4]) / 2])


class _Scripted:
    """A stand-in model whose next token is scripted: row 0 says eos (2) at its
    first step and 5 ever after; row 1 always says 5."""

    def encode(self, src, src_key_mask=None):
        return src.float()[..., None]

    def new_cache(self):
        return None

    def decode(self, tgt, memory, src_key_mask=None, cache=None):
        logits = torch.zeros(tgt.shape[0], tgt.shape[1], 7)
        logits[..., 5] = 1.0
        logits[0, :, 2] = 2.0 if tgt.shape[1] == 1 else 0.0
        return logits


def test_a_finished_sequence_only_repeats_eos():
    src = torch.ones(2, 3, dtype=torch.long)
    for decode in (greedy_decode, sample):
        kwargs = {"top_k": 1} if decode is sample else {}
        tokens = decode(_Scripted(), src, max_len=4, bos_id=1, eos_id=2, use_cache=False,
                        **kwargs)
        assert tokens.tolist() == [[2, 2, 2, 2], [5, 5, 5, 5]]


def test_empty_data_and_a_batch_without_tokens_are_refused_not_hung_or_nan():
    data = tiny_data()
    empty = TranslationData([], data.src_vocab, data.tgt_vocab)
    with pytest.raises(ValueError, match="at least one sentence pair"):
        train(tiny_model(data), empty, steps=1, batch_size=2, progress=False)
    targets = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="no real target token"):
        translation_loss(torch.zeros(1, 2, 5), targets, targets != 0)
    total = translation_loss(torch.zeros(1, 2, 5), targets, targets != 0, reduction="sum")
    assert total.item() == 0.0


@pytest.mark.parametrize("capability, expected", [((7, 5), False), ((8, 0), True),
                                                  ((9, 0), True)])
def test_bf16_counts_only_where_the_gpu_has_it_natively(monkeypatch, capability, expected):
    from tinyformer.training import default_precision, has_bf16

    # torch.cuda.is_bf16_supported() says True on a T4 (7.5), which emulates it
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", None)
    assert has_bf16(torch.device("cuda")) is expected
    assert default_precision(torch.device("cuda")) == ("bf16" if expected else "fp32")
    assert not has_bf16("cpu") and not has_bf16(torch.device("meta"))
