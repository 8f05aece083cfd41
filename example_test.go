package threadpool_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/batchio/threadpool"
	"golang.org/x/sys/unix"
)

// Read blocks of a file on the pool; the callbacks run on the pool's
// completion goroutine, one at a time, so they can update state without locks.
func Example() {
	f, err := os.CreateTemp("", "threadpool-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte("0123456789abcdef"), 1024)); err != nil {
		log.Fatal(err)
	}

	p, err := threadpool.New()
	if err != nil {
		log.Fatal(err)
	}
	total := 0 // touched by callbacks only: they never run concurrently
	for off := int64(0); off < 16384; off += 4096 {
		buf := make([]byte, 4096)
		_, err := p.Submit(func() error {
			_, err := f.ReadAt(buf, off)
			return err
		}, func(err error) {
			if err != nil {
				log.Print(err)
				return
			}
			total += len(buf)
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	// Shutdown lets the queued reads run and returns after every callback.
	if err := p.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("read", total, "bytes")
	// Output: read 16384 bytes
}

// A reader that parsed a burst of requests submits them as one Batch: one
// lock and only as many worker wake-ups as can start at once, instead of
// one of each per request.
func ExampleBatch() {
	p, err := threadpool.New()
	if err != nil {
		log.Fatal(err)
	}
	names := []string{os.TempDir(), "/nonexistent/threadpool-example"}
	found := 0 // callbacks only
	b := p.NewBatch()
	for _, name := range names {
		err := b.Add(func() error {
			_, err := os.Stat(name)
			return err
		}, func(err error) {
			if err == nil {
				found++
			}
		})
		if err != nil {
			log.Fatal(err) // ErrNilFunc
		}
	}
	if err := b.Flush(); err != nil {
		log.Fatal(err) // ErrClosed or ErrQueueFull: no callback of the batch runs
	}
	if err := p.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, "of", len(names), "exist")
	// Output: 1 of 2 exist
}

// replyWriter buffers replies and sends them in one write per batch.
type replyWriter struct {
	buf strings.Builder
}

func (w *replyWriter) Flush() {
	if w.buf.Len() == 0 {
		return
	}
	fmt.Print(w.buf.String())
	w.buf.Reset()
}

// Callbacks append their reply to a buffer and DeferCall its flush: however
// many requests complete in one batch, the buffer is written once.
func ExamplePool_DeferCall() {
	p, err := threadpool.New(threadpool.WithMaxWorkers(1))
	if err != nil {
		log.Fatal(err)
	}
	w := &replyWriter{}
	for i := range 5 {
		_, err := p.Submit(func() error { return nil }, func(error) {
			fmt.Fprintf(&w.buf, "reply %d\n", i)
			p.DeferCall(w)
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	if err := p.Shutdown(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// reply 0
	// reply 1
	// reply 2
	// reply 3
	// reply 4
}

// SubmitCo runs blocking work on the pool and waits for its result.
func ExamplePool_SubmitCo() {
	p, err := threadpool.New()
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	var info os.FileInfo
	err = p.SubmitCo(context.Background(), func() error {
		var err error
		info, err = os.Stat(os.TempDir())
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.IsDir())
	// Output: true
}

// With an external loop the caller polls Fd and runs the callbacks itself.
func ExampleWithExternalLoop() {
	p, err := threadpool.New(threadpool.WithExternalLoop())
	if err != nil {
		log.Fatal(err)
	}
	const n = 10
	done := 0
	for range n {
		if _, err := p.Submit(func() error { return nil }, func(error) { done++ }); err != nil {
			log.Fatal(err)
		}
	}
	fds := []unix.PollFd{{Fd: int32(p.Fd()), Events: unix.POLLIN}}
	for done < n {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			log.Fatal(err)
		}
		p.RunCompletions()
	}
	if err := p.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered", done)
	// Output: delivered 10
}

// A pending signal absorbs further Notify calls until the consumer takes it.
func ExampleNotifier() {
	n, err := threadpool.NewNotifier()
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	for range 64 {
		n.Notify()
	}
	if err := n.Wait(context.Background()); err != nil {
		log.Fatal(err)
	}
	s := n.Stats()
	fmt.Println("notifies:", s.Notifies, "writes:", s.Writes)
	// Output: notifies: 64 writes: 1
}

type printFlusher string

func (f printFlusher) Flush() { fmt.Println("flush", string(f)) }

// A Deferrer runs each distinct Flusher once, when the outermost region ends.
func ExampleDeferrer() {
	var d threadpool.Deferrer
	d.Begin()
	d.Call(printFlusher("a"))
	d.Call(printFlusher("b"))
	d.Call(printFlusher("a"))
	fmt.Println("end of batch")
	d.End()
	// Output:
	// end of batch
	// flush a
	// flush b
}
