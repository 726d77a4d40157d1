package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/tbproxy/tbproxy/certs"
)

// systemCAFile is where Debian's update-ca-certificates picks up local CAs.
const systemCAFile = "/usr/local/share/ca-certificates/tbproxy.crt"

func runCA(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tbproxy ca", stderr,
		"Usage: tbproxy ca {path|export|install|uninstall|rotate} [--dir DIR]",
		"  path       print the CA certificate's path (creating the CA if needed)",
		"  export     print the CA certificate (PEM)",
		"  install    add the CA to the system store (Debian: update-ca-certificates; needs root)",
		"  uninstall  remove it from the system store (needs root)",
		"  rotate     replace the CA with a new one")
	dir := fs.String("dir", "", "CA directory (default: the XDG config directory)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "tbproxy ca: want exactly one action")
		fs.Usage()
		return errUsage
	}
	if *dir == "" {
		if *dir, err = defaultCADir(); err != nil {
			return err
		}
	}
	switch pos[0] {
	case "path":
		ca, err := certs.Load(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, ca.Path())
	case "export":
		ca, err := certs.Load(*dir)
		if err != nil {
			return err
		}
		_, err = stdout.Write(ca.CertPEM())
		return err
	case "install":
		ca, err := certs.Load(*dir)
		if err != nil {
			return err
		}
		if err := debianStore().install(ca.CertPEM(), stdout, stderr); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Installed %s in the system store.\n", ca.Path())
		fmt.Fprintln(stdout, "Browsers keep their own stores: in Firefox, Settings → Privacy & Security → Certificates → Import;")
		fmt.Fprintln(stdout, "for Chromium on Linux, certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n tbproxy -i "+ca.Path())
	case "uninstall":
		return debianStore().uninstall(stdout, stderr)
	case "rotate":
		ca, err := certs.Rotate(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "New CA at %s. Install it again where the old one was trusted.\n", ca.Path())
	default:
		fmt.Fprintf(stderr, "tbproxy ca: unknown action %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	return nil
}

// systemStore is the system's store of trusted CAs, as Debian keeps it.
type systemStore struct {
	caFile   string // where our CA goes for update to pick it up
	certsDir string // what update rewrites
	update   func(stdout, stderr io.Writer) error
}

// debianStore is the store update-ca-certificates keeps.
func debianStore() systemStore {
	return systemStore{caFile: systemCAFile, certsDir: "/etc/ssl/certs", update: updateCACertificates}
}

func (s systemStore) install(pem []byte, stdout, stderr io.Writer) error {
	if err := os.MkdirAll(filepath.Dir(s.caFile), 0o755); err != nil {
		return fmt.Errorf("installing the CA (run as root): %w", err)
	}
	if err := os.WriteFile(s.caFile, pem, 0o644); err != nil {
		return fmt.Errorf("installing the CA (run as root): %w", err)
	}
	return s.update(stdout, stderr)
}

// uninstall removes the CA from the store. It checks first that it can
// change the store, so that a user who cannot gets one clear error rather
// than update-ca-certificates' complaints, and nothing is run.
func (s systemStore) uninstall(stdout, stderr io.Writer) error {
	for _, dir := range []string{filepath.Dir(s.caFile), s.certsDir} {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue // nothing of ours, nothing to rewrite there
		}
		if err := checkWritable(dir); err != nil {
			return fmt.Errorf("uninstalling the CA (run as root): %s: %w", dir, err)
		}
	}
	if err := os.Remove(s.caFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uninstalling the CA (run as root): %w", err)
	}
	return s.update(stdout, stderr)
}

func updateCACertificates(stdout, stderr io.Writer) error {
	cmd := exec.Command("update-ca-certificates", "--fresh")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("update-ca-certificates: %w", err)
	}
	return nil
}
