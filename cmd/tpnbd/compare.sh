#!/usr/bin/env bash
# Compares tpnbd with qemu-nbd (--aio=threads) and nbdkit's file plugin on the
# same file (kept in the page cache), and tpnbd -flush=defer with
# -flush=each. Each server listens on a Unix socket only, or with -tcp on a
# TCP port of 127.0.0.1 only. fio (ioengine=nbd) drives every server with
# the same jobs, the servers alternating within each round; the table shows
# the median IOPS over the rounds. A run of fio that fails counts as 0 IOPS;
# a ratio whose divisor is 0 shows as -, and a server whose median IOPS is 0
# for a job is named on stderr and makes the script exit 1 after the tables.
# Two more tables give each server's CPU time per request and the CPU of
# each fio job, in cores: a job is one thread, so at 1.00 the client, not
# the server, sets the pace of that row.
#
# Usage: cmd/tpnbd/compare.sh [-q] [-tcp] [-r ROUNDS] [-t SECONDS] [-s SIZE_MIB] [-p PROCS] [-b REV] [-j JOBS]
#   -q  quick mode: 1 round of 1 second per job (about 45 s in all)
#   -tcp  serve and connect over TCP loopback instead of Unix sockets
#   -r, -t  rounds and seconds per job; default 5 rounds of 1 second
#       (about 4 minutes): short runs alternating often resist the noise of
#       a shared machine better than long ones
#   -s  size of the served file in MiB (default 256)
#   -p  tpnbd -procs PROCS (GOMAXPROCS, at most 1024); default: Go's default
#   -b  also run tpnbd -flush=defer built from git revision REV of this
#       repository (tpnbd-base), alternating with the others, to measure a
#       change against nbdkit and its own base in the same run
#   -j  run only these jobs, comma-separated RW:IODEPTH:NUMJOBS, e.g.
#       -j randread:1:1,randwrite:1:1 (default: randread and randwrite at
#       iodepth 1 and 64 with 1 and 4 jobs); every server is told to take
#       as many connections as the largest NUMJOBS
# Needs fio, qemu-nbd, nbdkit (cmd/tpnbd/ci-deps.sh installs them) and go.
set -euo pipefail

rounds=5 runtime=1 size_mib=256 procs=0 transport=unix base= only=
# getopts takes single letters: turn the long -tcp into -T.
args=()
for a in "$@"; do
	if [ "$a" = -tcp ]; then args+=(-T); else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"
while getopts "qTr:t:s:p:b:j:" opt; do
	case $opt in
	q) rounds=1 runtime=1 ;;
	T) transport=tcp ;;
	r) rounds=$OPTARG ;;
	t) runtime=$OPTARG ;;
	s) size_mib=$OPTARG ;;
	p) procs=$OPTARG ;;
	b) base=$OPTARG ;;
	j) only=$OPTARG ;;
	*) sed -n '2,${/^#/!q;p;}' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ $# -gt 0 ]; then
	echo "$(basename "$0"): unexpected argument $1 (every option starts with -)" >&2
	sed -n '2,${/^#/!q;p;}' "$0" >&2
	exit 2
fi

# shellcheck source=cmd/tpnbd/lib.sh
. "$(dirname "$0")/lib.sh"

# The numbers go to seq, fio, arithmetic and tpnbd: refuse what is not one,
# or is too large for them, here, rather than run no round, wrap around or
# fail halfway.
# Rounds are counted in the shell's arithmetic, whose largest integer is
# 2^63-1; fio turns the seconds into microseconds, which must fit as well.
number -r "$rounds" '^[1-9][0-9]*$' "a positive number of rounds" 9223372036854775807
number -t "$runtime" '^[1-9][0-9]*$' "a positive number of seconds" 9223372036854
# The file's bytes, -s << 20, must fit in the shell's arithmetic.
number -s "$size_mib" '^[1-9][0-9]*$' "a positive number of MiB" 8796093022207
# tpnbd reads -procs as Go does: 010 would be 8, and 08 not a number. Go
# keeps GOMAXPROCS in 32 bits (2^32+1 is 1) and allocates per P: 1024 is
# more than the machines this compares on have CPUs.
number -p "$procs" '^(0|[1-9][0-9]*)$' "0 (Go's default) or a positive GOMAXPROCS" 1024

if [ -n "$only" ]; then
	IFS=, read -r -a want <<<"$only"
	for job in "${want[@]}"; do
		# fio keeps IODEPTH and NUMJOBS in 32-bit integers.
		if ! [[ $job =~ ^(randread|randwrite):([1-9][0-9]*):([1-9][0-9]*)$ ]] ||
			above "${BASH_REMATCH[2]}" 2147483647 || above "${BASH_REMATCH[3]}" 2147483647; then
			echo "$(basename "$0"): -j: $job: want RW:IODEPTH:NUMJOBS, RW randread or randwrite, IODEPTH and NUMJOBS at most 2147483647, e.g. randread:1:1" >&2
			exit 2
		fi
	done
