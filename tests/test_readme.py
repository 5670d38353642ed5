"""The README's two set-up commands and CI stay in sync."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [ln for ln in lines if ln.startswith("python3 -m venv")]


def test_readme_has_two_commands_and_ci_runs_the_test_command_verbatim():
    cmds = _commands()
    assert len(cmds) == 2
    demo, test = cmds
    assert demo.endswith("stdiff demo") and "pytest" in test
    assert "-c constraints.txt" in demo and "-c constraints.txt" in test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_constraints_pin_the_cpu_torch_wheel():
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0+cpu" in pins
    assert not [p for p in pins if p.lower().startswith("nvidia-")]
