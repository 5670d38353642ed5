"""Copy the her2st super-resolution figure of tutorial 2 (its executed output) to the README figure.

Run after ``python tutorials/run_all.py 02``::

    python docs/extract_readme_figure.py
"""

import base64
import io
import json
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
nb = json.loads((ROOT / "tutorials" / "02_her2st.ipynb").read_text())
cell = next(
    c for c in nb["cells"] if c["cell_type"] == "code" and "sd.pl.superresolution(c5_sdata" in "".join(c["source"])
)
png = next(o["data"]["image/png"] for o in cell["outputs"] if "image/png" in o.get("data", {}))
img = Image.open(io.BytesIO(base64.b64decode(png)))
# keep the first two gene rows (ERBB2, KRT19) of the five
w, h = img.size
img = img.crop((0, 0, w, int(h * 0.42)))
img.thumbnail((1400, 1400))
img.save(ROOT / "docs" / "_static" / "readme_her2st.png", optimize=True)
