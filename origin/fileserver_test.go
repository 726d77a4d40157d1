package origin

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestFileServerRanges checks the plain answers of a published directory
// to the Range edge cases of HARDENING 61 and RFC 9110 §14, where
// http.FileServer alone answers otherwise.
func TestFileServerRanges(t *testing.T) {
	f := newFixture(t, Config{})
	c := f.srv.Client()
	url := f.srv.URL + "/big.bin"
	size := int64(len(f.big))
	many := "bytes=" + strings.Repeat("0-0,", 60) + "1-1"
	tests := []struct {
		name, rng    string
		status       int
		contentRange string
		body         []byte
	}{
		{"unit in capitals", "Bytes=0-9", 206, "bytes 0-9/2097152", f.big[:10]},
		{"last position past int64", "bytes=10-99999999999999999999", 206, "bytes 10-2097151/2097152", f.big[10:]},
		{"first position past int64", "bytes=99999999999999999999-", 416, "bytes */2097152", nil},
		{"zero suffix", "bytes=-0", 416, "bytes */2097152", nil},
		{"suffix", "bytes=-5", 206, "bytes 2097147-2097151/2097152", f.big[size-5:]},
		{"unknown unit", "items=0-5", 200, "", f.big},
		{"malformed", "bytes=abc", 200, "", f.big},
		{"last before first", "bytes=5-2", 200, "", f.big},
		{"too many ranges", many, 200, "", f.big},
		{"too much overlap", "bytes=0-99,10-99,20-99,30-99", 200, "", f.big},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, c, "GET", url, "Range", tc.rng)
			if r.StatusCode != tc.status || r.Header.Get("Content-Range") != tc.contentRange {
				t.Fatalf("status %d, Content-Range %q; want %d, %q", r.StatusCode, r.Header.Get("Content-Range"), tc.status, tc.contentRange)
			}
			if tc.body != nil && !bytes.Equal(r.body, tc.body) {
				t.Errorf("body: %d bytes, not the file's", len(r.body))
			}
		})
	}

	t.Run("Range sent twice", func(t *testing.T) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["Range"] = []string{"bytes=0-9", "bytes=20-29"}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("status %d, want 200", resp.StatusCode)
		}
	})

	t.Run("stale If-Range dropped with a malformed Range", func(t *testing.T) {
		r := get(t, c, "GET", url, "Range", "bytes=abc", "If-Range", `"other"`)
		if r.StatusCode != 200 || !bytes.Equal(r.body, f.big) {
			t.Errorf("status %d, %d bytes", r.StatusCode, len(r.body))
		}
	})

	t.Run("directory listing untouched", func(t *testing.T) {
		if r := get(t, c, "GET", f.srv.URL+"/", "Range", "bytes=0-9"); r.StatusCode != 200 || !bytes.Contains(r.body, []byte("big.bin")) {
			t.Errorf("listing: status %d", r.StatusCode)
		}
	})
}
