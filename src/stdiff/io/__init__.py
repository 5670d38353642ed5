"""Building and reading spot sections: the SpatialData layout stdiff reads, from the files people have.

- :func:`from_spots`: counts + spot positions + an image (any order, a path, or an element) → a
  SpatialData in µm, with the image's scale from a pixel size, an affine or the array's alignment.
- :func:`read_st`: the legacy Spatial Transcriptomics pipeline's output (``counts.tsv`` with
  ``"{x}x{y}"`` rows, the spot detector's alignment table, the H&E image).
- :func:`read_spots_table`: a generic table of spots (CSV / TSV / Parquet: barcode, x, y) with counts
  (a matrix file or an ``.h5ad``) and an image.
"""

from ._build import from_spots
from ._readers import read_spots_table, read_st

__all__ = ["from_spots", "read_spots_table", "read_st"]
