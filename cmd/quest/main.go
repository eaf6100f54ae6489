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
  dbshell   open psql on a node: quest dbshell --database replica1
  lab       run the lag experiment (quest lab run) and print its table
  seed      add demo users, the article's forum thread, and an admin (prints its password)
  serve     run the web application

Run "quest <command> -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) && !errors.Is(err, errUsageShown) {
			fmt.Fprintf(os.Stderr, "quest: %v\n", err)
		}
		if errors.Is(err, errUsageShown) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errUsageShown marks an error whose message the flag package has printed.
var errUsageShown = errors.New("usage")

// run is the whole program, with its environment passed in so tests can
// call it as main would.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsageShown
	}
	env := environment{getenv: getenv, stdout: stdout, stderr: stderr}
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
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q; run quest help", args[0])
	}
}

// environment is what every subcommand gets from run.
type environment struct {
	getenv         func(string) string
	stdout, stderr io.Writer
}

// newFlags makes a flag set whose errors are returned, not printed and
// exited on.
func (e environment) newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: quest %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before, between or after the positional
// arguments, and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsageShown, err)
		}
		if fs.NArg() == 0 {
			return pos, nil
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
