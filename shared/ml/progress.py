"""Progress of long loops that reads well both in a terminal and in a log file.

On a terminal: a tqdm bar redrawn in place. Elsewhere (stderr redirected to a file, a CI log, a
container's output): one plain line every ~10% of the work or every 30 s, whichever comes first,
and one when the loop ends, so a log neither fills with hundreds of KB of redraws nor stays silent
for minutes. ``show=False`` prints nothing at all.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Progress: ...
    def __exit__(self, *exc: object) -> None: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogProgress(_Silent):
    """Plain lines on stderr: ``encode texts: 300/1000 item (30%), 42 s, loss=0.512``."""

    def __init__(self, total: int, desc: str, unit: str = "item", every_s: float = 30.0,
                 every_frac: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.every_s, self.clock = every_s, clock
        self.step = max(1, int(self.total * every_frac)) if self.total else None
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last_time = clock()
        self.next_n = self.step or 0

    def _line(self, done: bool = False) -> None:
        elapsed = self.clock() - self.start
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total}" if self.total else ""
        state = "done, " if done else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {state}{self.n}{of} {self.unit}{pct}, {elapsed:.0f} s{post}",
              file=sys.stderr, flush=True)  # sys.stderr looked up now: it may have been replaced
        self.last_time = self.clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        due_n = self.step is not None and self.n >= self.next_n and self.n < self.total
        if due_n or self.clock() - self.last_time >= self.every_s:
            self._line()
            if self.step is not None:
                while self.next_n <= self.n:
                    self.next_n += self.step

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(done=True)


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress(total: int, desc: str, show: bool = True, unit: str = "item") -> Progress:
    """A progress reporter for ``total`` steps: a tqdm bar on a terminal, plain periodic lines
    otherwise, nothing when ``show`` is false. Use as a context manager or call ``close()``."""
    if not show:
        return _Silent()
    if _is_tty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5)
    return LogProgress(total, desc, unit)
