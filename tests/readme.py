"""The shell commands of README.md's code blocks, for the tests that run or check each of them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", re.S | re.M)
_COMMENT = re.compile(r"\s+#(?:\s.*)?$")  # a trailing "  # ..." comment (no README command has '#' in quotes)


def readme_commands(path: Path = README) -> list[str]:
    """Each command line of each fenced code block, trailing comment dropped, spaces collapsed, in order."""
    commands: list[str] = []
    for block in _BLOCK.findall(path.read_text(encoding="utf-8")):
        for line in block.splitlines():
            line = _COMMENT.sub("", line).strip()
            if line and not line.startswith("#"):
                command = " ".join(line.split())
                if command not in commands:
                    commands.append(command)
    return commands
