"""MkDocs hook: MathJax for the tutorials' equations, copied into the built site from the
jupyter-server-mathjax package (MathJax 2, the version mkdocs-jupyter's template configures),
so the pages typeset their math offline and no CDN is named (mkdocs.yml: custom_mathjax_url)."""

from __future__ import annotations

import shutil
from pathlib import Path

TARGET = "assets/mathjax"
# The package ships the STIX-Web fonts only (as Jupyter configures MathJax); mkdocs.yml's
# custom_mathjax_url loads this after the standard configuration.
FONTS = """MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web"},
  SVG: {font: "STIX-Web"}
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/stix-web.js");
"""


def on_post_build(config):
    import jupyter_server_mathjax

    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = Path(config["site_dir"]) / TARGET
    shutil.copytree(static, target, dirs_exist_ok=True)
    (target / "config" / "local").mkdir(exist_ok=True)
    (target / "config" / "local" / "stix-web.js").write_text(FONTS)
