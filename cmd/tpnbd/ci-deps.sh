#!/bin/sh
# Installs the NBD clients and servers that tpnbd's integration tests and
# compare.sh drive (Debian packages), and the C compiler and headers of cgo,
# without which go test -race refuses to run ("-race requires cgo"; gcc
# only recommends libc6-dev). Runs apt-get update only when a package is
# missing; does nothing when all are installed.
set -eu
pkgs="qemu-utils nbdkit libnbd-bin fio gcc libc6-dev"
missing=""
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
