#!/usr/bin/python3
"""Run a small Mainline DHT of libtorrent nodes on 127.0.0.1.

Usage:
  /usr/bin/python3 ltdht.py --count N [--node 127.0.0.1:PORT ...]

Starts N libtorrent sessions in this one process, each a DHT node on its
own 127.0.0.1 port (TCP and UDP, picked by the system), with no torrent,
no local service discovery, UPnP or NAT-PMP. Every node is told about the
others and about each --node, so they form one DHT; libtorrent's defenses
that assume the public internet (one node per IP, no loopback, BEP 42
node IDs) are relaxed, as every node here shares 127.0.0.1.

Output is one JSON object per line on stdout, flushed after each line:
  {"event":"listening","ports":[N,...]}   once every node listens
  {"event":"status","nodes":[N,...]}      every second: routing table sizes
  {"event":"error","message":...}
It exits with status 0 on SIGTERM or SIGINT.
"""

import argparse
import signal
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from ltpeer import emit, parse_peer, dht_settings  # noqa: E402

try:
    import libtorrent as lt
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write("ltdht: cannot import libtorrent (%s)\n" % exc)
    sys.exit(3)

stopping = False


def on_signal(signum, frame):
    global stopping
    stopping = True


def main(argv):
    p = argparse.ArgumentParser(prog="ltdht.py")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--node", type=parse_peer, action="append", default=[])
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sessions = []
    for _ in range(args.count):
        s = {"listen_interfaces": "127.0.0.1:0", "listen_system_port_fallback": False,
             "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
             "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification}
        s.update(dht_settings())
        sessions.append(lt.session(s))
    ports = [0] * len(sessions)
    deadline = time.monotonic() + 20
    while not all(ports) and time.monotonic() < deadline and not stopping:
        for i, ses in enumerate(sessions):
            ses.wait_for_alert(50)
            for a in ses.pop_alerts():
                if isinstance(a, lt.listen_succeeded_alert) and a.socket_type == lt.socket_type_t.udp:
                    ports[i] = a.port
                elif isinstance(a, lt.listen_failed_alert):
                    emit({"event": "error", "message": a.message()})
    if not all(ports):
        emit({"event": "error", "message": "not every node listens"})
        return 1
    others = [("127.0.0.1", p) for p in ports] + args.node
    for ses, port in zip(sessions, ports):
        for ep in others:
            if ep[1] != port:
                ses.add_dht_node(ep)
    emit({"event": "listening", "ports": ports})
    next_status = 0.0
    while not stopping:
        time.sleep(0.1)
        for ses in sessions:
            ses.pop_alerts()
        now = time.monotonic()
        if now >= next_status:
            next_status = now + 1
            emit({"event": "status", "nodes": [ses.status().dht_nodes for ses in sessions]})
    for ses in sessions:
        ses.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
