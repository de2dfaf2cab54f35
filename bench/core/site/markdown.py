"""The markdown the leaderboard writes itself, as HTML: suite descriptions, legends and the
suite-specific sections (``sections`` metadata).

Only what :mod:`bench.core.leaderboard` produces is understood: ATX headings, paragraphs,
``-`` and ``1.`` lists, pipe tables, and inline code, ``**bold**``, ``[text](href)`` and
backslash escapes. Every piece of text is HTML-escaped after its markdown escapes are undone
(so ``&lt;`` from :func:`~bench.core.leaderboard.escape_md` shows as ``<``, never as a tag);
the only tags in the output are the ones made here. Links keep ``http(s)`` and relative
targets only; relative ones are rewritten from the markdown's folder to the site's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape, unescape

INLINE = re.compile(r"\\(?P<esc>[^\sA-Za-z0-9])|`(?P<code>[^`]+)`|\*\*(?P<bold>(?:\\.|[^\\])+?)\*\*"
                    r"|\[(?P<text>(?:\\.|[^\]\\])+)\]\((?P<href>[^)\s]+)\)")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
HEADING = re.compile(r"(#{1,6}) (.*)")
ITEM = re.compile(r"(?:- |(\d+)\. )(.*)")


def _text(run: str) -> str:
    return escape(unescape(run), quote=True)


def _href(target: str, base: str) -> str | None:
    target = unescape(target)
    if re.match(r"https?://", target) or target.startswith("#"):
        return target
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target) or target.startswith("/"):
        return None  # javascript:, data:, absolute paths: not followed
    return base + target


def inline(text: str, base: str = "../") -> str:
    """One line of markdown as HTML (``base``: prefix of relative link targets)."""
    out, pos = [], 0
    for m in INLINE.finditer(text):
        out.append(_text(text[pos:m.start()]))
        pos = m.end()
        if m.group("esc") is not None:
            out.append(_text(m.group("esc")))
        elif m.group("code") is not None:
            out.append(f"<code>{_text(m.group('code'))}</code>")
        elif m.group("bold") is not None:
            out.append(f"<strong>{inline(m.group('bold'), base)}</strong>")
        else:
            href = _href(m.group("href"), base)
            label = inline(m.group("text"), base)
            out.append(label if href is None else
                       f'<a href="{escape(href, quote=True)}">{label}</a>')
    out.append(_text(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in CELL_SPLIT.split(line.strip())[1:-1]]


def table(lines: list[str], base: str = "../") -> str:
    """A pipe table (header, alignment row, body) as a sortable HTML table."""
    header, align, body = _cells(lines[0]), _cells(lines[1]), [_cells(ln) for ln in lines[2:]]
    right = [a.endswith(":") for a in align] + [False] * len(header)
    num, text, td = ' class="num" data-type="num"', ' data-type="text"', ' class="num"'
    ths = "".join(f'<th{num if right[i] else text} aria-sort="none"><button type="button" '
                  f'class="sort">{inline(h, base)}</button></th>' for i, h in enumerate(header))
    rows = "".join("<tr>" + "".join(f'<td{td if right[i] else ""}>{inline(c, base)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in body)
    return (f'<div class="table-wrap"><table class="sortable"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def to_html(lines: Iterable[str], base: str = "../") -> str:
    """Markdown ``lines`` (one string may hold several lines) as HTML blocks."""
    todo = [ln.rstrip() for chunk in lines for ln in str(chunk).split("\n")]
    out: list[str] = []
    i = 0
    while i < len(todo):
        line = todo[i]
        if not line.strip():
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(todo) and todo[j].startswith("|"):
                j += 1
            out.append(table(todo[i:j], base) if j - i >= 2 else f"<p>{inline(line, base)}</p>")
            i = j
        elif m := HEADING.fullmatch(line):
            level = len(m.group(1))
            out.append(f"<h{level}>{inline(m.group(2), base)}</h{level}>")
            i += 1
        elif ITEM.fullmatch(line):
            tag = "ol" if ITEM.fullmatch(line).group(1) else "ul"  # type: ignore[union-attr]
            items = []
            while i < len(todo) and (m := ITEM.fullmatch(todo[i])):
                items.append(f"<li>{inline(m.group(2), base)}</li>")
                i += 1
            out.append(f"<{tag}>{''.join(items)}</{tag}>")
        else:
            para = []
            while i < len(todo) and todo[i].strip() and not todo[i].startswith("|") \
                    and not HEADING.fullmatch(todo[i]) and not ITEM.fullmatch(todo[i]):
                para.append(inline(todo[i], base))
                i += 1
            out.append("<p>" + "\n".join(para) + "</p>")
    return "\n".join(out)
