"""MkDocs hook: links in a tutorial (a notebook rendered by mkdocs-jupyter, whose HTML MkDocs
does not resolve) that name a page by its source file (`gradients.py`, `../how-to/glove.md`)
are pointed at the built page (`gradients.html`), as MkDocs does for Markdown pages. A link to
a page that does not exist stays broken, and the link checker (tests/test_docs_site.py) says so.
"""

from __future__ import annotations

import re

# a relative href (no scheme, not absolute, not an anchor) to a .md, .py or .ipynb source
SOURCE_LINK = re.compile(
    r'href="(?![a-zA-Z][a-zA-Z0-9+.-]*:|/|#)([^"#?]+)\.(?:md|py|ipynb)(#[^"]*)?"'
)


def on_page_content(html, page, config, files):
    if not page.file.src_uri.endswith((".py", ".ipynb")):
        return html
    return SOURCE_LINK.sub(lambda m: f'href="{m[1]}.html{m[2] or ""}"', html)
