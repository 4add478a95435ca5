"""Every mfcl launcher's options and the mfcl sweeper's, declared once: name, type, default,
meaning and checks.

The plugins (hydra_plugins/mfcl_sweeps/*.py) only register these dataclasses with Hydra's
ConfigStore; the backends and the sweeper check them through `mfcl_sweeps.options.parse_options`.
Imported at Hydra's start-up, so nothing here imports more than the standard library (a check
may import more when it runs).
No `from __future__ import annotations`: OmegaConf reads these annotations as types.
"""
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from mfcl_sweeps import model
from mfcl_sweeps.options import (
    above,
    at_least,
    at_most_option,
    between,
    conf_string,
    each,
    endpoint,
    matches,
    one_line,
    one_of,
    opt,
    port,
    ssh_option,
)

NPROC_NAMES = ("auto", "cpu", "gpu", "xpu")  # torchrun's symbolic --nproc-per-node values
PLUGINS = "hydra_plugins.mfcl_sweeps."


def _no_newline(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    return "give one shell line per list item" if "\n" in str(v) else None


def _file(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    return None if os.path.isfile(v) else "no such file; give the path of an existing file"


def _plain_name(v: Any, values: Mapping[str, Any]) -> Optional[str]:
    return matches(r"[\w.@-]+", "must be a plain name (letters, digits, _.@-); rename it")(str(v), values)


# -- what every mfcl launcher shares ---------------------------------------------------------
@dataclass
class CommonLauncherConf:
    detach: bool = False  # submit and return at once (schedulers, with hydra/sweeper=mfcl)
    retries: int = opt(0, at_least(0))  # extra attempts for a failed run
    retry_backoff_s: float = opt(1.0, at_least(0, " seconds"))  # wait before a retry, doubled each time
    launch_delay: float = opt(0.0, at_least(0, " seconds"))  # seconds between two job starts
    progress: str = opt("auto", one_of("auto", "live", "log"))
    output: str = opt("stream", one_of("stream", "failed", "quiet"))  # job output on the terminal


@dataclass
class SshClientConf:
    """How the ssh client is run (mfcl_ssh, and mfcl_torchrun's node agents on hosts)."""

    identity_file: Optional[str] = None
    known_hosts_file: Optional[str] = None
    ssh_options: List[str] = opt(list, each(ssh_option))  # extra `-o` values, e.g. [ProxyJump=bastion]
    ssh_command: str = opt("ssh", one_line)
    connect_timeout_s: int = opt(10, at_least(1, " seconds"))


# -- mfcl_local ------------------------------------------------------------------------------
@dataclass
class LocalLauncherConf(CommonLauncherConf):
    _target_: str = PLUGINS + "local_launcher.MfclLocalLauncher"
    max_concurrent: Optional[int] = opt(None, at_least(1))  # default: CPU count
    timeout: Optional[float] = opt(None, above(0, " seconds"))  # seconds per job
    idle_timeout: Optional[float] = opt(None, above(0, " seconds"))  # seconds without output
    start_method: str = opt("auto", one_of("auto", "fork", "spawn"))
    gpus: Optional[List[Any]] = None  # GPU ids to pack jobs onto; default: visible GPUs
    gpus_per_job: int = opt(0, at_least(0))
    python: Optional[str] = None  # interpreter for spawned jobs; default: the driver's
    kill_grace_s: float = opt(5.0, at_least(0, " seconds"))  # SIGTERM, then SIGKILL after this long (cancel)


# -- mfcl_torchrun ---------------------------------------------------------------------------
def _nproc(v: Any, values: Mapping[str, Any]) -> Optional[str]:
    if not ((isinstance(v, int) and not isinstance(v, bool) and v >= 1) or v in NPROC_NAMES):
        return f"must be an integer >= 1 or one of {', '.join(NPROC_NAMES)}; set one of those"
    if values.get("pack_gpus") and not isinstance(v, int):
        return "must be an integer when packing runs onto GPUs; set a number of ranks or pack_gpus=false"
    return None


def _node_rank(v: Any, values: Mapping[str, Any]) -> Optional[str]:
    n = values["nnodes"]
    return None if 0 <= v < n else f"must be in [0, nnodes={n}); set a node number below nnodes"


def _rdzv_conf(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    conf_string(v, "hydra.launcher.rdzv_conf")  # raises with the offending key
    return None


@dataclass
class TorchrunLauncherConf(SshClientConf, CommonLauncherConf):
    _target_: str = PLUGINS + "torchrun_launcher.MfclTorchrunLauncher"
    nproc_per_node: Any = opt(1, _nproc)  # ranks per node: an integer, or auto | cpu | gpu | xpu
    nnodes: int = opt(1, at_least(1))  # nodes per run; without node_rank every node's agent starts on this machine
    node_rank: Optional[int] = opt(None, _node_rank)  # start only this node's agent (one driver per node)
    rdzv_backend: str = opt("c10d", one_line)
    rdzv_endpoint: Optional[str] = opt(None, endpoint)  # host[:port]; no port: a free one per run
    rdzv_id: Optional[str] = None  # default: one id per run and attempt
    rdzv_conf: Any = opt(None, _rdzv_conf)  # {key: value} or "key=value,key=value"
    max_restarts: int = opt(0, at_least(0))
    monitor_interval: float = opt(0.1, above(0, " seconds"))
    master_addr: str = opt("127.0.0.1", one_line)  # rendezvous host when rdzv_endpoint names none
    # fixed rendezvous port; default: $MASTER_PORT, else a free one per run
    master_port: Optional[int] = opt(None, port)
    extra_args: List[str] = opt(list)  # more torchrun flags, e.g. [--tee, "3"]
    # runs at once; default: GPUs or CPU count // processes per run
    max_concurrent: Optional[int] = opt(None, at_least(1))
    timeout: Optional[float] = opt(None, above(0, " seconds"))  # seconds per run
    idle_timeout: Optional[float] = opt(None, above(0, " seconds"))  # seconds without output
    gpus: Optional[List[Any]] = None  # GPU ids to pack runs onto; default: visible GPUs
    pack_gpus: Optional[bool] = None  # null: pack when GPUs are declared or visible
    python: Optional[str] = None  # interpreter torchrun is started with; default: the driver's
    kill_grace_s: float = opt(5.0, at_least(0, " seconds"))  # on cancel/timeout: SIGTERM, then SIGKILL after this long
    # Node agents on other machines over SSH: node i of a run on hosts[i] ("[user@]host[:port]" or
    # {host, port, user, python, workdir, env, ssh_options}); the sweep dir must be shared with them.
    # The ssh client options (SshClientConf) mean what they do for mfcl_ssh.
    hosts: List[Any] = opt(list)
    workdir: Optional[str] = None  # where agents start on the hosts; default: the driver's cwd


def _not_with(other: str) -> Any:
    """Refused when `other` is set too (two ways of saying the same thing)."""
    def check(v: Any, values: Mapping[str, Any]) -> Optional[str]:
        if values.get(other) is None:
            return None
        return f"conflicts with {other}={values[other]!r}; set only one of them ({other}=null)"
    return check


@dataclass
class PackingConf:
    """Short runs packed into array tasks (mfcl_slurm, mfcl_pbs): docs/slurm.md, "Packing short runs"."""

    # runs one array task holds; null: 1, or what pack_minutes or runs_per_gpu make it
    runs_per_task: Optional[int] = opt(None, at_least(1))
    # a task's runs side by side, this many per GPU of the task (no GPU: this many at once); null: in turn
    runs_per_gpu: Optional[int] = opt(None, at_least(1))
    # as many runs per task as fit in this many minutes, from each run's iso_time budget or timeout_min
    pack_minutes: Optional[float] = opt(None, above(0, " minutes"), _not_with("runs_per_task"))


# -- mfcl_slurm (names and meanings as in hydra-submitit-launcher's submitit_slurm) ------------
def _sbatch_flags(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    for key, value in v.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", str(key)):
            return f"{key!r} is not an sbatch option name (like mail_type or mail-type); rename it"
        if "\n" in str(value):
            return f"{key}={value!r} must be one line; remove the line break"
    return None


@dataclass
class SlurmLauncherConf(PackingConf, CommonLauncherConf):
    _target_: str = PLUGINS + "slurm_launcher.MfclSlurmLauncher"
    partition: Optional[str] = opt(None, one_line)
    qos: Optional[str] = opt(None, one_line)
    account: Optional[str] = opt(None, one_line)
    comment: Optional[str] = opt(None, one_line)
    constraint: Optional[str] = opt(None, one_line)
    exclude: Optional[str] = opt(None, one_line)
    gres: Optional[str] = opt(None, one_line)
    timeout_min: float = opt(60.0, above(0, " minutes"))
    cpus_per_task: Optional[int] = opt(None, at_least(1))
    cpus_per_gpu: Optional[int] = opt(None, at_least(1))
    gpus_per_node: Optional[int] = opt(None, at_least(0))
    gpus_per_task: Optional[int] = opt(None, at_least(1))
    tasks_per_node: int = opt(1, at_least(1))
    mem_gb: Optional[float] = opt(None, above(0, " GB"))
    mem_per_gpu: Optional[str] = opt(None, one_line)
    mem_per_cpu: Optional[str] = opt(None, one_line)
    nodes: int = opt(1, at_least(1))
    name: str = opt("${hydra.job.name}", one_line)
    stderr_to_stdout: bool = False
    # USR2 this long before the time limit: the task requeues itself
    signal_delay_s: int = opt(120, at_least(0, " seconds"))
    max_num_timeout: int = opt(3, at_least(0))  # time-limit requeues per run
    additional_parameters: Dict[str, Any] = opt(dict, _sbatch_flags)  # e.g. {mail-type: END}
    array_parallelism: Optional[int] = opt(256, at_least(1))  # tasks of one array running at once (null: no limit)
    setup: List[str] = opt(list, each(_no_newline))  # shell lines before srun
    srun_args: List[str] = opt(list)
    # mfcl
    torchrun: bool = False  # start every run with torchrun in its allocation
    nproc_per_node: Optional[int] = opt(None, at_least(1))  # torchrun processes per node (set: torchrun)
    rdzv_port: Optional[int] = opt(None, port)  # rendezvous port on the first node; default from the job id
    requeue: bool = True  # sbatch --requeue
    max_array_size: Optional[int] = opt(None, at_least(1))  # default: the cluster's MaxArraySize
    python: Optional[str] = None  # interpreter on the nodes; default: the driver's
    poll_min_s: float = opt(1.0, above(0, " seconds"), at_most_option("poll_max_s"))
    poll_max_s: float = 10.0


# -- mfcl_pbs --------------------------------------------------------------------------------
# PBS Pro: up to 236 characters starting with a letter; Torque clients may truncate long names.
PBS_JOB_NAME = r"[A-Za-z][A-Za-z0-9_.+-]{0,235}"
PBS_JOB_NAME_RULE = "a PBS job name starts with a letter and holds only letters, digits and _.+- (no spaces); rename it"


@dataclass
class PbsLauncherConf(PackingConf, CommonLauncherConf):
    _target_: str = PLUGINS + "pbs_launcher.MfclPbsLauncher"
    dialect: str = opt("pbspro", one_of("pbspro", "torque"))  # pbspro (-J, select=) | torque (-t, nodes=)
    frontend: str = opt("auto", one_of("auto", "pbs", "slurm"))  # slurm: Debian's slurm-wlm-torque qsub over Slurm
    job_name: str = opt("${hydra.job.name}", matches(PBS_JOB_NAME, PBS_JOB_NAME_RULE))
    queue: Optional[str] = opt(None, _plain_name)
    account: Optional[str] = opt(None, _plain_name)
    priority: Optional[int] = opt(None, between(-1024, 1023))
    nodes: int = opt(1, at_least(1))
    ncpus: int = opt(1, at_least(1))  # per node
    ngpus: int = opt(0, at_least(0))  # per node
    mem_gb: Optional[float] = opt(None, above(0, " GB"))  # per node
    timeout_min: float = opt(60.0, above(0, " minutes"))  # walltime
    array_parallelism: Optional[int] = opt(None, at_least(1))  # tasks of one array running at once
    subjob_limit: str = opt("suffix", one_of("suffix", "max_run_subjobs"))  # pbspro: -J 0-K%P | -W max_run_subjobs=P
    max_array_size: int = opt(1000, at_least(1))
    output_dir: Optional[str] = None  # default <sweep_dir>/.mfcl/pbs
    join_output: bool = True  # -j oe
    extra_directives: List[str] = opt(list, each(_no_newline))
    setup: List[str] = opt(list, each(_no_newline))  # shell lines before the job
    template: Optional[str] = opt(None, _file)  # your Jinja2 job script template
    python: Optional[str] = None  # interpreter on the nodes; default: the driver's
    poll_min_s: float = opt(1.0, above(0, " seconds"), at_most_option("poll_max_s"))
    poll_max_s: float = 30.0


# -- mfcl_ssh --------------------------------------------------------------------------------
def _some_hosts(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    return None if v else "no hosts; give at least one, e.g. hydra.launcher.hosts=[gpu1:4] or [localhost:2]"


@dataclass
class SshLauncherConf(SshClientConf, CommonLauncherConf):
    _target_: str = PLUGINS + "ssh_launcher.MfclSshLauncher"
    # entries {host, port, user, slots, python, workdir, env, weight, name, ssh_options} or "user@host:port:slots"
    hosts: List[Any] = opt(list, _some_hosts)
    strategy: str = opt("least_loaded", one_of("least_loaded", "round_robin", "random", "weighted"))
    sync: str = opt("check", one_of("check", "rsync", "none"))  # check: git commit must match; rsync: copy first
    allow_out_of_sync: bool = False
    python: str = opt("python3", one_line)  # default for hosts without their own
    workdir: Optional[str] = None  # default for hosts without their own
    env: Dict[str, str] = opt(dict)
    project_dir: Optional[str] = None  # local project root; default: git top level of the cwd
    multiplex: bool = True
    agent: bool = True  # one long-lived agent per host starts every job over one channel (docs/ssh.md)
    control_persist_s: int = opt(60, at_least(0, " seconds"))
    timeout: Optional[float] = opt(None, above(0, " seconds"))  # seconds per job
    kill_grace_s: float = opt(5.0, at_least(0, " seconds"))
    max_consecutive_failures: int = opt(3, at_least(1))
    max_failure_rate: float = opt(0.4, above(0), between(0, 1))
    min_jobs_for_rate: int = opt(5, at_least(1))
    health_check_interval_s: float = opt(30.0, above(0, " seconds"))
    dead_after_s: float = opt(60.0, above(0, " seconds"))
    all_down_timeout_s: float = opt(120.0, above(0, " seconds"))
    seed: Optional[int] = None


# -- hydra/sweeper=mfcl (hydra_plugins/mfcl_sweeps/mfcl_sweeper.py registers it) ---------------
# Checked by SweepCore.setup through parse_options(..., group="hydra.sweeper"). The knobs that
# shape the runs (max_runs, seeds, shuffle, seed, seed_key, exclude, grid...) may come from the
# sweep file too, so spec/ checks them, naming the file line when they come from there.
SWEEP_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}"


def _sweep_name(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    # one dir under multirun/ (or $MFCL_STORAGE_ROOT): never a path out of it
    if isinstance(v, str) and re.fullmatch(SWEEP_NAME, v) and ".." not in v:
        return None
    return ("a sweep name is a plain name of up to 128 letters, digits, '.', '_', '+', '-' (no '/', no '..'); "
            "to put the sweep elsewhere set hydra.sweep.dir")


def _store_url(v: Any, _: Mapping[str, Any]) -> Optional[str]:
    from mfcl_sweeps.state.storeurl import parse_url

    parse_url(str(v))  # raises with the URL's password hidden, so the value is not echoed here
    return None


@dataclass
class NotifyEmailConf:
    to: List[str] = field(default_factory=list)  # recipients; empty: no email
    sender: Optional[str] = None  # From:
    host: str = "localhost"
    port: int = 587
    starttls: bool = True
    user_env: Optional[str] = None  # env var holding the SMTP login
    password_env: Optional[str] = None  # env var holding the SMTP password
    ca_file: Optional[str] = None  # a private CA for the server's certificate


@dataclass
class NotifyConf:
    """`hydra.sweeper.notify.*` (and the callback's `notify`), checked by mfcl_sweeps.notify.
    Secrets are never options: the options name the env vars holding them."""

    webhook_env: Optional[str] = None  # env var holding a Slack-compatible webhook URL
    email: NotifyEmailConf = field(default_factory=NotifyEmailConf)
    on: List[str] = field(default_factory=lambda: ["end", "failure", "all_down"])
    metric: str = "accuracy"  # the end message names the best run by this metric
    title: str = "mfcl sweep"


@dataclass
class MfclSweeperConf:
    _target_: str = PLUGINS + "mfcl_sweeper.MfclSweeper"
    # What to sweep (all optional; combined with command-line sweeps like a=1,2)
    sweep_file: Optional[str] = None  # YAML/JSON sweep file, any supported dialect
    # Empty containers rather than None, so `hydra.sweeper.grid={lr:[1,2]}` can be merged in
    # from the command line; empty means "not given".
    params: Dict[str, str] = opt(dict)  # like BasicSweeper: key -> sweep string
    grid: Dict[str, Any] = opt(dict)
    paired: List[Any] = opt(list)
    runs: List[Any] = opt(list)
    run_defaults: Dict[str, Any] = opt(dict)  # merged under each of `runs`
    aliases: Dict[str, Any] = opt(dict)  # added to (or replacing) the default aliases
    exclude: List[Any] = opt(list)
    max_runs: Optional[int] = None
    shuffle: Optional[bool] = None
    seed: Optional[int] = None
    seeds: Optional[Any] = None  # N or a list: every config repeated per seed
    seed_key: Optional[str] = None  # where each seed is written (default: seed)
    # How to run it
    max_batch_size: Optional[int] = opt(None, at_least(1))  # jobs per launch() call; None: all (mfcl launchers stream)
    dry_run: bool = False  # print the runs (and what would be submitted) and exit
    validate: bool = True  # check every distinct value against one composed run per group first
    name: Optional[str] = opt(None, _sweep_name)  # stable sweep dir multirun/NAME (or $MFCL_STORAGE_ROOT/NAME)
    resume: Optional[str] = opt(None, one_of(*model.RESUME_MODES))  # default: see docs/sweeper.md
    only_runs: List[str] = opt(list)  # run ids/config hashes to run whatever their state
    claim: bool = False  # worker mode: several invocations split the runs
    claim_timeout: float = opt(600.0, above(0, " seconds"))  # seconds without heartbeat before a claim is taken over
    cluster: Optional[str] = opt(None, _plain_name)  # default: $MFCL_CLUSTER, else "local"
    store: Optional[str] = opt(None, _store_url)  # the sweep dir's journal (default) or postgresql://...; $MFCL_STORE
    fail_on_error: bool = True  # exit non-zero when runs failed (after running all of them)
    allow_behind: bool = False  # launch even if the project's git branch is behind its upstream
    notify: NotifyConf = field(default_factory=NotifyConf)  # webhook/email at the end, first failure, all sources down
    require_up_to_date: bool = False  # refuse when behind upstream (always so with claim or a cluster name)
    secret_keys: List[str] = opt(list)  # more secret key names (docs/manifest.md#secrets)
