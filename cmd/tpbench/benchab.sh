#!/usr/bin/env bash
# Compares the library's Go benchmarks between two builds of this
# repository on this machine: BASE (a git revision) and REV (a revision, or
# by default the working tree with its uncommitted changes). The builds
# alternate group by group: in every round, each benchmark group runs once
# per build, back to back, in a random order, so that both builds of a group
# meet the same phase of a noisy host (a shared VM swings between fast and
# slow phases over tens of seconds, which swamps a comparison of whole runs
# made one after the other).
#
# Usage: cmd/tpbench/benchab.sh [-r ROUNDS] [-t BENCHTIME] [-T SECONDS] [-o FILE] [-g REGEXP]... BASE [REV]
#   -r  rounds (default 8)
#   -t  -test.benchtime of every benchmark (default 0.3s)
#   -T  the longest that one build may take over one group in one round
#       (default 1800 s): a hang ends there, with SIGQUIT, whose goroutine
#       dump goes to stderr, and fails the comparison (go test's -timeout
#       does not apply to benchmarks run this way)
#   -o  where to keep the results (default benchab.txt): benchmark lines
#       tagged /v=base and /v=rev, for `benchstat -col /v FILE`
#   -g  a benchmark group, a -test.bench regexp; repeat for several
#       (default: RandReadDesign at iodepth 64 and 1, RandRead with 8 jobs
#       at iodepth 64 and 1, Submit); a group that matches no benchmark
#       in either build fails the comparison, and one that matches in one
#       build only is named on stderr
# It prints, for every benchmark, the median over the rounds of the ratio
# REV/BASE (of IOPS where the benchmark reports them, else of the time per
# op) with its range, and in how many rounds REV was ahead; then, within
# each build, the ratios the pool is judged by (the pool against a
# goroutine per request and a channel-fed pool, defer against the ceiling
# and against each, Submit against a goroutine per request with one and 64
# requests in flight, and the floor: chanpool against a goroutine per
# request with one in flight), again as medians of the per-round ratios,
# for the pairs that both ran; and last the same pairs as benchstat
# compares them, the ratio of each benchmark's median over all the rounds,
# with the medians of the cores each used where both report them.
set -euo pipefail

rounds=8 benchtime=0.3s limit=1800 out=benchab.txt groups=()
while getopts "r:t:T:o:g:" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	t) benchtime=$OPTARG ;;
	T) limit=$OPTARG ;;
	o) out=$OPTARG ;;
	g) groups+=("$OPTARG") ;;
	*) sed -n '2,${/^#/!q;p;}' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	sed -n '2,${/^#/!q;p;}' "$0" >&2
	exit 2
fi
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
	echo "$(basename "$0"): -r $rounds: want a positive number of rounds" >&2
	exit 2
fi
# timeout takes the seconds as a floating-point number: keep them well
# inside its range.
if ! [[ $limit =~ ^[1-9][0-9]{0,8}$ ]]; then
	echo "$(basename "$0"): -T $limit: want a positive number of seconds, at most 999999999" >&2
	exit 2
fi
# -test.benchtime: a count of iterations (100x) or a positive Go duration
# (0.3s, 1m30s).
num='([0-9]+(\.[0-9]*)?|\.[0-9]+)'
unit='(ns|us|µs|ms|s|m|h)'
if ! [[ $benchtime =~ ^([1-9][0-9]*x|($num$unit)+)$ && $benchtime =~ [1-9] ]]; then
	echo "$(basename "$0"): -t $benchtime: want a duration such as 0.3s or a count such as 100x" >&2
	exit 2
fi
# The results go to $out once every round has run: find out now, not then,
# that it cannot be written.
if [ -d "$out" ] || { [ -e "$out" ] && [ ! -w "$out" ]; } ||
	{ [ ! -e "$out" ] && [ ! -w "$(dirname -- "$out")" ]; }; then
	echo "$(basename "$0"): -o $out: cannot be written" >&2
	exit 2
