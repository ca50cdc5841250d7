#!/usr/bin/env bash
# A throw-away one-node Slurm cluster on 127.0.0.1, for testing code that submits
# jobs with sbatch (Debian 12, run as root, no systemd needed).
#
#   out=$(bash .ci/slurm-cluster.sh start STATE_DIR)   # fails (set -e) if start fails;
#   eval "$out"                                        # `eval "$(...)"` would not
#   sbatch ... ; squeue ; sinfo ; scancel              # any Slurm client command
#   bash .ci/slurm-cluster.sh stop STATE_DIR           # safe to call twice
#
# Needs: apt-get install --no-install-recommends slurmctld slurmd slurm-client munge
#
# `start` writes STATE_DIR/slurm.conf (plus an empty plugstack.conf, state, spool and
# log folders), starts munged if none answers on /run/munge/munge.socket.2 (creating
# /etc/munge/munge.key, munge:munge 0600, if it is missing), then slurmctld and
# slurmd, waits until the node is idle (SLURM_START_TIMEOUT, default 30 s; it takes
# well under 1 s) and prints one line, `export SLURM_CONF=STATE_DIR/slurm.conf`, on
# stdout; everything else goes to stderr. On failure it prints the daemons' log tails
# to stderr, stops what it started and exits 1. `stop` cancels the cluster's jobs,
# kills by the PIDs recorded in STATE_DIR only the daemons `start` started (never by
# name; a munged that was already running is left alone), waits for them, and ends
# any job process left behind (found by this cluster's SLURM_CONF in its environment).
#
# Knobs (environment): SLURMCTLD_PORT (6817), SLURMD_PORT (6818), SLURM_CPUS (nproc;
# more than the machine has drains the node), SLURM_REAL_MEMORY (90% of MemTotal, MiB),
# SLURM_START_TIMEOUT (30), SLURM_SCHEDULER_PARAMETERS (batch_sched_delay=0; set it
# empty for Slurm's defaults, which start queued jobs only every ~3 s).
#
# Facts it relies on (checked with Slurm 22.05.8, munge 0.5.15):
# - Every Slurm daemon and client command reads the file named by SLURM_CONF, so
#   /etc/slurm is neither read nor changed (PlugStackConfig points into STATE_DIR so
#   the system's plugstack.conf is not read either).
# - munged must run as the `munge` user, and refuses a socket/log directory that is
#   group- or world-writable: /run/munge is made 0755 munge:munge, and its log, pid
#   and seed files go to STATE_DIR/munge (0700 munge:munge; STATE_DIR is made 0755
#   so that the munge user can reach it).
# - SlurmUser=root with ProctrackType=proctrack/linuxproc, TaskPlugin=task/none and
#   no accounting needs no cgroups and no database. SelectTypeParameters=CR_Core
#   (memory not consumable): with the default CR_Core_Memory and no DefMemPerCPU each
#   job would take the whole node's memory and jobs would run one at a time.
# - MinJobAge=5 keeps finished jobs in slurmctld for 5 s (`sbatch --wait` polls
#   every 2 s, so it still sees the exit code). The first job after start is
#   scheduled ~3 s after slurmctld starts; then jobs start within ~1 s.
# - The daemons fork into the background themselves; their stdin/stdout/stderr are
#   redirected, so the `$(... start ...)` capture does not hang on the pipe.
# - Dependencies (same on real clusters): an afterok job whose array had a failed task
#   stays PENDING with Reason=DependencyNeverSatisfied forever unless submitted with
#   --kill-on-invalid-dep=yes; then Slurm cancels it once every task has ended, and
#   `sbatch --wait` on it exits 0 (ExitCode=0:0, JobState=CANCELLED), so the caller
#   must check that the job really ran. An afterok on a job id slurmctld no longer
#   knows (purged after MinJobAge, 300 s by default) counts as satisfied.
#
# How a real cluster differs: there the admins run munged, slurmctld and slurmd (and
# usually accounting, cgroups, several partitions and memory limits); a user only
# needs the client commands (sbatch, squeue, scancel) and the site's slurm.conf, and
# nothing here is run. Jobs run as the submitting user, not root.
set -euo pipefail

