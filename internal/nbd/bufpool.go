package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from pools by power-of-two size class, from 4 KiB to
// MaxPayload, so that steady-state traffic reuses its buffers.
const (
	minBufShift = 12
	maxBufShift = 25
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

// getBuf returns a buffer of at least n bytes (n <= MaxPayload). Its
// contents are unspecified. Return it with putBuf.
func getBuf(n int) *[]byte {
	c := sizeClass(n)
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 1<<(c+minBufShift))
	return &b
}

// putBuf returns a buffer obtained from getBuf. The caller must not use it
// afterwards.
func putBuf(p *[]byte) {
	bufPools[sizeClass(cap(*p))].Put(p)
}

func sizeClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}
