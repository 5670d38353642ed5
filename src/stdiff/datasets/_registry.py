"""Registry of the public files the real-data loaders read: URL at a pinned commit and sha256.

Every file is looked up first in a local data root laid out as ``{root}/{dataset_folder}/{relpath}``
(e.g. ``{root}/her2st_ST_breast_HE/ST-cnts/B4.tsv.gz``), where ``root`` is the ``data_dir`` argument or
``$STDIFF_DATA_DIR``. When the file is not there it is downloaded with :mod:`pooch` from its public URL
(pinned commit), checked against its sha256, and cached under the same layout (in ``$STDIFF_DATA_DIR``
when set, else in ``pooch.os_cache("stdiff")``).
"""

from __future__ import annotations

import os
from pathlib import Path

from stdiff._utils import data_dir as _resolve_data_dir
from stdiff._utils import logger

__all__ = ["DATASETS", "REGISTRY", "dataset_file", "fetch", "local_path", "url"]

HER2ST_COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
GIOTTODATA_COMMIT = "1dc55ee8195104a81549b9e3fad04bd459b226de"

#: dataset folder name -> base URL (public raw files at the pinned commit); ``relpath`` is appended.
DATASETS: dict[str, str] = {
    "her2st_ST_breast_HE": f"https://raw.githubusercontent.com/almaan/her2st/{HER2ST_COMMIT}/data/",
    "giotto_mini_merfish_mouse_brain": (
        f"https://raw.githubusercontent.com/drieslab/GiottoData/{GIOTTODATA_COMMIT}/inst/Mini_datasets/Vizgen/Raw/"
    ),
    "giotto_mini_visium_mouse_brain": (
        f"https://raw.githubusercontent.com/drieslab/GiottoData/{GIOTTODATA_COMMIT}/inst/Mini_datasets/Visium/Raw/"
    ),
}

#: short aliases accepted by :func:`fetch`
_ALIASES: dict[str, str] = {
    "her2st": "her2st_ST_breast_HE",
    "merfish": "giotto_mini_merfish_mouse_brain",
    "merfish_mouse_brain_mini": "giotto_mini_merfish_mouse_brain",
    "visium": "giotto_mini_visium_mouse_brain",
    "visium_mouse_brain_mini": "giotto_mini_visium_mouse_brain",
}