usage() { echo "usage: $0 start|stop STATE_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
state=$(realpath -m "$2")
conf=$state/slurm.conf
munge_socket=/run/munge/munge.socket.2
munge_key=/etc/munge/munge.key
host=$(hostname -s)
export SLURM_CONF=$conf
export PATH=$PATH:/usr/sbin:/sbin

log() { echo "slurm-cluster: $*" >&2; }

# Is PID alive (a zombie counts as gone) and is its command NAME?
alive() {
  local pid=$1 name=$2 stat
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  # /proc/PID/stat: "PID (comm) STATE ..."; comm is at most 15 characters.
  [[ $stat =~ ^[0-9]+\ \((.*)\)\ ([A-Za-z]) ]] || return 1
  [ "${BASH_REMATCH[2]}" != Z ] && [ "${BASH_REMATCH[2]}" != X ] || return 1
  [ "${BASH_REMATCH[1]}" = "${name:0:15}" ]
}

read_pid() { [ -s "$1" ] && tr -dc 0-9 <"$1" || true; }

munge_answers() { munge -n -S "$munge_socket" 2>/dev/null | unmunge -S "$munge_socket" >/dev/null 2>&1; }

# Stop the daemon whose PID is in FILE (if it is alive and named NAME); wait for it.
stop_daemon() {
  local file=$1 name=$2 pid i
  pid=$(read_pid "$file")
  if alive "$pid" "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do alive "$pid" "$name" || break; sleep 0.1; done
    if alive "$pid" "$name"; then
      log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" "$name" || break; sleep 0.1; done
    fi
    if alive "$pid" "$name"; then log "$name (pid $pid) is still running"; return 1; fi
  fi
  rm -f "$file"
}

do_stop() {
  local rc=0 i jobs
  # Cancel the jobs first, so that no slurmstepd or job process outlives slurmd.
  if alive "$(read_pid "$state/slurmctld.pid")" slurmctld && [ -f "$conf" ]; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      log "cancelling jobs: $(echo $jobs)"
      timeout 10 scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do
        [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null | head -c1)" ] &&
          [ -z "$(find "$state/spool" -maxdepth 1 -type s 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  stop_daemon "$state/slurmd.pid" slurmd || rc=1
  stop_daemon "$state/slurmctld.pid" slurmctld || rc=1
  stop_daemon "$state/munged.pid" munged || rc=1
  kill_leftover_steps || rc=1
  return $rc
}

# If slurmctld was gone, jobs could not be cancelled and their slurmstepd and job
# processes outlive slurmd. They carry this cluster's SLURM_CONF in their environment
# (slurmstepd from slurmd, job processes also SLURM_JOB_ID): end those, and only those.
kill_leftover_steps() {
  local p pids=() sig i
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" != $$ ] && [ "$p" != "$PPID" ] || continue
    grep -qszxF "SLURM_CONF=$conf" "/proc/$p/environ" || continue
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = slurmstepd ] ||
      grep -qsz '^SLURM_JOB_ID=' "/proc/$p/environ"; then
      pids+=("$p")
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  log "ending leftover job processes: ${pids[*]}"
  for sig in TERM KILL; do
    kill -"$sig" "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      local left=()
      for p in "${pids[@]}"; do
        grep -qs '^State:[[:space:]]*[^ZX]' "/proc/$p/status" && left+=("$p")
      done
      [ ${#left[@]} -gt 0 ] || return 0
      sleep 0.1
    done
  done
  log "still running: ${left[*]}"
  return 1
}

dump_logs() {
  local f
  for f in "$state"/log/*.log "$state"/log/*.stderr "$state"/munge/munged.log; do
    [ -s "$f" ] || continue
    echo "----- tail of $f" >&2
    tail -n 40 "$f" >&2
  done
  if [ -f "$conf" ]; then
    echo "----- sinfo -R" >&2
    timeout 10 sinfo -R 2>&1 | tail -n 20 >&2 || true
  fi
}

fail() {
  log "start failed: $*"
  dump_logs
  do_stop || true
  exit 1
}

# Wait (bounded) for the pid file FILE written by daemon NAME; fail if it dies.
wait_pid_file() {
  local file=$1 name=$2 i
  for ((i = 0; i < 100; i++)); do
    alive "$(read_pid "$file")" "$name" && return 0
    grep -Eqs 'fatal:|Address already in use' "$state/log/$name.log" "$state/log/$name.stderr" && fail "$name failed"
    sleep 0.1
  done
  fail "$name did not start (no live PID in $file after 10 s)"
}

start_munged() {
  if munge_answers; then
    log "munged already answers on $munge_socket; using it"
    return
  fi
  if [ ! -s "$munge_key" ]; then
    log "creating $munge_key"
    install -d -m 0700 -o munge -g munge "$(dirname "$munge_key")"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$munge_key" --force
    else
      dd if=/dev/urandom of="$munge_key" bs=1 count=1024 status=none
    fi
    chown munge:munge "$munge_key"
    chmod 0600 "$munge_key"
  fi
  install -d -m 0755 -o munge -g munge /run/munge
  chmod 0755 /run/munge # munged refuses a group/world-writable socket directory
  install -d -m 0700 -o munge -g munge "$state/munge"
  rm -f "$state/munge/munged.pid"
  log "starting munged"
  setpriv --reuid=munge --regid=munge --init-groups \
    /usr/sbin/munged --socket="$munge_socket" --key-file="$munge_key" \
    --log-file="$state/munge/munged.log" --pid-file="$state/munge/munged.pid" \
    --seed-file="$state/munge/munged.seed" \
    </dev/null >>"$state/log/munged.stderr" 2>&1 || fail "munged exited with $?"
  local i pid=
  for ((i = 0; i < 100; i++)); do
    pid=$(read_pid "$state/munge/munged.pid")
    [ -n "$pid" ] && munge_answers && break
    sleep 0.1
  done
  alive "$pid" munged || fail "munged did not start"
  echo "$pid" >"$state/munged.pid" # our record: stop kills only a munged we started
  munge_answers || fail "munged (pid $pid) does not answer on $munge_socket"
}

write_conf() {
  local cpus=${SLURM_CPUS:-$(nproc)}
  local mem=${SLURM_REAL_MEMORY:-$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)}
  local sched_params=${SLURM_SCHEDULER_PARAMETERS-batch_sched_delay=0}
  : >"$state/plugstack.conf"
  cat >"$conf" <<EOF
# Written by .ci/slurm-cluster.sh: a one-node test cluster on 127.0.0.1.
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
PlugStackConfig=$state/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
${sched_params:+SchedulerParameters=$sched_params}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=5
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

do_start() {
  local t0 i st ctld_pid slurmd_pid
  t0=$(date +%s.%N)
  if alive "$(read_pid "$state/slurmctld.pid")" slurmctld ||
    alive "$(read_pid "$state/slurmd.pid")" slurmd; then
    log "a cluster is already running from $state; run '$0 stop $state' first"
    exit 1
  fi
  for c in munge unmunge munged slurmctld slurmd sinfo setpriv; do
    command -v "$c" >/dev/null ||
      { log "'$c' not found: apt-get install --no-install-recommends slurmctld slurmd slurm-client munge"; exit 1; }
  done
  mkdir -p "$state"
  chmod 0755 "$state" # munged (user munge) writes its files in $state/munge
  mkdir -p "$state/ctld" "$state/spool" "$state/log"
  start_munged
  write_conf
  log "starting slurmctld"
  rm -f "$state/slurmctld.pid" "$state/slurmd.pid"
  slurmctld -f "$conf" </dev/null >>"$state/log/slurmctld.stderr" 2>&1 ||
    fail "slurmctld exited with $?"
  wait_pid_file "$state/slurmctld.pid" slurmctld
  log "starting slurmd"
  slurmd -f "$conf" </dev/null >>"$state/log/slurmd.stderr" 2>&1 || fail "slurmd exited with $?"
  wait_pid_file "$state/slurmd.pid" slurmd
  ctld_pid=$(read_pid "$state/slurmctld.pid")
  slurmd_pid=$(read_pid "$state/slurmd.pid")
  local timeout=${SLURM_START_TIMEOUT:-30}
  for ((i = 0; i < timeout * 5; i++)); do
    alive "$ctld_pid" slurmctld || fail "slurmctld (pid $ctld_pid) died"
    alive "$slurmd_pid" slurmd || fail "slurmd (pid $slurmd_pid) died"
    st=$(timeout 5 sinfo -h -N -n "$host" -o %T 2>/dev/null || true)
    if [ "$st" = idle ]; then
      log "node $host idle after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
      echo "export SLURM_CONF=$conf"
      return 0
    fi
    sleep 0.2
  done
  fail "node $host not idle after $timeout s (state: '${st:-?}')"
}

case $cmd in
  start) do_start ;;
  stop)
    [ -d "$state" ] || exit 0
    do_stop
    ;;
  *) usage ;;
esac
