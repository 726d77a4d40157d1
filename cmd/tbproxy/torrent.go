package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tbproxy/tbproxy/metainfo"
)

func runTorrent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"create": runTorrentCreate,
		"show":   runTorrentShow,
	}
	if len(args) == 0 || sub[args[0]] == nil {
		fmt.Fprintln(stderr, "Usage:")
		fmt.Fprintln(stderr, "  tbproxy torrent create [flags] PATH    hash a file or directory into a .torrent")
		fmt.Fprintln(stderr, "  tbproxy torrent show [--json] TORRENT|MAGNET")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errUsage
	}
	return sub[args[0]](ctx, args[1:], stdout, stderr)
}

func runTorrentCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tbproxy torrent create", stderr, "Usage: tbproxy torrent create [flags] PATH")
	var (
		opts     metainfo.BuildOptions
		trackers listFlag
		seeds    listFlag
		out      = fs.String("o", "", "write the torrent to `FILE` (default NAME.torrent; - for stdout)")
		noDate   = fs.Bool("no-date", false, "omit the creation date, so equal input gives equal bytes")
	)
	fs.Var(sizeFlag{n: &opts.PieceLength}, "piece-length", "piece `SIZE`, a multiple of 16KiB such as 256KiB (default: chosen from the total size)")
	fs.Var(&trackers, "tracker", "announce `URL`; repeat for more tiers, or separate URLs of one tier with commas")
	fs.Var(&seeds, "web-seed", "BEP 19 web seed `URL`; repeatable")
	fs.StringVar(&opts.Comment, "comment", "", "free-text comment")
	fs.StringVar(&opts.Name, "name", "", "torrent name (default: the base name of PATH)")
	fs.BoolVar(&opts.Private, "private", false, "set the private flag (BEP 27)")
	fs.IntVar(&opts.Workers, "workers", 0, "hashing goroutines (default: one per core)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "tbproxy torrent create: want exactly one PATH")
		fs.Usage()
		return errUsage
	}
	for _, tr := range trackers {
		opts.Trackers = append(opts.Trackers, strings.Split(tr, ","))
	}
	opts.URLList = seeds
	opts.CreatedBy = "tbproxy"
	if !*noDate {
		opts.CreationDate = time.Now()
	}
	m, err := metainfo.Build(ctx, pos[0], opts)
	if err != nil {
		return err
	}
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	dest := *out
	if dest == "" {
		dest = m.Info.Name + ".torrent"
	}
	if dest == "-" {
		_, err = stdout.Write(data)
		return err
	}
	if err := os.WriteFile(dest, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n%s\n", dest, m.InfoHash)
	return nil
}

// torrentSummary is what `torrent show` prints.
type torrentSummary struct {
	InfoHash    string        `json:"info_hash"`
	Name        string        `json:"name"`
	PieceLength int64         `json:"piece_length,omitempty"`
	NumPieces   int           `json:"num_pieces,omitempty"`
	TotalLength int64         `json:"total_length"`
	Private     bool          `json:"private"`
	Files       []fileSummary `json:"files,omitempty"`
	Trackers    [][]string    `json:"trackers,omitempty"`
	WebSeeds    []string      `json:"web_seeds,omitempty"`
	Comment     string        `json:"comment,omitempty"`
	Created     string        `json:"created,omitempty"`
	Magnet      string        `json:"magnet"`
}

type fileSummary struct {
	Path    string `json:"path"`
	Length  int64  `json:"length"`
	Padding bool   `json:"padding,omitempty"`
}

func runTorrentShow(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tbproxy torrent show", stderr, "Usage: tbproxy torrent show [--json] TORRENT|MAGNET")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "tbproxy torrent show: want exactly one TORRENT file or magnet URI")
		fs.Usage()
		return errUsage
	}
	s, err := summarize(pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	w := func(k, v string) {
		if v != "" {
			fmt.Fprintf(stdout, "%-13s %s\n", k+":", v)
		}
	}
	w("info-hash", s.InfoHash)
	w("name", safeText(s.Name))
	w("size", strconv.FormatInt(s.TotalLength, 10))
	if s.PieceLength > 0 {
		w("pieces", fmt.Sprintf("%d × %d", s.NumPieces, s.PieceLength))
	}
	w("private", strconv.FormatBool(s.Private))
	for i, tier := range s.Trackers {
		w(fmt.Sprintf("tier %d", i), safeText(strings.Join(tier, " ")))
	}
	for _, ws := range s.WebSeeds {
		w("web seed", safeText(ws))
	}
	w("comment", safeText(s.Comment))
	w("created", s.Created)
	for _, f := range s.Files {
		if !f.Padding {
			fmt.Fprintf(stdout, "%14d  %s\n", f.Length, safeText(f.Path))
		}
	}
	w("magnet", s.Magnet)
	return nil
}

func summarize(arg string) (*torrentSummary, error) {
	if strings.HasPrefix(strings.ToLower(arg), "magnet:") {
		mg, err := metainfo.ParseMagnet(arg)
		if err != nil {
			return nil, err
		}
		s := &torrentSummary{InfoHash: mg.InfoHash.String(), Name: mg.Name, TotalLength: mg.Length, WebSeeds: mg.WebSeeds, Magnet: mg.String()}
		for _, tr := range mg.Trackers {
			s.Trackers = append(s.Trackers, []string{tr})
		}
		return s, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := metainfo.Read(f)
	if err != nil {
		return nil, err
	}
	s := &torrentSummary{
		InfoHash:    m.InfoHash.String(),
		Name:        m.Info.Name,
		PieceLength: m.Info.PieceLength,
		NumPieces:   m.Info.NumPieces(),
		TotalLength: m.Info.TotalLength,
		Private:     m.Info.Private,
		Trackers:    m.Trackers(),
		WebSeeds:    m.URLList,
		Comment:     m.Comment,
		Magnet:      m.Magnet().String(),
	}
	if !m.CreationDate.IsZero() {
		s.Created = m.CreationDate.Format(time.RFC3339)
	}
	for _, fl := range m.Info.Files {
		s.Files = append(s.Files, fileSummary{Path: fl.DisplayPath(), Length: fl.Length, Padding: fl.Padding()})
	}
	return s, nil
}

// safeText quotes text from a torrent when it holds anything that could
// move a terminal's cursor or hide characters.
func safeText(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return strconv.Quote(s)
		}
	}
	return s
}
