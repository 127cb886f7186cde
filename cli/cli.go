// Package cli is the tasker command: a table of commands, each with its
// description, an example and its own --help, that main.go runs. Commands
// that print data take --json; usage errors exit 2, refusals and failures
// exit 1 with the reason.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/tasker-run/tasker/api"
	"github.com/tasker-run/tasker/config"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// errUsage marks an error as the user's misuse of a command (exit code 2).
var errUsage = errors.New("usage")

// usagef is a usage error with its message.
func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// command is one entry of the command table.
type command struct {
	// name is the words after "tasker": "node", "task list".
	name string
	// args is the synopsis after the name and its flags: "TASK".
	args string
	// summary is the line of the command list; about adds to it in the
	// command's own help.
	summary, about string
	// example is a typical invocation.
	example string
	// data says the command prints data, so it takes --json.
	data bool
	// run runs the command with its arguments (the words after the name).
	run func(in *invocation, args []string) error
}

// invocation is one run of a command: its flags and where it writes.
type invocation struct {
	cmd            *command
	fs             *flag.FlagSet
	configPath     *string
	json           *bool
	version        string
	stdout, stderr io.Writer
}

// Run runs the tasker command line args (without the program name) and
// returns the exit code. version is what `tasker version` prints.
func Run(version string, args []string, stdout, stderr io.Writer) int {
	err := dispatch(version, args, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "tasker:", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return exitUsage
	default:
		fmt.Fprintln(stderr, "tasker:", err)
		return exitFailed
	}
}

func dispatch(version string, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		writeUsage(stderr)
		return usagef("no command given (see tasker help)")
	}
	switch args[0] {
	case "help", "-h", "--help":
		writeUsage(stdout)
		return nil
	case "--version":
		args = []string{"version"}
	}
	cmd, rest, err := lookup(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeGroupUsage(stdout, args[0])
		}
		return err
	}
	in := &invocation{cmd: cmd, version: version, stdout: stdout, stderr: stderr}
	in.fs = flag.NewFlagSet("tasker "+cmd.name, flag.ContinueOnError)
	in.fs.SetOutput(io.Discard)
	in.configPath = in.fs.String("config", os.Getenv("TASKER_CONFIG"), "configuration file (TOML)")
	if cmd.data {
		in.json = in.fs.Bool("json", false, "print JSON instead of text")
	}
	return cmd.run(in, rest)
}

// lookup finds the command args name: two words for a command of a group
// ("task list"), else one.
func lookup(args []string) (*command, []string, error) {
	if len(args) > 1 {
		if c := find(args[0] + " " + args[1]); c != nil {
			return c, args[2:], nil
		}
	}
	if c := find(args[0]); c != nil {
		return c, args[1:], nil
	}
	subs := group(args[0])
	switch {
	case len(subs) == 0:
		return nil, nil, usagef("unknown command %q (see tasker help)", args[0])
	case len(args) == 1:
		return nil, nil, usagef("tasker %s needs a command: %s", args[0], strings.Join(subs, ", "))
	case slices.Contains([]string{"-h", "--help", "help"}, args[1]):
		return nil, nil, flag.ErrHelp
	}
	return nil, nil, usagef("unknown command tasker %s %s (%s)", args[0], args[1], strings.Join(subs, ", "))
}

func find(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// group lists the commands of group name ("task": list, show, …).
func group(name string) []string {
	var subs []string
	for _, c := range commands {
		if sub, ok := strings.CutPrefix(c.name, name+" "); ok {
			subs = append(subs, sub)
		}
	}
	return subs
}

// parse parses the invocation's flags, placed before or after the
// command's positional argument when it has one, and returns that
// argument. --help prints the command's help.
func (in *invocation) parse(args []string) (string, error) {
	if err := in.parseFlags(args); err != nil {
		return "", err
	}
	if in.cmd.args == "" {
		if in.fs.NArg() > 0 {
			return "", usagef("tasker %s takes flags only, got %q", in.cmd.name, in.fs.Arg(0))
		}
		return "", nil
	}
	if in.fs.NArg() == 0 {
		return "", usagef("tasker %s needs %s", in.cmd.name, in.cmd.args)
	}
	arg := in.fs.Arg(0)
	if err := in.parseFlags(in.fs.Args()[1:]); err != nil {
		return "", err
	}
	if in.fs.NArg() > 0 {
		return "", usagef("tasker %s takes one argument, got also %q", in.cmd.name, in.fs.Arg(0))
	}
	return arg, nil
}

func (in *invocation) parseFlags(args []string) error {
	err := in.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		in.writeHelp(in.stdout)
		return err
	case err != nil:
		return usagef("%v (see tasker %s --help)", err, in.cmd.name)
	}
	return nil
}

// config loads the configuration the --config flag names (TASKER_ENV and
// the TASKER_ variables apply).
func (in *invocation) config() (*config.Config, error) {
	return config.Load(config.LoadOptions{Path: *in.configPath, Getenv: os.Getenv})
}

// parseConfig parses args (flags only) and loads the configuration.
func (in *invocation) parseConfig(args []string) (*config.Config, error) {
	if _, err := in.parse(args); err != nil {
		return nil, err
	}
	return in.config()
}

// output writes v as JSON with --json, else calls text.
func (in *invocation) output(v any, text func() error) error {
	if in.json != nil && *in.json {
		return writeJSON(in.stdout, v)
	}
	return text()
}

// signalContext is cancelled on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// usageError turns the operator's refusal of malformed input into a usage
// error (exit code 2); refusals by the state machine stay failures (1).
func usageError(err error) error {
	var invalid *api.InvalidError
	if errors.As(err, &invalid) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}

// writeUsage lists the commands.
func writeUsage(w io.Writer) {
	fmt.Fprint(w, "usage: tasker <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		if len(c.name) > 13 {
			fmt.Fprintf(w, "  %s\n  %-13s  %s\n", c.name, "", c.summary)
			continue
		}
		fmt.Fprintf(w, "  %-13s  %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Every command takes --config FILE (or TASKER_CONFIG) and --help; TASKER_ENV
picks the environment overlay; TASKER_DATABASE_URL and friends override the
file. Commands that print data take --json for machine output.
`)
}

// writeGroupUsage lists the commands of a group ("tasker task --help").
func writeGroupUsage(w io.Writer, name string) {
	fmt.Fprintf(w, "usage: tasker %s <command> [flags]\n\ncommands:\n", name)
	for _, c := range commands {
		if sub, ok := strings.CutPrefix(c.name, name+" "); ok {
			fmt.Fprintf(w, "  %-10s  %s\n", sub, c.summary)
		}
	}
	fmt.Fprintf(w, "\nSee tasker %s <command> --help for one command's flags.\n", name)
}

// writeHelp is a command's own help: what it does, its synopsis, an
// example and its flags.
func (in *invocation) writeHelp(w io.Writer) {
	c := in.cmd
	synopsis := "tasker " + c.name + " [flags]"
	if c.args != "" {
		synopsis += " " + c.args
	}
	fmt.Fprintf(w, "usage: %s\n\n%s\n", synopsis, c.summary)
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", c.about)
	}
	fmt.Fprintf(w, "\nexample:\n  %s\n\nflags:\n", c.example)
	in.fs.SetOutput(w)
	in.fs.PrintDefaults()
	in.fs.SetOutput(io.Discard)
}
