#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, with accounting, for the test suite and CI.
#
#   scripts/slurm-test-cluster.sh start    install what is missing, configure, start, wait until usable
#   scripts/slurm-test-cluster.sh status   print the state; exit 1 unless the cluster is usable
#   scripts/slurm-test-cluster.sh stop     stop the daemons this script started (by pid file)
#
# Root on Debian 12, no systemd: munged, mariadbd (own datadir, unix socket only), slurmdbd,
# slurmctld and slurmd are started directly; their state, logs and pid files live in
# $MFCL_SLURM_DIR (default /tmp/mfcl-slurm). The Slurm config goes to /etc/slurm, where every
# client (sbatch, sacct, the qsub/qstat/qdel front ends of slurm-wlm-torque) looks for it.
set -euo pipefail

SVC_NAME=slurm-test-cluster
source "$(dirname "${BASH_SOURCE[0]}")/lib-daemons.sh"

STATE=${MFCL_SLURM_DIR:-/tmp/mfcl-slurm}
CONF_DIR=/etc/slurm
MARKER="# Written by mfcl-sweeps scripts/slurm-test-cluster.sh; state in $STATE"
NODE=$(hostname -s)
NODE_CPUS=${MFCL_SLURM_CPUS:-8}
MAX_ARRAY_SIZE=${MFCL_SLURM_MAX_ARRAY_SIZE:-1001}
DB_SOCKET=$STATE/db/mysqld.sock
MUNGE_SOCKET=/run/munge/munge.socket.2
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server slurm-wlm-torque)

# Scheduling latency is left as on a production cluster except sched_interval/bf_interval (for
# requeue tests): batch_sched_delay stays at Slurm's default (3 s), so a new array may wait up to
# ~3 s for its first scheduling pass (0.3-2.2 s measured); bench figures include it.
slurm_conf() {
    cat <<EOF
$MARKER
ClusterName=mfcl
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Credentials of a requeued job must expire before it may start again: 10 s instead of 120 s.
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups needed: plain /proc process tracking, no task containment.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=10
MaxArraySize=$MAX_ARRAY_SIZE
SchedulerType=sched/backfill
# Frequent scheduler passes: a requeued job restarts in ~15-45 s rather than minutes.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# The node declares more CPUs than the machine has, so tests can run several 1-CPU tasks at
# once; config_overrides stops slurmd from draining it for that.
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=16384 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# slurmd 22.05 loads a cgroup plugin even with proctrack/linuxproc and task/none; autodetection
# fails where nothing is mounted on /sys/fs/cgroup, so name the plugin and mount nothing.
cgroup_conf() {
    printf '%s\nCgroupPlugin=cgroup/v1\nCgroupAutomount=no\n' "$MARKER"
}

slurmdbd_conf() {
    cat <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
}

# write_conf NAME MODE: replace $CONF_DIR/NAME with stdin; return 0 only if the content changed.
# A config this script did not write is never overwritten.
write_conf() {
    local path=$CONF_DIR/$1 mode=$2 new
    new=$(cat)
    if [[ -e $path ]] && ! head -n1 "$path" | grep -q '^# Written by mfcl-sweeps'; then
        svc_die "$path exists and was not written by this script; move it away first"
    fi
    [[ -e $path && "$(<"$path")" == "$new" ]] && return 1
    printf '%s\n' "$new" >"$path"
    chmod "$mode" "$path"
    return 0
}

# munged and mariadbd drop root and write only into directories their own users own.
pidfile() {
    case $1 in
        munged) echo "$STATE/munge/munged.pid" ;;
        mariadbd) echo "$STATE/db/mariadbd.pid" ;;
        *) echo "$STATE/run/$1.pid" ;;
    esac
}
munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
db_ok() { mariadb --no-defaults -S "$DB_SOCKET" -u root -e 'select 1' >/dev/null 2>&1; }
# sinfo marks a node whose slurmd does not answer with a trailing '*'.
node_responding() { local s; s=$(sinfo -h -n "$NODE" -o %t 2>/dev/null); [[ -n $s && $s != *'*' ]]; }
node_idle() { [[ $(sinfo -h -n "$NODE" -o %t 2>/dev/null) =~ ^(idle|mix|alloc)$ ]]; }
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
sacct_ok() { sacct -n -X -S now-1minutes >/dev/null 2>&1; }
slurmdbd_ok() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }

