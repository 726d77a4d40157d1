// Package integration holds end-to-end tests that run the real tbproxy binary and real third-party peers on 127.0.0.1.
package integration
