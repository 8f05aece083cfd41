package main

import (
	"bytes"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// compare.sh refuses a number that is not one (rounds, seconds, MiB,
// GOMAXPROCS) with a message naming its flag and exit status 2, before it
// looks for its tools, builds or starts anything.
func TestCompareRefusesBadNumbers(t *testing.T) {
	for _, args := range [][]string{
		{"-r", "0"}, {"-r", "x"}, {"-r", "-1"},
		{"-t", "0"}, {"-t", "x"}, {"-t", ""},
		{"-s", "0"}, {"-s", "x"}, {"-s", "a[0]"},
		{"-p", "x"}, {"-p", "-1"},
		// tpnbd reads -procs as Go does, 08 as a bad octal number and 010
		// as 8.
		{"-p", "08"}, {"-p", "010"},
	} {
		requireRefused(t, append([]string{"-j", "randread:1:1"}, args...), args[0]+" "+args[1]+":")
	}
}

// An argument that is not an option, and what follows it, is not ignored:
// getopts stops at the first one, so "compare.sh tcp -r 3" would have run
// the default five rounds on Unix sockets.
func TestCompareRefusesStrayArguments(t *testing.T) {
	for _, args := range [][]string{
		{"extra"},
		{"-r", "1", "-t", "1", "-s", "1", "-j", "randread:1:1", "tcp"},
		{"-j", "randread:1:1", "-s", "1", "-t", "1", "r", "-r", "0"},
	} {
		requireRefused(t, args, "unexpected argument")
	}
}

// requireRefused runs compare.sh with args and requires that it print
// nothing, exit 2 and say why on stderr, in words containing want.
func requireRefused(t *testing.T, args []string, want string) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"compare.sh"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%q exited 0: %s", args, stdout.String())
	require.Equal(t, 2, exit.ExitCode(), "%q: %s", args, stderr.String())
	require.Contains(t, stderr.String(), want, args)
	require.Empty(t, stdout.String(), args)
}
