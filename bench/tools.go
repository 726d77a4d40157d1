//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// systemPython is the only interpreter that can import Debian's
// python3-libtorrent.
const systemPython = "/usr/bin/python3"

// tool is a third-party peer the bench needs, and its Debian package.
type tool struct {
	pkg     string
	check   []string // a command that succeeds when the tool is usable
	version []string // a command whose first output line names the version
}

// peerTools lists the peers the bench compares against.
func peerTools() []tool {
	return []tool{
		{
			pkg:     "python3-libtorrent",
			check:   []string{systemPython, "-c", "import libtorrent"},
			version: []string{systemPython, "-c", "import libtorrent; print('libtorrent', libtorrent.__version__)"},
		},
		{pkg: "aria2", check: []string{"aria2c", "--version"}, version: []string{"aria2c", "--version"}},
		{pkg: "transmission-cli", check: []string{"transmission-cli", "--version"}, version: []string{"transmission-cli", "--version"}},
	}
}

// ensureTools installs the Debian packages of missing peers with apt-get
// when running as root, saying what it does on log; otherwise a missing
// peer is an error with the command to run.
func ensureTools(ctx context.Context, log io.Writer) error {
	var missing []string
	for _, t := range peerTools() {
		if _, err := output(ctx, t.check); err != nil {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing peers; run: sudo apt-get install -y %s", strings.Join(missing, " "))
	}
	if err := aptInstall(ctx, log, missing); err != nil {
		return err
	}
	for _, t := range peerTools() {
		if _, err := output(ctx, t.check); err != nil {
			return fmt.Errorf("%s still unusable after installing: %w", t.pkg, err)
		}
	}
	return nil
}

// aptInstall runs apt-get install, and apt-get update and install again
// if the first attempt fails (a fresh image has no package lists).
func aptInstall(ctx context.Context, log io.Writer, pkgs []string) error {
	install := append([]string{"apt-get", "install", "-y", "--no-install-recommends"}, pkgs...)
	if err := runLogged(ctx, log, install); err == nil {
		return nil
	}
	if err := runLogged(ctx, log, []string{"apt-get", "update"}); err != nil {
		return err
	}
	return runLogged(ctx, log, install)
}

func runLogged(ctx context.Context, log io.Writer, argv []string) error {
	fmt.Fprintf(log, "bench: running %s\n", strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return nil
}

// output runs argv and returns its combined output.
func output(ctx context.Context, argv []string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// toolVersions names the version of every peer, for the report.
func toolVersions(ctx context.Context) ([]string, error) {
	var vs []string
	for _, t := range peerTools() {
		out, err := output(ctx, t.version)
		if err != nil {
			return nil, err
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		vs = append(vs, strings.TrimSpace(line))
	}
	return vs, nil
}
