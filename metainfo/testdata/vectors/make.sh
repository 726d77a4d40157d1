#!/usr/bin/env bash
# Regenerate the BitTorrent metainfo test vectors in this directory.
#
# Needs the Debian packages mktorrent, transmission-cli and
# python3-libtorrent:
#   apt-get install -y mktorrent transmission-cli python3-libtorrent
#
# The content is generated deterministically from fixed seeds in a
# temporary directory that is removed afterwards; only the .torrent files
# and vectors.json are written here. Torrents that carry a creation date
# differ byte-for-byte between runs, but their info-hashes do not.
#
# The facts in vectors.json (info_hash, name, files, piece length, piece
# count, ...) come from libtorrent via integration/testdata/ltinfo.py,
# and every info-hash is cross-checked against transmission-show.
#
# Tool quirks worth knowing when reading the vectors:
#   - mktorrent 1.1 only accepts -l 15..28 (piece length >= 32 KiB).
#   - mktorrent writes announce-list only when more than one tracker is
#     given; comma-separated URLs in one -a share a tier. url-list is a
#     plain string for one -w and a list for several.
#   - transmission-create 3.00 has no web-seed option, puts every -t in a
#     tier of its own (command-line order; announce-list only if >1),
#     always writes info.private (0 or 1), leaves zero-length files out of
#     multi-file torrents, and sorts file paths case-insensitively.
set -euo pipefail

export LC_ALL=C.UTF-8
export TZ=UTC

OUT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$OUT/../../.." && pwd)"
LTINFO="$ROOT/integration/testdata/ltinfo.py"
PY=/usr/bin/python3

die() { echo "make.sh: $*" >&2; exit 1; }

for tool in mktorrent transmission-create transmission-show "$PY"; do
	command -v "$tool" >/dev/null 2>&1 || die "missing $tool (apt-get install -y mktorrent transmission-cli python3-libtorrent)"
done
[[ -f "$LTINFO" ]] || die "missing $LTINFO"
"$PY" -c 'import libtorrent' 2>/dev/null || die "python3-libtorrent is not importable from $PY"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------
# Deterministic content.
#   single.bin     100000 bytes: not a multiple of 16/32/256 KiB
#   medium.bin     300000 bytes: just over one 256 KiB piece
#   multi/         nested tree with an empty file and a file whose name
#                  has a space and non-ASCII UTF-8 characters
# ---------------------------------------------------------------------------
"$PY" - "$WORK" <<'PYEOF'
import os
import random
import sys

base = sys.argv[1]

