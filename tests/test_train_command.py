"""Tests of `python -m tinyformer.train`: two processes under torchrun train exactly
as one does, a resumed run as a straight one, and bad input gets one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tinyformer.train import PROFILES, main, parse_args

# Tiny, deterministic runs: dropout 0, the same seed and global batch.
TINY = ["--profile", "smoke", "--dropout", "0", "--batch-size", "16", "--seed", "3"]
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        parse_args(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for option in ("--profile", "--d-model", "--layers", "--heads", "--dropout", "--steps",
                   "--batch-size", "--lr", "--warmup", "--seed", "--precision", "--compile",
                   "--checkpoint", "--resume", "--data", "--metrics", "--quiet",
                   "--accumulate"):
        assert option in text
    assert "GLOBAL batch" in text and "smoke 64, cpu 128, gpu 256" in text
    assert "default 0" in text and "(default: None)" not in text


def test_profile_fills_only_what_was_not_given():
    args = parse_args(["--profile", "cpu", "--steps", "7"])
    assert args.steps == 7 and args.d_model == PROFILES["cpu"]["d_model"]


def test_one_run_trains_and_ends_with_the_exact_match_line(tmp_path, capsys):
    assert main([*TINY, "--steps", "5", "--checkpoint", str(tmp_path / "one.pt"),
                 "--metrics", str(tmp_path / "log.jsonl"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1].startswith("held-out exact match: ")
    assert captured.err == ""  # --quiet: no bar
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5]
    assert all(line["loss"] > 0 and line["lr"] > 0 for line in lines)
    state = torch.load(tmp_path / "one.pt", weights_only=True)
    assert {"config", "model", "optimizer", "schedule", "step", "src_vocab",
            "tgt_vocab"} <= set(state)
    assert state["step"] == 5


def test_two_processes_under_torchrun_train_as_one(tmp_path):
    assert main([*TINY, "--steps", "5", "--checkpoint", str(tmp_path / "one.pt")]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tinyformer.train", *TINY, "--steps", "5", "--quiet",
         "--metrics", str(tmp_path / "two.jsonl"), "--checkpoint", str(tmp_path / "two.pt")],
        env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("held-out exact match:") == 1  # rank 0 only
    logged = (tmp_path / "two.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [1, 2, 3, 4, 5]  # rank 0 only
    accumulated = subprocess.run(  # each process in two micro-batches: DDP's no_sync
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tinyformer.train", *TINY, "--steps", "5", "--quiet", "--accumulate", "2",
         "--checkpoint", str(tmp_path / "two_accumulated.pt")],
        env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert accumulated.returncode == 0, accumulated.stderr[-2000:]
    one, two = weights(tmp_path / "one.pt"), weights(tmp_path / "two.pt")
    two_accumulated = weights(tmp_path / "two_accumulated.pt")
    for name, tensor in one.items():
        if not name.endswith("k_proj.bias"):
            torch.testing.assert_close(two_accumulated[name], tensor, rtol=0, atol=1e-5,
                                       msg=name)
    for name, tensor in one.items():
        if name.endswith("k_proj.bias"):
            # Its true gradient is zero (a key bias shifts all of a query's scores
            # alike): what reaches it is round-off, which the two runs round
            # differently and Adam turns into steps of a sizable share of the rate.
            continue
        torch.testing.assert_close(two[name], tensor, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("dropout", ["0", "0.1"])
def test_a_resumed_run_equals_a_straight_one(tmp_path, dropout):
    run = [*TINY, "--dropout", dropout]  # with dropout: the same draws, step by step
    assert main([*run, "--steps", "5", "--checkpoint", str(tmp_path / "straight.pt")]) == 0
    assert main([*run, "--steps", "3", "--checkpoint", str(tmp_path / "three.pt")]) == 0
    assert main([*run, "--steps", "5", "--resume", str(tmp_path / "three.pt"),
                 "--checkpoint", str(tmp_path / "resumed.pt")]) == 0
    straight, resumed = weights(tmp_path / "straight.pt"), weights(tmp_path / "resumed.pt")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("options, message", [
    (["--precision", "fp64"], "--precision must be one of fp32, bf16, fp16"),
    (["--precision", "fp16"], "fp16 needs a CUDA GPU"),
    (["--heads", "5"], "--heads (5) must divide --d-model (32)"),
    (["--resume", "missing.pt"], "--resume missing.pt: no such file"),
    (["--data", "missing.tsv"], "--data missing.tsv: no such file"),
])
def test_bad_input_gets_one_line_and_exit_status_2(options, message, capsys):
    if "fp16" in options and torch.cuda.is_available():
        pytest.skip("fp16 runs on this machine's GPU")
    assert main([*TINY, "--steps", "1", *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_global_batch_must_split_evenly_across_processes():
    from tinyformer.train import UsageError, check_args

    args = parse_args([*TINY, "--batch-size", "15"])
    with pytest.raises(UsageError, match="multiple of the 2 processes"):
        check_args(args, world_size=2, device=torch.device("cpu"))
    args = parse_args([*TINY, "--batch-size", "1"])
    with pytest.raises(UsageError, match="multiple of the 2 processes"):
        check_args(args, world_size=2, device=torch.device("cpu"))


def test_a_foreign_checkpoint_is_refused_by_name(tmp_path, capsys):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name in ("foreign.pt", "text.pt"):
        assert main([*TINY, "--steps", "1", "--resume", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{name}: not a" in err and "Traceback" not in err


def test_a_corpus_file_trains_and_a_malformed_line_is_named(tmp_path, capsys):
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("".join(f"w{i} w{i + 1}\tm{i} m{i + 1}\n" for i in range(40)))
    assert main([*TINY, "--steps", "3", "--data", str(corpus)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--steps", "1", "--data", str(corpus), "--batch-size", "64"]) == 2
    assert "larger than the 36 training pairs" in capsys.readouterr().err  # not a hang
    corpus.write_text("one\tun\ntwo deux\nthree\ttrois\n")
    assert main([*TINY, "--steps", "1", "--data", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err


def test_accumulated_micro_batches_train_as_the_whole_batch(tmp_path):
    assert main([*TINY, "--steps", "5", "--checkpoint", str(tmp_path / "one.pt")]) == 0
    assert main([*TINY, "--steps", "5", "--accumulate", "4",
                 "--checkpoint", str(tmp_path / "four.pt")]) == 0
    one, four = weights(tmp_path / "one.pt"), weights(tmp_path / "four.pt")
    for name, tensor in one.items():
        if not name.endswith("k_proj.bias"):  # round-off only, as under torchrun
            torch.testing.assert_close(four[name], tensor, rtol=0, atol=1e-5, msg=name)


def test_bf16_is_refused_on_a_gpu_that_only_emulates_it(monkeypatch):
    from tinyformer.train import UsageError, check_args

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.version, "hip", None)
    args = parse_args([*TINY])
    check_args(args, world_size=1, device=torch.device("cuda"))  # a T4
    assert args.precision == "fp32"  # its default: no bf16 autocast
    with pytest.raises(UsageError, match="no native bfloat16"):
        check_args(parse_args([*TINY, "--precision", "bf16"]), 1, torch.device("cuda"))


def test_accumulate_must_divide_each_process_slice():
    from tinyformer.train import UsageError, check_args

    args = parse_args([*TINY, "--accumulate", "3"])  # 16 pairs / 2 processes = 8
    with pytest.raises(UsageError, match=r"--accumulate 3 must divide .* = 8"):
        check_args(args, world_size=2, device=torch.device("cpu"))
    check_args(parse_args([*TINY, "--accumulate", "4"]), 2, torch.device("cpu"))


def right_and_left_padded(model):
    from tinyformer.data import collate

    pairs = [([5, 6, 7, 2], [1, 7, 8, 9, 2]), ([5, 2], [1, 9, 2]), ([6, 2], [1, 3, 4, 2])]
    right = collate(pairs)  # the layout of every batch the command trains on
    left = collate(pairs)
    for name in ("tgt_in", "tgt_key_mask"):  # the same rows, padding moved first
        rows = [torch.cat([row[~mask], row[mask]]) for row, mask in
                zip(getattr(left, name), left.tgt_key_mask, strict=True)]
        setattr(left, name, torch.stack(rows))
    return right, left


def test_right_padded_targets_need_no_target_mask():
    from tinyformer import Transformer
    from tinyformer.training import translation_loss

    torch.manual_seed(0)
    model = Transformer(12, 12, d_model=16, n_heads=2, n_encoder_layers=1,
                        n_decoder_layers=2, d_ff=32, dtype=torch.float64).eval()
    right, left = right_and_left_padded(model)
    def logits_and_gradients(batch, tgt_key_mask):
        model.zero_grad()
        logits = model(batch.src, batch.tgt_in, src_key_mask=batch.src_key_mask,
                       tgt_key_mask=tgt_key_mask)
        translation_loss(logits, batch.tgt_out, batch.tgt_key_mask,
                         reduction="sum").backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    gaps, grad_gaps = [], []
    for batch in (right, left):
        masked, masked_grads = logits_and_gradients(batch, batch.tgt_key_mask)
        causal_only, causal_grads = logits_and_gradients(batch, None)
        gaps.append((masked - causal_only)[batch.tgt_key_mask].abs().max().item())
        grad_gaps.append(max((a - b).abs().max().item()
                             for a, b in zip(masked_grads, causal_grads, strict=True)))
    # right padding: the causal mask hides every pad key, in the logits and in
    # every parameter's gradient
    assert gaps[0] < 1e-12 and grad_gaps[0] < 1e-12
    assert gaps[1] > 1e-3 and grad_gaps[1] > 1e-3  # left: real queries see pad keys


def test_the_training_step_runs_the_decoder_self_attention_purely_causal(monkeypatch):
    from tinyformer import Transformer
    from tinyformer.train import training_step
    from tinyformer.training import make_optimizer

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("is_causal"), kwargs.get("attn_mask") is None))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = Transformer(12, 12, d_model=16, n_heads=2, n_encoder_layers=1,
                        n_decoder_layers=2, d_ff=32)
    optimizer, schedule = make_optimizer(model, d_model=16, warmup=10)
    training_step(model, optimizer, schedule)(right_and_left_padded(model)[0])
    # Per decoder layer one causal self-attention without a mask: SDPA's causal
    # kernel; the encoder and the cross-attention keep the source's padding mask.
    assert calls.count((True, True)) == 2
    assert calls.count((False, False)) == 3


def test_the_training_step_makes_every_tensor_on_its_inputs_device():
    # On the meta device a tensor made on the CPU by mistake fails the step: what
    # a CUDA run would meet, shown without a GPU.
    from tinyformer import Transformer
    from tinyformer.data import collate
    from tinyformer.train import training_step
    from tinyformer.training import make_optimizer

    model = Transformer(12, 12, d_model=16, n_heads=2, n_encoder_layers=1,
                        n_decoder_layers=1, d_ff=32, device="meta")
    optimizer, schedule = make_optimizer(model, d_model=16, warmup=10)
    batch = collate([([5, 6, 2], [1, 7, 8, 2]), ([5, 2], [1, 9, 2])]).to("meta")
    loss = training_step(model, optimizer, schedule, accumulate=2)(batch)
    assert loss.device.type == "meta" and schedule.last_epoch == 1


def test_the_gpu_precision_path_runs_on_the_cpu_at_tiny_sizes(tmp_path):
    # bf16 autocast, the gpu profile's precision, and micro-batches, on the CPU
    assert main([*TINY, "--steps", "2", "--precision", "bf16", "--accumulate", "2",
                 "--quiet", "--metrics", str(tmp_path / "log.jsonl")]) == 0
    losses = [json.loads(line)["loss"]
              for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)
