"""The ``kvlab`` command (also ``python -m kvlab``).

``kvlab solutions [DIR]`` writes chapter 7's solutions notebook, which the package ships
instead of putting it next to the exercises, into DIR (default: the current directory).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import kvlab

SOLUTIONS = "07_workshop_solutions.ipynb"


def solutions_notebook() -> bytes:
    """The solutions notebook exactly as the package ships it."""
    return (resources.files("kvlab.solutions") / SOLUTIONS).read_bytes()


def write_solutions(directory: str | Path = ".", force: bool = False) -> Path:
    """Write the solutions notebook into ``directory`` (created if missing); return its path.

    Raises ``FileExistsError`` if the file is already there and ``force`` is false, and
    ``NotADirectoryError`` if ``directory`` is an existing file.
    """
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a directory")
    target = folder / SOLUTIONS
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists: pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    target.write_bytes(solutions_notebook())
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvlab", description="kvlab's command line: workshop helpers.")
    parser.add_argument("--version", action="version", version=f"kvlab {kvlab.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sol = commands.add_parser(
        "solutions", help="write chapter 7's solutions notebook into a directory",
        description=f"Write {SOLUTIONS} (every workshop answer, with its explanation) into "
                    f"DIR. Hand it out after the session; see docs/workshop.md.")
    sol.add_argument("directory", nargs="?", default=".", metavar="DIR",
                     help="where to write it (created if missing; default: current directory)")
    sol.add_argument("-f", "--force", action="store_true",
                     help="overwrite an existing solutions notebook")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 done, 1 refused, 2 bad usage)."""
    args = _parser().parse_args(argv)
    if args.command == "solutions":
        try:
            target = write_solutions(args.directory, force=args.force)
        except (FileExistsError, NotADirectoryError) as e:
            print(f"kvlab solutions: {e}", file=sys.stderr)
            return 1
        print(f"wrote {target.resolve()}")
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
