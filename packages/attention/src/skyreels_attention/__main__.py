"""`python -m skyreels_attention` (or the `skyreels-attention` command): show the backends."""

from __future__ import annotations

import argparse

from .status import print_backends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="skyreels-attention", description="Show which attention backends work on this machine."
    )
    parser.parse_args(argv)
    print_backends()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
