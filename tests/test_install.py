"""Both install modes a user runs (`pip install -e .` in setuptools' default editable mode, and
`pip install .`) make every plugin visible to Hydra's pkgutil scan of the hydra_plugins namespace.

Each mode installs a copy of the checkout into a fresh venv. The venv reads this interpreter's
site-packages as a plain path line (its .pth files are not run), so dependencies come from there
without a download, while this checkout's own install stays invisible to the venv.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("MfclSweeper", "MfclLocalLauncher", "MfclTorchrunLauncher", "MfclSlurmLauncher",
           "MfclPbsLauncher", "MfclSshLauncher", "MfclPoolLauncher")
APP = '''import os
import hydra

@hydra.main(version_base=None, config_path=None)
def main(cfg):
    print(f"job x={cfg.x}")
    with open(os.path.join(os.environ["SIDE"], f"x{cfg.x}"), "w") as f:
        f.write("ran")

main()
'''


def checkout_copy(dest: Path) -> Path:
    """The files a clone would have: tracked plus new, not ignored (no build outputs, no egg-info)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    system = Path(sysconfig.get_paths()["purelib"])
    (purelib / "_system_site.pth").write_text(f"{system}\n")
    # setuptools needs its distutils shim, which the system's .pth would have installed
    for pth in site.getsitepackages():
        shim = Path(pth) / "distutils-precedence.pth"
        if shim.exists():
            shutil.copy(shim, purelib / shim.name)
    return python


@pytest.mark.parametrize("editable", [True, False], ids=["pip-install-e", "pip-install"])
def test_install_mode_exposes_plugins_to_hydra(tmp_path: Path, editable: bool) -> None:
    src = checkout_copy(tmp_path / "src")
    python = fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
               *(["-e"] if editable else []), str(src)]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    where = subprocess.run([str(python), "-c", "import mfcl_sweeps; print(mfcl_sweeps.__file__)"], cwd=app_dir,
                           capture_output=True, text=True, env=env, check=True).stdout
    installed_at = src if editable else tmp_path / "venv"
    assert where.startswith(str(installed_at)), f"mfcl_sweeps imported from {where} (not the fresh install)"

    info = subprocess.run([str(python), "app.py", "--info", "plugins"], cwd=app_dir, capture_output=True,
                          text=True, env=env, timeout=120)
    assert info.returncode == 0, info.stderr
    listed = {line.strip() for line in info.stdout.splitlines()}
    assert set(PLUGINS) <= listed, f"missing: {set(PLUGINS) - listed}"
    assert "MfclLauncherBase" not in listed

    side = tmp_path / "side"
    side.mkdir()
    sweep = subprocess.run([str(python), "app.py", "-m", "hydra/sweeper=mfcl", "hydra/launcher=mfcl_local",
                            f"hydra.sweep.dir={tmp_path / 'sweep'}", "+x=1,2"], cwd=app_dir, capture_output=True,
                           text=True, env={**env, "SIDE": str(side)}, timeout=180)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    assert sorted(p.name for p in side.iterdir()) == ["x1", "x2"]
