"""READMEs (and other publisher Markdown) turned into HTML that is safe to put in a page.

A publisher writes the README; an operator reads it signed in with the power to install
plugins. So nothing of it may run or reach out: raw HTML in the Markdown is shown as text
(``html=False``), links keep only safe schemes (markdown-it refuses ``javascript:``,
``vbscript:``, ``file:`` and ``data:``) and open with ``rel="nofollow noopener noreferrer"``,
table cells carry no style attribute, and images become their alt text (a remote image would
tell its host who reads the page and when; the page's Content-Security-Policy would block it
anyway). What is left is markup markdown-it writes itself, with every text escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markupsafe import Markup

__all__ = ["render_markdown"]

MAX_README_CHARS = 200_000  # a README longer than this is cut: it is a page, not a book


def _link_open(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
    return str(renderer.renderToken(tokens, idx, options, env))


def _cell_open(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    # Column alignment comes as a style attribute, which the page's CSP refuses (and reports
    # as an error in the console): the cell keeps its alignment as a class instead.
    token = tokens[idx]
    style = str(token.attrGet("style") or "")
    if token.attrs.pop("style", None) is not None and "text-align:" in style:
        token.attrSet("class", "align-" + style.split(":", 1)[1].strip())
    return str(renderer.renderToken(tokens, idx, options, env))


def _image(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or [])
    return f'<span class="image-alt">[image: {escapeHtml(alt)}]</span>' if alt else ""


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("image", _image)
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)
    return md


_MD = _parser()


def render_markdown(text: str | None) -> Markup:
    """``text`` as HTML that runs nothing; empty for no text."""
    if not text:
        return Markup("")
    return Markup(_MD.render(text[:MAX_README_CHARS]))  # markdown-it escaped every text
