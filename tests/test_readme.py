"""The README a newcomer reads: short, the two set-up commands first, and every command it
shows accepted by the engine (each flag appears in that verb's --help)."""

import re
import subprocess
import sys

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines"
    head = "\n".join(lines[:40])
    assert "bash scripts/dashboard.sh" in head and "bash scripts/test.sh" in head
    assert "not a medical device" in README.lower()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci  # CI calls the README's test command


def test_every_engine_command_in_the_readme_is_accepted():
    commands = re.findall(r"^python -m (engine\.\w+)([^#\n]*)", README, re.M)
    assert len(commands) >= 8
    helps = {}
    for module, args in commands:
        if module not in helps:
            result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                    cwd=ROOT, timeout=120)
            assert result.returncode == 0, result.stderr
            helps[module] = result.stdout
        for flag in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", args):
            assert flag in helps[module], f"{module} has no {flag} (README: python -m {module}{args})"


def test_every_documentation_link_in_the_readme_exists():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
