"""Where the encoders run: CUDA with bf16 autocast when present, else the CPU in fp32."""

from __future__ import annotations

import contextlib

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
