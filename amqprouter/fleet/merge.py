"""The supervisor's one answer from its workers' answers. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence

from amqprouter.fleet.link import Answer

# A sample line: its metric name, its labels (without braces, maybe none), the rest.
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?( .*)$")
# The family a sample belongs to: histograms' and summaries' series carry a suffix.
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info")


def concatenated(answers: Sequence[Answer]) -> Answer:
    """Every worker's lines one after another (CONN: each worker lists its own sessions);
    ok when every worker's was."""
    return Answer("".join(a.text for a in answers), ok=all(a.ok for a in answers))


def conn_lines(answers: Sequence[Answer], sort: str | None) -> Answer:
    """CONN (text or JSON) of every worker as one listing, ordered as one router orders
    it: by ``sort`` (``CONN SORT field``), the largest first, ties by id; else by id."""
    merged = concatenated(answers)
    lines = merged.text.splitlines(keepends=True)

    def key(line: str) -> tuple[float, float]:
        number = _field(line, "id")
        if sort is None:
            return (0.0, number)
        if sort == "rate":
            value = _field(line, "inRate") + _field(line, "outRate")
        elif sort == "age":
            value = max(_field(line, "age"), _field(line, "ageSeconds"))
        else:
            value = _field(line, sort)
        return (-value, number)

    return Answer("".join(sorted(lines, key=key)), ok=merged.ok)


def _field(line: str, name: str) -> float:
    """The number ``name`` holds in a CONN line (``name=12``) or its JSON (``"name": 12``)."""
    match = re.search(rf'(?:^|[\s{{,])"?{re.escape(name)}"?\s*[=:]\s*(-?\d+(?:\.\d+)?)', line)
    return float(match.group(1)) if match else 0.0


def united(answers: Sequence[Answer]) -> Answer:
    """Each distinct line once, in the order first seen (VHOST PRINT: a vhost that any
    worker has seen or paused)."""
    seen: dict[str, None] = {}
    for answer in answers:
        for line in answer.text.splitlines(keepends=True):
            seen.setdefault(line, None)
    return Answer("".join(seen), ok=all(a.ok for a in answers))


def agreed(answers: Sequence[tuple[int, Answer]]) -> Answer:
    """One answer when every worker gave the same; else each worker's, prefixed with
    ``worker <serial>: ``, so a difference is never hidden."""
    first = answers[0][1]
    if all(answer == first for _serial, answer in answers):
        return first
    lines = []
    for serial, answer in answers:
        for line in answer.text.splitlines() or [""]:
            lines.append(f"worker {serial}: {line}\n")
    return Answer("".join(lines), ok=all(a.ok for _s, a in answers))


def metrics(pages: Sequence[tuple[int, str]], extra: str = "") -> str:
    """Prometheus text pages of several workers as one page: every sample gets a
    ``worker="<serial>"`` label, and each family is written once, with its HELP and
    TYPE, holding every worker's samples (the format wants a family's lines together).
    ``extra``: the supervisor's own families, written first."""
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for serial, page in pages:
        family = ""
        for line in page.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                if family not in heads:
                    order.append(family)
                    heads[family] = []
                    samples[family] = []
                if line not in heads[family]:
                    heads[family].append(line)
                continue
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, rest = match.groups()
            owner = family if family and _belongs(name, family) else name
            if owner not in samples:
                order.append(owner)
                heads[owner] = []
                samples[owner] = []
            label = f'worker="{serial}"'
            samples[owner].append(f"{name}{{{label + (',' + labels if labels else '')}}}{rest}")
    body = "".join(line + "\n" for family in order for line in heads[family] + samples[family])
    return extra + body


def _belongs(name: str, family: str) -> bool:
    return name == family or any(name == family + suffix for suffix in _SUFFIXES)
