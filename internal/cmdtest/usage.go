package cmdtest

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Usage returns the usage a script prints: the comment block that follows
// its first line, up to its first line that is not a comment, each line
// with its newline.
func Usage(t testing.TB, script string) string {
	t.Helper()
	text, err := os.ReadFile(script)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(text), "\n")
	var b strings.Builder
	for _, line := range lines[1:] {
		if !strings.HasPrefix(line, "#") {
			break
		}
		b.WriteString(line)
	}
	return b.String()
}
