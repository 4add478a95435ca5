#!/usr/bin/env bash
# Two loopback "SSH hosts" for the test suite and CI: extra sshd instances on 127.0.0.1.
#
#   scripts/ssh-test-hosts.sh start          install what is missing, start every instance
#   scripts/ssh-test-hosts.sh status         print ports, key and known_hosts; exit 1 unless all answer
#   scripts/ssh-test-hosts.sh stop [PORT..]  kill the instances (all, or those on PORT) with
#                                            every session they serve: a host that dies
#
# Root, no systemd. Each instance has its own host key, config, pid file and log under
# $MFCL_SSH_DIR/<port>/ (default /tmp/mfcl-ssh). Login is root by key only, with the client
# key $MFCL_SSH_DIR/id_ed25519. Host-key checking stays on in tests: $MFCL_SSH_DIR/known_hosts
# holds the "[127.0.0.1]:PORT ssh-ed25519 ..." lines, and each <port>/ssh_host_ed25519_key.pub
# the bare key, for tests that write their own known_hosts.
set -euo pipefail

SVC_NAME=ssh-test-hosts
source "$(dirname "${BASH_SOURCE[0]}")/lib-daemons.sh"

STATE=${MFCL_SSH_DIR:-/tmp/mfcl-ssh}
read -r -a PORTS <<<"${MFCL_SSH_PORTS:-2201 2202}"
SSHD=/usr/sbin/sshd  # sshd re-executes itself and insists on an absolute path

sshd_config() {
    local port=$1
    cat <<EOF
# Written by mfcl-sweeps scripts/ssh-test-hosts.sh
Port $port
ListenAddress 127.0.0.1
HostKey $STATE/$port/ssh_host_ed25519_key
PidFile $STATE/$port/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The state dir may sit under world-writable /tmp, which StrictModes would reject.
StrictModes no
# Multiplexed clients open many sessions over one connection and several connections at once.
MaxSessions 64
MaxStartups 64:30:128
PrintMotd no
Subsystem sftp internal-sftp
EOF
}

ssh_ok() {
    ssh -n -F /dev/null -p "$1" -i "$STATE/id_ed25519" -o BatchMode=yes -o ConnectTimeout=5 \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$STATE/known_hosts" \
        root@127.0.0.1 true
}

# Every descendant of PID, deepest first: an instance's sessions and the commands they run.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1"); do
        descendants "$child"
        echo "$child"
    done
}

start_instance() {
    local port=$1 dir=$STATE/$1
    install -d -m 0700 "$dir"
    [[ -s $dir/ssh_host_ed25519_key ]] \
        || ssh-keygen -q -t ed25519 -N '' -C "mfcl-test-host-$port" -f "$dir/ssh_host_ed25519_key"
    printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" \
        >>"$STATE/known_hosts.new"
    local changed=0
    [[ -f $dir/sshd_config && "$(<"$dir/sshd_config")" == "$(sshd_config "$port")" ]] || changed=1
    if ((changed)); then sshd_config "$port" >"$dir/sshd_config"; fi
    if svc_pid_of "$dir/sshd.pid" sshd >/dev/null; then
        # Running already: a changed config is picked up on SIGHUP.
        if ((changed)); then kill -HUP "$(<"$dir/sshd.pid")"; fi
    else
        "$SSHD" -t -f "$dir/sshd_config" 2>"$dir/sshd.log" || svc_die "invalid sshd config" "$dir/sshd.log"
        "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log" || svc_die "sshd on port $port did not start" "$dir/sshd.log"
    fi
}

cmd_start() {
    svc_require_root
    svc_apt_ensure openssh-server openssh-client rsync procps
    svc_ensure_hosts
    install -d -m 0755 "$STATE"
    install -d -m 0755 /run/sshd  # sshd's privilege-separation directory
    [[ -s $STATE/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C mfcl-test-client -f "$STATE/id_ed25519"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    rm -f "$STATE/known_hosts.new"
    local port
    for port in "${PORTS[@]}"; do start_instance "$port"; done
    mv "$STATE/known_hosts.new" "$STATE/known_hosts"
    for port in "${PORTS[@]}"; do
        svc_wait_for 15 ssh_ok "$port" || svc_die "cannot log in to 127.0.0.1:$port" "$STATE/$port/sshd.log"
    done
    svc_log "up: root@127.0.0.1 on ports ${PORTS[*]}; key $STATE/id_ed25519; known_hosts $STATE/known_hosts"
}

cmd_status() {
    local bad=0 port pid
    for port in "${PORTS[@]}"; do
        if pid=$(svc_pid_of "$STATE/$port/sshd.pid" sshd) && ssh_ok "$port" 2>/dev/null; then
            printf 'port %s  sshd running (pid %s), login works\n' "$port" "$pid"
        else
            printf 'port %s  not usable\n' "$port"
            bad=1
        fi
    done
    printf 'key         %s\nknown_hosts %s\n' "$STATE/id_ed25519" "$STATE/known_hosts"
    return $bad
}

cmd_stop() {
    svc_require_root
    local port pid victims
    (($#)) || set -- "${PORTS[@]}"
    for port in "$@"; do
        pid=$(svc_pid_of "$STATE/$port/sshd.pid" sshd) || continue
        svc_log "killing sshd on port $port (pid $pid) and its sessions"
        # Frozen first, so that no new session forks while the tree is listed.
        kill -STOP "$pid"
        victims=$(descendants "$pid")
        # shellcheck disable=SC2086
        kill -KILL "$pid" $victims 2>/dev/null || true
        rm -f "$STATE/$port/sshd.pid"
    done
}

case ${1:-} in
    start) cmd_start ;;
    stop) shift; cmd_stop "$@" ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop [PORT...]|status" >&2; exit 2 ;;
esac
