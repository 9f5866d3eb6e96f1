"""Keep third-party chatter out of a command's output: the libraries' own progress bars and their
deprecation notices say nothing a ``tagger`` user can act on. Our own warnings are untouched.

For command-line entry points: it changes process-wide logging and warning filters, which a library
should not do behind its caller's back (the API and workers configure their own logging).
"""

from __future__ import annotations

import logging
import warnings

# Libraries whose FutureWarning / DeprecationWarning notices are about their own internals.
THIRD_PARTY = ("transformers", "huggingface_hub", "safetensors", "peft", "timm", "torch",
               "torchvision", "tokenizers", "accelerate")
_done = False


def ignore_third_party_warnings() -> None:
    """Future/Deprecation warnings raised from inside THIRD_PARTY modules are not shown; the same
    categories raised from our code still are."""
    modules = r"^(" + "|".join(THIRD_PARTY) + r")(\.|$)"
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=modules)


def quiet_third_party() -> None:
    """Silence transformers/huggingface_hub progress bars ("Loading weights…") and info logs, and
    Future/Deprecation warnings raised from inside the libraries above. Idempotent."""
    global _done
    if _done:
        return
    _done = True
    ignore_third_party_warnings()
    for name in ("transformers", "huggingface_hub", "peft", "timm"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
