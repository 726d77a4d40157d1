//go:build linux

package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Nginx is a real nginx serving a directory on 127.0.0.1, logging how many
// body bytes it sent per request.
type Nginx struct {
	URL     string // http://127.0.0.1:PORT
	Port    int
	Root    string
	logPath string
	proc    *proc
}

// startNginx serves root. nginx runs in the foreground in its own process
// group, with every path it writes under a temporary directory.
func startNginx(t testing.TB, root string) *Nginx {
	t.Helper()
	requireTool(t, "nginx")
	dir := t.TempDir()
	port := freePort(t)
	n := &Nginx{Port: port, Root: root, URL: "http://" + hostPort(port), logPath: filepath.Join(dir, "access.log")}
	user := ""
	if os.Getuid() == 0 {
		user = "user root;" // the workers must read the test's private temp dirs
	}
	conf := fmt.Sprintf(`%s
worker_processes 1;
daemon off;
master_process on;
pid %[2]s/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
    log_format bytes '$request_method $uri $status $body_bytes_sent';
    access_log %[3]s bytes;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    sendfile on;
    keepalive_requests 100000;
    types { application/octet-stream bin; audio/mpeg mp3; text/plain txt; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:%[4]d;
        root %[5]s;
    }
}
`, user, dir, n.logPath, port, root)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.proc = startProc(t, "nginx", "-c", confPath, "-p", dir, "-e", "stderr")
	waitTCP(t, n.proc, port, startTimeout)
	return n
}

// BytesSent adds up the body bytes nginx has logged for path (all paths
// when empty). nginx writes a log line as each request ends.
func (n *Nginx) BytesSent(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Open(n.logPath)
	if err != nil {
		if os.IsNotExist(err) {
			return 0
		}
		t.Fatal(err)
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 || (path != "" && fields[1] != path) {
			continue
		}
		b, err := strconv.ParseInt(fields[3], 10, 64)
		if err == nil {
			total += b
		}
	}
	return total
}
