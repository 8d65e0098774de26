#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, without systemd, for trying profiles/slurm
# and for the test that runs workflow jobs through it (tests/test_slurm.py).
#
#   .ci/slurm-cluster.sh start    # install slurm-wlm + munge if missing, start munged,
#                                 # slurmctld, slurmd; wait until the node is idle
#   .ci/slurm-cluster.sh status   # exit 0 when the cluster answers and the node is usable
#   .ci/slurm-cluster.sh env      # the line to eval before using sbatch/squeue/snakemake
#   .ci/slurm-cluster.sh stop     # cancel its jobs, stop the daemons it started
#
# Everything lives in $SOI_SLURM_DIR (default /tmp/soi-slurm): slurm.conf, gres.conf,
# a private munge key and socket, state, logs and the daemons' pid files; the daemons
# listen on their own ports, so a munge on the machine is left alone. The one file
# outside: /etc/slurm/slurm.conf, a symlink to $SOI_SLURM_DIR/slurm.conf, because the
# executor plugin's job step drops SLURM_CONF before its nested `srun`, which then reads
# the default path. An existing /etc/slurm/slurm.conf (a real cluster) is never touched:
# `start` then refuses (exit 3). `start` is idempotent (a running cluster is reused),
# `stop` ends only the processes whose pid files `start` wrote and removes only its link.
#
# The cluster: one node (this machine) with partitions `cpu` (default) and `gpu`, a GRES
# `gpu` backed by /dev/null so jobs asking for `gpu: 1` schedule, no accounting (sacct
# fails: profiles/slurm says `slurm-status-command: squeue`). Node CPUs and memory are
# declared (SlurmdParameters=config_overrides) at least 4 CPUs / 64 GB so the profile's
# requests fit on a small machine; jobs are not confined (task/none, no cgroups).
set -euo pipefail

DIR=${SOI_SLURM_DIR:-/tmp/soi-slurm}
CTLD_PORT=${SOI_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${SOI_SLURM_SLURMD_PORT:-16818}
NODE=$(hostname -s)
CONF=$DIR/slurm.conf
ETC_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$CONF

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=""; fi
fi

log() { echo "slurm-cluster: $*" >&2; }

running() {  # running <pid> <program name>: that process runs that program (no zombie)
    [ -r "/proc/$1/stat" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] \
        && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

alive() {  # alive <pidfile> <program name>: the pid file's process runs that program
    [ -s "$1" ] && running "$(cat "$1")" "$2"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
        log "slurm-wlm/munge missing and neither root nor passwordless sudo: cannot install"
        exit 3
    fi
    command -v apt-get >/dev/null || { log "slurm-wlm/munge missing and no apt-get"; exit 3; }
    log "installing slurm-wlm and munge (apt-get)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$DIR"/{log,state,spool,munge}
    chmod 700 "$DIR/munge"
    if [ ! -s "$DIR/munge/munge.key" ]; then
        (umask 077; head -c 1024 /dev/urandom > "$DIR/munge/munge.key")
    fi
    chmod 400 "$DIR/munge/munge.key"
    local cpus mem
    cpus=$(nproc); [ "$cpus" -ge 4 ] || cpus=4
    mem=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo); [ "$mem" -ge 65536 ] || mem=65536
    local user; user=$(id -un)
    cat > "$CONF" <<EOF
# Written by .ci/slurm-cluster.sh: a one-node cluster without accounting.
ClusterName=soi
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
PlugStackConfig=$DIR/plugstack.conf
# jobs stay visible to squeue for an hour after they end (the status command without
# accounting; the executor plugin wants MinJobAge >= 3 x its first status check, and
# tests/test_slurm.py reads every job's partition and state from squeue at the end)
MinJobAge=3600
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    echo "NodeName=$NODE Name=gpu File=/dev/null" > "$DIR/gres.conf"
    : > "$DIR/plugstack.conf"   # no SPANK plugins (an empty one keeps /etc/slurm's out)
}

link_config() {  # /etc/slurm/slurm.conf -> ours, unless a real configuration is there
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then return 0; fi
    if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
        log "$ETC_CONF exists (a configured SLURM): not touching it; use that cluster"
        exit 3
    fi
    $SUDO mkdir -p "$(dirname "$ETC_CONF")"
    $SUDO ln -s "$CONF" "$ETC_CONF"
    touch "$DIR/linked-etc-conf"
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

cluster_ok() {
    alive "$DIR/munge/munged.pid" munged && alive "$DIR/slurmctld.pid" slurmctld \
        && alive "$DIR/slurmd.pid" slurmd || return 1
    case "$(node_state)" in
        idle*|mix*|alloc*|completing*) return 0 ;;
        *) return 1 ;;
    esac
}

start() {
    if [ -s "$CONF" ] && cluster_ok; then
        log "already running ($DIR)"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    install_packages
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
        log "slurmd must run as root (or with passwordless sudo)"; exit 3
    fi
    write_config
    link_config
    if ! alive "$DIR/munge/munged.pid" munged; then
        log "starting munged"
        $SUDO munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
            --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/munge/munged.seed"
    fi
    if ! alive "$DIR/slurmctld.pid" slurmctld; then
        log "starting slurmctld"
        $SUDO env SLURM_CONF="$CONF" slurmctld -c -f "$CONF"   # -c: fresh state (no old jobs)
    fi
    if ! alive "$DIR/slurmd.pid" slurmd; then
        log "starting slurmd"
        $SUDO env SLURM_CONF="$CONF" slurmd -f "$CONF" -N "$NODE"
    fi
    local i state
    for i in $(seq 1 90); do
        state=$(node_state || true)
        case "$state" in
            idle*|mix*|alloc*) break ;;
            down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    if ! cluster_ok; then
        log "the node did not become usable (state: '${state:-none}'); logs in $DIR/log"
        tail -n 20 "$DIR"/log/*.log >&2 || true
        exit 1
    fi
    log "up: node $NODE ($(sinfo -h -o '%P %T' | tr '\n' ' '))"
    echo "export SLURM_CONF=$CONF"
}

stop() {
    if [ -s "$CONF" ] && alive "$DIR/slurmctld.pid" slurmctld; then
        scancel --user "$(id -un)" 2>/dev/null || true   # this cluster's jobs only
    fi
    local f name pid
    for f in slurmd:"$DIR/slurmd.pid" slurmctld:"$DIR/slurmctld.pid" munged:"$DIR/munge/munged.pid"; do
        name=${f%%:*}; f=${f#*:}
        if alive "$f" "$name"; then
            pid=$(cat "$f")
            log "stopping $name ($pid)"
            $SUDO kill "$pid"
            for _ in $(seq 1 20); do running "$pid" "$name" || break; sleep 0.5; done
            if running "$pid" "$name"; then $SUDO kill -9 "$pid"; fi
        fi
        rm -f "$f"
    done
    if [ -e "$DIR/linked-etc-conf" ] && [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        $SUDO rm -f "$ETC_CONF"
    fi
    rm -f "$DIR/linked-etc-conf"
    return 0
}

status() {
    if [ -s "$CONF" ] && cluster_ok; then
        echo "running: $DIR"; sinfo; return 0
    fi
    echo "not running"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
