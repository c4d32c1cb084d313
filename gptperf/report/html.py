"""The report page: one self-contained HTML file (inline CSS, JS and pictures), every text escaped.

Markup is built from small functions over `Html`, a `str` that is already safe. Anything else
that reaches the page - corpus text, samples, error messages, device names - goes through
`esc` (html.escape), so no text from outside can become markup.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from gptperf.checks import is_finite_number
from gptperf.format import binary_bytes, seconds, si

# The unit of bytes moved or sent (a step's traffic, a gradient message): decimal, as bandwidths
# in B/s are and as the terminal tables print them; "B" alone is memory, in binary units.
TRAFFIC = "B moved"


class Html(str):
    """A fragment of markup that is safe to put into the page as it is.

    Concatenation keeps it safe: `Html + x` escapes `x` unless it is Html too.
    """

    def __add__(self, other: object) -> Html:
        return Html(str.__add__(self, esc(other)))

    def __radd__(self, other: object) -> Html:
        return Html(str.__add__(esc(other), self))


Child = Any  # Html, str (escaped), numbers (escaped), None (nothing) or an iterable of these


def esc(value: Child) -> Html:
    """`value` as safe markup: Html stays, None is empty, iterables are joined, the rest escaped."""
    if value is None:
        return Html("")
    if isinstance(value, Html):
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "__next__"):
        return Html("".join(esc(v) for v in value))
    return Html(html.escape(str(value), quote=True))


def tag(name: str, *children: Child, **attrs: Any) -> Html:
    """`<name attrs>children</name>`; attribute names drop a trailing `_` (class_ -> class)."""
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{html.escape(str(value), quote=True)}"')
    opening = "<" + " ".join(parts) + ">"
    if name in ("img", "br", "meta", "hr", "col"):
        return Html(opening)
    return Html(f"{opening}{esc(list(children))}</{name}>")


def fmt(value: Any, unit: str = "", *, digits: int = 1) -> str:
    """A number with its unit, in the same style as the terminal tables; `digits`: a
    percentage's decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if unit == "s":
        return seconds(value)
    if unit == "B":
        return binary_bytes(value)
    if unit == TRAFFIC:
        return si(value, "B")
    if unit == "%":
        return f"{value:.{digits}f} %"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "nats":
        return f"{value:.3f} nats"
    if unit == "":
        if isinstance(value, int):
            return f"{value:,}"
        return f"{value:.4g}"
    return si(value, unit)


def source_chip(source: str | None, short: bool = False) -> Html:
    """A small label saying where a number came from (measured on ..., datasheet, model);
    `short` shows its first word only (the whole text on hover)."""
    if not source:
        return Html("")
    kind = source.split(" ")[0].lower()
    klass = {"measured": "measured", "datasheet": "datasheet", "nominal": "datasheet", "model": "model",
             "predicted": "model", "roofline": "model",
             "calibrated": "calibrated"}.get(kind, "other")
    return tag("span", source.split(" ")[0] if short else source, class_=f"src src-{klass}",
               title=source)


def value(v: Any, unit: str = "", source: str | None = None, *, digits: int = 1) -> Html:
    """A number with unit (and, when given, its source) as one inline fragment."""
    return Html(tag("span", fmt(v, unit, digits=digits), class_="num")
                + (" " + source_chip(source) if source else ""))


def cell(v: Any, unit: str = "", source: str | None = None, klass: str | None = None, *,
         digits: int = 1) -> Html:
    """A table cell whose sort key is the raw number; `digits`: a percentage's decimals."""
    sort_key = repr(float(v)) if is_finite_number(v) else None
    return tag("td", value(v, unit, source, digits=digits), data_v=sort_key, class_=klass or "n")


def table(
    header: Sequence[Child],
    rows: Iterable[Sequence[Child]],
    *,
    sortable: bool = False,
    id_: str | None = None,
    numeric: Sequence[bool] | None = None,
    caption: Child = None,
) -> Html:
    """A table; cells that are already `<td>` (from `cell`) stay, others are wrapped and escaped."""
    head = tag("tr", [tag("th", h, class_="n" if numeric and numeric[i] else None,
                          title="click to sort" if sortable else None)
                      for i, h in enumerate(header)])
    body = []
    for row in rows:
        tds = []
        for i, c in enumerate(row):
            if isinstance(c, Html) and c.startswith("<td"):
                tds.append(c)
            else:
                tds.append(tag("td", c, class_="n" if numeric and numeric[i] else None))
        body.append(tag("tr", tds))
    klass = "data sortable" if sortable else "data"
    return tag("div", tag("table", tag("caption", caption) if caption else None,
                          tag("thead", head), tag("tbody", body), class_=klass, id=id_),
               class_="table-wrap")


def kv_table(rows: Iterable[tuple[Child, Child]]) -> Html:
    """Two columns: what, and its value."""
    return tag("table", tag("tbody", [tag("tr", tag("th", k), tag("td", v)) for k, v in rows]),
               class_="kv")


def picture(path: str | Path, alt: str, *, caption: Child = None, id_: str | None = None) -> Html:
    """A PNG or SVG file embedded in the page (base64 data URI), so the page needs no files."""
    path = Path(path)
    data = path.read_bytes()
    mime = "image/svg+xml" if path.suffix.lower() == ".svg" else "image/png"
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return tag("figure", tag("img", src=uri, alt=alt, id=id_, loading="eager"),
               tag("figcaption", caption) if caption else None)


def pre(text: str, klass: str = "text") -> Html:
    return tag("pre", text, class_=klass)


def note(text: Child, kind: str = "info") -> Html:
    return tag("div", text, class_=f"note note-{kind}")


def kpi(label: str, v: Any, unit: str, source: str | None) -> Html:
    """A headline number card."""
    return tag("div", tag("div", label, class_="kpi-label"),
               tag("div", fmt(v, unit), class_="kpi-value"),
               tag("div", source or "", class_="kpi-src", title=source), class_="kpi")


def section(id_: str, title: str, *body: Child, failed: str | None = None, lead: Child = None) -> Html:
    """One section of the page; `failed` (one line) replaces the body with the reason."""
    content: list[Child] = [tag("h2", title, tag("a", "#", href=f"#{id_}", class_="anchor"))]
    if lead:
        content.append(tag("p", lead, class_="lead"))
    if failed:
        content.append(note(failed, "error"))
    else:
        content.extend(body)
    return tag("section", content, id=id_, class_="card failed" if failed else "card")


def _asset(name: str) -> str:
    return resources.files("gptperf.report").joinpath(name).read_text(encoding="utf-8")


def page(title: str, header: Child, nav: Sequence[tuple[str, str]], sections: Sequence[Html],
         footer: Child = None) -> str:
    """The whole document: inline style and script, no request to any server."""
    css = _asset("report.css")
    js = _asset("report.js")
    links = tag("nav", tag("ul", [tag("li", tag("a", label, href=f"#{sid}")) for sid, label in nav]))
    doc = tag(
        "html",
        tag("head",
            Html('<meta charset="utf-8">'),
            Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
            # No request may leave the page: no network, and no favicon fetch either.
            Html("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                 "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"),
            Html('<link rel="icon" href="data:,">'),
            tag("title", title),
            tag("style", Html(css))),
        tag("body",
            tag("header", header, class_="top"),
            tag("div", links, tag("main", list(sections)), class_="layout"),
            tag("footer", footer),
            tag("script", Html(js))),
        lang="en",
    )
    return str(Html("<!DOCTYPE html>\n") + doc) + "\n"
