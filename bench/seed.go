//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// startTimeout bounds how long any peer may take to be ready.
const startTimeout = 30 * time.Second

// seed is a running python3-libtorrent seed (integration/testdata/ltpeer.py).
type seed struct {
	proc  *process
	port  int       // its TCP listen port on 127.0.0.1
	ready time.Time // when it reported listening; it has dialled its peers then

	mu       sync.Mutex
	statusAt time.Time     // when its last status line came; guarded by mu
	uploaded int64         // total_upload in that line; guarded by mu
	status   chan struct{} // closed, and replaced, at each status line; guarded by mu
}

// noteStatus records a status line of ltpeer.py.
func (s *seed) noteStatus(uploaded int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statusAt, s.uploaded = time.Now(), uploaded
	close(s.status)
	s.status = make(chan struct{})
}

// uploadedSince waits for a status line that came after t (ltpeer.py
// prints one every 0.5 s) and returns libtorrent's total_upload from it:
// the bytes the seed has sent, protocol overhead included.
func (s *seed) uploadedSince(ctx context.Context, t time.Time) (int64, error) {
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		s.mu.Lock()
		at, up, next := s.statusAt, s.uploaded, s.status
		s.mu.Unlock()
		if at.After(t) {
			return up, nil
		}
		select {
		case <-next:
		case <-s.proc.Done():
			return 0, s.proc.exitErr("exited")
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-timer.C:
			return 0, errors.New("libtorrent seed printed no status for 5 s")
		}
	}
}

// addr is the seed's address for dialling.
func (s *seed) addr() string { return hostPort(s.port) }

// startSeed starts a libtorrent seed in seed_mode (no hash check up front,
// no upload limit) for t, with HOME at home, and returns once it listens. ltpeer.py dials each
// of dial as soon as it listens and again every 2 s while not connected.
// The caller stops it.
func startSeed(ctx context.Context, ws *workspace, t torrent, home string, dial ...string) (*seed, error) {
	args := []string{ws.ltpeer,
		"--torrent", t.path,
		"--save", filepath.Dir(ws.content),
		"--listen-port", "0",
		"--mode", "seed",
		"--seed-mode",
	}
	for _, a := range dial {
		args = append(args, "--peer", a)
	}
	listening := make(chan int, 1)
	var once sync.Once
	s := &seed{status: make(chan struct{})}
	onLine := func(line string) {
		var ev struct {
			Event    string `json:"event"`
			Port     int    `json:"port"`
			Uploaded int64  `json:"total_upload"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil {
			return
		}
		switch ev.Event {
		case "listening":
			once.Do(func() { listening <- ev.Port })
		case "status":
			s.noteStatus(ev.Uploaded)
		}
	}
	p, err := startProcess(procSpec{name: "libtorrent seed", path: systemPython, args: args, home: home, onLine: onLine})
	if err != nil {
		return nil, err
	}
	s.proc = p
	select {
	case s.port = <-listening:
		s.ready = time.Now()
		return s, nil
	case <-p.Done():
		return nil, p.exitErr("exited before listening")
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	case <-time.After(startTimeout):
		p.stop()
		return nil, fmt.Errorf("libtorrent seed did not listen within %v:\n%s", startTimeout, p.out)
	}
}

func hostPort(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
