// Command quest runs Quest — a lightsaber wishlist and a help forum whose
// reads are spread over PostgreSQL streaming replicas — and the local
// cluster it runs on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

const usage = `usage: quest <command> [flags]

commands:
  cluster   start, stop and inspect the local leader + followers; lag levers
  migrate   apply or list database migrations (on the primary only)
  dbshell   open psql on a node: quest dbshell --database replica
  lab       run the lag experiment (quest lab run) or the fault scenarios (quest lab faults)
  seed      add demo users, the article's forum thread, and an admin (prints its password)
  serve     run the web application (on 127.0.0.1:8080 unless --addr says otherwise)

Run "quest <command> -h" (or quest help <command>) for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsageShown) {
			fmt.Fprintf(os.Stderr, "quest: %v\n", err)
		}
		if errors.Is(err, errUsageShown) || errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errUsageShown marks a command line answered with the usage text, on
// stderr: there is nothing more to print.
var errUsageShown = errors.New("usage")

// usageError is a command line that cannot run as given. Its message is
// one line that names what is wrong or missing; main exits 2 on it.
type usageError string

func (e usageError) Error() string { return string(e) }

func usagef(format string, args ...any) error { return usageError(fmt.Sprintf(format, args...)) }

// run is the whole program, with its environment passed in so tests can
// call it as main would. Help, asked for with help, -h or --help at any
// level, is printed on stdout and is not an error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	env := environment{getenv: getenv, stdout: stdout, stderr: stderr}
	err := env.command(ctx, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func (env environment) command(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(env.stderr, usage)
		return errUsageShown
	}
	switch args[0] {
	case "cluster":
		return env.cluster(ctx, args[1:])
	case "migrate":
		return env.migrate(ctx, args[1:])
	case "serve":
		return env.serve(ctx, args[1:])
	case "seed":
		return env.seed(ctx, args[1:])
	case "dbshell":
		return env.dbshell(ctx, args[1:])
	case "lab":
		return env.lab(ctx, args[1:])
	}
	if !isHelp(args[0]) {
		return usagef("unknown command %q; run quest help", args[0])
	}
	if len(args) > 1 && !isHelp(args[1]) {
		// quest help cluster up = quest cluster up --help
		return env.command(ctx, append(append([]string(nil), args[1:]...), "--help"))
	}
	fmt.Fprint(env.stdout, usage)
	return nil
}

// isHelp reports whether a word asks for help.
func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// environment is what every subcommand gets from run.
type environment struct {
	getenv         func(string) string
	stdout, stderr io.Writer
}

// newFlags makes a flag set whose errors are returned, not printed and
// exited on. Its usage, printed by parse when help is asked for, goes to
// stdout.
func (e environment) newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stdout)
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "usage: quest %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before, between or after the positional
// arguments, and returns the positional ones. -h, --help, or help as the
// first positional argument print the usage and return flag.ErrHelp; a bad
// flag is a one-line usageError, with no usage text.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {} // the flag package calls it on every error
	fs.SetOutput(io.Discard)
	help := func() error {
		fs.SetOutput(out)
		usage()
		return flag.ErrHelp
	}
	defer func() { fs.Usage = usage; fs.SetOutput(out) }()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, help()
			}
			return nil, usagef("%s: %v; see quest %s --help", fs.Name(), err, fs.Name())
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		if len(pos) == 0 && fs.Arg(0) == "help" {
			return nil, help()
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// defaultStateDir is where the local cluster's state lives unless --dir or
// QUEST_DIR says otherwise: .quest/cluster at the root of the Quest
// checkout holding the working directory, else under the working directory.
func (e environment) defaultStateDir() string {
	if d := e.getenv("QUEST_DIR"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return filepath.Join(".quest", "cluster")
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module quest\n") {
			return filepath.Join(dir, ".quest", "cluster")
		}
		if dir == filepath.Dir(dir) {
			return filepath.Join(wd, ".quest", "cluster")
		}
	}
}
