"""Sphinx configuration: the Markdown pages of docs/ (MyST), the theory and results pages, and the API
reference from the numpy-style docstrings. Build with ``python -m sphinx -W --keep-going -b html docs OUT``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # document the checkout, not an installed copy

import meanfield  # noqa: E402

project = "meanfield"
author = "meanfield contributors"
copyright = "meanfield contributors"
release = version = meanfield.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: $...$ and $$...$$ math, and anchors for the headings that the pages link to (page.md#heading)
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# autodoc: members in source order, undocumented ones too (their signatures are part of the API)
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": True}

# numpydoc rather than napoleon: it leaves free-form types ("array, shape (N,)", {"exact", "sinkhorn"})
# as text, where napoleon makes every word a class reference that nitpicky reports, and it does not
# document dataclass fields twice. No autosummary tables of class members: autodoc lists them.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# every cross-reference must resolve: the theory page's {py:func} and {py:class} roles are checked
nitpicky = True

html_theme = "alabaster"
html_title = f"meanfield {release}"

# numpy is not cross-linked (intersphinx would fetch its inventory from the network, which CI does not
# reach): the annotations of the dataclass fields (np.ndarray) and the backend docstring's SeedSequence
# stay plain text
nitpick_ignore = [("py:class", "numpy.ndarray"), ("py:class", "numpy.random.SeedSequence")]
# the same for the other libraries named in type hints (numpy's random classes, os, xarray), whether
# autodoc resolves them to their defining module or keeps the annotation's text
nitpick_ignore += [("py:class", name) for name in (
    "np.random.SeedSequence", "numpy.random.bit_generator.SeedSequence", "numpy.random._generator.Generator",
    "os.PathLike", "xr.Dataset", "xarray.Dataset")]

def _changelog_links(app, docname, source):
    # The pages link to ../CHANGELOG.md, which works where they are read as files; in the site the
    # changelog is the page changelog.md (an include of the top-level file).
    if "/" not in docname:
        source[0] = source[0].replace("](../CHANGELOG.md)", "](changelog.md)")


def setup(app):
    app.connect("source-read", _changelog_links)
