package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// sparsecopy.sh refuses a number that is not one, or is too large for the
// shell's arithmetic, with a message naming its flag and exit status 2,
// before it looks for its tools, builds or starts anything. It used to take
// any -r and -s: -r 0 or x ran no round and divided by zero in the table,
// an -s below 8 divided by zero once tpnbd was built (the image's 64
// pieces of data are 8 MiB), -s 010 was 8 MiB to the shell's arithmetic
// but 10 MiB to truncate, and -s 8796093022208, whose bytes are 2^63,
// wrapped to a negative size.
func TestSparseCopyRefusesBadNumbers(t *testing.T) {
	for _, c := range []struct {
		args  []string
		bound string
	}{
		{[]string{"-r", "0"}, "9223372036854775807"},
		{[]string{"-r", "x"}, "9223372036854775807"},
		{[]string{"-r", "-1"}, "9223372036854775807"},
		{[]string{"-r", ""}, "9223372036854775807"},
		{[]string{"-r", "01"}, "9223372036854775807"},
		{[]string{"-r", "9223372036854775808"}, "9223372036854775807"},
		{[]string{"-r", "100000000000000000000"}, "9223372036854775807"},
		{[]string{"-s", "0"}, "8796093022207"},
		{[]string{"-s", "7"}, "8796093022207"},
		{[]string{"-s", "x"}, "8796093022207"},
		{[]string{"-s", "a[0]"}, "8796093022207"},
		{[]string{"-s", "010"}, "8796093022207"},
		{[]string{"-s", "08"}, "8796093022207"},
		{[]string{"-s", "8796093022208"}, "8796093022207"},
		{[]string{"-s", "99999999999999999999"}, "8796093022207"},
	} {
		requireScriptRefused(t, "sparsecopy.sh", c.args, c.args[0]+" "+c.args[1]+": ")
		requireScriptRefused(t, "sparsecopy.sh", c.args, "at most "+c.bound)
	}
	requireScriptRefused(t, "sparsecopy.sh", []string{"-s", "7"}, "8 or more")
}

// The bounds themselves are numbers sparsecopy.sh takes: it goes on past
// its checks of the arguments to look for its tools, which are not on
// PATH.
func TestSparseCopyTakesNumbersAtTheirBound(t *testing.T) {
	for _, args := range [][]string{
		{"-r", "1", "-s", "8"},
		{"-r", "9223372036854775807", "-s", "8796093022207"},
	} {
		stdout, stderr, code := runScript(t, argumentTools(t), "sparsecopy.sh", args...)
		require.Equal(t, 1, code, "%q: %s", args, stderr)
		require.Contains(t, stderr, "nbdcopy not found", args)
		require.Empty(t, stdout, args)
	}
}

// An argument that is not an option, and what follows it, is not ignored
// (getopts stops at the first one, so "sparsecopy.sh 3 -r 1" ran the
// default five rounds), and an unknown option is refused with the usage on
// stderr, not stdout.
func TestSparseCopyRefusesStrayArgumentsAndUnknownOptions(t *testing.T) {
	for _, args := range [][]string{{"3"}, {"3", "-r", "1"}, {"-r", "1", "extra"}} {
		requireScriptRefused(t, "sparsecopy.sh", args, "unexpected argument")
	}
	requireScriptRefused(t, "sparsecopy.sh", []string{"-x"}, "Usage: cmd/tpnbd/sparsecopy.sh")
}
