// Command tbproxy makes BitTorrent transparent to ordinary HTTP software.
//
// This file holds only the wiring: subcommand dispatch, flag parsing that
// accepts flags before or after positional arguments, and signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the proxy (the default)", runProxy},
		{"publish", "serve a directory (or a web server) as a Transparent BitTorrent origin", runPublish},
		{"tracker", "run the BitTorrent tracker on its own", runTracker},
		{"get", "download one URL through the engine, with a progress bar", runGet},
		{"torrent", "create and inspect .torrent files and magnet links", runTorrent},
		{"ca", "the MITM certificate authority: path, export, install, uninstall, rotate", runCA},
	}
}

// errUsage means the arguments were wrong; what is wrong and the usage
// text have been printed.
var errUsage = errors.New("usage")

// usageError is a flag the command line got wrong (unknown, or with a bad
// value): it is errUsage, and says what was wrong.
type usageError struct{ err error }

func (e usageError) Error() string        { return e.err.Error() }
func (e usageError) Unwrap() error        { return e.err }
func (e usageError) Is(target error) bool { return target == errUsage }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// exitCode is the exit status for what run returned: 0 for success and
// for help asked for (the usage has been printed), 2 for a usage error
// (already printed, with the usage), and 1 for any other error, which it
// prints on stderr.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintln(stderr, "tbproxy:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		usage(stderr)
		fmt.Fprintln(stderr)
		fs, _ := runProxyFlags(stderr)
		fmt.Fprintln(stderr, "Flags of run:")
		fs.PrintDefaults()
		return nil
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		// No command: run the proxy, with any flags given.
		return runProxy(ctx, args, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tbproxy: unknown command %q\n\n", args[0])
	usage(stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: tbproxy [COMMAND] [flags] [args]   (no command runs the proxy)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'tbproxy COMMAND --help' for a command's flags.")
}

// newFlagSet is a command's flag set, writing to w: its usage gives the
// command's synopsis lines, then its flags.
func newFlagSet(name string, w io.Writer, synopsis ...string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		for _, line := range synopsis {
			fmt.Fprintln(w, line)
		}
		fmt.Fprintln(w, "Flags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags that may come before, between or after positional
// arguments, and returns the positional ones in order. On a wrong flag it
// prints, once, what is wrong (named by the flag set's name) and then the
// usage, and returns a usageError; on -h or --help it prints the usage and
// returns flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseQuietly(fs, args); err != nil {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
				err = usageError{err}
			}
			if fs.Usage != nil { // newFlagSet always sets it
				fs.Usage()
			}
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseQuietly is fs.Parse without the flag package's own report of an
// error (the error, then the usage), which parseArgs gives instead.
func parseQuietly(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	defer func() {
		fs.SetOutput(out)
		fs.Usage = usage
	}()
	return fs.Parse(args)
}
