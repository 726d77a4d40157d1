//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// curlFormat is what curl prints after a transfer (-w): its status, the
// body's bytes, and the seconds from its start to the first byte of the
// response and to the end.
const curlFormat = "bench-curl %{http_code} %{size_download} %{time_starttransfer} %{time_total}\n"

// curlResult is curl's own account of one transfer.
type curlResult struct {
	code  int
	size  int64
	ttfb  time.Duration // curl's time_starttransfer
	total time.Duration // curl's time_total
}

// parseCurl reads a line printed with curlFormat.
func parseCurl(line string) (curlResult, bool) {
	f := strings.Fields(line)
	if len(f) != 5 || f[0] != "bench-curl" {
		return curlResult{}, false
	}
	code, err1 := strconv.Atoi(f[1])
	size, err2 := strconv.ParseInt(f[2], 10, 64)
	ttfb, err3 := strconv.ParseFloat(f[3], 64)
	total, err4 := strconv.ParseFloat(f[4], 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return curlResult{}, false
	}
	return curlResult{code: code, size: size, ttfb: seconds(ttfb), total: seconds(total)}, true
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// curlReq is one transfer for curl.
type curlReq struct {
	url    string
	proxy  string // "" to go direct; else the proxy's URL (curl -x)
	accept string // an Accept header to send; "" for curl's own (*/*)
	out    string // where the body goes; "" for /dev/null
	want   int64  // the body's size; -1 for any
	rng    string // a byte range (curl -r); the answer must then be 206
}

// curlRun is a running curl.
type curlRun struct {
	req curlReq
	p   *process

	mu  sync.Mutex
	res *curlResult // its -w line, once printed; guarded by mu
}

// startCurl starts curl for req in env. curl starts with no proxy
// variables, so it goes direct unless req.proxy names one.
func startCurl(env *runEnv, req curlReq) (*curlRun, error) {
	c := &curlRun{req: req}
	out := req.out
	if out == "" {
		out = "/dev/null"
	}
	args := []string{"-sS", "--proto", "=http", "-o", out, "-w", curlFormat}
	if req.proxy != "" {
		args = append(args, "-x", req.proxy)
	}
	if req.accept != "" {
		args = append(args, "-H", "Accept: "+req.accept)
	}
	if req.rng != "" {
		args = append(args, "-r", req.rng)
	}
	args = append(args, req.url)
	onLine := func(line string) {
		if r, ok := parseCurl(line); ok {
			c.mu.Lock()
			c.res = &r
			c.mu.Unlock()
		}
	}
	p, err := env.start(procSpec{name: "curl", path: "curl", args: args, onLine: onLine})
	if err != nil {
		return nil, err
	}
	c.p = p
	return c, nil
}

// wait waits for curl to exit and checks that it got the whole body with
// status 200.
func (c *curlRun) wait(ctx context.Context) (curlResult, error) {
	if err := waitDone(ctx, c.p); err != nil {
		return curlResult{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.p.err != nil || c.res == nil:
		return curlResult{}, c.p.exitErr("failed")
	case c.req.rng == "" && c.res.code != 200:
		return *c.res, fmt.Errorf("curl %s: status %d", c.req.url, c.res.code)
	case c.req.rng != "" && c.res.code != 206:
		return *c.res, fmt.Errorf("curl -r %s %s: status %d, want 206", c.req.rng, c.req.url, c.res.code)
	case c.req.want >= 0 && c.res.size != c.req.want:
		return *c.res, fmt.Errorf("curl %s: %d bytes, want %d", c.req.url, c.res.size, c.req.want)
	}
	return *c.res, nil
}

// curl runs one transfer to its end.
func curl(ctx context.Context, env *runEnv, req curlReq) (curlResult, error) {
	c, err := startCurl(env, req)
	if err != nil {
		return curlResult{}, err
	}
	return c.wait(ctx)
}

// wrkResult is the JSON line wrkproxy.lua prints when wrk is done.
type wrkResult struct {
	Requests      int64 `json:"requests"`
	DurationUS    int64 `json:"duration_us"`
	Bytes         int64 `json:"bytes"`
	ErrorsConnect int64 `json:"errors_connect"`
	ErrorsRead    int64 `json:"errors_read"`
	ErrorsWrite   int64 `json:"errors_write"`
	ErrorsStatus  int64 `json:"errors_status"` // responses with status ≥ 400
	ErrorsTimeout int64 `json:"errors_timeout"`
	P50US         int64 `json:"latency_p50_us"`
	P99US         int64 `json:"latency_p99_us"`
	MaxUS         int64 `json:"latency_max_us"`
}

// rate is requests per second.
func (w wrkResult) rate() float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

// socketErrors counts wrk's connect, read, write and timeout errors.
func (w wrkResult) socketErrors() int64 {
	return w.ErrorsConnect + w.ErrorsRead + w.ErrorsWrite + w.ErrorsTimeout
}

// wrk load settings of comparison 5.
const (
	wrkThreads = 2
	wrkConns   = 32
)

// runWrk points wrk at port with wrkproxy.lua asking for url, for d. It
// fails if wrk printed no figures, made no request, or saw a status of
// 400 or more.
func runWrk(ctx context.Context, env *runEnv, ws *workspace, port int, url string, d time.Duration) (wrkResult, error) {
	var (
		mu  sync.Mutex
		res *wrkResult
	)
	onLine := func(line string) {
		var r wrkResult
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &r) == nil {
			mu.Lock()
			res = &r
			mu.Unlock()
		}
	}
	args := []string{
		"-t" + strconv.Itoa(wrkThreads), "-c" + strconv.Itoa(wrkConns),
		"-d" + strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s",
		"--timeout", "5s",
		"-s", ws.wrkLua,
		"http://" + hostPort(port) + "/", url,
	}
	p, err := env.start(procSpec{name: "wrk", path: "wrk", args: args, onLine: onLine})
	if err != nil {
		return wrkResult{}, err
	}
	if err := waitDone(ctx, p); err != nil {
		return wrkResult{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	switch {
	case p.err != nil || res == nil:
		return wrkResult{}, p.exitErr("failed")
	case res.Requests == 0:
		return *res, p.exitErr("made no request")
	case res.ErrorsStatus > 0:
		return *res, fmt.Errorf("wrk: %d of %d responses had a status of 400 or more", res.ErrorsStatus, res.Requests)
	}
	return *res, nil
}
