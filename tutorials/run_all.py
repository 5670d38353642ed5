"""Execute every tutorial notebook in place (outputs are committed) and report the runtimes.

Usage, from the repository root::

    python tutorials/run_all.py                 # all notebooks
    python tutorials/run_all.py 01 03           # only those whose name contains "01" or "03"
    python tutorials/run_all.py --timeout 900   # per-cell timeout in seconds

Notebooks run with the current Python's kernel, with ``tutorials/`` as the working directory and
``STDIFF_DATA_DIR`` defaulting to ``../shared/data`` next to the repository. A failing cell stops
that notebook, leaves it unchanged on disk, and makes the script exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_notebook(path: Path, timeout: int) -> tuple[float, float]:
    """Execute ``path`` in place; return the wall time and the kernel's CPU time in seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(HERE)}},
        record_timing=False,
    )
    t0, cpu0 = time.perf_counter(), _children_cpu()
    client.execute()
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0  # counted once the kernel process has exited
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds, cpu


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="run only notebooks whose file name contains one of these")
    parser.add_argument("--timeout", type=int, default=1200, help="per-cell timeout (s)")
    args = parser.parse_args(argv)

    os.environ.setdefault("STDIFF_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    notebooks = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if args.patterns:
        notebooks = [nb for nb in notebooks if any(p in nb.name for p in args.patterns)]
    if not notebooks:
        print("no notebook matched", file=sys.stderr)
        return 1
    failed = []
    for nb in notebooks:
        print(f"running {nb.name} ...", flush=True)
        try:
            seconds, cpu = run_notebook(nb, args.timeout)
        except Exception as err:  # report and go on with the others
            failed.append(nb.name)
            print(f"FAILED  {nb.name}: {type(err).__name__}: {str(err)[-2000:]}", flush=True)
            continue
        print(f"ok      {nb.name}  {seconds:6.1f} s wall, {cpu:6.1f} s CPU", flush=True)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
