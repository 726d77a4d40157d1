//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// systemPython is the only interpreter that can import Debian's
// python3-libtorrent.
const systemPython = "/usr/bin/python3"

// tool is a third-party program the bench needs, and its Debian package.
type tool struct {
	pkg     string
	check   []string // a command that succeeds when the tool is usable
	version []string // a command whose first output line names the version
	fields  int      // leading words of that line to keep; 0 keeps it all
}

// toolsFor lists the programs the selected comparisons need, each once.
func toolsFor(cfg config) []tool {
	libtorrent := tool{
		pkg:     "python3-libtorrent",
		check:   []string{systemPython, "-c", "import libtorrent"},
		version: []string{systemPython, "-c", "import libtorrent; print('libtorrent', libtorrent.__version__)"},
	}
	aria2 := tool{pkg: "aria2", check: []string{"aria2c", "--version"}, version: []string{"aria2c", "--version"}}
	transmission := tool{pkg: "transmission-cli", check: []string{"transmission-cli", "--version"}, version: []string{"transmission-cli", "--version"}}
	// nginx -v and tinyproxy -v print their version and exit 0; wrk has no
	// version flag that exits 0, so its check runs it on nothing.
	nginx := tool{pkg: "nginx-light", check: []string{"nginx", "-v"}, version: []string{"nginx", "-v"}}
	curl := tool{pkg: "curl", check: []string{"curl", "--version"}, version: []string{"curl", "--version"}, fields: 2}
	tinyproxy := tool{pkg: "tinyproxy", check: []string{"tinyproxy", "-v"}, version: []string{"tinyproxy", "-v"}}
	wrk := tool{pkg: "wrk", check: []string{"sh", "-c", "command -v wrk"}, version: []string{"sh", "-c", "wrk -v 2>&1 | head -n 1; true"}, fields: 2}
	var ts []tool
	add := func(more ...tool) {
		for _, t := range more {
			if !slices.ContainsFunc(ts, func(u tool) bool { return u.pkg == t.pkg }) {
				ts = append(ts, t)
			}
		}
	}
	if cfg.has(cmpSwarm) {
		add(libtorrent, aria2, transmission)
	}
	if cfg.has(cmpMixed) {
		add(libtorrent, nginx)
	}
	if cfg.has(cmpProxy) {
		add(libtorrent, nginx, curl, tinyproxy)
	}
	if cfg.has(cmpSeek) {
		add(libtorrent, nginx, curl)
	}
	if cfg.has(cmpOffload) {
		add(nginx, curl)
	}
	if cfg.has(cmpPassthrough) {
		add(nginx, curl, tinyproxy, wrk)
	}
	if cfg.has(cmpScale) {
		add(curl)
	}
	return ts
}

// ensureTools installs the Debian packages of missing tools with apt-get
// when running as root, saying what it does on log; otherwise a missing
// tool is an error with the command to run.
func ensureTools(ctx context.Context, log io.Writer, tools []tool) error {
	var missing []string
	for _, t := range tools {
		if _, err := output(ctx, t.check); err != nil {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing tools; run: sudo apt-get install -y %s", strings.Join(missing, " "))
	}
	if err := aptInstall(ctx, log, missing); err != nil {
		return err
	}
	for _, t := range tools {
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

// toolVersions names the version of every tool, for the report.
func toolVersions(ctx context.Context, tools []tool) ([]string, error) {
	var vs []string
	for _, t := range tools {
		out, err := output(ctx, t.version)
		if err != nil {
			return nil, err
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if f := strings.Fields(line); t.fields > 0 && len(f) > t.fields {
			line = strings.Join(f[:t.fields], " ")
		}
		vs = append(vs, strings.TrimSpace(line))
	}
	return vs, nil
}
