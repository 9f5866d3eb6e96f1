"""Before/after on one machine: run a bench in a checkout of an older commit and in this tree, alternately.

Why: on a shared machine the speed of the same code drifts (by ×2 within minutes on 2026-12-07,
docs/BENCHMARKS.md), so a "before" measured an hour earlier says nothing. This runs the same
``python -m bench.<name> ...`` in a temporary ``git worktree`` of ``--ref`` and in the working tree,
``--pairs`` times, swapping which goes first each pair, and reports each run's last-line numbers,
the after/before ratio of ``--metric`` per pair, and their median and range. Both trees use this
tree's ``.venv``; the worktree sees ``../shared`` as this tree does (a link beside it), so both
benches read the same data. The worktree is removed at the end.

Not a test: numbers for docs/BENCHMARKS.md. The last line reads ``median_ratio=R min=A max=B pairs=N``.

    .venv/bin/python -m bench.ab --ref 497f1fb --pairs 6 -- bench.ingest --clients 8 --batch 1 --seconds 12
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_NUMBER = re.compile(r"(\w+)=(-?\d+(?:\.\d+)?)")


def last_numbers(output: str) -> dict[str, float]:
    """The ``key=number`` pairs of the last line that has any (every bench ends with such a line)."""
    for line in reversed(output.strip().splitlines()):
        found = dict((k, float(v)) for k, v in _NUMBER.findall(line))
        if found:
            return found
    return {}


def run(tree: Path, command: list[str], timeout: float, log: Path | None = None) -> dict[str, float]:
    """``python -m <command>`` in ``tree`` with this tree's interpreter; its last line's numbers
    (its whole output written to ``log`` when given)."""
    done = subprocess.run([sys.executable, "-m", *command], cwd=tree, capture_output=True, text=True,
                          timeout=timeout)
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    numbers = last_numbers(done.stdout)
    if done.returncode != 0 or not numbers:
        raise SystemExit(f"{' '.join(command)} in {tree} failed (exit {done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-2000:]}")
    return numbers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="the commit to compare against (the 'before')")
    ap.add_argument("--pairs", type=int, default=6, help="before/after pairs, alternating order")
    ap.add_argument("--metric", default=None, help="the number to compare (default: the first on the line)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one bench run may take")
    ap.add_argument("--logs", type=Path, default=None, help="a folder for each run's whole output")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- bench.<name> [its options]")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not command[0].startswith("bench.") or args.pairs < 1:
        ap.error("give at least one pair and a bench module after --, e.g. -- bench.ingest --batch 1")
    with tempfile.TemporaryDirectory(prefix="tagger-ab-") as tmp:
        before = Path(tmp) / "tree"
        git = ["git", "-C", str(REPO), "worktree"]
        subprocess.run([*git, "add", "--detach", "--quiet", str(before), args.ref], check=True)
        try:
            (before / ".venv").symlink_to(REPO / ".venv")
            if (REPO.parent / "shared").is_dir():
                (Path(tmp) / "shared").symlink_to(REPO.parent / "shared")
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
            ratios = []
            for i in range(args.pairs):
                order = [("before", before), ("after", REPO)]
                got = {name: run(tree, command, args.timeout,
                                 args.logs / f"pair{i + 1}-{name}.log" if args.logs else None)
                       for name, tree in (order if i % 2 == 0 else order[::-1])}
                metric = args.metric or next(iter(got["after"]))
                old, new = got["before"][metric], got["after"][metric]
                ratios.append(new / old)
                print(f"pair {i + 1}: before {metric}={old:g}  after {metric}={new:g}  "
                      f"after/before {new / old:.3f}", flush=True)
        finally:
            subprocess.run([*git, "remove", "--force", str(before)], check=False)
    print(f"median_ratio={statistics.median(ratios):.3f} min={min(ratios):.3f} max={max(ratios):.3f} "
          f"pairs={len(ratios)}")


if __name__ == "__main__":
    main()