fi

need fio qemu-nbd nbdkit go
if [ -n "$base" ]; then
	repo=$(cd "$(dirname "$0")/../.." && pwd)
	if ! git -C "$repo" rev-parse -q --verify "$base^{commit}" >/dev/null; then
		echo "$(basename "$0"): -b $base: no such revision in $repo" >&2
		exit 2
	fi
fi
setup_work compare
if [ -n "$base" ]; then
	mkdir "$work/base"
	git -C "$repo" archive "$base" | tar -x -C "$work/base"
	(cd "$work/base" && go build -o "$work/tpnbd-base" ./cmd/tpnbd)
fi
img=$work/disk.img
head -c $((size_mib << 20)) /dev/urandom >"$img"
cat "$img" >/dev/null # into the page cache

jobs=()
for rw in randread randwrite; do
	for depth in 1 64; do
		for n in 1 4; do
			jobs+=("$rw:$depth:$n")
		done
	done
done
if [ -n "$only" ]; then
	IFS=, read -r -a jobs <<<"$only"
fi

# Every server takes as many connections as the largest job opens, one per
# fio job: qemu-nbd takes 16 at most unless told (-e), tpnbd 128
# (-max-conns, which a -b revision may lack: given only when needed).
conns=16
for job in "${jobs[@]}"; do
	if above "${job##*:}" "$conns"; then conns=${job##*:}; fi
done
tpnbd_conns=()
if above "$conns" 128; then tpnbd_conns=(-max-conns "$conns"); fi

servers=(tpnbd-defer tpnbd-each qemu-nbd nbdkit)
if [ -n "$base" ]; then servers+=(tpnbd-base); fi
declare -A pid uri addr
# Each server listens on its own TCP port, or its own Unix socket; the
# servers' commands differ only in how they are told where.
if [ "$transport" = tcp ]; then
	first=$(free_port_base ${#servers[@]})
	for i in "${!servers[@]}"; do
		addr[${servers[$i]}]=$((first + i))
		uri[${servers[$i]}]="nbd://127.0.0.1:$((first + i))/"
	done
	tpnbd_at() { echo "-tcp 127.0.0.1:${addr[$1]}"; }
	qemu_at() { echo "-b 127.0.0.1 -p ${addr[$1]}"; }
	nbdkit_at() { echo "-i 127.0.0.1 -p ${addr[$1]}"; }
	wait_at() { wait_tcp "${addr[$1]}" "$1" "${pid[$1]}"; }
else
	for s in "${servers[@]}"; do
		addr[$s]=$work/$s.sock
		uri[$s]="nbd+unix:///?socket=${addr[$s]}"
	done
	tpnbd_at() { echo "-unix ${addr[$1]}"; }
	qemu_at() { echo "-k ${addr[$1]}"; }
	nbdkit_at() { echo "-U ${addr[$1]}"; }
	wait_at() { wait_socket "${addr[$1]}" "$1" "${pid[$1]}"; }
fi
# The addresses hold no spaces (ports, and $work from mktemp): word
# splitting of the *_at output is intended.
# shellcheck disable=SC2046
{
	"$work/tpnbd" -q -procs "$procs" "${tpnbd_conns[@]}" $(tpnbd_at tpnbd-defer) -flush=defer "$img" & pid[tpnbd-defer]=$!
	"$work/tpnbd" -q -procs "$procs" "${tpnbd_conns[@]}" $(tpnbd_at tpnbd-each) -flush=each "$img" & pid[tpnbd-each]=$!
	qemu-nbd -f raw --aio=threads --cache=writeback -t -e "$conns" $(qemu_at qemu-nbd) "$img" & pid[qemu-nbd]=$!
	nbdkit -f $(nbdkit_at nbdkit) file "file=$img" & pid[nbdkit]=$!
	if [ -n "$base" ]; then
		"$work/tpnbd-base" -q -procs "$procs" "${tpnbd_conns[@]}" $(tpnbd_at tpnbd-base) -flush=defer "$img" & pid[tpnbd-base]=$!
	fi
}
pids=("${pid[@]}")
for s in "${servers[@]}"; do
	wait_at "$s"
done

# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
# 0 for a process that is gone.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

# One fio run; prints total IOPS (read + write), the server's CPU time per
# request in microseconds, and the CPU of each fio job in cores (fio's user
# and system percentages, which group reporting averages over the jobs):
# 0, 0.0 and 0.00 if fio fails or reports nothing.
run_fio() {
	local server=$1 rw=$2 depth=$3 n=$4 t0 t1
	t0=$(cpu_ticks "${pid[$server]}")
	if ! fio --name=cmp --ioengine=nbd --uri="${uri[$server]}" \
		--rw="$rw" --bs=4k --iodepth="$depth" --numjobs="$n" --size=$((size_mib << 20)) \
		--time_based --runtime="$runtime" --group_reporting \
		--output-format=terse --terse-version=3 --randrepeat=0 >"$work/fio.out"; then
		echo "$(basename "$0"): fio failed against $server ($rw iodepth=$depth numjobs=$n): counted as 0 IOPS" >&2
		echo "0 0.0 0.00"
		return
	fi
	t1=$(cpu_ticks "${pid[$server]}")
	awk -F';' -v ticks=$((t1 - t0)) -v hz="$hz" '
		/^3;/ { ios = ($6 + $47) / 4; printf "%d %.1f %.2f\n", $8 + $49, ios ? ticks * 1e6 / hz / ios : 0, ($88 + $89) / 100; found = 1 }
		END { if (!found) print "0 0.0 0.00" }' "$work/fio.out"
}

cd "$work" # fio runs here
load0=$(cut -d' ' -f1-3 /proc/loadavg)
results=$work/results
: >"$results"
header="$(date -u '+%Y-%m-%d %H:%M UTC'), $transport, $(nproc) CPUs ($(uname -m)), $rounds round(s) of ${runtime}s per job, ${size_mib} MiB file, tpnbd -procs $procs${base:+, tpnbd-base built from $base}"
echo "# $header" >&2
for round in $(seq "$rounds"); do
	# Rotate the order of the servers each round.
	k=$(((round - 1) % ${#servers[@]}))
	order=("${servers[@]:k}" "${servers[@]:0:k}")
	for job in "${jobs[@]}"; do
		IFS=: read -r rw depth n <<<"$job"
		for s in "${order[@]}"; do
			read -r iops cpu fio < <(run_fio "$s" "$rw" "$depth" "$n")
			echo "$job $s $iops $cpu $fio" >>"$results"
			printf 'round %d %-9s iodepth=%-2s numjobs=%s %-11s %8s IOPS %6s us CPU/request, fio %s cores/job\n' \
				"$round" "$rw" "$depth" "$n" "$s" "$iops" "$cpu" "$fio" >&2
		done
	done
done

# Median per (job, server), then one row per job, of the results' column
# col: IOPS (3), the servers' CPU time per request (4), fio's cores per job
# (5). A ratio whose divisor is 0 is -.
table() {
	awk -v servers="${servers[*]}" -v col="$1" -v unit="$2" "$awk_median"'
	function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
	{ key = $1 SUBSEP $2; vals[key] = vals[key] " " $col; if (!($1 in seen)) { seen[$1] = 1; order[++njobs] = $1 } }
	END {
		ns = split(servers, s, " ")
		for (i = 1; i <= ns; i++) idx[s[i]] = i
		printf "| %s | iodepth | numjobs |", unit
		for (i = 1; i <= ns; i++) printf " %s |", s[i]
		printf " defer/each | defer/qemu-nbd | defer/nbdkit |"
		withbase = ("tpnbd-base" in idx)
		if (withbase) printf " defer/base |"
		printf "\n|---|---|---|"
		for (i = 1; i <= ns + 3 + withbase; i++) printf "---|"
		printf "\n"
		for (k = 1; k <= njobs; k++) {
			split(order[k], f, ":")
			printf "| %s | %s | %s |", f[1], f[2], f[3]
			for (i = 1; i <= ns; i++) { m[s[i]] = median(order[k] SUBSEP s[i]); printf (col == 3 ? " %d |" : col == 4 ? " %.1f |" : " %.2f |"), m[s[i]] }
			printf " %s | %s | %s |", ratio(m["tpnbd-defer"], m["tpnbd-each"]), ratio(m["tpnbd-defer"], m["qemu-nbd"]), ratio(m["tpnbd-defer"], m["nbdkit"])
			if (withbase) printf " %s |", ratio(m["tpnbd-defer"], m["tpnbd-base"])
			printf "\n"
		}
	}' "$results"
}
echo "$header; load average before: $load0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
if [ "$transport" = tcp ]; then where="TCP loopback"; else where="Unix sockets"; fi
echo "Median IOPS (fio ioengine=nbd, bs=4k, $where; higher is better):"
echo
table 3 "IOPS"
echo
echo "Median server CPU time per request in microseconds (lower is better):"
echo
table 4 "CPU us/req"
echo
echo "Median CPU of each fio job in cores (user + system; a job is one thread: at 1.00 the client sets the pace):"
echo
table 5 "fio cores/job"

# A server with a median of 0 IOPS for a job failed or did nothing in most
# of its rounds: its figures compare nothing.
idle=$(awk "$awk_median"'
	{ key = $1 SUBSEP $2; vals[key] = vals[key] " " $3; if (!(key in seen)) { seen[key] = 1; keys[++n] = key } }
	END { for (i = 1; i <= n; i++) if (median(keys[i]) == 0) { split(keys[i], k, SUBSEP); print k[2] " did no I/O in most rounds of " k[1] } }' "$results")
if [ -n "$idle" ]; then
	while IFS= read -r line; do
		echo "$(basename "$0"): $line" >&2
	done <<<"$idle"
	exit 1
fi
