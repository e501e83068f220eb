package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestRunRefusesBadConfiguration(t *testing.T) {
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
}

func TestRunHelp(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), []string{"help"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "usage") {
		t.Errorf("help printed %q", out.String())
	}
}
