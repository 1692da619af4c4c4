#!/usr/bin/env bash
# Capture what the test SLURM (scripts/test_cluster.sh) writes into a job's log when it
# ends the job: a time limit, a plain scancel, a requeue, memory over --mem, a preemption
# by a job of the partition "urgent". Each log is saved with a first
# line naming the class poolparty.endings must tell from it (tests/test_endings.py).
# Run as root on a machine with the test cluster up; takes 60-95 s (the time limit).
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
submit() { sbatch --parsable --output="$work/$1.out" --job-name="capture-$1" "${@:2}"; }
running() { [ "$(squeue -h -j "$1" -o %T 2>/dev/null)" = RUNNING ]; }
gone() { [ -z "$(squeue -h -j "$1" -o %T 2>/dev/null)" ]; }
wait_until() { for _ in $(seq 1 400); do "$@" && return 0; sleep 0.5; done; echo "timed out: $*" >&2; return 1; }
save() {  # name, expected class, how it was made
    { echo "# expected: $2 -- captured $(date -u +%F) on the test SLURM ($(sinfo -V)): $3"
      cat "$work/$1.out"; } > "$out/slurm-$1.log"
}

timeout=$(submit timeout --time=1 --wrap 'echo started; sleep 300')
cancel=$(submit scancel --wrap 'echo started; sleep 300')
requeue=$(submit requeue --requeue --wrap 'echo started; sleep 300')
memory=$(submit memory --mem=100M --wrap "echo started; python3 -c 'import time; b = b\"x\" * 300000000; time.sleep(30)'")
wait_until running "$cancel"; wait_until running "$requeue"
wait_until gone "$memory"
sleep 2
scancel "$cancel"
scontrol requeue "$requeue"
wait_until gone "$cancel"
sleep 2
scancel "$requeue"
wait_until gone "$requeue"
wait_until gone "$timeout"
# every CPU held by one job of "debug": a job of "urgent" preempts (requeues) it
preempted=$(submit preempted --requeue --ntasks=8 --mem=800M --wrap 'echo started; sleep 300')
wait_until running "$preempted"
urgent=$(sbatch --parsable --partition=urgent --output=/dev/null --wrap 'sleep 1')
wait_until gone "$urgent"
scancel "$preempted"
wait_until gone "$preempted"
sleep 1
save timeout TIME_LIMIT "sbatch --time=1 --wrap 'sleep 300'"
save scancel CANCELLED "sbatch --wrap 'sleep 300', then scancel"
save requeue PREEMPTED "sbatch --requeue --wrap 'sleep 300', then scontrol requeue (then scancel while pending again)"
save memory OUT_OF_MEMORY "sbatch --mem=100M of a python holding 300 MB (OverMemoryKill)"
save preempted PREEMPTED "sbatch --requeue --ntasks=8 --wrap 'sleep 300', then a job of the partition urgent (PreemptMode=REQUEUE; then scancel)"
ls -l "$out"
