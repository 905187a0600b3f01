#!/usr/bin/env bash
# A real one-node Slurm on this machine, for the tests and CI: munged, slurmctld and
# slurmd with a private config, state and munge socket under $CLUSTERDUCK_SLURM_DIR
# (default /tmp/clusterduck-slurm), so it touches nothing in /etc and nothing else's
# Slurm. Idempotent: `start` does nothing when it already answers.
#
#   tests/slurm/start_slurm.sh start   # prints `export SLURM_CONF=...` on success
#   tests/slurm/start_slurm.sh stop    # stops the daemons, removes the folder
#
# This machine is the controller and every node: $CLUSTERDUCK_SLURM_NODES (default 2)
# slurmd daemons named node1, node2, … (NodeHostname this machine, NodeAddr 127.0.0.1,
# each with its own port and spool), all in partition `debug` (the default), so a job
# can really span several nodes. Everything is reached over loopback.
set -euo pipefail

DIR=${CLUSTERDUCK_SLURM_DIR:-/tmp/clusterduck-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
NODES=${CLUSTERDUCK_SLURM_NODES:-2}

stop() {
    for pidfile in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
        if [ -f "$pidfile" ]; then
            pid=$(cat "$pidfile")
            if kill -0 "$pid" 2>/dev/null; then
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -9 "$pid" 2>/dev/null || true
            fi
        fi
    done
    rm -rf "$DIR"
}

answers() {
    # Every node up (idle, mixed or allocated), not merely the controller.
    [ -f "$CONF" ] && [ "$(SLURM_CONF=$CONF timeout 5 sinfo -h -N -o %T 2>/dev/null \
        | grep -cE 'idle|mix|alloc')" -ge "$NODES" ]
}

start() {
    for bin in munged slurmctld slurmd sbatch; do
        command -v "$bin" >/dev/null || PATH=$PATH:/usr/sbin
        command -v "$bin" >/dev/null || { echo "missing $bin: apt-get install slurmctld slurmd slurm-client munge" >&2; exit 3; }
    done
    if answers; then echo "export SLURM_CONF=$CONF"; return; fi
    stop
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    chmod 700 "$DIR"
    dd if=/dev/urandom of="$DIR/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge.key"
    chown root: "$DIR/munge.key"
    munged --force --key-file="$DIR/munge.key" --socket="$DIR/munge.sock" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge.seed"
    cat > "$CONF" <<CONFEOF
ClusterName=clusterduck-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge.sock
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
CONFEOF
    for i in $(seq "$NODES"); do
        echo "NodeName=node$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$(nproc) State=UNKNOWN" >> "$CONF"
        mkdir -p "$DIR/spool/node$i"
    done
    export SLURM_CONF=$CONF
    slurmctld -f "$CONF"
    for i in $(seq "$NODES"); do slurmd -f "$CONF" -N "node$i"; done
    for _ in $(seq 150); do
        if answers; then echo "export SLURM_CONF=$CONF"; return; fi
        sleep 0.2
    done
    echo "slurm did not come up; logs in $DIR/log:" >&2
    tail -n 20 "$DIR"/log/*.log >&2 || true
    exit 1
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
