package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// The URLs the proxy served from torrents (Proxy.confirmed) outlive a
// restart when Config.URLFile names a file: the offline answer
// (offline.go) must know which torrent holds a URL's file, and the origin
// that would say is the one that cannot be reached. Only what the
// offline answer uses is kept: the URL, its torrent and when it was
// learnt, never a URL whose origin's bytes failed the torrent's hashes.
// The file is rewritten whole (a temporary file, synced, then renamed)
// at most every urlSaveEvery while there is something new, and when the
// proxy closes, so a crash loses at most the URLs of the last period.

const (
	// urlSaveEvery is how often new URLs are written out.
	urlSaveEvery = 10 * time.Second
	// maxURLFile bounds the bytes read from the file: maxConfirmed URLs
	// of maxSavedURL bytes, with room for the rest of each entry.
	maxURLFile = maxConfirmed * (maxSavedURL + 256)
	// maxSavedURL is the longest URL kept; a longer one is not saved.
	maxSavedURL = 8 << 10
	// urlFileVersion is the format's version; a file of another is
	// ignored.
	urlFileVersion = 1
)

// urlFile is the file's JSON form. URLs are oldest first, so that loading
// them in order restores the LRU's order.
type urlFile struct {
	Version int        `json:"version"`
	URLs    []urlEntry `json:"urls"`
}

type urlEntry struct {
	URL      string    `json:"url"`
	InfoHash string    `json:"infohash"`
	At       time.Time `json:"at"`
}

// loadURLs adds the URLs of the file at path to p.confirmed. A missing
// file is no error. A file that cannot be read whole, or is not one of
// ours, is an error, and nothing of it is used; an entry that is not
// valid is skipped.
func (p *Proxy) loadURLs(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxURLFile+1))
	if err != nil {
		return 0, err
	}
	if len(data) > maxURLFile {
		return 0, fmt.Errorf("over %d bytes", maxURLFile)
	}
	entries, err := parseURLFile(data)
	if err != nil {
		return 0, err
	}
	p.rememberMu.Lock()
	defer p.rememberMu.Unlock()
	for _, e := range entries {
		p.confirmed.Add(e.url, confirmedFile{ih: e.ih, at: e.at})
	}
	return len(entries), nil
}

// savedURL is a valid entry of the file.
type savedURL struct {
	url string
	ih  metainfo.Hash
	at  time.Time
}

// parseURLFile decodes the file's data: its valid entries, oldest first,
// at most maxConfirmed of them (the newest).
func parseURLFile(data []byte) ([]savedURL, error) {
	var uf urlFile
	if err := json.Unmarshal(data, &uf); err != nil {
		return nil, err
	}
	if uf.Version != urlFileVersion {
		return nil, fmt.Errorf("version %d, not %d", uf.Version, urlFileVersion)
	}
	var out []savedURL
	for _, e := range uf.URLs[max(0, len(uf.URLs)-maxConfirmed):] {
		ih, err := metainfo.ParseHash(e.InfoHash)
		if err != nil || e.At.IsZero() || !savableURL(e.URL) {
			continue
		}
		out = append(out, savedURL{url: e.URL, ih: ih, at: e.At})
	}
	return out, nil
}

// savableURL reports whether raw is a URL the proxy could have served: an
// absolute http or https URL with a host, no longer than maxSavedURL.
func savableURL(raw string) bool {
	if len(raw) > maxSavedURL {
		return false
	}
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// saveURLs writes p.confirmed to path, if anything was learnt since the
// last save.
func (p *Proxy) saveURLs(path string) error {
	if !p.urlsChanged.Swap(false) {
		return nil
	}
	uf := urlFile{Version: urlFileVersion, URLs: []urlEntry{}}
	p.rememberMu.Lock()
	for _, u := range p.confirmed.Keys() { // oldest first
		f, ok := p.confirmed.Peek(u)
		if ok && !f.differs && savableURL(u) {
			uf.URLs = append(uf.URLs, urlEntry{URL: u, InfoHash: f.ih.HexString(), At: f.at.UTC()})
		}
	}
	p.rememberMu.Unlock()
	data, err := json.Marshal(uf)
	if err == nil {
		err = replaceFile(path, data)
	}
	if err != nil {
		p.urlsChanged.Store(true) // try again at the next period
	}
	return err
}

// replaceFile replaces the file at path with data, so that a crash leaves
// the old file or the new one, never a part.
func replaceFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// keepURLs writes Config.URLFile every urlSaveEvery, when there is
// something new, until the proxy closes (Close writes it a last time).
func (p *Proxy) keepURLs() {
	path := p.cfg.URLFile
	tick := time.NewTicker(urlSaveEvery)
	defer tick.Stop()
	for {
		select {
		case <-p.base.Done():
			return
		case <-tick.C:
		}
		if err := p.saveURLs(path); err != nil {
			p.log.Warn("cannot save the URLs served from torrents", "file", path, "err", err)
		}
	}
}
