"""What ``tagger train`` and ``tagger evaluate`` print about a model: its metrics table (whole at
80 columns), which values may auto-apply, and what a small catalogue loses, by name."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from cli.output import console

RATES = ("macro_f1", "auto_precision", "auto_precision_lower", "auto_coverage")


def _fmt(v: float | None) -> str:
    """A rate in four characters (".977", "1.00"): eleven columns fit in 80."""
    if v is None:
        return "—"
    return "1.00" if v >= 0.9995 else f"{v:.3f}".removeprefix("0")


def metrics_table(title: str, by_modality: dict[str, dict[str, dict]]) -> Table:
    """One row per axis: the headline (accuracy, micro-F1 for multi-label) of each modality
    given, then macro-F1 and auto-tag precision/coverage of the last one (the fused model).
    Compact on purpose (short headers, no frame): it stays whole at 80 columns."""
    from shared.ml.evaluation import headline

    mods = list(by_modality)
    last = mods[-1]
    caption = (f"{', '.join(mods)}: accuracy (micro-F1 if multi-label) from that input; "
               if len(mods) > 1 else "acc: accuracy (micro-F1 if multi-label); ")
    caption += (f"the rest{' of ' + last if len(mods) > 1 else ''}: mF1 macro-F1, prec / prec≥ "
                "auto-tag precision and its 95% lower bound, cov auto coverage, abst items out of "
                "the model's domain, contra auto tags still contradicting another")
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False,
                  caption_justify="left", padding=(0, 1), collapse_padding=True)
    table.add_column("axis", overflow="fold")
    for m in mods:
        table.add_column(m if len(mods) > 1 else "acc", justify="right", no_wrap=True)
    for col in ("mF1", "prec", "prec≥", "cov", "abst", "contra", "n"):
        table.add_column(col, justify="right", no_wrap=True)
    for axis, mm in by_modality[last].items():
        row = [escape(axis)] + [_fmt(headline(by_modality[m].get(axis, {}))) for m in mods]
        row += [_fmt(mm.get(k)) for k in RATES]
        row += [_count(mm.get("abstentions")), _count(mm.get("contradictions")), str(mm.get("n", 0))]
        table.add_row(*row)
    return table


def _count(v: int | None) -> str:
    return "—" if v is None else str(v)


NEVER_SHOWN = 8  # values named per axis in train's never-auto list; the rest are counted


def never_auto_entry(value: str, ev: dict) -> str:
    """One value of the never-auto list, with what it fell short by: its best bound alone, or,
    for a thin value left out of its axis's pool, its own record at the pool's cut."""
    from rich.markup import escape

    left = ev.get("left_out")
    if left:
        # Manifests before the mend kept that record in the evidence itself, and the reason alone.
        rec = left if isinstance(left, dict) else ev
        return (f"{escape(value)} ({ev.get('proposed', 0)} predicted, left out of the pool: "
                f"{rec.get('hits', 0)} of {rec.get('n', 0)} right at its cut)")
    return (f"{escape(value)} ({ev.get('proposed', 0)} predicted, best bound "
            f"{ev.get('lower_bound', 0.0):.3f})")


def auto_lines(manifest: dict) -> list[str]:
    """Per axis, how many values may be auto-applied and which never will, with the evidence
    that fell short (most predicted first): what a user must know before trusting ``auto``."""
    from rich.markup import escape

    cal = manifest["training"].get("calibration", {})
    conf = cal.get("confidence", 0.95)
    source = (f"out-of-fold scores of {cal['n']} items, {cal['k']} folds"
              if cal.get("method") == "cross-fit" else f"{cal.get('n', '?')} calibration items")
    lines = [f"[bold]auto-apply[/]: a value is auto only where the {conf:.0%} lower bound of its "
             f"precision reaches {manifest['target_precision']:.2f} ({source})"]
    unproven = bool((cal.get("pool_thin_values") or {}).get("unproven"))
    if (pooling := cal.get("pool_thin_values")) is not None:
        lines.append(f"  values {'that did not prove' if unproven else 'too rare to prove'} it alone: "
                     f"{'proven together, one cut per axis' if pooling['on'] else 'never auto'} "
                     f"(chosen by: {escape(pooling['chosen_by'])}; "
                     f"{'--no-pool-thin-values' if pooling['on'] else '--pool-thin-values'} to change)")
    for name, a in manifest["axes"].items():
        ev = a.get("evidence", {})
        never = sorted((v for v in a["values"] if not ev.get(v, {}).get("auto")),
                       key=lambda v: -ev.get(v, {}).get("proposed", 0))
        head = f"  {escape(name)}: {len(a['values']) - len(never)} of {len(a['values'])} auto"
        pool = next((e["pool"] for e in ev.values() if e.get("pooled")), None)
        if pool:
            head += (f" ({pool['values']} of them "
                     f"{'unproven' if unproven else 'too rare to prove'} alone, proven together: "
                     f"{pool['hits']} of {pool['n']} right from {pool['threshold']:.3f}, bound "
                     f"{pool['lower_bound']:.3f}"
                     + (f"; {pool['left_out']} left out, their own record under the target"
                        if pool.get("left_out") else "") + ")")
        if not never:
            lines.append(head)
            continue
        shown = [never_auto_entry(v, ev.get(v, {})) for v in never[:NEVER_SHOWN]]
        more = f" … and {len(never) - NEVER_SHOWN} more" if len(never) > NEVER_SHOWN else ""
        lines.append(f"{head}; [yellow]never auto[/]: {', '.join(shown)}{more}")
    return lines


def near_duplicate_line(manifest: dict) -> str | None:
    """What near-duplicate photo grouping did to the split, when it ran: a user should know their
    photos were grouped, why, and how to turn it off."""
    near = manifest["training"].get("near_duplicates")
    if not near:
        return None
    return (f"near-identical photos kept on one side of every split and fold: similarity "
            f"{near['similarity']:g} (chosen by: {near.get('chosen_by', '--near-duplicate-similarity')}), "
            f"{near['joined']} joins of {near['pairs']} pairs, largest group {near['largest_group']} "
            "(--near-duplicate-similarity 0: identical photos only)")


NAMES_SHOWN = 20  # dropped values named per axis on the terminal; all are in manifest.json

def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def training_warnings(manifest: dict) -> list[str]:
    """What a small catalogue loses, by name: values too rare to learn, and values or whole axes
    whose calibration cannot reach the target (so they are never auto-applied)."""
    tr = manifest["training"]
    min_count = tr.get("config", {}).get("min_value_count", 2)
    lines = []
    for axis, dropped in (tr.get("dropped_values") or {}).items():
        names = [f"{v} ({c})" for v, c in list(dropped.items())[:NAMES_SHOWN]]
        more = f" … and {len(dropped) - NAMES_SHOWN} more" if len(dropped) > NAMES_SHOWN else ""
        lines.append(f"axis {axis}: {len(dropped)} values seen fewer than {min_count} times in "
                     f"training are not learnt (training count): {', '.join(names)}{more} "
                     "(all in manifest.json training.dropped_values; --min-value-count lowers the bar)")
    inputs = tr.get("inputs") or {}
    if inputs.get("image") and not inputs.get("text") and not tr.get("config", {}).get(
            "near_duplicate_similarity"):
        lines.append("photos only, and near-duplicate grouping turned off (only identical photos "
                     "kept together across the calibration folds): if the catalogue photographs an "
                     "item more than once, its shots sit on both sides of a fold and the auto "
                     "thresholds are optimistic (grocery-store: auto precision top_category .974, "
                     "coarse_category .945 on its test split); the default for photos without "
                     "titles, --near-duplicate-similarity 0.8, keeps near-identical shots together "
                     "(docs/MODEL.md, \"The other catalogues\")")
    target = manifest.get("target_precision")
    for axis, gap in (tr.get("calibration", {}).get("gaps") or {}).items():
        if gap["auto_values"] == 0:
            lines.append(f"axis {axis}: cannot be calibrated, none of its {gap['values']} values "
                         f"reaches the {target} precision bound: nothing on it is ever auto-applied")
        few = gap["too_few"]
        if few:
            names = ", ".join(few[:NAMES_SHOWN])
            more = f" … and {len(few) - NAMES_SHOWN} more" if len(few) > NAMES_SHOWN else ""
            lines.append(f"axis {axis}: {len(few)} values had fewer than {gap['needed']} calibration "
                         f"predictions, the least that can prove {target} even if all are right, so "
                         f"they are never auto-applied: {names}{more} (more labelled rows, or a "
                         "lower --target-precision)")
    return lines
