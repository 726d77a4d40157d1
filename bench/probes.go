//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// doneHook is a completion script for clients that run one when a
// download completes (aria2, transmission). The script writes the wall
// clock in nanoseconds into a FIFO the bench reads, so completion is an
// event, not something polled for.
type doneHook struct {
	script string         // the executable to give the client
	at     chan time.Time // gets the first completion time; buffered
	fifo   *os.File       // opened read-write, so the script never blocks and reads never see EOF
	ended  chan struct{}  // closed when the reading goroutine returns
}

func newDoneHook(dir string) (*doneHook, error) {
	fifo := filepath.Join(dir, "done.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return nil, fmt.Errorf("making %s: %w", fifo, err)
	}
	script := filepath.Join(dir, "done.sh")
	if strings.ContainsAny(fifo, "'\n") {
		return nil, fmt.Errorf("cannot quote %q", fifo)
	}
	body := "#!/bin/sh\ndate +%s%N > '" + fifo + "'\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	h := &doneHook{script: script, at: make(chan time.Time, 1), fifo: f, ended: make(chan struct{})}
	go h.read()
	return h, nil
}

func (h *doneHook) read() {
	defer close(h.ended)
	sc := bufio.NewScanner(h.fifo)
	for sc.Scan() {
		ns, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			continue
		}
		select {
		case h.at <- time.Unix(0, ns):
		default: // only the first completion counts
		}
	}
}

// close stops the reader and waits for it.
func (h *doneHook) close() {
	_ = h.fifo.Close()
	<-h.ended
}

// rpcClient posts JSON to a 127.0.0.1 RPC endpoint, never through a proxy.
type rpcClient struct {
	port int
	http *http.Client
}

func newRPCClient() (rpcClient, error) {
	port, err := freePort()
	if err != nil {
		return rpcClient{}, err
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}
	return rpcClient{port: port, http: &http.Client{Transport: tr, Timeout: 2 * time.Second}}, nil
}

func (c rpcClient) close() { c.http.CloseIdleConnections() }

// post sends body to path and returns the response.
func (c rpcClient) post(ctx context.Context, path string, body []byte, header http.Header) (*http.Response, []byte, error) {
	url := "http://" + hostPort(c.port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, data, err
}

// aria2RPC asks aria2 for its bitfield of verified pieces.
type aria2RPC struct {
	rpcClient
	secret string // --rpc-secret
}

func newAria2RPC() (*aria2RPC, error) {
	c, err := newRPCClient()
	if err != nil {
		return nil, err
	}
	var b [16]byte
	crand.Read(b[:])
	return &aria2RPC{rpcClient: c, secret: hex.EncodeToString(b[:])}, nil
}

// hasPiece reports whether any active download has a verified piece.
func (a *aria2RPC) hasPiece(ctx context.Context) (bool, error) {
	call := map[string]any{
		"jsonrpc": "2.0",
		"id":      "bench",
		"method":  "aria2.tellActive",
		"params":  []any{"token:" + a.secret, []string{"bitfield"}},
	}
	body, err := json.Marshal(call)
	if err != nil {
		return false, err
	}
	resp, data, err := a.post(ctx, "/jsonrpc", body, nil)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("aria2 rpc: %s: %s", resp.Status, data)
	}
	var answer struct {
		Result []struct {
			Bitfield string `json:"bitfield"`
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return false, fmt.Errorf("aria2 rpc: %w", err)
	}
	for _, d := range answer.Result {
		if strings.Trim(d.Bitfield, "0") != "" {
			return true, nil
		}
	}
	return false, nil
}

// transmissionRPC asks transmission for the bytes of its verified pieces.
type transmissionRPC struct {
	rpcClient
	session string // X-Transmission-Session-Id, learnt from a 409; used by one goroutine
}

func newTransmissionRPC() (*transmissionRPC, error) {
	c, err := newRPCClient()
	if err != nil {
		return nil, err
	}
	return &transmissionRPC{rpcClient: c}, nil
}

const sessionHeader = "X-Transmission-Session-Id"

// hasPiece reports whether the torrent has any verified bytes.
func (t *transmissionRPC) hasPiece(ctx context.Context) (bool, error) {
	body := []byte(`{"method":"torrent-get","arguments":{"fields":["haveValid"]}}`)
	for range 2 {
		resp, data, err := t.post(ctx, "/transmission/rpc", body, http.Header{sessionHeader: {t.session}})
		if err != nil {
			return false, err
		}
		switch resp.StatusCode {
		case http.StatusConflict:
			t.session = resp.Header.Get(sessionHeader)
			continue
		case http.StatusOK:
			return haveValid(data)
		default:
			return false, fmt.Errorf("transmission rpc: %s", resp.Status)
		}
	}
	return false, errors.New("transmission rpc: no session id")
}

func haveValid(data []byte) (bool, error) {
	var answer struct {
		Arguments struct {
			Torrents []struct {
				HaveValid int64 `json:"haveValid"`
			} `json:"torrents"`
		} `json:"arguments"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return false, fmt.Errorf("transmission rpc: %w", err)
	}
	for _, t := range answer.Arguments.Torrents {
		if t.HaveValid > 0 {
			return true, nil
		}
	}
	return false, nil
}
