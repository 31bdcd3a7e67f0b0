"""Tests of the run profile and device helpers."""

from __future__ import annotations

import pytest
import torch

import tinyformer


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
