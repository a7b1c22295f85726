"""Safe text for the pages: Markdown-escaped titles, code spans, shortened text, errors as one-line messages."""

from __future__ import annotations

import re

MODALITY_NAMES = {"image": "photo", "text": "title", "product": "whole product", "fused": "photo + title"}
DIRECTIONS = {"i2i": "photo → photo", "i2t": "photo → title", "t2i": "title → photo", "t2t": "title → title",
              "p2p": "whole product → whole products",
              "t2i_labels": "title → photo, as Search ranks it (+ the title's predicted classes)",
              "t2i_hybrid": "title → photo, as hybrid Search ranks it (+ classes + keywords)"}

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'])")
_AUTOLINK = re.compile(r"(?i)(:(?=//)|www(?=\.)|@)")  # what GitHub-flavoured Markdown turns into links by itself
_NO_LINK = "\u200b"  # a zero-width space in "://", after "www" or "@": the text looks the same, but unlinked


def esc(text) -> str:
    """`text` made literal for st.markdown / st.caption / labels: every Markdown or directive character is
    backslash-escaped, bare URLs and e-mail addresses are kept from becoming links, and line breaks become
    spaces, so a product title can't format, link or inject HTML."""
    text = _AUTOLINK.sub(lambda m: m.group(1) + _NO_LINK, " ".join(str(text).split()))
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(text) -> str:
    """`text` as a Markdown code span (shown literally; backticks and line breaks can't break out of it)."""
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


def short(text, n: int = 60) -> str:
    """`text` on one line, cut to `n` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def sentence(text: str) -> str:
    """`text` with its first letter capitalised, to start a message with."""
    return text[:1].upper() + text[1:]


def describe(err: BaseException) -> str:
    """An exception as a one-line message for the page (escaped): ours say what to do; others name their type."""
    from huse_core.errors import one_line  # the command line's wording: file, problem, what to do

    return esc(one_line(err)[:500])
