package threadpool_test

import "github.com/batchio/threadpool"

// loopMode is one way of running a pool's completion loop.
type loopMode struct {
	name     string
	external bool
	opts     []threadpool.Option
}

// loopModes lists the three completion loops: the default one woken through
// a channel, the default one woken through an eventfd, and the caller's own.
var loopModes = []loopMode{
	{name: "chan"},
	{name: "eventfd", opts: []threadpool.Option{threadpool.WithEventfdLoop()}},
	{name: "external", external: true, opts: []threadpool.Option{threadpool.WithExternalLoop()}},
}