def put(rel, size, seed):
    path = os.path.join(base, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = random.Random(seed).randbytes(size) if size else b""
    with open(path, "wb") as fh:
        fh.write(data)

put("single.bin", 100000, 1)
put("medium.bin", 300000, 2)
put("multi/README.txt", 1234, 3)
put("multi/empty.dat", 0, 4)
put("multi/data/alpha.bin", 70000, 5)
put("multi/data/nested/deep/beta.bin", 50001, 6)
put("multi/data/na\u00efve r\u00e9sum\u00e9.txt", 3000, 7)
PYEOF

# Fixed timestamps so nothing depends on when the script ran.
find "$WORK" -exec touch -h -d '2020-01-01 00:00:00 UTC' {} +

TR1="http://127.0.0.1:6969/announce"
TR2="http://127.0.0.1:6970/announce"
TR3="http://127.0.0.1:6971/announce"
WS1="http://127.0.0.1:8080/webseed/"
WS2="http://127.0.0.1:8081/files/"

# Start from a clean slate so renamed vectors do not linger.
rm -f "$OUT"/*.torrent "$OUT/vectors.json"

# Torrent file name -> tool, in creation order.
declare -a NAMES=()
declare -A TOOL=()

mk() { # mk OUTFILE ARGS... (mktorrent)
	local out="$1"; shift
	rm -f "$OUT/$out"
	(cd "$WORK" && mktorrent -t 1 -o "$OUT/$out" "$@" >/dev/null)
	NAMES+=("$out"); TOOL[$out]=mktorrent
}

tc() { # tc OUTFILE ARGS... (transmission-create)
	local out="$1"; shift
	rm -f "$OUT/$out"
	(cd "$WORK" && transmission-create -o "$OUT/$out" "$@" >/dev/null)
	chmod 0644 "$OUT/$out" # transmission-create writes 0600
	NAMES+=("$out"); TOOL[$out]=transmission-create
}

# --- mktorrent (-l is log2 of the piece length; mktorrent 1.1 accepts
#     only 15..28, so 32 KiB is the smallest piece it can make) ---
mk mktorrent-single-32k-nodate.torrent \
	-d -l 15 -a "$TR1" single.bin
mk mktorrent-multi-64k-tiers-webseeds.torrent \
	-l 16 -a "$TR1,$TR2" -a "$TR3" -w "$WS1" -w "$WS2" \
	-c "mktorrent multi-file vector" multi
mk mktorrent-single-256k-private-webseed.torrent \
	-l 18 -p -a "$TR1" -w "$WS1" -c "private single file" medium.bin
mk mktorrent-multi-32k-private-nodate.torrent \
	-d -l 15 -p -a "$TR2" -a "$TR1" multi

# --- transmission-create (-s is the piece size in KiB) ---
tc transmission-single-16k.torrent \
	-s 16 -t "$TR1" single.bin
tc transmission-multi-32k-private.torrent \
	-s 32 -p -t "$TR1" -t "$TR2" -c "transmission private multi-file" multi
tc transmission-single-256k-trackers.torrent \
	-s 256 -t "$TR3" -t "$TR1" -t "$TR2" -c "three trackers" medium.bin
tc transmission-multi-16k-notracker.torrent \
	-s 16 multi

# ---------------------------------------------------------------------------
# Inspect each torrent with libtorrent, cross-check with transmission-show,
# and write vectors.json.
# ---------------------------------------------------------------------------
LIST="$WORK/list.tsv"
: >"$LIST"
for f in "${NAMES[@]}"; do
	lt_json="$WORK/$f.json"
	"$PY" "$LTINFO" "$OUT/$f" >"$lt_json" || die "ltinfo.py failed on $f"
	lt_hash="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1], encoding="utf-8"))["info_hash"])' "$lt_json")"
	tr_show="$(transmission-show "$OUT/$f")" || die "transmission-show failed on $f"
	tr_hash="$(awk '$1 == "Hash:" { print tolower($2); exit }' <<<"$tr_show")"
	tr_pieces="$(awk '$1 == "Piece" && $2 == "Count:" { print $3; exit }' <<<"$tr_show")"
	lt_pieces="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1], encoding="utf-8"))["num_pieces"])' "$lt_json")"
	[[ "$lt_hash" =~ ^[0-9a-f]{40}$ ]] || die "$f: bad libtorrent info-hash '$lt_hash'"
	[[ -n "$tr_hash" ]] || die "$f: transmission-show printed no hash"
	if [[ "$lt_hash" != "$tr_hash" ]]; then
		die "$f: INFO-HASH MISMATCH libtorrent=$lt_hash transmission-show=$tr_hash"
	fi
	if [[ "$lt_pieces" != "$tr_pieces" ]]; then
		die "$f: PIECE COUNT MISMATCH libtorrent=$lt_pieces transmission-show=$tr_pieces"
	fi
	printf '%s\t%s\t%s\n' "$f" "${TOOL[$f]}" "$lt_json" >>"$LIST"
done

"$PY" - "$LIST" "$OUT/vectors.json" <<'PYEOF'
import json
import sys

list_path, out_path = sys.argv[1], sys.argv[2]
vectors = []
with open(list_path, encoding="utf-8") as fh:
    for line in fh:
        name, tool, info_path = line.rstrip("\n").split("\t")
        with open(info_path, encoding="utf-8") as jf:
            info = json.load(jf)
        entry = {"file": name, "tool": tool}
        for key in ("info_hash", "name", "piece_length", "num_pieces",
                    "total_length", "private", "files", "trackers",
                    "web_seeds", "comment"):
            entry[key] = info[key]
        vectors.append(entry)
with open(out_path, "w", encoding="utf-8") as fh:
    json.dump(vectors, fh, ensure_ascii=False, indent=2)
    fh.write("\n")
PYEOF

echo "make.sh: wrote ${#NAMES[@]} torrents and vectors.json to $OUT"
