#!/usr/bin/env bash
# Build the documentation with warnings as errors (one command, no network at build time).
# The notebooks are not executed here (nb_execution_mode = "off"): they are committed with their
# outputs; `python tutorials/run_all.py` re-executes them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import sphinx, myst_nb, sphinx_book_theme, sphinx_autodoc_typehints, sphinxcontrib.bibtex, sphinx_copybutton" 2>/dev/null; then
    python -m pip install -e ".[doc]" -c constraints.txt
fi

rm -rf docs/_build/html docs/generated
python -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
echo "docs built: docs/_build/html/index.html"
