// Command tasker runs a Tasker node and talks to one; `tasker help` lists
// its commands, which live in package cli.
package main

import (
	"os"

	"github.com/tasker-run/tasker/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(cli.Run(version, os.Args[1:], os.Stdout, os.Stderr))
}
