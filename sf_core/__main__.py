"""`python -m sf_core COMMAND ...`: the standalone entry point (no ComfyUI needed).

Commands are modules under `sf_core.cli` with a `main(argv) -> int`; each imports its heavy parts itself.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": ("sf_core.cli.generate", "generate a video (mp4) from prompts, or continue a saved session"),
    "live": ("sf_core.cli.live", "a never-ending video steered from stdin (prompt / pause / reset / stop), to mp4"),
    "encode": ("sf_core.cli.encode", "turn prompts into an embeddings file with the umT5 text encoder"),
}


def _usage() -> str:
    lines = ["usage: python -m sf_core COMMAND [options]   (python -m sf_core COMMAND -h for its options)", "",
             "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "other tools: python -m sf_core.parity FIXTURE (numerical parity with the official code)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
