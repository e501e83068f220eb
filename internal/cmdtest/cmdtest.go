// Package cmdtest checks the contract every program's run function keeps:
// bad configuration and unknown commands stop it with a message that says
// what is wrong, and help prints the usage.
package cmdtest

import (
	"context"
	"io"
	"strings"
	"testing"
)

// Run is a program's run function.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Contract tests run against the contract.
func Contract(t *testing.T, run Run) {
	t.Helper()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no database", nil, nil, "DATABASE_URL is required"},
		{"a bad value", nil, map[string]string{"DATABASE_URL": "postgres://db/x", "DB_MAX_CONNS": "lots"}, "DB_MAX_CONNS"},
		{"an unknown command", []string{"frobnicate"}, map[string]string{"DATABASE_URL": "postgres://db/x"}, "frobnicate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			err := run(context.Background(), tc.args, getenv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		var out strings.Builder
		if err := run(context.Background(), []string{"help"}, func(string) string { return "" }, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "usage") {
			t.Errorf("help printed %q", out.String())
		}
	})
}
