#!/usr/bin/python3
"""Run one libtorrent peer on 127.0.0.1 for the integration tests.

Usage:
  /usr/bin/python3 ltpeer.py --torrent FILE.torrent --save DIR
      --listen-port N --mode seed|leech
      [--peer 127.0.0.1:PORT ...] [--tracker URL ...] [--seed-mode]
      [--upload-limit BYTES_PER_S] [--download-limit BYTES_PER_S] [--utp]
      [--dht --dht-node 127.0.0.1:PORT ...]
      [--encryption forced|enabled|disabled] [--pex] [--lsd]

The peer listens only on 127.0.0.1 (port 0 picks a free one), with DHT
(unless --dht, which joins a loopback DHT through the --dht-node nodes and
announces the torrent there every few seconds), local service discovery
(unless --lsd: BEP 14 multicast to 239.192.152.143:6771 on the listening
interface), peer exchange (unless --pex), UPnP and NAT-PMP switched off,
so it never talks to any other address. Each --peer is dialled
explicitly and dialled again every two seconds while it is not
connected; each --tracker (127.0.0.1 only) is announced to on top of the
torrent's own trackers, all tiers at once. uTP is off unless --utp is given, so every connection is
plain TCP.

--encryption sets libtorrent's MSE/PE policy for both directions:
"forced" allows only RC4-encrypted connections (out_enc_policy and
in_enc_policy forced, allowed_enc_level rc4); "enabled" tries MSE and
accepts both, with either crypto method; "disabled" speaks only plain
BitTorrent. Without it, libtorrent's defaults apply (enabled).

Rate limits, when given, also apply to loopback peers: libtorrent
normally puts local peers in a class with no limits, so this script
moves every address into the global class.

Output is one JSON object per line on stdout, flushed after each line:
  {"event":"listening","port":N}        once the TCP listen succeeded
  {"event":"status",...}                every 0.5 s; "peer_encryption"
                                        lists "rc4", "plaintext" (MSE
                                        header only) or "" per peer, and
                                        "peers" the connected peers' "ip",
                                        "port" and libtorrent "source" bits
                                        (1 tracker, 2 dht, 4 pex, 8 lsd,
                                        32 incoming)
  {"event":"finished"}                  when a leech has every piece
  {"event":"error","message":...}       on a listen, torrent or file error
It exits with status 0 on SIGTERM or SIGINT, and 1 if it cannot listen
or cannot load the torrent.

Needs the Debian python3-libtorrent bindings (2.x), which are only
importable from /usr/bin/python3.
"""

import argparse
import json
import signal
import sys
import time
import urllib.parse

try:
    import libtorrent as lt
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write("ltpeer: cannot import libtorrent (%s); run with "
                     "/usr/bin/python3 and install python3-libtorrent\n" % exc)
    sys.exit(3)

STATUS_INTERVAL = 0.5
REDIAL_INTERVAL = 2.0
DHT_ANNOUNCE_INTERVAL = 3.0

stopping = False


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def on_signal(signum, frame):
    global stopping
    stopping = True


