package server

import (
	"testing"
	"time"
)

func TestIntervalPolicies(t *testing.T) {
	tests := []struct {
		name         string
		p            IntervalPolicy
		size         int
		interval, mi time.Duration
	}{
		{name: "static zero is default", p: Static{}, size: 5, interval: 30 * time.Minute, mi: 5 * time.Minute},
		{name: "static custom", p: Static{Every: 2 * time.Second, Min: time.Second}, size: 1e6, interval: 2 * time.Second, mi: time.Second},
		{name: "static min above interval", p: Static{Every: time.Second, Min: time.Minute}, interval: time.Second, mi: time.Second},
		{name: "growing empty", p: Growing{Base: time.Minute, PerPeers: 100, Max: time.Hour}, size: 0, interval: time.Minute, mi: time.Minute},
		{name: "growing 100 peers", p: Growing{Base: time.Minute, PerPeers: 100, Max: time.Hour}, size: 100, interval: 2 * time.Minute, mi: 2 * time.Minute},
		{name: "growing 250 peers", p: Growing{Base: time.Minute, Min: 10 * time.Second, PerPeers: 100, Max: time.Hour}, size: 250, interval: 3*time.Minute + 30*time.Second, mi: 10 * time.Second},
		{name: "growing capped", p: Growing{Base: time.Minute, PerPeers: 100, Max: 5 * time.Minute}, size: 1 << 40, interval: 5 * time.Minute, mi: 5 * time.Minute},
		{name: "growing defaults", p: Growing{}, size: 1000, interval: time.Hour, mi: 5 * time.Minute},
		{name: "growing default max", p: Growing{}, size: 1 << 30, interval: 2 * time.Hour, mi: 5 * time.Minute},
		{name: "growing negative size", p: Growing{Base: time.Minute}, size: -5, interval: time.Minute, mi: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iv, mi := tt.p.Interval(tt.size)
			if iv != tt.interval || mi != tt.mi {
				t.Errorf("Interval(%d) = %v, %v; want %v, %v", tt.size, iv, mi, tt.interval, tt.mi)
			}
		})
	}
	if got := longestInterval(Growing{Base: time.Minute, Max: time.Hour}); got != time.Hour {
		t.Errorf("longestInterval = %v", got)
	}
}
