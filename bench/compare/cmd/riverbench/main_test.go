package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseFlagsDefaults(t *testing.T) {
	o, err := parseFlags([]string{"--database-url", "postgres://h/db"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Jobs != 200000 || o.Workers != 2000 || o.Schema != "riverbench" {
		t.Errorf("defaults: %+v", o)
	}
}

func TestParseFlagsRefusesBadInputByName(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--database-url"},
		{[]string{"--database-url", "postgres://h/db", "--jobs", "0"}, "--jobs"},
		{[]string{"--database-url", "postgres://h/db", "--workers", "0"}, "--workers"},
		{[]string{"--database-url", "postgres://h/db", "--schema", "Bad-Name"}, "--schema"},
		// Tasker's schemas and the default one are not River's to migrate
		// into or empty.
		{[]string{"--database-url", "postgres://h/db", "--schema", "tasker"}, "taken"},
		{[]string{"--database-url", "postgres://h/db", "--schema", "pgmq"}, "taken"},
		{[]string{"--database-url", "postgres://h/db", "--schema", "public"}, "taken"},
		{[]string{"--database-url", "postgres://h/db", "extra"}, `"extra"`},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}
