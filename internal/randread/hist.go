package randread

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 1<<subBits buckets, so a quantile is within 1/(1<<subBits) of the truth.
const subBits = 3

const histBuckets = (64 - subBits + 1) << subBits

// Histogram counts durations in log-linear buckets. It has no lock: one
// goroutine fills it, and histograms are merged once their owners are done.
// The zero Histogram is empty and ready to use.
type Histogram struct {
	counts [histBuckets]uint64
	total  uint64
}

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v's top bit
	sub := int(v>>(e-subBits)) & (1<<subBits - 1)
	return (e-subBits+1)<<subBits + sub
}

// bucketMid returns the middle of bucket i's range.
func bucketMid(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	e := i>>subBits + subBits - 1
	sub := uint64(i & (1<<subBits - 1))
	lo := (1<<subBits | sub) << (e - subBits)
	return lo + (uint64(1)<<(e-subBits))/2
}

// Record counts one duration; negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.total++
}

// Count returns how many durations were recorded.
func (h *Histogram) Count() uint64 { return h.total }

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
}

// Quantile returns the duration at or below which at least the fraction q
// (0..1) of the recorded durations fall (the nearest rank, ceil(q*n) of n),
// to the histogram's precision; 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(bucketMid(i))
		}
	}
	return time.Duration(bucketMid(histBuckets - 1))
}
