# Shell functions shared by compare.sh and sparsecopy.sh, which source it
# (bash). Sourcing it only defines functions and variables, so the scripts
# source it before they check their arguments.

# above VALUE MAX: whether the decimal VALUE, with no leading zero, is above
# MAX, compared as text, since the shell's arithmetic would wrap around.
above() { ((${#1} > ${#2})) || { ((${#1} == ${#2})) && [[ $1 > $2 ]]; }; }

# number FLAG VALUE REGEXP WHAT MAX: exits with status 2, saying that FLAG
# wants WHAT, at most MAX, unless VALUE matches REGEXP and is at most MAX.
# REGEXP must admit decimal numbers without a leading zero only.
number() {
	if ! [[ $2 =~ $3 ]] || above "$2" "$5"; then
		echo "$(basename "$0"): $1 $2: want $4, at most $5" >&2
		exit 2
	fi
}

# need TOOL...: exits unless every tool is on PATH.
need() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null || { echo "$(basename "$0"): $tool not found (cmd/tpnbd/ci-deps.sh installs the NBD tools)" >&2; exit 1; }
	done
}

# setup_work NAME: makes a temporary directory $work, builds tpnbd into it,
# and on exit kills the processes listed in $pids and removes $work. Ctrl-C
# or SIGTERM ends the script by that signal, after that cleanup (the EXIT
# trap): a trap that only cleaned up let the script go on and exit 1, which
# a calling loop takes for a failure, not an interrupt.
pids=()
setup_work() {
	local repo
	repo=$(cd "$(dirname "$0")/../.." && pwd)
	work=$(mktemp -d "/tmp/tpnbd-$1.XXXXXX")
	trap cleanup EXIT
	trap 'trap - INT; kill -INT $$' INT
	trap 'trap - TERM; kill -TERM $$' TERM
	(cd "$repo" && go build -o "$work/tpnbd" ./cmd/tpnbd)
}

cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}

# wait_socket PATH NAME PID: waits up to 10 s for server NAME, process PID,
# to create its Unix socket PATH, and exits if it does not, at once if the
# process has exited.
wait_socket() {
	local _
	for _ in $(seq 100); do
		[ -S "$1" ] && return
		running "$3" "$2"
		sleep 0.1
	done
	echo "$(basename "$0"): $2 did not start" >&2
	exit 1
}

# wait_tcp PORT NAME PID: waits up to 10 s for server NAME, process PID, to
# accept TCP connections on 127.0.0.1:PORT, and exits if it does not, at
# once if the process has exited.
wait_tcp() {
	local _
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
		running "$3" "$2"
		sleep 0.1
	done
	echo "$(basename "$0"): $2 did not start" >&2
	exit 1
}

# running PID NAME: exits, naming server NAME, unless process PID runs.
running() {
	kill -0 "$1" 2>/dev/null && return
	echo "$(basename "$0"): $2 exited before it listened" >&2
	exit 1
}

# free_port_base N: prints a port P such that nothing listens on 127.0.0.1
# ports P to P+N-1 (tried at random between 20000 and 32767). They stay
# below Linux's ephemeral ports (32768 to 60999 by default): a port that a
# client connection on 127.0.0.1 holds looks free to the probe below, which
# only finds listeners, yet a server cannot listen on it.
free_port_base() {
	local base i _
	for _ in $(seq 50); do
		base=$((20000 + RANDOM % (12769 - $1)))
		for ((i = 0; i < $1; i++)); do
			(exec 3<>"/dev/tcp/127.0.0.1/$((base + i))") 2>/dev/null && continue 2
		done
		echo "$base"
		return
	done
	echo "$(basename "$0"): no free TCP ports found" >&2
	exit 1
}

# awk_median defines the awk function median(key): the median of the
# space-separated numbers in vals[key].
# shellcheck disable=SC2034 # used by the scripts that source this file
awk_median='
function median(key,   n, i, j, t, a) {
	n = split(vals[key], a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}'
