#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the tests (tests/integration/test_slurm.py)
# and for trying the Slurm launch commands of docs/clusters.md. Runs as root, without cgroups
# (proctrack/linuxproc, task/none), one node with this machine's CPUs, the controller and the
# node daemon on unprivileged ports of 127.0.0.1, every file under DIR.
#
#   bash scripts/slurm_localhost.sh install     # apt: slurm-wlm and munge (CI does this)
#   bash scripts/slurm_localhost.sh start DIR   # writes DIR/slurm.conf, starts the daemons
#   SLURM_CONF=DIR/slurm.conf srun -N1 -n2 --overcommit hostname
#   bash scripts/slurm_localhost.sh stop DIR    # stops them (munged too, if started here)
set -euo pipefail
CTLD_PORT=${SLURMCTLD_PORT:-16817}
SLURMD_PORT=${SLURMD_PORT:-16818}

die() { echo "slurm_localhost: $*" >&2; exit 1; }

install() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
}

write_conf() {
  local dir=$1 node
  node=$(hostname -s)
  cat >"$dir/slurm.conf" <<CONF
ClusterName=fcn
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
}

start() {
  local dir=${1:?usage: start DIR}
  command -v slurmctld >/dev/null || die "slurmctld not found: run '$0 install' first"
  mkdir -p "$dir/state" "$dir/spool"
  dir=$(cd "$dir" && pwd)
  write_conf "$dir"
  if ! munge -n >/dev/null 2>&1; then  # no munged answering: start one
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then runuser -u munge -- munged; else munged --force; fi
    touch "$dir/munged.started"
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n >/dev/null 2>&1 || die "munged did not start"
  fi
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -f "$SLURM_CONF" -i || die "slurmctld did not start: $(tail -n 3 "$dir/slurmctld.log")"
  slurmd -f "$SLURM_CONF" || die "slurmd did not start: $(tail -n 3 "$dir/slurmd.log")"
  for _ in $(seq 100); do  # until the node takes jobs
    sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && { echo "$SLURM_CONF"; return 0; }
    sleep 0.2
  done
  die "the node did not come up: $(sinfo -h -o '%t %E' 2>&1 | head -1); $(tail -n 3 "$dir/slurmd.log")"
}

stop() {
  local dir=${1:?usage: stop DIR}
  # Jobs still running (a test that failed half-way) end first: no training outlives the cluster.
  if SLURM_CONF="$dir/slurm.conf" squeue -h -o %i 2>/dev/null | grep -q .; then
    SLURM_CONF="$dir/slurm.conf" scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 50); do
      SLURM_CONF="$dir/slurm.conf" squeue -h -o %i 2>/dev/null | grep -q . || break
      sleep 0.2
    done
  fi
  for name in slurmd slurmctld; do
    [ -f "$dir/$name.pid" ] && kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
  done
  if [ -f "$dir/munged.started" ]; then
    pkill -x munged 2>/dev/null || true
    rm -f "$dir/munged.started"
  fi
  for _ in $(seq 50); do
    pgrep -f "slurm(ctl)?d -f $dir/slurm.conf" >/dev/null || return 0
    sleep 0.1
  done
  pkill -9 -f "slurm(ctl)?d -f $dir/slurm.conf" || true
}

case ${1:-} in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
