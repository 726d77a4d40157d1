#!/usr/bin/python3
"""The bench harness's libtorrent leecher.

Usage:
  /usr/bin/python3 ltleech.py --torrent FILE --save DIR --peer 127.0.0.1:PORT [--peer ...]

It downloads one torrent with libtorrent's default settings, except that
everything stays on 127.0.0.1 (no DHT, local discovery, peer exchange,
port mapping or uTP), and exits once the torrent is finished.

Output, one JSON object per line, each with "t", the wall clock in Unix
nanoseconds when the event was seen:
  {"event":"start"}              the session is up; the torrent is added next
  {"event":"first_piece",...}    the first piece passed its hash check
  {"event":"finished",...}       every piece passed its hash check; with
                                 vm_hwm_kb, the process's peak RSS
  {"event":"error","message":…}  a torrent or file error; exit status 1
"""

import argparse
import json
import signal
import sys
import time

import libtorrent as lt


def emit(event, **fields):
    fields["event"] = event
    fields["t"] = time.time_ns()
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def peak_rss_kb():
    """VmHWM of this process, in kB; 0 if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def loopback_peer(text):
    host, _, port = text.rpartition(":")
    if host != "127.0.0.1":
        raise argparse.ArgumentTypeError("peers must be 127.0.0.1:PORT, got %r" % text)
    return (host, int(port))


def new_session():
    return lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "alert_mask": (lt.alert.category_t.status_notification
                       | lt.alert.category_t.error_notification
                       | lt.alert.category_t.storage_notification
                       | lt.alert.category_t.piece_progress_notification),
    })


def add(ses, torrent, save):
    params = lt.add_torrent_params()
    params.ti = torrent
    params.save_path = save
    flags = params.flags
    flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    flags |= (lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
              | lt.torrent_flags.disable_pex)
    params.flags = flags
    return ses.add_torrent(params)


def watch(ses):
    """Reports the first piece and returns the exit status once done."""
    first = False
    while True:
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            if isinstance(a, lt.piece_finished_alert) and not first:
                first = True
                emit("first_piece", piece=a.piece_index)
            elif isinstance(a, lt.torrent_finished_alert):
                emit("finished", vm_hwm_kb=peak_rss_kb())
                return 0
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                emit("error", message=a.message())
                return 1


def main(argv):
    p = argparse.ArgumentParser(prog="ltleech.py")
    p.add_argument("--torrent", required=True)
    p.add_argument("--save", required=True)
    p.add_argument("--peer", type=loopback_peer, action="append", required=True)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    torrent = lt.torrent_info(args.torrent)
    ses = new_session()
    emit("start")
    handle = add(ses, torrent, args.save)
    for peer in args.peer:
        handle.connect_peer(peer)
    return watch(ses)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