fi
if [ ${#groups[@]} -eq 0 ]; then
	groups=(
		'RandReadDesign/iodepth=64/design=(pool|goroutine|chanpool)$'
		'RandRead/iodepth=64/numjobs=8/mode=(each|defer|ceiling)$'
		'RandReadDesign/iodepth=1/design=(pool|goroutine|chanpool)$'
		'RandRead/iodepth=1/numjobs=8/mode=(each|defer|ceiling)$'
		'Submit/'
	)
fi

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/benchab.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Ctrl-C or SIGTERM ends the script by that signal, once the EXIT trap has
# removed $work: a trap that only removed it let the script go on, blame
# the build whose binary the signal ended, and exit 1, which a calling loop
# takes for a failure, not an interrupt, and goes on.
trap 'trap - INT; kill -INT $$' INT
trap 'trap - TERM; kill -TERM $$' TERM

# build NAME REV: the test binary of revision REV (empty: the working tree).
build() {
	if [ -z "$2" ]; then
		(cd "$repo" && go test -c -o "$work/$1.test" .)
		return
	fi
	if ! git -C "$repo" rev-parse -q --verify "$2^{commit}" >/dev/null; then
		echo "$(basename "$0"): $2: no such revision in $repo" >&2
		exit 2
	fi
	mkdir "$work/$1"
	git -C "$repo" archive "$2" | tar -x -C "$work/$1"
	(cd "$work/$1" && go test -c -o "$work/$1.test" .)
}
build base "$1"
build rev "${2:-}"

# Every line of $work/raw is "ROUND BENCHMARK-LINE", the benchmark's name
# tagged with /v=base or /v=rev. A test binary run with GOMAXPROCS=1 names
# its benchmarks without the -GOMAXPROCS suffix; they get -1. A test binary
# that fails (a benchmark's short read) ends the comparison with its output,
# which says why, on stderr. timeout runs it in the foreground, where
# Ctrl-C reaches it.
declare -A matched # "GROUP VERSION": the group matched in that build
for r in $(seq "$rounds"); do
	for g in "${groups[@]}"; do
		for v in $(printf '%s\n' base rev | shuf); do
			status=0 start=$SECONDS
			timeout --foreground -s QUIT -k 10 "$limit" "$work/$v.test" -test.run '^$' -test.bench "$g" \
				-test.benchtime "$benchtime" -randread.file "$work/data.dat" >"$work/out" || status=$?
			# 124: ended by timeout; 137: killed, by timeout's -k only once
			# the limit has passed (else by someone else: the OOM killer).
			if [ "$status" -eq 124 ] || { [ "$status" -eq 137 ] && ((SECONDS - start >= limit)); }; then
				echo "$(basename "$0"): the $v build ran over $limit s (-T) in round $r, group $g, and was ended:" >&2
				cat "$work/out" >&2
				exit 1
			elif [ "$status" -ne 0 ]; then
				echo "$(basename "$0"): the $v build failed in round $r, group $g:" >&2
				cat "$work/out" >&2
				exit 1
			fi
			if grep -q '^Benchmark[^ ]* ' "$work/out"; then matched["$g $v"]=1; fi
			sed -n -e "s|^\(Benchmark[^ ]*\)-\([0-9][0-9]*\) |$r \1/v=$v-\2 |p" -e t \
				-e "s|^\(Benchmark[^ ]*\) |$r \1/v=$v-1 |p" "$work/out" >>"$work/raw"
		done
		if [ "$r" -eq 1 ]; then
			if [ -z "${matched["$g base"]:-}" ] && [ -z "${matched["$g rev"]:-}" ]; then
				echo "$(basename "$0"): -g $g matched no benchmark in either build" >&2
				exit 1
			fi
			for v in base rev; do
				if [ -z "${matched["$g $v"]:-}" ]; then
					echo "$(basename "$0"): -g $g matched no benchmark in the $v build: its benchmarks have no ratio to the other build" >&2
				fi
			done
		fi
	done
	echo "round $r of $rounds done" >&2
done
cut -d' ' -f2- "$work/raw" >"$out"

# The metric of a line: IOPS where reported, else ns/op (lower is better).
awk '
{
	name = $2; sub(/\/v=(base|rev)-[0-9]+$/, "", name)
	v = ($2 ~ /\/v=rev-/) ? "rev" : "base"
	m = $4; up = 0
	for (i = 5; i < NF; i++) if ($(i + 1) == "IOPS") { m = $i; up = 1 }
	key = name SUBSEP $1
	val[key, v] = m; higher[name] = up; seen[key] = name
}
END {
	for (k in seen) {
		if ((k, "base") in val && (k, "rev") in val && val[k, "base"] > 0) {
			n = seen[k]
			print n, val[k, "rev"] / val[k, "base"], higher[n]
		}
	}
}' "$work/raw" | sort -k1,1 -k2,2g | awk '
BEGIN { print "rev/base, median of the per-round ratios [range], rounds rev was ahead:" }
function flush() {
	if (name == "") return
	med = (c % 2) ? r[(c + 1) / 2] : (r[c / 2] + r[c / 2 + 1]) / 2
	printf "  %-56s %s %.3f [%.2f-%.2f] ahead in %d/%d\n", name, (up ? "IOPS" : "time"), med, r[1], r[c], ahead, c
}
$1 != name { flush(); name = $1; c = 0; ahead = 0; up = $3 }
{ r[++c] = $2; if ((up && $2 > 1) || (!up && $2 < 1)) ahead++ }
END { flush() }'

# Within each build, the ratios that the pool is judged by: the pool against
# the designs a Go program would use instead and against the ceiling, and
# defer against each, as medians of the per-round ratios (of IOPS, or of the
# time per op for Submit), wherever both benchmarks of a pair ran.
awk '
BEGIN {
	npairs = split("RandReadDesign/iodepth=64/design=pool RandReadDesign/iodepth=64/design=goroutine " \
		"RandReadDesign/iodepth=64/design=pool RandReadDesign/iodepth=64/design=chanpool " \
		"RandReadDesign/iodepth=1/design=pool RandReadDesign/iodepth=1/design=goroutine " \
		"RandReadDesign/iodepth=1/design=pool RandReadDesign/iodepth=1/design=chanpool " \
		"RandRead/iodepth=64/numjobs=8/mode=defer RandRead/iodepth=64/numjobs=8/mode=ceiling " \
		"RandRead/iodepth=64/numjobs=8/mode=defer RandRead/iodepth=64/numjobs=8/mode=each " \
		"RandRead/iodepth=1/numjobs=8/mode=defer RandRead/iodepth=1/numjobs=8/mode=each " \
		"Submit/inflight=1/design=pool Submit/inflight=1/design=goroutine " \
		"Submit/inflight=1/design=chanpool Submit/inflight=1/design=goroutine " \
		"Submit/inflight=64/design=pool Submit/inflight=64/design=goroutine", w, " ") / 2
	for (i = 1; i <= npairs; i++) { a[i] = w[2 * i - 1]; b[i] = w[2 * i] }
}
{
	name = $2; sub(/^Benchmark/, "", name); sub(/\/v=(base|rev)-[0-9]+$/, "", name)
	v = ($2 ~ /\/v=rev-/) ? "rev" : "base"
	m = $4; up[name] = 0; cores = ""
	for (i = 5; i < NF; i++) {
		if ($(i + 1) == "IOPS") { m = $i; up[name] = 1 }
		if ($(i + 1) == "cores") cores = $i
	}
	val[$1, name, v] = m; rounds[$1] = 1
	all[name, v, ++nall[name, v]] = m
	if (cores != "") allc[name, v, ++ncores[name, v]] = cores
}
END {
	table("within each build, median of the per-round ratios [range]:", 0)
	# What benchstat compares: the median of each benchmark over all its
	# rounds, one against the other, with the cores each used (medians) where
	# both report them.
	table("within each build, ratio of the medians over the rounds (as benchstat takes them) [cores]:", 1)
}
# table prints title and a line per pair that ran, with a cell per build:
# the median of the per-round ratios, or with medians the ratio of the
# medians.
function table(title, medians,   i, k, v, nb, parts, line, any, cell) {
	print title
	for (i = 1; i <= npairs; i++) {
		nb = split(b[i], parts, "/")
		line = sprintf("  %-58s", a[i] " / " parts[nb])
		any = 0
		for (k = 1; k <= 2; k++) {
			v = (k == 1) ? "base" : "rev"
			cell = medians ? ofMedians(a[i], b[i], v) : perRound(a[i], b[i], v)
			if (cell == "") { line = line sprintf(" %s -", v); continue }
			any = 1
			line = line sprintf(" %s %s", v, cell)
		}
		if (any) print line (up[a[i]] ? "" : " (time)")
	}
}
# perRound returns the median of the per-round ratios x / y in build v with
# their range, or "" if no round ran both.
function perRound(x, y, v,   r, c, q) {
	c = 0
	for (r in rounds)
		if ((r, x, v) in val && (r, y, v) in val && val[r, y, v] > 0)
			q[++c] = val[r, x, v] / val[r, y, v]
	if (c == 0) return ""
	return sprintf("%.2f [%.2f-%.2f]", mid(q, c), q[1], q[c])
}
# ofMedians returns the ratio of the medians of x and y in build v, with
# their cores where both report them, or "" if either did not run.
function ofMedians(x, y, v,   my, cell) {
	if (!((x, v) in nall) || !((y, v) in nall) || (my = median(all, y, v, nall[y, v])) <= 0) return ""
	cell = sprintf("%.2f", median(all, x, v, nall[x, v]) / my)
	if ((x, v) in ncores && (y, v) in ncores)
		cell = cell sprintf(" [%.2f | %.2f]", median(allc, x, v, ncores[x, v]), median(allc, y, v, ncores[y, v]))
	return cell
}
# median returns the median of the c values arr[name, v, 1..c].
function median(arr, name, v, c,   x, i) {
	for (i = 1; i <= c; i++) x[i] = arr[name, v, i] + 0
	return mid(x, c)
}
# mid sorts x[1..c] and returns its median.
function mid(x, c) {
	sortn(x, c)
	return (c % 2) ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2
}
function sortn(x, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
}' "$work/raw"
echo "results in $out (benchstat -col /v $out)"
