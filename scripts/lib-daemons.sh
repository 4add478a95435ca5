# Shared helpers for the test-service scripts (sourced, not run).
# Daemons are started directly (no systemd) and tracked by pid files in a state dir, so that
# `stop` only ever signals processes these scripts started.

svc_log() { printf '%s: %s\n' "$SVC_NAME" "$*" >&2; }

# die MESSAGE [LOGFILE]: one clear line, then the tail of the log that explains it.
svc_die() {
    printf '%s: ERROR: %s\n' "$SVC_NAME" "$1" >&2
    if [[ -n "${2:-}" && -f "$2" ]]; then
        printf -- '--- last lines of %s ---\n' "$2" >&2
        tail -n 25 "$2" >&2
    fi
    exit 1
}

svc_require_root() {
    [[ $(id -u) -eq 0 ]] || svc_die "must run as root (it installs packages and starts daemons)"
}

# Install the Debian packages that are missing; a no-op (and no apt call) when all are there.
svc_apt_ensure() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    svc_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || svc_die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || svc_die "apt-get install ${missing[*]} failed"
}

# pid_of PIDFILE EXE: print the pid if the file names a live process running EXE.
# Checking the executable guards against a recycled pid belonging to someone else.
svc_pid_of() {
    local pidfile=$1 exe=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    local base
    base=$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")
    # Debian installs some daemons as NAME-wlm behind an alternatives link.
    [[ $base == "$exe" || $base == "$exe-wlm" ]] || return 1
    printf '%s\n' "$pid"
}

# wait_for SECONDS COMMAND...: poll every 0.2 s until COMMAND succeeds.
svc_wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# A zombie (exited, not yet reaped) counts as gone: it has no executable any more.
svc_gone() { ! readlink "/proc/$1/exe" >/dev/null 2>&1; }

# stop PIDFILE EXE: TERM, then KILL after 10 s; silent when it is not running.
svc_stop() {
    local pidfile=$1 exe=$2 pid
    pid=$(svc_pid_of "$pidfile" "$exe") || { rm -f "$pidfile"; return 0; }
    svc_log "stopping $exe (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! svc_wait_for 10 svc_gone "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        svc_wait_for 5 svc_gone "$pid" || svc_log "pid $pid did not exit"
    fi
    rm -f "$pidfile"
}

# Minimal images may lack a localhost line, or a line for this machine's short name; Slurm and
# sshd both need the names to resolve to the loopback address.
svc_ensure_hosts() {
    local name
    for name in localhost "$(hostname -s)"; do
        getent hosts "$name" >/dev/null || {
            svc_log "adding '127.0.0.1 $name' to /etc/hosts"
            printf '127.0.0.1 %s\n' "$name" >>/etc/hosts
        }
    done
}
