#!/usr/bin/env bash
# Install and start a one-node SLURM and/or Sun Grid Engine test cluster on
# this machine (Debian 12, run as root, no systemd needed).
#
#   bash scripts/test_cluster.sh [slurm|sge|all]      (default: all)
#
# Idempotent: on a machine where the daemons already run and work, it only
# (re)checks the configuration and runs a smoke test.  Exits non-zero with a
# message starting with "test_cluster: ERROR" if a scheduler cannot be started.
# Records each daemon it starts in /var/lib/poolparty-test-cluster: the tests
# that stop and restart daemons touch only those (tests/cluster_gate.py).
# See docs/test_cluster.rst for what is configured and how to stop it.
set -euo pipefail

WHAT="${1:-all}"
case "$WHAT" in
    slurm|sge|all) ;;
    -h|--help)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        exit 0 ;;
    *)
        echo "usage: $0 [slurm|sge|all]" >&2
        exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
export DEBCONF_NONINTERACTIVE_SEEN=true
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
# Never let a stray SLURM_CONF / SGE_* in the caller's environment point the
# commands below at another cluster.
unset SLURM_CONF SGE_ROOT SGE_CELL SGE_ARCH SGE_QMASTER_PORT SGE_EXECD_PORT || true

SLURM_BASE=/var/spool/slurm-poolparty
SLURM_CONF_FILE=/etc/slurm/slurm.conf
SGE_ROOT_DIR=/var/lib/gridengine
SGE_COMMON="$SGE_ROOT_DIR/default/common"
SGE_QUEUE=all.q
SGE_SLOTS=8
# One record per daemon this script started: NAME.started with its pid, start time
# and pid file.  tests/cluster_gate.py lets a test stop or restart a daemon only
# while that very process runs: never a daemon somebody else started.
MARKER_DIR=/var/lib/poolparty-test-cluster

