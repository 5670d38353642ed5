"""Sphinx configuration of the stdiff documentation.

Build (warnings are errors, no network, notebooks are rendered from their committed outputs)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from datetime import date
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
# Works from a source checkout too (the package is normally installed with `pip install -e ".[doc]"`).
sys.path.insert(0, str(ROOT / "src"))
# The datasets' docstrings mention this variable; autodoc imports the package but never loads data.
os.environ.setdefault("STDIFF_DATA_DIR", str(ROOT.parent / "shared" / "data"))


def _copy_tutorials() -> None:
    """Mirror ``tutorials/*.ipynb`` (committed with outputs) into ``docs/generated/tutorials``.

    Sphinx only reads sources below ``docs/``; ``docs/generated/`` is git-ignored.
    """
    src, dst = ROOT / "tutorials", HERE / "generated" / "tutorials"
    dst.mkdir(parents=True, exist_ok=True)
    notebooks = {nb.name: nb for nb in sorted(src.glob("*.ipynb"))}
    for stale in dst.glob("*.ipynb"):
        if stale.name not in notebooks:
            stale.unlink()
    for name, nb in notebooks.items():
        target = dst / name
        if not target.exists() or target.read_bytes() != nb.read_bytes():
            shutil.copyfile(nb, target)


_copy_tutorials()

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 9 deprecates: not ours, keep the log readable.
warnings.filterwarnings("ignore", message=r".*_RstSnippetParser\.set_application.*")

# -- Project information -----------------------------------------------------------------------------
info = metadata("stdiff")
project = "stdiff"
author = "stdiff developers"
copyright = f"{date.today().year}, {author}"
version = info["Version"]
release = info["Version"]
repository_url = "https://github.com/stdiff-dev/stdiff"

# -- General configuration ---------------------------------------------------------------------------
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxcontrib.bibtex",
    "sphinx_copybutton",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "generated/*.inc"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
default_role = "literal"
pygments_style = "default"

# No intersphinx: the build must not need the network. Cross-references to numpy, anndata, spatialdata
# ... therefore render as plain (unlinked) names; `nitpicky` stays off so they are not warnings.
nitpicky = False

# -- autodoc / autosummary / napoleon ----------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"  # handled by sphinx_autodoc_typehints
autoclass_content = "class"
autodoc_mock_imports: list[str] = []

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
# Dataclass fields are documented in "Attributes" sections, several names per entry
# ("base_channels, channel_mults, ..."): render them as a field list like parameters, not as separate
# attribute directives (which would duplicate the ones autodoc finds on the class).
napoleon_use_ivar = True
napoleon_custom_sections = [("Params", "Parameters"), ("Attributes", "params_style")]

typehints_defaults = "braces"
typehints_use_signature = False
typehints_use_signature_return = False
always_document_param_types = False
typehints_document_rtype = True

# -- bibliography ------------------------------------------------------------------------------------
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# -- MyST / MyST-NB ----------------------------------------------------------------------------------
myst_enable_extensions = [
    "amsmath",
    "colon_fence",
    "deflist",
    "dollarmath",
    "html_image",
    "html_admonition",
]
myst_heading_anchors = 3
myst_url_schemes = ("http", "https", "mailto")
# The tutorials are committed with their outputs (`python tutorials/run_all.py` re-executes them).
nb_execution_mode = "off"
nb_merge_streams = True
nb_output_stderr = "show"

# -- HTML --------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "stdiff"
html_static_path = ["_static"]
html_css_files = ["css/custom.css"]
html_logo = "_static/logo.svg"
html_favicon = "_static/logo.svg"
html_show_sphinx = False
html_theme_options = {
    "repository_url": repository_url,
    "use_repository_button": True,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_context = {"default_mode": "light"}

# Warnings that are not about our content.
suppress_warnings = [
    "myst.header",  # notebooks start with a level-1 title, then may skip levels in markdown cells
    "config.cache",  # sphinx-book-theme stores non-picklable config values
]


# -- Prose "Returns" sections ------------------------------------------------------------------------
# The package's numpydoc "Returns" sections are prose (scverse style: the type is in the annotation and
# sphinx-autodoc-typehints renders it as "Return type"). Napoleon would read their first line as a
# type; render the whole section as the body of a ``:returns:`` field instead.
from sphinx.ext.napoleon.docstring import NumpyDocstring  # noqa: E402


def _parse_prose_returns_section(self, section: str) -> list[str]:
    lines = self._strip_empty(self._dedent(self._consume_to_next_section()))
    if lines and lines[0].strip() == ":":  # marker inserted by sphinx-autodoc-typehints for napoleon
        lines = self._strip_empty(lines[1:])
    if not lines:
        return []
    return [":returns:", *self._indent(lines, 4), ""]


NumpyDocstring._parse_returns_section = _parse_prose_returns_section
