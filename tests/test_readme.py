"""The README's promises: its loss snippet runs as written, its first commands are the Make targets."""

from __future__ import annotations

import re

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