T0=$SECONDS
log()  { printf '[test_cluster %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die()  { printf 'test_cluster: ERROR: %s\n' "$*" >&2; exit 1; }
warn() { printf 'test_cluster: WARNING: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || die "must be run as root (it installs packages and starts daemons)"

TMP="$(mktemp -d /tmp/test_cluster.XXXXXX)"
POLICY_RC_CREATED=0
cleanup() {
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
is_installed() {  # all given packages installed?
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || return 1
    done
}

APT_UPDATED=0
apt_install() {  # apt_install PKG... (only the missing ones are installed)
    local missing=() p
    for p in "$@"; do is_installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    local aptopts=(-y -q -o DPkg::Lock::Timeout=180
                   -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get "${aptopts[@]}" update >"$TMP/apt-update.log" 2>&1 \
            || { tail -20 "$TMP/apt-update.log" >&2; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
    # Daemons must not be started by the packages' maintainer scripts (there
    # is no init system and they are not configured yet): a policy-rc.d that
    # denies everything, only for the duration of the install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    apt-get "${aptopts[@]}" install "${missing[@]}" >"$TMP/apt-install.log" 2>&1 \
        || { tail -40 "$TMP/apt-install.log" >&2; die "apt-get install ${missing[*]} failed"; }
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

pid_alive() {  # pid_alive PIDFILE
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME: TERM the daemon, wait for exit
    local pid i
    pid_alive "$1" || return 0
    pid="$(cat "$1")"
    log "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    sleep 1
}

proc_start_time() {  # proc_start_time PID: field 22 of /proc/PID/stat (ticks since boot)
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"          # the command name, in parentheses, may hold spaces
    # shellcheck disable=SC2086
    set -- $stat                 # field 3 (the state) is $1 now
    echo "${20}"
}

mark_started() {  # mark_started NAME PIDFILE: record the daemon this run started
    local pid start i
    for i in $(seq 1 60); do pid_alive "$2" && break; sleep 0.5; done
    pid_alive "$2" || die "$1 did not write its pid file $2"
    pid="$(cat "$2")"
    start="$(proc_start_time "$pid")" || die "$1 (pid $pid) ended right after it started"
    mkdir -p "$MARKER_DIR"
    chmod 0755 "$MARKER_DIR"
    printf 'pid=%s\nstart_time=%s\npidfile=%s\n' "$pid" "$start" "$2" > "$MARKER_DIR/.$1.$$"
    mv -f "$MARKER_DIR/.$1.$$" "$MARKER_DIR/$1.started"
    log "$1: started by this script (pid $pid), recorded in $MARKER_DIR/$1.started"
}

check_marker() {  # check_marker NAME PIDFILE: for a daemon found running
    # Its record stays only if it is the very process this script started (the
    # tests may replace it and record the new one); a daemon somebody else started
    # gets none, so the tests that stop daemons leave it alone.
    local f="$MARKER_DIR/$1.started" pid start
    pid="$(cat "$2" 2>/dev/null || true)"
    start="$(proc_start_time "$pid" || true)"
    if [ -e "$f" ] && grep -qx "pid=$pid" "$f" && grep -qx "start_time=$start" "$f" \
            && grep -qx "pidfile=$2" "$f"; then
        return 0
    fi
    rm -f "$f"
    warn "$1 (pid $pid) has no record in $MARKER_DIR (started by somebody else, or by a version of this script that kept none): the tests that stop and restart daemons leave it alone"
}

answers_within() {  # answers_within SECONDS CMD...: CMD succeeds within SECONDS
    # A daemon on a busy machine may answer late: it is waited for, not taken for
    # dead and restarted under everybody using it.
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 1
    done
}

ensure_hostname_resolves() {
    local h
    h="$(hostname)"
    if ! getent hosts "$h" >/dev/null 2>&1; then
        log "host name $h does not resolve: adding it to /etc/hosts"
        echo "127.0.1.1 $h" >> /etc/hosts
    fi
}

# --------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------
start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munge: already running"
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "munge: creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    if pgrep -x munged >/dev/null 2>&1; then
        die "munged is running but 'munge -n | unmunge' fails (see /var/log/munge/munged.log)"
    fi
    log "munge: starting munged as user munge"
    # --force: remove a stale socket left behind by an earlier munged
    su -s /bin/sh munge -c '/usr/sbin/munged --force' \
        || die "munged failed to start (see /var/log/munge/munged.log)"
    local i
    for i in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    tail -20 /var/log/munge/munged.log >&2 2>/dev/null || true
    die "munge does not work: 'munge -n | unmunge' fails"
}

write_slurm_conf() {  # sets SLURM_CONF_CHANGED=1 when the file was (re)written
    cat > "$TMP/slurm.conf" <<EOF
# One-node SLURM test cluster for poolparty.
# Written by scripts/test_cluster.sh -- edits will be overwritten.
ClusterName=poolparty
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
# no systemd / cgroups on the test machines
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# memory: without cgroups, jobacct_gather/linux looks every second and kills a job
# over its --mem (OverMemoryKill), as a cluster without cgroups does
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
# preemption: a job of the partition "urgent" requeues one of "debug" that holds the
# CPUs it needs (tests/test_real_faults.py)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
# memory is a resource (--mem is the job's limit, for OverMemoryKill below); a job
# that asks for none gets 1000 MB a CPU, so 8 jobs fit as before
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
# fast scheduling for tests
SchedulerParameters=sched_interval=1,bf_interval=1,batch_sched_delay=0,sched_min_interval=0
MaxArraySize=1001
MinJobAge=2
KillWait=5
InactiveLimit=0
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_BASE/state
SlurmdSpoolDir=$SLURM_BASE/slurmd
SlurmctldPidFile=$SLURM_BASE/run/slurmctld.pid
SlurmdPidFile=$SLURM_BASE/run/slurmd.pid
SlurmctldLogFile=$SLURM_BASE/log/slurmctld.log
SlurmdLogFile=$SLURM_BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost CPUs=8 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=localhost Default=NO MaxTime=INFINITE State=UP PriorityTier=10
EOF
    SLURM_CONF_CHANGED=0
    mkdir -p /etc/slurm
    if ! cmp -s "$TMP/slurm.conf" "$SLURM_CONF_FILE"; then
        if [ -e "$SLURM_CONF_FILE" ] && ! grep -q 'Written by scripts/test_cluster.sh' "$SLURM_CONF_FILE"; then
            local bak
            bak="$SLURM_CONF_FILE.before-test_cluster.$(date +%Y%m%d%H%M%S)"
            warn "replacing existing $SLURM_CONF_FILE (saved as $bak)"
            cp -p "$SLURM_CONF_FILE" "$bak"
        fi
        install -m 0644 "$TMP/slurm.conf" "$SLURM_CONF_FILE"
        SLURM_CONF_CHANGED=1
        log "slurm: wrote $SLURM_CONF_FILE"
    fi
}

slurmctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

slurm_node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -1 || true; }

slurm_fail() {
    echo "---- tail of $SLURM_BASE/log/slurmctld.log" >&2
    tail -15 "$SLURM_BASE/log/slurmctld.log" >&2 2>/dev/null || true
    echo "---- tail of $SLURM_BASE/log/slurmd.log" >&2
    tail -15 "$SLURM_BASE/log/slurmd.log" >&2 2>/dev/null || true
    die "SLURM: $*"
}

# Jobs that a slurmctld this run started restored from its saved state, when no slurmstepd runs
# here are left over from an earlier boot of this one-node cluster: none of
# their processes exist, yet they hold the node's CPUs (a test allocation of
# an earlier run, made with salloc --no-shell, filled the node in one CI run,
# and every real test then waited for CPUs).  They are cancelled.
purge_slurm_leftovers() {
    local jobs
    pgrep -x slurmstepd >/dev/null && return 0
    jobs="$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
    [ -n "${jobs// /}" ] || return 0
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    log "slurm: cancelled job(s) $jobs left in the saved state by an earlier boot (no step of theirs runs)"
    local i
    for i in $(seq 1 60); do
        [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.5
    done
}

setup_slurm() {
    local t=$SECONDS i state
    log "=== SLURM ==="
    apt_install munge slurm-wlm procps
    start_munge
    write_slurm_conf
    mkdir -p "$SLURM_BASE"/{state,slurmd,run,log}
    chmod 0755 "$SLURM_BASE" "$SLURM_BASE"/{state,slurmd,run,log}

    if [ "$SLURM_CONF_CHANGED" = 1 ]; then
        # node CPUs etc. need a full restart, not "scontrol reconfigure"
        stop_pidfile "$SLURM_BASE/run/slurmd.pid" slurmd
        stop_pidfile "$SLURM_BASE/run/slurmctld.pid" slurmctld
    fi
    local started=()
    if pid_alive "$SLURM_BASE/run/slurmctld.pid" && answers_within 60 slurmctld_up; then
        log "slurm: slurmctld already running"
        check_marker slurmctld "$SLURM_BASE/run/slurmctld.pid"
    else
        stop_pidfile "$SLURM_BASE/run/slurmctld.pid" slurmctld
        rm -f "$MARKER_DIR/slurmctld.started"
        log "slurm: starting slurmctld"
        slurmctld || slurm_fail "slurmctld failed to start"
        started+=(slurmctld)
    fi
    if pid_alive "$SLURM_BASE/run/slurmd.pid"; then
        log "slurm: slurmd already running"
        check_marker slurmd "$SLURM_BASE/run/slurmd.pid"
    else
        rm -f "$MARKER_DIR/slurmd.started"
        log "slurm: starting slurmd"
        slurmd -N localhost || slurm_fail "slurmd failed to start"
        started+=(slurmd)
    fi

    log "slurm: waiting for node localhost to be idle"
    state=""
    for i in $(seq 1 120); do
        state="$(slurm_node_state)"
        case "$state" in
            idle|mixed|allocated) break ;;
            *down*|*drain*|*fail*)
                scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
        esac
        pid_alive "$SLURM_BASE/run/slurmctld.pid" || slurm_fail "slurmctld died"
        pid_alive "$SLURM_BASE/run/slurmd.pid" || slurm_fail "slurmd died"
        sleep 0.5
    done
    case "$state" in
        idle|mixed|allocated) log "slurm: node localhost is $state" ;;
        *) slurm_fail "node localhost not idle after 60 s (state: '${state:-unknown}')" ;;
    esac
    for i in "${started[@]}"; do mark_started "$i" "$SLURM_BASE/run/$i.pid"; done
    case " ${started[*]} " in *" slurmctld "*) purge_slurm_leftovers ;; esac

    log "slurm: smoke test (sbatch --wrap true)"
    local jid out seen=""
    jid="$(sbatch --parsable --job-name=pp-smoke --output=/dev/null --wrap 'true')" \
        || slurm_fail "sbatch failed"
    jid="${jid%%;*}"
    # (120 s: on a shared machine other people's jobs may be queued first)
    state="PENDING"
    for i in $(seq 1 240); do
        if out="$(squeue -h -j "$jid" -o %T 2>&1)"; then
            state="$out"            # empty: the job has left squeue
        elif grep -q 'Invalid job id' <<<"$out"; then
            state=""
        fi                          # other errors: transient, ask again
        [ -z "$state" ] && break
        seen="$state"
        sleep 0.5
    done
    if [ -n "$state" ]; then
        scancel "$jid" 2>/dev/null || true
        slurm_fail "smoke-test job $jid still in squeue after 120 s (state $state)"
    fi
    case "$seen" in
        ""|PENDING|CONFIGURING|RUNNING|COMPLETING|COMPLETED) ;;
        *) slurm_fail "smoke-test job $jid ended in state $seen" ;;
    esac
    log "slurm: OK (job $jid ran and left squeue; took $((SECONDS - t)) s)"
}

