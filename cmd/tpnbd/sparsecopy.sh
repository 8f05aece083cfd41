#!/usr/bin/env bash
# Times copying a mostly sparse image out of tpnbd into a local file, with
# structured replies and block status (tpnbd's default) and without them
# (tpnbd -structured=false), with nbdcopy and with qemu-img convert. The
# two servers export the same file (in the page cache) read-only, each on a
# Unix socket; the runs alternate within each round, and the table shows
# the median wall time of each (tool, server) pair and the speed-up.
#
# Usage: cmd/tpnbd/sparsecopy.sh [-r ROUNDS] [-s SIZE_MIB]
#   -r  rounds (default 5)
#   -s  image size in MiB, at least 8 (default 1024); it holds 8 MiB of
#       random data in 64 pieces of 128 KiB at scattered offsets, holes
#       elsewhere
# Needs nbdcopy, qemu-img (cmd/tpnbd/ci-deps.sh installs them) and go.
set -euo pipefail

rounds=5 size_mib=1024
while getopts "r:s:" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	s) size_mib=$OPTARG ;;
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
# The numbers go to seq, truncate and the shell's arithmetic, whose largest
# integer is 2^63-1: refuse what is not one, or is too large, here, rather
# than run no round or wrap around. The image's bytes, -s << 20, must fit,
# and its 64 pieces of data take 8 MiB (below that the spacing between
# them is 0 and the arithmetic divides by it). A leading zero would make
# the arithmetic read octal where truncate reads decimal.
number -r "$rounds" '^[1-9][0-9]*$' "a positive number of rounds" 9223372036854775807
number -s "$size_mib" '^([89]|[1-9][0-9]+)$' "a number of MiB, 8 or more" 8796093022207
need nbdcopy qemu-img go
setup_work sparsecopy
img=$work/sparse.img
truncate -s "${size_mib}M" "$img"
step=$(((size_mib << 20) / 64 / 131072)) # 128 KiB blocks between pieces
for i in $(seq 0 63); do
	dd if=/dev/urandom of="$img" bs=128K count=1 seek=$((i * step + i % step)) conv=notrunc status=none
done
cat "$img" >/dev/null # into the page cache

"$work/tpnbd" -q -readonly -unix "$work/on.sock" "$img" & pids+=($!)
"$work/tpnbd" -q -readonly -structured=false -unix "$work/off.sock" "$img" & pids+=($!)
wait_socket "$work/on.sock" tpnbd "${pids[0]}"
wait_socket "$work/off.sock" "tpnbd -structured=false" "${pids[1]}"

# copy TOOL SOCK: one copy into a new file; prints its wall time in seconds.
copy() {
	local uri="nbd+unix:///?socket=$work/$2.sock" out=$work/out.img t0 t1
	rm -f "$out"
	t0=$(date +%s.%N)
	case $1 in
	nbdcopy) nbdcopy "$uri" "$out" ;;
	qemu-img) qemu-img convert -f raw -O raw "$uri" "$out" ;;
	esac
	t1=$(date +%s.%N)
	qemu-img compare -q -f raw -F raw "$img" "$out" || { echo "sparsecopy.sh: $1 made a different copy" >&2; exit 1; }
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

results=$work/results
: >"$results"
header="$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(uname -m)), ${size_mib} MiB image with 8 MiB of data, $rounds round(s)"
echo "# $header" >&2
for round in $(seq "$rounds"); do
	# Alternate which server goes first.
	order=(on off)
	[ $((round % 2)) -eq 0 ] && order=(off on)
	for tool in nbdcopy qemu-img; do
		for s in "${order[@]}"; do
			t=$(copy "$tool" "$s")
			echo "$tool $s $t" >>"$results"
			printf 'round %d %-8s structured=%-3s %6.3f s\n' "$round" "$tool" "$s" "$t" >&2
		done
	done
done

echo "$header"
echo
echo "| copy of a sparse image | structured replies + block status | simple replies | speed-up |"
echo "|---|---|---|---|"
awk "$awk_median"'
{ vals[$1 SUBSEP $2] = vals[$1 SUBSEP $2] " " $3 }
END {
	split("nbdcopy qemu-img", tools, " ")
	for (i = 1; i <= 2; i++) {
		on = median(tools[i] SUBSEP "on"); off = median(tools[i] SUBSEP "off")
		printf "| %s | %.3f s | %.3f s | %.1fx |\n", tools[i], on, off, off / on
	}
}' "$results"