#: dataset folder -> {relative path: sha256}
REGISTRY: dict[str, dict[str, str]] = {
    "her2st_ST_breast_HE": {
        "ST-cnts/B4.tsv.gz": "e38231c2a38c9bc7e6d550eec0e527c1869ee0e525fc913e708d1323c34f5ebb",
        "ST-cnts/C2.tsv.gz": "c1c59ea6cffae36b9ecb561b8e2a97e3aa5f4085f748e991a0e330ed9d09773d",
        "ST-cnts/C3.tsv.gz": "e00c55a3eb9caac5d9c71b8906aae8be8b38f93e23938f4a0ebee17683ef6a2a",
        "ST-cnts/C4.tsv.gz": "33201f76d41d7131dc600a0f87d9a70383af3503e81698b4d11e6f2e8d73e9da",
        "ST-cnts/C5.tsv.gz": "c0f310315ca6110d74dbdf7011e5b42432ba0b8eb5f001824764911988f39338",
        "ST-spotfiles/B4_selection.tsv": "192b46f3ca414c85753a01a4fb5760a697ca6c0a1aadb949c4687cc6efa9faa0",
        "ST-spotfiles/C2_selection.tsv": "235b5f4306b3b57c628ffc82c98c7109602474fbcc79a917b9c50517f99b6b1c",
        "ST-spotfiles/C3_selection.tsv": "7fd76c13370b7804ac3bb377b846d22485cf9223f9dd8dfc25be06e5aaf65755",
        "ST-spotfiles/C4_selection.tsv": "47e79f3b9dbfa3a8c18af9e948ba7ba4bf0a75ea1b4c292bc714ced7d0917d4c",
        "ST-spotfiles/C5_selection.tsv": "2114cc3b4da759772112897f1e247d5443c9f8c808e6a9a952eb4fda379a194c",
        "ST-imgs/B/B4/BT10737_D2_HE.jpg": "3cb165614ce2a13426381e450220dccac980cc9bda6a90fb041c28ca0e2c753d",
        "ST-imgs/C/C2/5714_HE_BT_C2.jpg": "26e2f73ae840cdd46c5bba405aae181f13a56a376b9848dff23f7a9c5de7f19e",
        "ST-imgs/C/C3/5714_HE_BT_D1.jpg": "0005a92674014d473040a28f0afca89ce5fa5c44019b479b638ceb3272ceb568",
        "ST-imgs/C/C4/5714_HE_BT_D2.jpg": "f40607eb1d5f0d125decd71c48b0c5d29cf6776ad92297fd185631208c82d6f2",
        "ST-imgs/C/C5/5714_HE_BT_E1.jpg": "34028ea41e376396b50c42b0a11a7e689c85be4a8022e668d0a09cc128c04c65",
    },
    "giotto_mini_merfish_mouse_brain": {
        "vizgen_transcripts.gz": "b0440c5617efff80b4f3982fa12a3960d88c104838a20f544966f7d7b2cd04ba",
        "images/mini_dataset_dapi_z0.jpg": "4e6019729ac67c4a218e02102493078195e7e42ca281e0c122c3824322c5e8b0",
        "images/mini_dataset_dapi_z1.jpg": "0d21537d5567ae29c21ce7d36e25446550accde0875b4f7250b28250614a5a38",
        "images/mini_dataset_polyT_z0.jpg": "17347ae38b9a03899a6aa2e4459ad2958bfd5f02333882c7186593976af2b53d",
        "images/mini_dataset_polyT_z1.jpg": "f8ace79125068668c13f97f2e2d1b0614de01e321f73af621861be55c394c94d",
        "cell_boundaries/z0_polygons.gz": "8e9229a10d2f5ca0fe111a6791f865085fcae86a58fa12e77b1b3bd0853d75c5",
        "cell_boundaries/z1_polygons.gz": "b254ed5fe5616090827a7bbad646732ba426046cdba057aa7902464fc582ad04",
    },
    "giotto_mini_visium_mouse_brain": {
        "visium_DG_expr.txt.gz": "562a7f942ddc31e7c4116f32526a77a4b431b1ab2c2a80965cd2cc55afe76d30",
        "visium_DG_locs.txt": "864ac77d7db033d1cb60587cf292d91af2d4ce0136f7c5e87f22edf0ca28b50c",
        "visium_DG_meta.txt": "23fe2b2b15bc27f7c32c43b29aa45888fe2f47537f3efaf3062841e303071e47",
        "scalefactors_json.json": "9d1d6deb0dd6543c44def327a0f7924ee7a0bfab6d01e9b41534abc9d16b3cbf",
        "images/deg_image.png": "4ce4375b2d20d1da98cd1e3ec44af3fa916fe57c96cb50094355a201169ac429",
        "images/deg_image2.png": "23e9d142cf8930245ae5a29300f91f3503da6dd887926b70fed65ec80327e51f",
    },
}


def _dataset_folder(dataset: str) -> str:
    folder = _ALIASES.get(dataset, dataset)
    if folder not in DATASETS:
        raise ValueError(
            f"Unknown dataset {dataset!r}; known datasets: {sorted(DATASETS)} (aliases: {sorted(_ALIASES)})."
        )
    return folder


def url(dataset: str, relpath: str) -> str:
    """Public URL (raw file at the pinned commit) of ``relpath`` in ``dataset``."""
    folder = _dataset_folder(dataset)
    return DATASETS[folder] + relpath