# --------------------------------------------------------------------------
# Sun Grid Engine
# --------------------------------------------------------------------------
sge_fail() {
    echo "---- tail of /var/spool/gridengine/qmaster/messages" >&2
    tail -15 /var/spool/gridengine/qmaster/messages >&2 2>/dev/null || true
    echo "---- tail of /var/spool/gridengine/execd/$(hostname)/messages" >&2
    tail -15 "/var/spool/gridengine/execd/$(hostname)/messages" >&2 2>/dev/null || true
    die "SGE: $*"
}

sge_master_up() { timeout 20 qconf -sh >/dev/null 2>&1; }

sge_execd_up() {  # execd running and reporting load to the qmaster
    local load
    pid_alive /var/run/gridengine/execd.pid || return 1
    load="$(qhost -h "$(hostname)" 2>/dev/null | awk -v h="$(hostname)" '$1==h {print $7}')"
    [ -n "$load" ] && [ "$load" != "-" ]
}

set_conf_value() {  # set_conf_value FILE KEY VALUE -> 0 if changed
    local f="$1" k="$2" v="$3" cur
    cur="$(awk -v k="$k" '$1==k {print $2}' "$f")"
    [ "$cur" = "$v" ] && return 1
    if grep -q "^$k[[:space:]]" "$f"; then
        sed -i "s|^$k[[:space:]].*|$(printf '%-28s %s' "$k" "$v")|" "$f"
    else
        printf '%-28s %s\n' "$k" "$v" >> "$f"
    fi
    return 0
}

