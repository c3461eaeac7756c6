"""The README's promises: its loss snippet runs as written, its first commands are the Make targets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import torch


def test_loss_snippet_trains_one_step(repo_root):
    readme = (repo_root / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.randint(0, 3, (2, 1, 32, 32))}
    namespace = {"loader": [batch]}
    exec(compile(code, "README.md", "exec"), namespace)
    before = {k: v.clone() for k, v in namespace["model"].state_dict().items()}
    loss = namespace["loss"]
    assert torch.isfinite(loss) and loss.item() > 0
    namespace["opt"].zero_grad()
    namespace["loss_fn"](namespace["model"](batch["image"]), batch["label"]).backward()
    namespace["opt"].step()
    after = namespace["model"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_first_commands_are_make_targets(repo_root):
    readme = (repo_root / "README.md").read_text().splitlines()
    makefile = (repo_root / "Makefile").read_text()
    first = [line.split("#")[0].strip() for line in readme[:6] if line.startswith("make ")]
    assert first == ["make demo", "make test"]
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, re.M)
    ci = (repo_root / ".ci" / "run").read_text()
    assert "make test" in ci


def documented_targets(makefile: str) -> dict[str, str]:
    """``{target: description}`` of the rules written ``target: [prerequisites]  ## description``."""
    targets = {}
    for line in makefile.splitlines():
        head, sep, description = line.partition("## ")
        name, colon, _ = head.partition(":")
        if sep and colon and name and not line[0].isspace() and all(c.isalnum() or c in "_-" for c in name):
            targets[name] = description.strip()
    return targets


def test_make_help_lists_every_documented_target(repo_root):
    makefile = (repo_root / "Makefile").read_text()
    documented = documented_targets(makefile)
    assert "help" in documented and "test" in documented and "demo" in documented
    # README: "`make help` lists every target" -- so every phony target carries a description
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:")).split(":", 1)[1].split()
    assert sorted(phony) == sorted(documented)
    help_rule = next(line for line in makefile.splitlines() if line.startswith("help:"))
    prerequisites = help_rule.split(":", 1)[1].split("##")[0].split()
    if prerequisites and not (repo_root / ".venv" / ".rmseg-setup-stamp").is_file():
        pytest.skip(f"make help depends on {prerequisites} and would set up .venv first")
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=repo_root, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    listed = [line.split(None, 1) for line in lines]
    assert [name for name, _ in listed] == list(documented)  # each once, in the Makefile's order
    assert {name: text.strip() for name, text in listed} == documented


def test_ci_runs_exactly_the_readme_test_command(repo_root):
    readme = (repo_root / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = {line.split("#", 1)[0].strip(): line.split("#", 1)[1] for line in first_block.splitlines() if "#" in line}
    test_command = [command for command, comment in commands.items() if "test suite" in comment]
    assert test_command == ["make test"]
    ci = repo_root / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    lines = [line.strip() for line in ci.read_text().splitlines()]
    assert lines[0].startswith("#!") and "bash" in lines[0]
    steps = [line for line in lines[1:] if line and not line.startswith("#")
             and not line.startswith("set ") and not line.startswith("cd ")
             and line != "scripts/slurm_localhost.sh install"]  # optional system packages (SLURM), never fails
    assert steps == test_command
    # it runs from the repository root, where the Makefile is
    assert 'cd "$(dirname "$0")/.."' in lines
