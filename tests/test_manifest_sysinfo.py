"""What a sweep records about its surroundings: git state (real repositories), secrets."""
from __future__ import annotations

import subprocess

from mfcl_sweeps.state.sysinfo import check_git, git_info, git_warnings, redacted_argv, redacted_env


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_git_info_commit_dirty_and_behind_upstream(tmp_path):
    git(tmp_path, "init", "-q", "--bare", "-b", "main", "origin.git")
    git(tmp_path, "clone", "-q", "origin.git", "work")
    work = tmp_path / "work"
    (work / "f.txt").write_text("1")
    git(work, "add", "f.txt")
    git(work, "commit", "-qm", "one")
    git(work, "push", "-q", "origin", "HEAD:main")
    git(tmp_path, "clone", "-q", "origin.git", "other")
    (tmp_path / "other" / "f.txt").write_text("2")
    git(tmp_path / "other", "commit", "-qam", "two")
    git(tmp_path / "other", "push", "-q", "origin", "HEAD:main")

    info = git_info(str(work))
    assert info["behind"] == 0  # the new commit is not fetched yet: nothing here knows of it
    assert len(info["commit"]) == 40 and info["dirty"] is False
    assert check_git(info, allow_behind=False) is None
    git(work, "fetch", "-q")
    (work / "f.txt").write_text("local edit")
    info = git_info(str(work))
    assert info["behind"] == 1 and info["dirty"] is True and info["upstream"] == "origin/main"
    problem = check_git(info, allow_behind=False)
    assert "1 commit(s) behind origin/main" in problem and "hydra.sweeper.allow_behind=true" in problem
    assert check_git(info, allow_behind=True) is None
    assert check_git(info, allow_behind=False, required=False) is None  # a local sweep only warns
    warnings = git_warnings(info)
    assert "uncommitted changes" in warnings[0] and "1 commit(s) behind origin/main" in warnings[1]


def test_git_info_outside_a_repository(tmp_path):
    assert git_info(str(tmp_path)) == {"commit": None, "dirty": None, "behind": None, "upstream": None}


def test_redaction_of_env_and_argv():
    env = redacted_env({"GITHUB_TOKEN": "a", "db_password": "b", "AWS_SECRET_ACCESS_KEY": "c", "GCP_CREDENTIALS": "d",
                        "URL": "https://u:pw@host/x", "N": "1"})
    assert env == {"AWS_SECRET_ACCESS_KEY": "***", "GCP_CREDENTIALS": "***", "GITHUB_TOKEN": "***", "N": "1",
                   "URL": "https://u:***@host/x", "db_password": "***"}
    assert redacted_argv(["-m", "+wandb.api_key=x", "--token", "y", "--secret=z", "lr=1", "--", "keep"]) == \
        ["-m", "+wandb.api_key=***", "--token", "***", "--secret=***", "lr=1", "--", "keep"]