# As purge_slurm_leftovers: with no sge_shepherd running here, the jobs a
# qmaster this run started still lists are left over from an earlier boot and are deleted.
purge_sge_leftovers() {
    local jobs
    pgrep -x sge_shepherd >/dev/null && return 0
    jobs="$(qstat -u '*' 2>/dev/null | awk 'NR > 2 {print $1}' | sort -u | tr '\n' ' ')"
    [ -n "${jobs// /}" ] || return 0
    # shellcheck disable=SC2086
    qdel -f $jobs >/dev/null 2>&1 || true
    log "sge: deleted job(s) $jobs left by an earlier boot (no shepherd of theirs runs)"
}

setup_sge() {
    local t=$SECONDS h i changed
    log "=== Sun Grid Engine ==="
    ensure_hostname_resolves
    h="$(hostname)"

    if ! is_installed gridengine-master gridengine-exec gridengine-client; then
        # slurm-wlm-torque ships Torque-style qsub/qstat/qdel wrappers around
        # SLURM and Conflicts: gridengine-client; it has to go.
        if is_installed slurm-wlm-torque; then
            warn "removing slurm-wlm-torque: its qsub/qstat wrappers conflict with gridengine-client"
            apt-get -y -q -o DPkg::Lock::Timeout=180 remove slurm-wlm-torque >/dev/null \
                || die "could not remove slurm-wlm-torque (conflicts with gridengine-client)"
        fi
        # answers for the packages' debconf questions (cell, master host)
        debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $h
EOF
        apt_install gridengine-master gridengine-exec gridengine-client procps
    fi
    # make sure the qsub/qstat on PATH are SGE's and not some wrapper
    for i in qsub qstat qdel qconf; do
        local p
        p="$(command -v "$i" || true)"
        [ -n "$p" ] || die "SGE: $i not found on PATH"
        case "$(readlink -f "$p")" in
            /usr/share/gridengine/*|/usr/lib/gridengine/*) ;;
            *) [ "$p" = "/usr/bin/$i" ] || warn "$i on PATH is $p, not gridengine's /usr/bin/$i" ;;
        esac
    done
    [ -d "$SGE_COMMON" ] || die "SGE: $SGE_COMMON missing (package post-install did not create the cell)"
    [ -s "$SGE_COMMON/bootstrap" ] || die "SGE: $SGE_COMMON/bootstrap missing"

    # The machine's name and 'localhost' (first name of 127.0.0.1) must be
    # treated as the same host, otherwise clients are refused.
    if [ "$(cat "$SGE_COMMON/host_aliases" 2>/dev/null)" != "$h localhost" ]; then
        echo "$h localhost" > "$SGE_COMMON/host_aliases"
        chown sgeadmin:sgeadmin "$SGE_COMMON/host_aliases"
        log "sge: wrote host_aliases"
    fi
    if [ "$(cat "$SGE_COMMON/act_qmaster" 2>/dev/null)" != "$h" ]; then
        echo "$h" > "$SGE_COMMON/act_qmaster"
        chown sgeadmin:sgeadmin "$SGE_COMMON/act_qmaster"
        log "sge: wrote act_qmaster"
    fi

    local qmaster_pidfile qmaster_started=0
    qmaster_pidfile="$(awk '$1=="qmaster_spool_dir" {print $2}' "$SGE_COMMON/bootstrap")/qmaster.pid"
    if sge_master_up || { pid_alive "$qmaster_pidfile" && answers_within 60 sge_master_up; }; then
        log "sge: qmaster already running"
        check_marker sge_qmaster "$qmaster_pidfile"
    else
        rm -f "$MARKER_DIR/sge_qmaster.started"
        log "sge: starting qmaster"
        /etc/init.d/gridengine-master start || true
        for i in $(seq 1 60); do sge_master_up && break; sleep 1; done
        sge_master_up || sge_fail "sge_qmaster did not come up within 60 s"
        mark_started sge_qmaster "$qmaster_pidfile"
        qmaster_started=1
    fi

    # global configuration: let root (uid/gid 0) run jobs; keep max_aj_tasks
    # at its default explicitly.  The file has to be named 'global'.
    mkdir -p "$TMP/conf"
    qconf -sconf global > "$TMP/conf/global" || sge_fail "qconf -sconf failed"
    changed=0
    set_conf_value "$TMP/conf/global" min_uid 0 && changed=1
    set_conf_value "$TMP/conf/global" min_gid 0 && changed=1
    set_conf_value "$TMP/conf/global" max_aj_tasks 75000 && changed=1
    if [ "$changed" = 1 ]; then
        (cd "$TMP/conf" && qconf -Mconf global) >/dev/null || sge_fail "qconf -Mconf global failed"
        log "sge: global configuration updated (min_uid/min_gid 0, max_aj_tasks 75000)"
    fi
    local global_changed=$changed

    # scheduler: run every second instead of every 15 s
    qconf -ssconf > "$TMP/sconf" || sge_fail "qconf -ssconf failed"
    if [ "$(awk '$1=="schedule_interval" {print $2}' "$TMP/sconf")" != "0:0:1" ]; then
        sed -i 's|^schedule_interval[[:space:]].*|schedule_interval                 0:0:1|' "$TMP/sconf"
        qconf -Msconf "$TMP/sconf" >/dev/null || sge_fail "qconf -Msconf failed"
        log "sge: schedule_interval set to 0:0:1"
    fi

    # admin and submit host
    qconf -sh 2>/dev/null | grep -qx "$h" || qconf -ah "$h" >/dev/null || sge_fail "qconf -ah $h failed"
    qconf -ss 2>/dev/null | grep -qx "$h" || qconf -as "$h" >/dev/null || sge_fail "qconf -as $h failed"

    # execution daemon (restarted when the global configuration changed: a
    # running execd keeps the old min_uid and puts root's jobs in Eqw)
    if pid_alive /var/run/gridengine/execd.pid && [ "$global_changed" = 1 ]; then
        log "sge: restarting execd to pick up the new global configuration"
        /etc/init.d/gridengine-exec stop || true
        stop_pidfile /var/run/gridengine/execd.pid sge_execd
    fi
    local execd_started=0
    if pid_alive /var/run/gridengine/execd.pid; then
        log "sge: execd already running"
        check_marker sge_execd /var/run/gridengine/execd.pid
    else
        rm -f "$MARKER_DIR/sge_execd.started"
        log "sge: starting execd"
        rm -f /var/run/gridengine/execd.pid
        /etc/init.d/gridengine-exec start || true
        execd_started=1
    fi
    for i in $(seq 1 60); do sge_execd_up && break; sleep 1; done
    sge_execd_up || sge_fail "sge_execd did not report to the qmaster within 60 s"
    [ "$execd_started" = 0 ] || mark_started sge_execd /var/run/gridengine/execd.pid

    # host group @allhosts
    if ! qconf -shgrp @allhosts >/dev/null 2>&1; then
        printf 'group_name @allhosts\nhostlist %s\n' "$h" > "$TMP/allhosts"
        qconf -Ahgrp "$TMP/allhosts" >/dev/null || sge_fail "qconf -Ahgrp failed"
        log "sge: created host group @allhosts"
    elif ! qconf -shgrp @allhosts | awk '$1=="hostlist"{for(i=2;i<=NF;i++)print $i}' | grep -qx "$h"; then
        qconf -aattr hostgroup hostlist "$h" @allhosts >/dev/null || sge_fail "adding $h to @allhosts failed"
    fi

    # queue all.q: 8 slots on @allhosts; no load threshold (8 slots on 2
    # cores would put the queue in alarm state), no parallel environments
    # (the template's make/smp/mpi do not exist)
    if ! qconf -sq "$SGE_QUEUE" >/dev/null 2>&1; then
        qconf -sq | sed -e "s|^qname .*|qname                 $SGE_QUEUE|" \
                        -e 's|^hostlist .*|hostlist              @allhosts|' \
                        -e "s|^slots .*|slots                 $SGE_SLOTS|" \
                        -e 's|^load_thresholds .*|load_thresholds       NONE|' \
                        -e 's|^pe_list .*|pe_list               NONE|' > "$TMP/queue"
        qconf -Aq "$TMP/queue" >/dev/null || sge_fail "qconf -Aq failed"
        log "sge: created queue $SGE_QUEUE"
    else
        local attr want cur
        for attr in "hostlist @allhosts" "slots $SGE_SLOTS" "load_thresholds NONE"; do
            want="${attr#* }"; attr="${attr%% *}"
            cur="$(qconf -sq "$SGE_QUEUE" | awk -v a="$attr" '$1==a {print $2}')"
            if [ "$cur" != "$want" ]; then
                qconf -mattr queue "$attr" "$want" "$SGE_QUEUE" >/dev/null \
                    || sge_fail "setting $attr of $SGE_QUEUE failed"
            fi
        done
    fi
    # clear error / disabled states of the queue instance
    local qstate
    qstate="$(qstat -f -q "$SGE_QUEUE" 2>/dev/null | awk -v q="$SGE_QUEUE@$h" '$1==q {print $6}')"
    case "$qstate" in
        *E*) qmod -cq "$SGE_QUEUE" >/dev/null 2>&1 || true ;;
    esac
    case "$qstate" in
        *d*) qmod -e "$SGE_QUEUE" >/dev/null 2>&1 || true ;;
    esac

    [ "$qmaster_started" = 1 ] && purge_sge_leftovers

    log "sge: smoke test (qsub -b y true)"
    local jid out st=""
    jid="$(cd /tmp && qsub -terse -N pp-smoke -b y -o /dev/null -j y true)" || sge_fail "qsub failed"
    # (120 s: on a shared machine other people's jobs may be queued first)
    for i in $(seq 1 240); do
        if ! out="$(qstat -j "$jid" 2>&1)"; then
            grep -q 'do not exist' <<<"$out" && break
            sleep 0.5; continue     # transient error: ask again
        fi
        st="$(qstat -u '*' | awk -v j="$jid" '$1==j {print $5}')"
        case "$st" in
            *E*)
                qstat -j "$jid" | grep -i 'error' >&2 || true
                qdel "$jid" >/dev/null 2>&1 || true
                sge_fail "smoke-test job $jid went into error state $st" ;;
        esac
        sleep 0.5
    done
    if qstat -j "$jid" >/dev/null 2>&1; then
        qdel "$jid" >/dev/null 2>&1 || true
        sge_fail "smoke-test job $jid still in qstat after 120 s (state ${st:-?})"
    fi
    log "sge: OK (job $jid ran and left qstat; took $((SECONDS - t)) s)"
}

case "$WHAT" in
    slurm) setup_slurm ;;
    sge)   setup_sge ;;
    all)   setup_slurm; setup_sge ;;
esac
log "done: $WHAT running"
