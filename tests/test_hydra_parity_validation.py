"""The pre-launch check never refuses a sweep Hydra runs (issue 14): options from
hydra.searchpath, multi-select lists, glob, package overrides, defaults interpolation. It still
refuses a run that cannot compose, as Hydra's BasicSweeper does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

APP = '''import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    print("ran", cfg)

main()
'''


def make_app(root: Path, files: dict[str, str]) -> Path:
    (root / "app.py").write_text(APP)
    for name, text in files.items():
        path = root / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def dry_run(app: Path, *overrides: str) -> subprocess.CompletedProcess:
    """The mfcl sweeper's validation, then its dry run: prints the runs, launches nothing."""
    return subprocess.run([sys.executable, "app.py", "-m", "hydra/sweeper=mfcl", "hydra.sweeper.dry_run=true",
                           f"hydra.sweep.dir={app / 'sweep'}", *overrides], cwd=app, capture_output=True,
                          text=True, timeout=120)


def planned(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return int(proc.stdout.split("mfcl dry run: ", 1)[1].split(" ", 1)[0])


DB = {"db/mysql.yaml": "driver: mysql\nuser: omry\n", "db/postgresql.yaml": "driver: postgresql\nuser: p\nport: 5432\n"}


def test_options_from_hydra_searchpath(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    (extra / "dataset").mkdir(parents=True)
    (extra / "dataset" / "imagenet.yaml").write_text("name: imagenet\n")
    app = make_app(tmp_path, {"config.yaml": f"defaults:\n  - dataset: cifar10\n\nhydra:\n  searchpath:\n"
                                             f"    - file://{extra}\n",
                              "dataset/cifar10.yaml": "name: cifar10\n"})
    assert planned(dry_run(app, "dataset=cifar10,imagenet")) == 2


def test_multi_select_lists(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"config.yaml": "defaults:\n  - server/site: [amazon]\n",
                              "server/site/amazon.yaml": "amazon: {port: 1}\n",
                              "server/site/fb.yaml": "fb: {port: 2}\n",
                              "server/site/google.yaml": "google: {port: 3}\n"})
    assert planned(dry_run(app, "server/site=[amazon],[fb,google]")) == 2


def test_glob_package_override_and_defaults_interpolation(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"config.yaml": "defaults:\n  - db: mysql\n  - db@backup: mysql\n"
                                             "  - optional server_db: ${db}\n", **DB,
                              "server_db/postgresql.yaml": "pool: 4\n"})
    assert planned(dry_run(app, "db=glob(*)")) == 2
    assert planned(dry_run(app, "db@backup=mysql,postgresql")) == 2
    assert planned(dry_run(app, "db=mysql,postgresql", "+pool=1,2")) == 4


def test_what_can_never_run_is_still_refused(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"config.yaml": "defaults:\n  - db: mysql\n", **DB})
    typo = dry_run(app, "db=mysql,postgress")
    assert typo.returncode != 0
    assert "'postgress' is not an option of config group 'db' (options: mysql, postgresql)" in typo.stderr
    missing = dry_run(app, "db.user=a,b", "db.timeout=1,2")
    assert missing.returncode != 0 and "Key 'timeout' is not in struct" in missing.stderr