start_munge() {
    # A munged already serving the default socket (e.g. the distribution's) is used as is.
    munge_ok && return 0
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create \
        || svc_die "could not create /etc/munge/munge.key"
    # munged runs as munge and refuses directories it does not own.
    install -d -o munge -g munge -m 0755 /run/munge /var/lib/munge "$STATE/munge"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$(pidfile munged)" \
        --log-file="$STATE/munge/munged.log" || svc_die "munged did not start" "$STATE/munge/munged.log"
    svc_wait_for 10 munge_ok || svc_die "munged does not answer on $MUNGE_SOCKET" "$STATE/munge/munged.log"
}

DB_OPTS=()
start_mariadb() {
    svc_pid_of "$(pidfile mariadbd)" mariadbd >/dev/null && db_ok && return 0
    DB_OPTS=(--no-defaults --datadir="$STATE/db/data" --user=mysql --skip-networking
             --innodb-buffer-pool-size=64M --innodb-log-file-size=16M)
    install -d -o mysql -g mysql "$STATE/db"
    if [[ ! -d $STATE/db/data/mysql ]]; then
        mariadb-install-db "${DB_OPTS[@]}" --auth-root-authentication-method=socket \
            >"$STATE/db/install.log" 2>&1 || svc_die "mariadb-install-db failed" "$STATE/db/install.log"
    fi
    setsid mariadbd "${DB_OPTS[@]}" --socket="$DB_SOCKET" --pid-file="$(pidfile mariadbd)" \
        --log-error="$STATE/db/mariadbd.log" </dev/null >/dev/null 2>&1 &
    svc_wait_for 30 db_ok || svc_die "mariadbd does not answer on $DB_SOCKET" "$STATE/db/mariadbd.log"
}

start_slurm_daemon() {
    local exe=$1 ready=$2
    svc_pid_of "$STATE/run/$exe.pid" "$exe" >/dev/null && return 0
    # slurmdbd's MariaDB client finds our socket through MYSQL_UNIX_PORT.
    MYSQL_UNIX_PORT=$DB_SOCKET "$exe" </dev/null >>"$STATE/log/$exe.start.log" 2>&1 \
        || svc_die "$exe did not start" "$STATE/log/$exe.log"
    svc_wait_for 30 "$ready" || svc_die "$exe started but is not ready ($ready)" "$STATE/log/$exe.log"
}

stop_slurm() {
    svc_stop "$STATE/run/slurmd.pid" slurmd
    svc_stop "$STATE/run/slurmctld.pid" slurmctld
    svc_stop "$STATE/run/slurmdbd.pid" slurmdbd
}

cmd_start() {
    svc_require_root
    svc_apt_ensure "${PACKAGES[@]}"
    svc_ensure_hosts
    install -d -m 0755 "$STATE" "$STATE/run" "$STATE/log" "$STATE/ctld" "$STATE/spool" "$CONF_DIR"
    local changed=0
    write_conf slurm.conf 0644 < <(slurm_conf) && changed=1
    write_conf cgroup.conf 0644 < <(cgroup_conf) && changed=1
    write_conf slurmdbd.conf 0600 < <(slurmdbd_conf) && changed=1
    # A changed config (new script version) takes effect through a restart of the Slurm daemons.
    if ((changed)); then stop_slurm; fi
    start_munge
    start_mariadb
    start_slurm_daemon slurmdbd slurmdbd_ok
    start_slurm_daemon slurmctld ctld_ok
    start_slurm_daemon slurmd node_responding
    # A node left DOWN or DRAINED by an earlier run (e.g. a task that would not die) is put back.
    svc_wait_for 5 node_idle || scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    svc_wait_for 60 node_idle || svc_die "node $NODE is not idle: $(sinfo -h -n "$NODE" -o '%t %E')" \
        "$STATE/log/slurmd.log"
    svc_wait_for 30 sacct_ok || svc_die "sacct does not answer" "$STATE/log/slurmdbd.log"
    svc_log "up: node $NODE ($NODE_CPUS CPUs, partition debug), accounting on; state in $STATE"
}

cmd_status() {
    local bad=0 d
    for d in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid=$(svc_pid_of "$(pidfile "$d")" "$d"); then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        elif [[ $d == munged ]] && munge_ok; then
            printf '%-10s running (not started by this script)\n' "$d"
        else
            printf '%-10s stopped\n' "$d"
            bad=1
        fi
    done
    if node_idle; then printf '%-10s %s\n' node "$(sinfo -h -n "$NODE" -o '%N %t %c CPUs')"
    else printf '%-10s not usable\n' node; bad=1; fi
    if sacct_ok; then printf '%-10s answers\n' sacct; else printf '%-10s not answering\n' sacct; bad=1; fi
    return $bad
}

cmd_stop() {
    svc_require_root
    stop_slurm
    svc_stop "$(pidfile mariadbd)" mariadbd
    svc_stop "$(pidfile munged)" munged
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