def local_path(dataset: str, relpath: str, *, data_dir: str | os.PathLike | None = None) -> Path | None:
    """Path ``{root}/{dataset_folder}/{relpath}`` if it exists locally, else ``None``.

    ``root`` is ``data_dir`` or ``$STDIFF_DATA_DIR``; nothing is verified (fast path).
    """
    folder = _dataset_folder(dataset)
    root = _resolve_data_dir(data_dir)
    if root is None:
        return None
    path = root / folder / relpath
    return path if path.is_file() else None


def fetch(dataset: str, relpath: str, *, data_dir: str | os.PathLike | None = None) -> Path:
    """Return a local path to one registered file of a public dataset, downloading it if needed.

    Parameters
    ----------
    dataset
        Dataset folder name (``"her2st_ST_breast_HE"``, ``"giotto_mini_merfish_mouse_brain"``,
        ``"giotto_mini_visium_mouse_brain"``) or a short alias (``"her2st"``, ``"merfish"``, ``"visium"``).
    relpath
        Path of the file inside the dataset folder, e.g. ``"ST-cnts/B4.tsv.gz"``.
    data_dir
        Local data root holding one sub-folder per dataset. Defaults to ``$STDIFF_DATA_DIR``.

    Returns
    -------
    Path to the file. A local copy under ``{root}/{dataset_folder}/{relpath}`` is returned as is (not
    re-hashed). Otherwise the file is downloaded from its public URL at the pinned commit, verified
    against its sha256 and cached (in ``root`` when set, else in ``pooch.os_cache("stdiff")``).
    """
    folder = _dataset_folder(dataset)
    root = _resolve_data_dir(data_dir)
    if root is not None:
        path = root / folder / relpath
        if path.is_file():
            return path
    known = REGISTRY[folder]
    if relpath not in known:
        where = f"{root / folder / relpath}" if root is not None else f"<data_dir>/{folder}/{relpath}"
        raise FileNotFoundError(
            f"{where} does not exist and {relpath!r} is not a registered file of {folder!r} "
            f"(registered: {sorted(known)}). Point `data_dir` / STDIFF_DATA_DIR at the folder that holds "
            f"{folder}/."
        )

    import pooch

    cache = Path(root) if root is not None else Path(pooch.os_cache("stdiff"))
    target = cache / folder / relpath
    logger.info("Downloading %s/%s from %s into %s", folder, relpath, url(folder, relpath), target)
    try:
        out = pooch.retrieve(
            url(folder, relpath),
            known_hash=f"sha256:{known[relpath]}",
            fname=target.name,
            path=target.parent,
            progressbar=False,
        )
    except Exception as err:  # network or hash failure: say where a local copy is expected
        hint = (
            f"a local copy at {root / folder / relpath}"
            if root is not None
            else f"a local copy under <data_dir>/{folder}/{relpath} and set `data_dir` or STDIFF_DATA_DIR"
        )
        raise RuntimeError(
            f"Could not download {url(folder, relpath)} ({type(err).__name__}: {err}). Provide {hint}."
        ) from err
    return Path(out)


def dataset_file(dataset: str, relpath: str, *, data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve a file for a loader.

    With ``data_dir`` given (the dataset folder itself, or a root that contains the dataset folder), the file
    must exist there: no download. Without it, go through :func:`fetch` (``$STDIFF_DATA_DIR`` or pooch).
    """
    folder = _dataset_folder(dataset)
    if data_dir is None:
        return fetch(folder, relpath)
    base = Path(data_dir).expanduser()
    if not (base / relpath).exists() and (base / folder).is_dir():
        base = base / folder
    path = base / relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. `data_dir` should point at the {folder} folder (the layout of the public "
            f"dataset, e.g. $STDIFF_DATA_DIR/{folder}), or leave `data_dir=None` and set STDIFF_DATA_DIR to "
            f"the folder that holds {folder}/."
        )
    return path
