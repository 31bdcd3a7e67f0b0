"""Tests of the run profile and device helpers."""

from __future__ import annotations

import pytest
import torch

import tinyformer
from tinyformer.runtime import peak_memory


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu", " GPU "])
def test_the_environment_variable_wins(monkeypatch, name):
    monkeypatch.setenv("TINYFORMER_PROFILE", name)
    assert tinyformer.profile() == name.strip().lower()


def test_without_the_variable_the_hardware_decides(monkeypatch):
    monkeypatch.delenv("TINYFORMER_PROFILE", raising=False)
    monkeypatch.setenv("CI", "true")  # CI must not change the profile
    assert tinyformer.profile() == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tinyformer.profile() == "gpu"


def test_an_unknown_profile_is_named(monkeypatch):
    monkeypatch.setenv("TINYFORMER_PROFILE", "fast")
    with pytest.raises(
        ValueError, match="TINYFORMER_PROFILE must be one of smoke, cpu, gpu, got 'fast'"
    ):
        tinyformer.profile()


@pytest.mark.parametrize(("name", "expected"), [("smoke", 1), ("cpu", 2), ("gpu", 3)])
def test_per_profile_picks_the_current_profiles_value(monkeypatch, name, expected):
    monkeypatch.setenv("TINYFORMER_PROFILE", name)
    assert tinyformer.per_profile(smoke=1, cpu=2, gpu=3) == expected


def test_pick_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tinyformer.pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert tinyformer.pick_device() == torch.device("cpu")


def test_peak_memory_sees_a_temporary_tensor_after_it_is_freed():
    size = 64 * 2**20  # bytes: 64 MiB of float32

    def make_and_free():
        big = torch.ones(size // 4)
        return float(big[0])

    result, peak = peak_memory(make_and_free)
    assert result == 1.0
    assert 0.95 * size < peak < size + 16 * 2**20  # to a few pages
    _, small = peak_memory(lambda: torch.ones(1024).sum())
    assert small < 8 * 2**20  # the 64 MiB went back to the system


def test_peak_memory_names_a_device_it_cannot_measure():
    with pytest.raises(ValueError, match="cpu or cuda"):
        peak_memory(lambda: None, "meta")
