"""``python -m stdiff.benchmark``."""

from ._harness import main

if __name__ == "__main__":
    raise SystemExit(main())
