"""Building and reading spot sections: the SpatialData layout stdiff reads, from the files people have.

- :func:`from_spots`: counts + spot positions + an image (any order, a path, or an element) → a
  SpatialData in µm, with the image's scale from a pixel size, an affine or the array's alignment.
- :func:`read_visium`: a Space Ranger ``outs/`` folder as it is (counts as ``.h5`` or as the
  ``filtered_feature_bc_matrix/`` mtx folder), with a µm coordinate system added.
- :func:`read_st`: the legacy Spatial Transcriptomics pipeline's output (``counts.tsv`` with
  ``"{x}x{y}"`` rows, the spot detector's alignment table, the H&E image).
- :func:`read_spots_table`: a generic table of spots (CSV / TSV / Parquet: barcode, x, y) with counts
  (a matrix file or an ``.h5ad``) and an image.

Images are kept lazy (:func:`lazy_image`): an array is wrapped, not copied; a TIFF or zarr file stays
on disk and is read window by window.
"""

from ._build import from_spots
from ._image import lazy_image
from ._readers import read_spots_table, read_st
from ._visium import is_visium_folder, read_visium

__all__ = ["from_spots", "lazy_image", "read_spots_table", "read_st", "read_visium"]
