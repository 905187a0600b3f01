"""The `clusterduck-validate` pre-commit hook, run by pre-commit itself from this checkout.

`pre-commit try-repo` clones this checkout's committed HEAD (plus uncommitted changes to
tracked files; a new, untracked .pre-commit-hooks.yaml is not seen) and builds the hook's
own virtualenv with pip, as a user's `pre-commit install` would: the first run installs
clusterduck's dependencies from PyPI (about a minute; pip's cache makes later runs
faster), so this test needs PyPI.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

GOOD = (
    'name: good\nspouts:\n  - {name: src, entry: "m:f"}\n'
    'workers:\n  - {name: w, entry: "m:g", inputs: [src]}\n'
)
BAD = GOOD.replace("name: good", "name: bad").replace("inputs: [src]", "inputs: [scr]")
WORKFLOW = "name: CI\njobs: {test: {runs-on: ubuntu-latest}}\n"


def _pre_commit() -> list[str] | None:
    if importlib.util.find_spec("pre_commit") is not None:
        return [sys.executable, "-m", "pre_commit"]
    found = shutil.which("pre-commit")
    return [found] if found else None


PRE_COMMIT = _pre_commit()
pytestmark = [
    pytest.mark.skipif(PRE_COMMIT is None, reason="pre-commit is not installed"),
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
    pytest.mark.skipif(not (REPO / ".git").exists(), reason="not run from a git checkout"),
    pytest.mark.timeout(900),
]


def test_the_hook_fails_on_the_bad_file_and_passes_once_fixed(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "good.yaml").write_text(GOOD)
    (repo / "bad.yaml").write_text(BAD)
    (repo / "ci.yaml").write_text(WORKFLOW)  # YAML, but no topology: skipped
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }

    def hook() -> subprocess.CompletedProcess[str]:
        assert PRE_COMMIT is not None
        return subprocess.run(
            [
                *PRE_COMMIT,
                "try-repo",
                str(REPO),
                "clusterduck-validate",
                "--files",
                "good.yaml",
                "bad.yaml",
                "ci.yaml",
            ],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=850,
            check=False,
        )

    failed = hook()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "bad.yaml:5:38: [w] input 'scr' names no spout or worker" in failed.stdout
    assert (
        "ok: good.yaml" in failed.stdout
        and "ci.yaml" not in failed.stdout.split("clusterduck validate")[-1]
    )

    (repo / "bad.yaml").write_text(BAD.replace("[scr]", "[src]"))
    passed = hook()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "clusterduck validate" in passed.stdout and "Passed" in passed.stdout
