"""Sphinx configuration of poolparty's documentation.

Build it with ``python -m sphinx -b html docs docs/_build/html``
(``pip install -e ".[docs]"`` first). tests/test_docs.py builds it with warnings as
errors, so a broken reference or a docstring that is not valid reStructuredText fails
the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from poolparty.version import __version__  # noqa: E402

project = "poolparty"
author = "the poolparty authors"
copyright = "the poolparty authors"  # noqa: A001 - Sphinx's name for it
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
root_doc = "index"
language = "en"

html_theme = "alabaster"
html_theme_options = {
    "description": "multiprocessing.Pool on SLURM, Sun Grid Engine or local processes",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
html_title = f"poolparty {release}"

# The docstrings are plain reStructuredText (no Google/NumPy sections, so no napoleon).
# Members are listed in the source's order, and only where a page asks for them; type
# hints stay out of the signatures (they name internal types), one click away through
# viewcode.
autodoc_member_order = "bysource"
autoclass_content = "class"
autodoc_typehints = "none"
autodoc_preserve_defaults = True
