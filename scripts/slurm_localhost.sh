#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for tests/test_slurm.py (and by hand):
#
#   scripts/slurm_localhost.sh start DIR   # write DIR/slurm.conf, start munged, slurmctld, slurmd; wait for idle
#   export SLURM_CONF=DIR/slurm.conf        # then sbatch, squeue, sinfo, scancel use that cluster
#   scripts/slurm_localhost.sh stop DIR    # cancel its jobs, stop the three daemons (by the pids in DIR)
#   scripts/slurm_localhost.sh install     # CI: apt-get install slurm-wlm munge if root, apt and not installed
#
# Needs root (slurmd runs jobs as their submitting user) and the Debian packages slurm-wlm and munge
# (`apt-get install -y slurm-wlm munge`). Everything lives under DIR: its own munge key and socket, state
# and spool folders, logs and pid files, free TCP ports; nothing in /etc is read or changed, so a machine's
# own munge or SLURM keeps running untouched. One node named after this host with its CPUs and about 90%
# of its memory, no GPUs, one partition `debug`; select/cons_tres (CR_Core), proctrack/linuxproc,
# task/none (no cgroups), no accounting (sacct answers with an error: submitit then reads job results
# from their files). Exit status 1 with the daemons' log tails when the node is not idle within 60 s.
set -euo pipefail

action=${1:-}
dir=${2:-}
if [[ -z $action || ( -z $dir && $action != install ) ]]; then
  echo "usage: $0 start|stop DIR, or $0 install" >&2
  exit 2
fi

stop() {
  local name pid
  # cancel this cluster's jobs first: slurmstepd and the job's processes outlive a stopped slurmd
  if [[ -f $dir/slurmctld.pid ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF=$dir/slurm.conf scancel --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -z $(SLURM_CONF=$dir/slurm.conf squeue -h -t running,completing 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  for name in slurmd slurmctld munged; do
    [[ -f $dir/$name.pid ]] || continue
    pid=$(cat "$dir/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
  done
}

if [[ $action == install ]]; then
  # CI: apt-get install slurm-wlm munge, quietly, when root with apt and slurmctld is missing (about 30 s);
  # a failure only warns: tests/test_slurm.py is then skipped
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null 2>&1 \
      || echo "$0: apt-get install slurm-wlm munge failed: tests/test_slurm.py will be skipped" >&2
  fi
  exit 0
fi

if [[ $action == stop ]]; then
  stop
  exit 0
fi
[[ $action == start ]] || { echo "unknown action $action (start or stop)" >&2; exit 2; }

for tool in munged mungekey slurmctld slurmd sinfo sbatch; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y slurm-wlm munge" >&2; exit 3; }
done
[[ $(id -u) == 0 ]] || { echo "slurmd must run as root" >&2; exit 3; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
chmod 700 "$dir"
mkdir -p "$dir/state" "$dir/spool"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

# munge: a key of our own, our own socket; --force accepts a key folder inside a world-writable /tmp
rm -f "$dir/munge.key"
mungekey --create --keyfile="$dir/munge.key" --bits=1024 2>/dev/null \
  || dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
chmod 600 "$dir/munge.key"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.sock" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"

cat > "$dir/slurm.conf" <<EOF
# written by scripts/slurm_localhost.sh
ClusterName=rmseglocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MinJobAge=30
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
: > "$dir/plugstack.conf"
export SLURM_CONF=$dir/slurm.conf

slurmctld -c
slurmd -N "$host"

for _ in $(seq 120); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
  if [[ $state == idle ]]; then
    echo "SLURM_CONF=$dir/slurm.conf"
    exit 0
  fi
  sleep 0.5
done
echo "node $host not idle after 60 s (state: ${state:-none})" >&2
for log in munged slurmctld slurmd; do
  echo "--- $dir/$log.log" >&2
  tail -n 20 "$dir/$log.log" >&2 || true
done
stop
exit 1
