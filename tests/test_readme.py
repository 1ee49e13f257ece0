"""The README's set-up commands stay true: CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_commands = [b for b in blocks if "pytest" in b]
    assert len(test_commands) == 1, test_commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def test_readme_main_command_installs_and_runs_the_cli() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    main = [b for b in blocks if "pytest" not in b and "pip install" in b]
    assert len(main) == 1, main
    assert main[0].startswith("python3 -m venv .venv") and "contrastive " in main[0]
