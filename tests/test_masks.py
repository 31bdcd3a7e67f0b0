"""Tests of tinyformer.causal_mask and tinyformer.padding_mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tinyformer import causal_mask, combine_masks, mask_from_torch, mask_to_torch, padding_mask


@given(st.integers(0, 12), st.integers(0, 12))
def test_causal_mask_is_aligned_bottom_right(n_queries, n_keys):
    mask = causal_mask(n_queries, n_keys)
    assert mask.shape == (n_queries, n_keys) and mask.dtype == torch.bool
    offset = n_keys - n_queries  # the queries are the last n_queries positions
    for i in range(n_queries):
        for j in range(n_keys):
            assert bool(mask[i, j]) == (j <= i + offset)


def test_square_causal_mask_is_the_lower_triangle():
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())


def test_with_more_keys_the_last_query_sees_every_key():
    mask = causal_mask(3, 7)
    assert mask[-1].all()
    assert mask.sum(-1).tolist() == [5, 6, 7]


def test_causal_mask_differs_from_pytorch_is_causal_when_keys_outnumber_queries():
    # PyTorch's is_causal keeps the top-left triangle: the last query sees 3 keys, not 7.
    top_left = torch.ones(3, 7, dtype=torch.bool).tril()
    assert not torch.equal(causal_mask(3, 7), top_left)
    assert torch.equal(causal_mask(5), torch.ones(5, 5, dtype=torch.bool).tril())


def test_causal_mask_is_made_on_the_device_asked_for():
    assert causal_mask(3, device="meta").device.type == "meta"


def test_causal_mask_rejects_bad_sizes():
    with pytest.raises(TypeError, match="n_queries must be an int, got float"):
        causal_mask(3.0)
    with pytest.raises(TypeError, match="n_keys must be an int, got bool"):
        causal_mask(3, True)
    with pytest.raises(ValueError, match="n_keys must be at least 0, got -1"):
        causal_mask(3, -1)


@given(st.lists(st.integers(0, 9), min_size=1, max_size=6), st.integers(0, 3))
def test_padding_mask_marks_exactly_the_first_length_positions(lengths, extra):
    max_len = max(lengths) + extra
    for given_lengths in (lengths, torch.tensor(lengths)):
        mask = padding_mask(given_lengths, max_len)
        assert mask.shape == (len(lengths), max_len) and mask.dtype == torch.bool
        assert mask.sum(-1).tolist() == lengths
        for row, length in zip(mask, lengths, strict=True):
            assert row[:length].all() and not row[length:].any()


def test_padding_mask_takes_numpy_lengths_and_a_tensor_max_len():
    expected = padding_mask([2, 0, 3], max_len=4)
    assert torch.equal(padding_mask(np.array([2, 0, 3]), 4), expected)
    assert torch.equal(padding_mask(torch.tensor([2, 0, 3]), torch.tensor(4)), expected)
    assert torch.equal(padding_mask([2, 0, 3], max_len=np.int64(4)), expected)
    with pytest.raises(TypeError, match="max_len must be an int, got Tensor"):
        padding_mask([1], torch.tensor(4.0))


def test_padding_mask_defaults_to_the_longest_length():
    assert padding_mask(torch.tensor([2, 5, 1])).shape == (3, 5)


def test_padding_mask_follows_its_lengths_device():
    mask = padding_mask(torch.tensor([2, 3], device="meta"), max_len=4)
    assert mask.device.type == "meta" and mask.shape == (2, 4)
    assert padding_mask([1, 2], device="meta").device.type == "meta"


@pytest.mark.parametrize(
    ("lengths", "max_len", "error", "message"),
    [
        (
            torch.tensor([1.0, 2.0]),
            None,
            TypeError,
            "lengths must hold integers, got dtype torch.float32",
        ),
        (
            torch.tensor([[1, 2]]),
            None,
            ValueError,
            r"lengths must be 1-D \(batch,\), got shape \(1, 2\)",
        ),
        ([1, 5], 4, ValueError, r"lengths must lie in \[0, max_len=4\], got 1 to 5"),
        ([-1, 2], None, ValueError, "lengths\\[0\\] must be at least 0, got -1"),
        (
            torch.tensor([-1, 2]),
            None,
            ValueError,
            r"lengths must lie in \[0, max_len=2\], got -1 to 2",
        ),
        ([1, 2.5], None, TypeError, r"lengths\[1\] must be an int, got float"),
        (3, None, TypeError, "lengths must be a 1-D integer tensor or a list of ints, got int"),
        (np.array([1.5]), None, TypeError, "lengths must hold integers, got dtype torch.float64"),
        (torch.tensor([1, 2], device="meta"), None, ValueError, "max_len is required"),
    ],
)
def test_padding_mask_rejects_bad_lengths(lengths, max_len, error, message):
    with pytest.raises(error, match=message):
        padding_mask(lengths, max_len)


def test_combine_masks_allows_only_what_every_mask_allows():
    padding = padding_mask([2, 3])[:, None, :]  # (2, 1, 3)
    combined = combine_masks(causal_mask(3), None, padding)
    assert combined.shape == (2, 3, 3)
    assert torch.equal(combined, causal_mask(3) & padding)
    assert combine_masks(None, None) is None
    assert combine_masks(causal_mask(2)) is not None


def test_combine_masks_names_the_mask_that_does_not_fit():
    with pytest.raises(TypeError, match=r"masks\[1\] must be a bool tensor"):
        combine_masks(causal_mask(3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"masks\[1\] of shape \(4, 4\) does not broadcast"):
        combine_masks(causal_mask(3), causal_mask(4))


def test_pytorch_masks_convert_both_ways():
    ours = padding_mask([1, 3], 3)
    torch_style = mask_to_torch(ours)  # True = ignore
    assert torch.equal(torch_style, torch.tensor([[False, True, True], [False, False, False]]))
    assert torch.equal(mask_from_torch(torch_style), ours)
    additive = torch.zeros(3, 3).masked_fill(~causal_mask(3), float("-inf"))
    assert torch.equal(mask_from_torch(additive), causal_mask(3))


def test_mask_from_torch_refuses_a_bias():
    with pytest.raises(ValueError, match="values other than 0 and -inf: it is an additive bias"):
        mask_from_torch(torch.tensor([0.0, -1.0]))
    with pytest.raises(TypeError, match=r"got dtype torch\.int64"):
        mask_from_torch(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        mask_to_torch(torch.tensor([0.0]))


def test_converted_masks_give_pytorchs_answer():
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 4, 8)
    ours = padding_mask([4, 2], 4)
    with_ours = mha(x, x, x, key_padding_mask=mask_to_torch(ours))[0]
    by_hand = mha(x, x, x, key_padding_mask=torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]]).bool())[0]
    torch.testing.assert_close(with_ours, by_hand)
