"""What `mfcl-sweeps init` and `configure` learn about a project, read-only: its Hydra apps
(`@hydra.main` scripts, their config dirs, config groups), the Python environment, schedulers
on PATH with their partitions/queues, and GPUs. Each probe is a plain function returning plain
data, so the file builders stay pure and the tests can check each probe against the real thing.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# never searched for apps: environments, VCS data, sweep outputs
SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", "node_modules", "site-packages", "__pycache__",
             "multirun", "outputs", "build", "dist", ".tox", ".mypy_cache", ".pytest_cache"}
PROBE_TIMEOUT_S = 10


@dataclass(frozen=True)
class HydraApp:
    script: Path  # the @hydra.main file
    config_dir: Optional[Path]  # absolute; None when the decorator names no config_path
    config_name: Optional[str]


@dataclass(frozen=True)
class Scheduler:
    kind: str  # slurm | pbs
    submit: str  # path of sbatch / qsub
    queues: tuple[str, ...]  # partitions (Slurm) or queues (PBS)
    default_queue: Optional[str]


@dataclass
class ProjectScan:
    root: Path
    apps: list[HydraApp]
    python: str
    env_kind: str  # venv | conda | system
    schedulers: list[Scheduler] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)


# -- Hydra apps -------------------------------------------------------------------------------
def _is_hydra_main(node: ast.expr) -> bool:
    func = node.func if isinstance(node, ast.Call) else node
    if isinstance(func, ast.Attribute):
        return func.attr == "main" and isinstance(func.value, ast.Name) and func.value.id == "hydra"
    return isinstance(func, ast.Name) and func.id == "main"


def _literal(call: ast.Call, name: str, position: int) -> Any:
    for kw in call.keywords:
        if kw.arg == name:
            return ast.literal_eval(kw.value)
    return ast.literal_eval(call.args[position]) if len(call.args) > position else None


def read_app(script: Path) -> Optional[HydraApp]:
    """The app declared by `@hydra.main(config_path=..., config_name=...)` in `script`, if any."""
    try:
        text = script.read_text(errors="replace")
        if "hydra" not in text or "main" not in text:
            return None
        tree = ast.parse(text, filename=str(script))
    except (OSError, SyntaxError, ValueError):
        return None
    imports_main = any(isinstance(n, ast.ImportFrom) and n.module == "hydra" and any(a.name == "main" for a in n.names)
                       for n in ast.walk(tree))
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if not isinstance(deco, ast.Call) or not _is_hydra_main(deco):
                continue
            if isinstance(deco.func, ast.Name) and not imports_main:
                continue
            try:
                config_path, config_name = _literal(deco, "config_path", 0), _literal(deco, "config_name", 1)
            except ValueError:  # computed at run time: cannot be known statically
                config_path = config_name = None
            config_dir = (script.parent / config_path).resolve() if isinstance(config_path, str) else None
            return HydraApp(script.resolve(), config_dir, config_name if isinstance(config_name, str) else None)
    return None


def find_apps(root: Path) -> list[HydraApp]:
    """Every `@hydra.main` script under `root`, shallowest first (then by path)."""
    found: list[HydraApp] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                app = read_app(Path(dirpath, name))
                if app is not None:
                    found.append(app)
    return sorted(found, key=lambda a: (len(a.script.relative_to(root.resolve()).parts), str(a.script)))


def config_groups(config_dir: Optional[Path]) -> dict[str, list[str]]:
    """Config group -> its options, from the config dir's YAML files (`hydra/` is Hydra's own)."""
    groups: dict[str, list[str]] = {}
    if config_dir is None or not config_dir.is_dir():
        return groups
    for path in sorted(config_dir.rglob("*.yaml")):
        rel = path.relative_to(config_dir)
        if len(rel.parts) < 2 or rel.parts[0] == "hydra":
            continue
        groups.setdefault("/".join(rel.parts[:-1]), []).append(path.stem)
    return groups


def compose_app(app: HydraApp, overrides: tuple[str, ...] = ()) -> tuple[Any, dict[str, str]]:
    """(the app's composed config without its `hydra` node, config group -> chosen option)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(app.config_dir), version_base=None):
            cfg = compose(config_name=app.config_name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    choices = {k: v for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items()
               if not k.startswith("hydra/") and isinstance(v, str)}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def leaf_values(cfg: Any) -> dict[str, Any]:
    """Dotted key -> value of every leaf (a list counts as one leaf; `${..}` stays as written)."""
    from omegaconf import OmegaConf

    return flatten(OmegaConf.to_container(cfg, resolve=False))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# -- environment ------------------------------------------------------------------------------
def python_env(root: Path, environ: Optional[dict] = None) -> tuple[str, str]:
    """(interpreter, kind): a project venv (.venv, venv, env), the active venv or conda env, else this one."""
    environ = os.environ if environ is None else environ
    for name in (".venv", "venv", "env"):
        candidate = root / name / "bin" / "python"
        if candidate.exists():
            return str(candidate), "venv"
    if environ.get("VIRTUAL_ENV"):
        return str(Path(environ["VIRTUAL_ENV"], "bin", "python")), "venv"
    if environ.get("CONDA_PREFIX"):
        return str(Path(environ["CONDA_PREFIX"], "bin", "python")), "conda"
    return sys.executable, "system"


def _output(argv: list[str]) -> Optional[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_sinfo(text: str) -> tuple[list[str], Optional[str]]:
    """`sinfo -h -o %P` -> (partitions, default); Slurm marks the default with a trailing `*`."""
    parts, default = [], None
    for line in text.split():
        name = line.rstrip("*")
        if line.endswith("*"):
            default = name
        if name not in parts:
            parts.append(name)
    return parts, default


def parse_qstat_queues(text: str) -> list[str]:
    """`qstat -Q` (PBS Pro and Torque: a header, a dashed rule, one queue per line)."""
    lines = text.splitlines()
    rule = next((i for i, line in enumerate(lines) if line.startswith("---")), None)
    return [line.split()[0] for line in lines[rule + 1:] if line.strip()] if rule is not None else []


def schedulers(path: Optional[str] = None) -> list[Scheduler]:
    """Slurm (sbatch) and PBS (qsub) found on PATH, with their partitions/queues."""
    found = []
    sbatch = shutil.which("sbatch", path=path)
    if sbatch:
        sinfo = shutil.which("sinfo", path=path)
        parts, default = parse_sinfo(_output([sinfo, "-h", "-o", "%P"]) or "") if sinfo else ([], None)
        found.append(Scheduler("slurm", sbatch, tuple(parts), default or (parts[0] if parts else None)))
    qsub = shutil.which("qsub", path=path)
    if qsub:
        qstat = shutil.which("qstat", path=path)
        queues = parse_qstat_queues(_output([qstat, "-Q"]) or "") if qstat else []
        found.append(Scheduler("pbs", qsub, tuple(queues), queues[0] if queues else None))
    return found


def gpus(path: Optional[str] = None) -> list[str]:
    """One `name, memory` line per GPU that nvidia-smi reports; none without nvidia-smi."""
    smi = shutil.which("nvidia-smi", path=path)
    if not smi:
        return []
    out = _output([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"]) or ""
    return [line.strip() for line in out.splitlines() if line.strip()]


def scan(root: Path, path: Optional[str] = None) -> ProjectScan:
    python, kind = python_env(root)
    return ProjectScan(root=root.resolve(), apps=find_apps(root), python=python, env_kind=kind,
                       schedulers=schedulers(path), gpus=gpus(path))
