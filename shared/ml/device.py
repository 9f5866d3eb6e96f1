"""Where the encoders run: CUDA with bf16 autocast when present, else the CPU in fp32."""

from __future__ import annotations

import contextlib
import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when a GPU is visible; anything else is passed to torch as is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); a no-op on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_cpu_threads(n: int) -> int:
    """Cap torch's intra-op CPU threads at ``n`` (0 keeps torch's default); returns the count in use.

    Why: a CPU worker running N batches at once (``tagger worker -c N``) should give each forward
    pass cores / N threads; N passes each asking for every core just fight over them.
    """
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def worker_layout(device: str, concurrency: int = 0, torch_threads: int = 0,
                  cores: int | None = None) -> tuple[int, int]:
    """(batches at once, torch threads each) for a tagging worker; 0 means "choose".

    Two batches at once, so that one batch's write and ack overlap the other's model. On a GPU the
    two forward passes only queue on the device, which is the point: with one batch at a time the
    device waits for every write (a one-device stand-in, bench.pipeline --model-ms 2: e2e/model
    0.63 with one, 0.79-0.84 with two, no better with three; docs/BENCHMARKS.md). On the CPU, with
    cores / 2 threads each: measured on 2 cores, 0.85-0.90 of the model's rate end to end against
    0.81 for one batch on every core (docs/BENCHMARKS.md, Pipeline).
    """
    cores = cores or os.cpu_count() or 1
    gpu = resolve_device(device).type == "cuda"
    c = concurrency or (2 if gpu or cores >= 2 else 1)
    t = torch_threads or (0 if gpu else max(1, cores // c))
    return c, t
