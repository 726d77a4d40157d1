package tracker

import (
	"context"
	"fmt"
	"net/url"

	"github.com/tbproxy/tbproxy/metainfo"
)

// Announcer announces to one tracker URL. HTTPClient, UDPClient and
// Client satisfy it; the engine's announce workers depend on it alone.
type Announcer interface {
	Announce(ctx context.Context, announceURL string, req AnnounceRequest) (AnnounceResponse, error)
}

var (
	_ Announcer = (*HTTPClient)(nil)
	_ Announcer = (*UDPClient)(nil)
	_ Announcer = (*Client)(nil)
)

// Client dispatches announces and scrapes by URL scheme: http and https
// to HTTP, udp to UDP; any other scheme is an error wrapping
// ErrUnsupportedScheme. The zero value is ready to use. Hold it by
// pointer and never copy it after first use: UDP keeps its connection-ID
// cache inside.
type Client struct {
	HTTP HTTPClient // used for http and https URLs
	UDP  UDPClient  // used for udp URLs
}

// Announce sends req to the tracker at announceURL with the client its
// scheme calls for.
func (c *Client) Announce(ctx context.Context, announceURL string, req AnnounceRequest) (AnnounceResponse, error) {
	switch scheme, err := schemeOf(announceURL); {
	case err != nil:
		return AnnounceResponse{}, err
	case scheme == "udp":
		return c.UDP.Announce(ctx, announceURL, req)
	default:
		return c.HTTP.Announce(ctx, announceURL, req)
	}
}

// Scrape asks the tracker at announceURL for the counts of up to
// MaxScrapeHashes info-hashes, with the client its scheme calls for.
func (c *Client) Scrape(ctx context.Context, announceURL string, hashes []metainfo.Hash) (map[metainfo.Hash]ScrapeResponse, error) {
	switch scheme, err := schemeOf(announceURL); {
	case err != nil:
		return nil, err
	case scheme == "udp":
		return c.UDP.Scrape(ctx, announceURL, hashes)
	default:
		return c.HTTP.Scrape(ctx, announceURL, hashes)
	}
}

// schemeOf returns the scheme of a tracker URL if it is one we speak.
func schemeOf(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("tracker: bad url: %w", err)
	}
	switch u.Scheme {
	case "http", "https", "udp":
		return u.Scheme, nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnsupportedScheme, sanitize(u.Scheme))
}
