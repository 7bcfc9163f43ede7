#!/usr/bin/env bash
# Start a one-node Slurm "cluster" on this machine for the Slurm executor's tests (idempotent).
#
# Installs nothing: `scripts/setup.sh --tests` installs slurmctld, slurmd, slurm-client, munge.
# Writes slurm.conf + gres.conf into $REPRO_SLURM_DIR (default /tmp/repro-slurm), makes two fake
# GPU device nodes (character devices, so Slurm's gres plugin accepts them and hands jobs
# CUDA_VISIBLE_DEVICES=0/1), starts munged, slurmctld and slurmd detached, waits until a real
# `srun` succeeds, and prints the line to eval:
#
#   eval "$(scripts/slurm-up.sh)"      # exports SLURM_CONF
#
# Needs root (as in CI). Works without systemd and without cgroups. Stop with slurm-down.sh.
# Tunables: REPRO_SLURM_CPUS (CPUs declared on the node, default 16: more than the real cores
# so that several small jobs run at once), REPRO_SLURM_GPUS (default 2).
set -euo pipefail

dir=$(realpath -m "${REPRO_SLURM_DIR:-/tmp/repro-slurm}")
cpus=${REPRO_SLURM_CPUS:-16}
gpus=${REPRO_SLURM_GPUS:-2}
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"

log() { echo "slurm-up: $*" >&2; }

for tool in munged slurmctld slurmd srun scontrol; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    log "'$tool' not found; install Slurm with: scripts/setup.sh --tests"
    log "(or: apt-get install -y slurmctld slurmd slurm-client munge)"
    exit 1
  fi
done
PATH="$PATH:/usr/sbin:/sbin"

# Alive, and its working directory still exists: a daemon started from a checkout that was
# deleted since makes every job step print "Unable to get current working directory".
alive() {
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null &&
    ! readlink "/proc/$(cat "$1")/cwd" 2>/dev/null | grep -q ' (deleted)$'
}

ready() {
  # A real job is the only trustworthy readiness test (sinfo can say idle too early).
  timeout 30 srun -N1 -t1 --immediate=20 true >/dev/null 2>&1
}

# Already up? Then there is nothing to do.
if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid" && [ -f "$conf" ] && ready; then
  log "already running (config $conf)"
  echo "export SLURM_CONF=$conf"
  exit 0
fi

mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/dev"

# Stop leftovers of an earlier, half-dead start (only the daemons this script started).
for d in slurmd slurmctld; do
  pid=$(cat "$dir/$d.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$d" ]; then kill "$pid" 2>/dev/null || true; fi
done
sleep 0.5

# munge: the authentication daemon every Slurm command needs.
mkdir -p /run/munge
chown munge:munge /run/munge 2>/dev/null || true
chmod 0755 /run/munge
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
  fi
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged
  else
    munged --force
  fi
  for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    log "munged did not come up (see /var/log/munge/munged.log)"; exit 1
  fi
fi

# Fake GPUs: gres needs a device file per GPU; count-only GPUs are dropped and drain the node.
gres_files=""
for i in $(seq 0 $((gpus - 1))); do
  [ -c "$dir/dev/gpu$i" ] || { rm -f "$dir/dev/gpu$i"; mknod "$dir/dev/gpu$i" c 1 3; }
done
if [ "$gpus" -gt 0 ]; then gres_files="$dir/dev/gpu[0-$((gpus - 1))]"; fi

cat >"$conf" <<EOF
# Written by scripts/slurm-up.sh: a one-node test cluster on localhost.
ClusterName=repro
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups, no systemd: track processes by /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Without slurmdbd: finished jobs go to a text file, readable with 'sacct -c'.
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=256
# Declare more CPUs than the machine has, so small jobs run side by side.
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0
KillWait=5
OverTimeLimit=0
# Keep finished jobs visible to scontrol/squeue for 10 minutes.
MinJobAge=600
GresTypes=gpu
NodeName=node1 NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((cpus * 1024)) Gres=gpu:$gpus State=UNKNOWN
PartitionName=debug Nodes=node1 Default=YES MaxTime=INFINITE State=UP
PartitionName=other Nodes=node1 Default=NO MaxTime=INFINITE State=UP
EOF
if [ "$gpus" -eq 0 ]; then
  sed -i -e 's/^GresTypes=gpu$//' -e 's/ Gres=gpu:0//' "$conf"
fi

cat >"$dir/gres.conf" <<EOF
AutoDetect=off
EOF
if [ -n "$gres_files" ]; then
  echo "NodeName=node1 Name=gpu File=$gres_files" >>"$dir/gres.conf"
fi

# -D keeps each daemon in the foreground so its pid is ours; setsid detaches it from this shell;
# started from / so that their working directory (inherited by job steps) never disappears.
# -c: start slurmctld clean (no jobs from an earlier run).
(cd / && exec setsid slurmctld -D -c -f "$conf" </dev/null >"$dir/log/slurmctld.out" 2>&1) &
echo $! >"$dir/slurmctld.pid"
(cd / && exec setsid slurmd -D -N node1 -f "$conf" </dev/null >"$dir/log/slurmd.out" 2>&1) &
echo $! >"$dir/slurmd.pid"

for _ in $(seq 60); do
  if ready; then
    log "up: node1 with $cpus CPUs and $gpus GPUs (logs in $dir/log)"
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  for d in slurmctld slurmd; do
    if ! alive "$dir/$d.pid"; then
      log "$d exited; last lines of its log:"
      tail -n 20 "$dir/log/$d.log" "$dir/log/$d.out" >&2 2>/dev/null || true
      exit 1
    fi
  done
  sleep 0.5
done
log "Slurm did not accept a job within 30 s; see $dir/log/"
exit 1
