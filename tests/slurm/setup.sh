#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on THIS machine, for tests/test_slurm.py.
#
# FOR A DISPOSABLE CI/TEST MACHINE ONLY (Debian bookworm, run as root). It installs
# slurm-wlm and munge with apt-get, creates a munge key, OVERWRITES /etc/slurm/slurm.conf
# and /etc/slurm/cgroup.conf, and runs munged, slurmctld and slurmd as root without
# systemd. Never run it on a real cluster node or a machine you care about.
#
# Idempotent: when the daemons already run with the same configuration it only checks
# that the node is up. If the configuration changed, it restarts the daemons that it
# started (found by their pid files). Exits non-zero with the daemon logs on failure.
#
# Usage: sudo tests/slurm/setup.sh          (SLURM_SETUP_TIMEOUT=60 seconds to wait)
set -euo pipefail

TIMEOUT=${SLURM_SETUP_TIMEOUT:-60}
CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
NODE=$(hostname -s)

say() { echo "[slurm-setup] $*"; }
die() {
    echo "[slurm-setup] ERROR: $*" >&2
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        if [[ -s $f ]]; then
            echo "----- last lines of $f -----" >&2
            tail -n 25 "$f" >&2
        fi
    done
    exit 1
}
alive() {  # is the daemon of this pid file running (and not a recycled pid)?
    local pid
    [[ -s $1 ]] || return 1
    pid=$(cat "$1")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]
}
stop() {  # stop a daemon that this script started, by its pid file
    local pidfile=$1 pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    say "stopping pid $pid ($pidfile)"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

[[ $(id -u) -eq 0 ]] || die "run as root (this sets up system daemons)"

# ------------------------------------------------------------------ 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm munge with apt-get (non-interactive) ..."
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting the daemons (no slurm.conf yet,
    # and this script starts them itself): the usual policy-rc.d, if there is none.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    start=$SECONDS
    apt_install() { apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
    if ! apt_install; then
        say "apt-get install failed; running apt-get update and trying again"
        apt-get update -qq >/dev/null
        apt_install || die "apt-get install -y slurm-wlm munge failed"
    fi
    say "installed in $((SECONDS - start)) s"
    if trap -p EXIT | grep -q policy-rc.d; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
for b in slurmctld slurmd sbatch sinfo scontrol munged munge unmunge; do
    command -v "$b" >/dev/null || die "$b is missing after installing slurm-wlm and munge"
done

# ------------------------------------------------------------------ 2. munge
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! alive "$MUNGE_PID" || ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    stop "$MUNGE_PID"
    say "starting munged"
    runuser -u munge -- munged --pid-file="$MUNGE_PID" \
        || die "munged did not start"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi
munge -n | unmunge >/dev/null || die "munge does not work (munge -n | unmunge)"

# ------------------------------------------------------------------ 3. configuration
CPUS=$(nproc --all)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MB=$((MEM_MB * 95 / 100))  # below the total, so slurmd never drains the node
mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"

new_conf=$(cat <<EOF
# Written by em2fm tests/slurm/setup.sh: a single-node test cluster. Not for production.
ClusterName=em2fmtest
SlurmctldHost=$NODE(127.0.0.1)
# everything runs as root on this throwaway machine
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# no cgroups (containers and VMs without systemd), no accounting
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# reject at sbatch time what can never run here (e.g. more CPUs than the node has)
EnforcePartLimits=ALL
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
# keep finished jobs visible to squeue for an hour (the plugin polls squeue, no sacct here)
MinJobAge=3600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
# slurmd 22.05 always loads a cgroup plugin (nothing above uses it). Without systemd it
# must not ask systemd for a scope on cgroup v2 hosts.
new_cgroup=$(printf '%s\n' "# Written by em2fm tests/slurm/setup.sh" \
    "CgroupPlugin=autodetect" "IgnoreSystemd=yes")

changed=0
if [[ ! -f $CONF_DIR/slurm.conf ]] || [[ $(cat "$CONF_DIR/slurm.conf") != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$CONF_DIR/slurm.conf"
    changed=1
fi
if [[ ! -f $CONF_DIR/cgroup.conf ]] || [[ $(cat "$CONF_DIR/cgroup.conf") != "$new_cgroup" ]]; then
    printf '%s\n' "$new_cgroup" >"$CONF_DIR/cgroup.conf"
    changed=1
fi
if ((changed)); then
    say "wrote $CONF_DIR/slurm.conf (node $NODE: CPUs=$CPUS RealMemory=$REAL_MB)"
    stop "$SLURMD_PID"
    stop "$CTLD_PID"
fi

# ------------------------------------------------------------------ 4. daemons
if ! alive "$CTLD_PID"; then
    say "starting slurmctld"
    slurmctld || die "slurmctld did not start"
fi
for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
if ! alive "$SLURMD_PID"; then
    say "starting slurmd"
    slurmd || die "slurmd did not start"
fi

# ------------------------------------------------------------------ 5. wait for the node
deadline=$((SECONDS + TIMEOUT))
state=""
while ((SECONDS < deadline)); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    case $state in
        idle | mixed | allocated | completing)
            say "node $NODE is $state; partition: $(sinfo -h -o '%P %a %l %D %T' | head -n 1)"
            exit 0 ;;
        down* | drain* | fail*)  # e.g. left down by an earlier run
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
die "node $NODE did not become idle within ${TIMEOUT} s (sinfo state: '${state:-none}'): \
$(sinfo -N -l 2>&1 | tail -n +2)"
