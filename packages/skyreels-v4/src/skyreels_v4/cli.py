"""`skyreels-v4 <command> [args]`: one entry point for the toolkit's commands.

Each command is a module with `main(argv) -> int`, imported only when it is run, so a command
whose optional dependencies are missing does not break the others.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "backends": ("skyreels_attention.__main__", "which attention backends work here, and why not"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print("usage: skyreels-v4 <command> [args]   (`skyreels-v4 <command> --help` for its options)\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<{width}}  {text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        known = ", ".join(COMMANDS)
        print(f"skyreels-v4: unknown command {name!r}; expected one of {known}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