def parse_peer(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("peer must be HOST:PORT, got %r" % text)
    host = host.strip("[]")
    if host not in ("127.0.0.1", "localhost"):
        raise argparse.ArgumentTypeError("only 127.0.0.1 peers are allowed, got %r" % text)
    try:
        port = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("bad port in %r" % text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError("port out of range in %r" % text)
    return ("127.0.0.1", port)


def parse_tracker(text):
    host = urllib.parse.urlsplit(text).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise argparse.ArgumentTypeError("only 127.0.0.1 trackers are allowed, got %r" % text)
    return text


def parse_args(argv):
    p = argparse.ArgumentParser(prog="ltpeer.py")
    p.add_argument("--torrent", required=True)
    p.add_argument("--save", required=True)
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--mode", choices=("seed", "leech"), required=True)
    p.add_argument("--peer", type=parse_peer, action="append", default=[])
    p.add_argument("--tracker", type=parse_tracker, action="append", default=[],
                   help="announce URL to add to the torrent's own")
    p.add_argument("--seed-mode", action="store_true",
                   help="trust the data without checking it (seed mode only)")
    p.add_argument("--upload-limit", type=int, default=0, help="bytes/s, 0 = none")
    p.add_argument("--download-limit", type=int, default=0, help="bytes/s, 0 = none")
    p.add_argument("--utp", action="store_true", help="also allow uTP")
    p.add_argument("--dht", action="store_true", help="use the DHT of the --dht-node nodes")
    p.add_argument("--dht-node", type=parse_peer, action="append", default=[])
    p.add_argument("--encryption", choices=("forced", "enabled", "disabled"),
                   help="MSE/PE policy, both directions (default: libtorrent's)")
    p.add_argument("--pex", action="store_true", help="exchange peers (ut_pex)")
    p.add_argument("--lsd", action="store_true", help="local service discovery")
    return p.parse_args(argv)


def dht_settings():
    """Settings for a DHT on 127.0.0.1, where every node shares one IP.

    libtorrent's defaults assume the public internet: one node per IP in
    the routing table and in searches, no traffic from "dark" ranges, and
    node IDs tied to the external IP (BEP 42). All are relaxed here."""
    return {
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        "dht_upload_rate_limit": 1000000,
    }


def session_settings(args):
    s = _session_settings(args)
    if args.dht:
        s.update(dht_settings())
    return s


def _session_settings(args):
    return {
        "listen_interfaces": "127.0.0.1:%d" % args.listen_port,
        # A listen failure must be reported, not papered over by binding
        # some other port.
        "listen_system_port_fallback": False,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_lsd": args.lsd,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": args.utp,
        "enable_outgoing_utp": args.utp,
        "allow_multiple_connections_per_ip": True,
        "rate_limit_ip_overhead": False,
        "anonymous_mode": False,
        # Trackers and peers on 127.0.0.1 are the whole point here.
        "ssrf_mitigation": False,
        "apply_ip_filter_to_trackers": False,
        "ignore_limits_on_local_network": False,
        "upload_rate_limit": args.upload_limit,
        "download_rate_limit": args.download_limit,
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        "stop_tracker_timeout": 1,
        "tracker_completion_timeout": 5,
        "tracker_receive_timeout": 5,
        "alert_mask": (lt.alert.category_t.status_notification
                       | lt.alert.category_t.error_notification
                       | lt.alert.category_t.storage_notification),
    }


def encryption_settings(policy):
    if policy is None:
        return {}
    levels = {
        "forced": (lt.enc_policy.forced, lt.enc_level.rc4, True),
        "enabled": (lt.enc_policy.enabled, lt.enc_level.both, False),
        "disabled": (lt.enc_policy.disabled, lt.enc_level.plaintext, False),
    }
    pol, level, prefer_rc4 = levels[policy]
    return {
        "out_enc_policy": int(pol),
        "in_enc_policy": int(pol),
        "allowed_enc_level": int(level),
        "prefer_rc4": prefer_rc4,
    }


def put_all_peers_in_global_class(ses):
    # By default 127.0.0.0/8 and the private ranges map to the local peer
    # class, which has no rate limits. Mapping every address to the global
    # class makes --upload-limit and --download-limit bite on loopback.
    flt = lt.ip_filter()
    glob = 1 << lt.session.global_peer_class_id
    flt.add_rule("0.0.0.0", "255.255.255.255", glob)
    try:
        flt.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", glob)
    except Exception:
        pass
    ses.set_peer_class_filter(flt)


def add_torrent(ses, args):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.save
    if args.tracker:
        atp.trackers = list(atp.trackers) + list(args.tracker)
    flags = atp.flags
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    if not args.dht:
        flags |= lt.torrent_flags.disable_dht
    if not args.lsd:
        flags |= lt.torrent_flags.disable_lsd
    if not args.pex:
        flags |= lt.torrent_flags.disable_pex
    if args.mode == "seed" and args.seed_mode:
        flags |= lt.torrent_flags.seed_mode
    atp.flags = flags
    handle = ses.add_torrent(atp)
    if args.upload_limit:
        handle.set_upload_limit(args.upload_limit)
    if args.download_limit:
        handle.set_download_limit(args.download_limit)
    return handle


def peer_encryption(info):
    if info.flags & lt.peer_info.rc4_encrypted:
        return "rc4"
    if info.flags & lt.peer_info.plaintext_encrypted:
        return "plaintext"
    return ""


def status_line(handle):
    st = handle.status()
    return {
        "peer_encryption": sorted(peer_encryption(i) for i in handle.get_peer_info()),
        "event": "status",
        "progress": st.progress,
        "state": str(st.state),
        "num_peers": st.num_peers,
        "download_rate": st.download_rate,
        "upload_rate": st.upload_rate,
        "total_upload": st.total_upload,
        "total_payload_upload": st.total_payload_upload,
        "total_download": st.total_download,
        "is_seeding": st.is_seeding,
        "peers": peer_list(handle),
    }


def peer_list(handle):
    out = []
    for info in handle.get_peer_info():
        ip = info.ip
        if isinstance(ip, tuple):
            out.append({"ip": str(ip[0]), "port": int(ip[1]), "source": int(info.source)})
    return out


def connected_endpoints(handle):
    out = set()
    for info in handle.get_peer_info():
        ip = info.ip
        if isinstance(ip, tuple):
            out.add((str(ip[0]), int(ip[1])))
    return out


def dial(handle, peers):
    if not peers:
        return
    have = connected_endpoints(handle)
    for ep in peers:
        if ep not in have:
            try:
                handle.connect_peer(ep)
            except Exception as exc:
                emit({"event": "error", "message": "connect_peer %s:%d: %s" % (ep[0], ep[1], exc)})


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    settings = session_settings(args)
    settings.update(encryption_settings(args.encryption))
    ses = lt.session(settings)
    put_all_peers_in_global_class(ses)
    for ep in args.dht_node:
        ses.add_dht_node(ep)
    try:
        handle = add_torrent(ses, args)
    except Exception as exc:
        emit({"event": "error", "message": "add torrent: %s" % exc})
        return 1

    listening = False
    finished = False
    next_status = 0.0
    next_dial = 0.0
    next_dht = 0.0
    code = 0
    while not stopping:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert):
                if a.socket_type == lt.socket_type_t.tcp and not listening:
                    listening = True
                    emit({"event": "listening", "port": a.port})
            elif isinstance(a, lt.listen_failed_alert):
                emit({"event": "error", "message": "listen: %s" % a.message()})
                if a.socket_type == lt.socket_type_t.tcp:
                    code = 1
            elif isinstance(a, lt.torrent_finished_alert):
                if args.mode == "leech" and not finished:
                    finished = True
                    emit({"event": "finished"})
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                emit({"event": "error", "message": a.message()})
        if code:
            break
        now = time.monotonic()
        if args.dht and listening and now >= next_dht:
            next_dht = now + DHT_ANNOUNCE_INTERVAL
            handle.force_dht_announce()
        if listening and now >= next_dial:
            next_dial = now + REDIAL_INTERVAL
            dial(handle, args.peer)
        if now >= next_status:
            next_status = now + STATUS_INTERVAL
            line = status_line(handle)
            emit(line)
            # torrent_finished_alert is the usual signal; this catches a
            # leech whose data was already complete on disk.
            if args.mode == "leech" and not finished and line["is_seeding"]:
                finished = True
                emit({"event": "finished"})

    ses.pause()
    del ses
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
