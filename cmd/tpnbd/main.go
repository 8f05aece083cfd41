// Command tpnbd is a Network Block Device server that exports one file, a
// regular file or a block device.
// Every request runs on a threadpool.Pool and every reply goes back through
// the pool's completion loop, batched: one send per connection per batch.
//
// Usage:
//
//	tpnbd [flags] FILE
//
// It listens on 127.0.0.1:10809 unless -tcp or -unix says otherwise, and
// stops cleanly on SIGINT or SIGTERM: it stops reading requests, answers
// the ones already read, syncs the file (unless -readonly) and exits. A signal that comes
// while it is still starting makes it exit 0 without serving once the step
// it is in (opening the file, reading the TLS files) is done.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batchio/threadpool"
	"github.com/batchio/threadpool/internal/nbd"
	"golang.org/x/sys/unix"
)

// config is the command line.
type config struct {
	file, name     string
	tcp, unix      string
	readOnly       bool
	structured     bool
	inline         bool
	flush          string
	workers        int
	minWorkers     int
	procs          int
	maxConns       int
	shutdownWait   time.Duration
	cpuProfile     string
	verbose, quiet bool
	tls            tlsFlags
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0) // -h: the usage was asked for, and printed
	}
	if err != nil {
		os.Exit(2)
	}
	if cfg.procs > 0 {
		runtime.GOMAXPROCS(cfg.procs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once the first signal has begun the shutdown, a second one ends the
	// process at once, as signals do by default.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, cfg, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "tpnbd:", err)
		os.Exit(1)
	}
}

// maxNameLen is the protocol's limit on an export name, which
// nbd.OpenExport enforces too.
const maxNameLen = 4096

// defaultMaxConns is -max-conns' default: with the server's bounds per
// connection (nbd.DefaultMaxRequests requests, nbd.DefaultMaxBytes bytes of
// payload), clients can make it hold at most 128 x 64 MiB.
const defaultMaxConns = 128

// maxProcs bounds -procs, as compare.sh bounds its -p: Go keeps
// GOMAXPROCS in 32 bits (2^32+1 would be 1) and allocates per P, and 1024
// is more than the machines tpnbd is measured on have CPUs.
const maxProcs = 1024

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("tpnbd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tpnbd [flags] FILE")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.name, "name", "", "export name, at most 4096 bytes (the empty default name is always accepted too)")
	fs.StringVar(&cfg.tcp, "tcp", "", "TCP address to listen on (default 127.0.0.1:10809 when -unix is not given)")
	fs.StringVar(&cfg.unix, "unix", "", "Unix socket path to listen on")
	fs.BoolVar(&cfg.readOnly, "readonly", false, "export read-only")
	fs.BoolVar(&cfg.structured, "structured", true, "offer structured replies, metadata contexts and block status (false: simple replies only, for comparison)")
	fs.BoolVar(&cfg.inline, "inline", true, "let a connection with nothing in the pool answer writes and cached reads itself (false: every request goes through the pool, for comparison)")
	fs.StringVar(&cfg.flush, "flush", "defer", "sends of the pool's replies: defer (one per connection per batch of completions) or each (one per reply); replies served inline go out per run either way")
	fs.IntVar(&cfg.workers, "workers", 64, "maximum worker goroutines")
	fs.IntVar(&cfg.minWorkers, "min-workers", 0, "worker goroutines kept alive when idle")
	fs.IntVar(&cfg.maxConns, "max-conns", defaultMaxConns, "connections served at once; one more is closed before the greeting (0: no bound)")
	fs.IntVar(&cfg.procs, "procs", 0, "GOMAXPROCS for the server, at most 1024 (0: Go's default, one per CPU)")
	fs.DurationVar(&cfg.shutdownWait, "shutdown-wait", 30*time.Second, "how long a signalled shutdown waits for clients before closing them (positive; a second signal ends the process at once)")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile to this file")
	fs.BoolVar(&cfg.verbose, "v", false, "log connection problems and failed requests (at most one line a second for these)")
	fs.BoolVar(&cfg.quiet, "q", false, "do not print the listening addresses")
	cfg.tls.register(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return cfg, errors.New("one FILE expected")
	}
	cfg.file = fs.Arg(0)
	if cfg.flush != "defer" && cfg.flush != "each" {
		fmt.Fprintln(stderr, "tpnbd: -flush must be defer or each")
		return cfg, errors.New("bad -flush")
	}
	if cfg.procs < 0 || cfg.procs > maxProcs {
		fmt.Fprintf(stderr, "tpnbd: -procs must be from 0 (Go's default) to %d\n", maxProcs)
		return cfg, errors.New("bad -procs")
	}
	if cfg.workers <= 0 || cfg.minWorkers < 0 || cfg.minWorkers > cfg.workers {
		fmt.Fprintln(stderr, "tpnbd: -workers must be positive and -min-workers from 0 to -workers")
		return cfg, errors.New("bad -workers or -min-workers")
	}
	if cfg.maxConns < 0 {
		fmt.Fprintln(stderr, "tpnbd: -max-conns must be 0 (no bound) or positive")
		return cfg, errors.New("bad -max-conns")
	}
	if len(cfg.name) > maxNameLen {
		fmt.Fprintf(stderr, "tpnbd: -name must be at most %d bytes\n", maxNameLen)
		return cfg, errors.New("bad -name")
	}
	if cfg.shutdownWait <= 0 {
		fmt.Fprintln(stderr, "tpnbd: -shutdown-wait must be positive")
		return cfg, errors.New("bad -shutdown-wait")
	}
	if err := cfg.tls.check(); err != nil {
		fmt.Fprintln(stderr, "tpnbd:", err)
		return cfg, err
	}
	if cfg.tcp == "" && cfg.unix == "" {
		cfg.tcp = "127.0.0.1:10809"
	}
	return cfg, nil
}

// run serves until ctx ends, then shuts down: the listeners close, the
// requests already read are answered, the pool drains and the file is
// synced. ready, if not nil, receives the listeners' addresses once they
// accept. If ctx ends while run is still starting (opening the file,
// reading the TLS files), run returns nil once that step is done, without
// listening.
func run(ctx context.Context, cfg config, stderr io.Writer, ready chan<- []net.Addr) error {
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	exp, err := nbd.OpenExport(cfg.file, cfg.name, cfg.readOnly)
	if err != nil {
		return err
	}
	defer exp.Close()
	pool, err := threadpool.New(threadpool.WithMaxWorkers(cfg.workers), threadpool.WithMinWorkers(cfg.minWorkers))
	if err != nil {
		return err
	}
	defer pool.Close()

	srv := &nbd.Server{Export: exp, Exec: poolExec{pool}, SimpleRepliesOnly: !cfg.structured, Inline: cfg.inline, MaxConns: cfg.maxConns}
	if srv.TLS, srv.TLSConfig, err = cfg.tls.load(); err != nil {
		return err
	}
	if cfg.flush == "each" {
		srv.Exec = eachExec{poolExec{pool}}
	}
	logger := log.New(stderr, "tpnbd: ", log.LstdFlags)
	if cfg.verbose {
		srv.Logf = logger.Printf
	}
	if ctx.Err() != nil {
		return nil // stopped while starting: nothing served, nothing written
	}
	listeners, err := listen(cfg)
	if err != nil {
		return err
	}
	served := make(chan error, len(listeners))
	addrs := make([]net.Addr, len(listeners))
	for i, l := range listeners {
		addrs[i] = l.Addr()
		go func() { served <- srv.Serve(l) }()
		if !cfg.quiet {
			logger.Printf("serving %s (%d bytes, flush=%s, tls=%s) on %s %s", cfg.file, exp.Size(), cfg.flush, srv.TLS, l.Addr().Network(), l.Addr())
		}
	}
	if ready != nil {
		ready <- addrs
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownWait)
	defer cancel()
	err = srv.Shutdown(sctx)
	for range len(listeners) - 1 {
		<-served
	}
	if serveErr == nil {
		<-served
	}
	err = errors.Join(err, pool.Shutdown(sctx))
	if !cfg.readOnly {
		if serr := exp.Sync(); serr != nil {
			err = errors.Join(err, fmt.Errorf("sync %s: %w", cfg.file, serr))
		}
	}
	if errors.Is(serveErr, nbd.ErrServerClosed) {
		serveErr = nil
	}
	return errors.Join(serveErr, err)
}

// listen opens the listeners the configuration asks for.
func listen(cfg config) ([]net.Listener, error) {
	var ls []net.Listener
	if cfg.tcp != "" {
		l, err := net.Listen("tcp", cfg.tcp)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	if cfg.unix != "" {
		l, err := listenUnix(cfg.unix)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// beforeStaleRemove, if set, runs when listenUnix has found a stale socket
// and is about to remove it (tests).
var beforeStaleRemove func()

// listenUnix listens on the Unix socket path. A socket already there is
// removed first if nothing listens on it (a stale one from an earlier
// run); one that a running server still listens on is left to it, and
// listenUnix fails. So that two servers started at once on one stale path
// cannot both remove it and listen, the second taking the path from the
// first, listenUnix first takes an exclusive lock (flock) on the file
// path+".lock", which it creates if need be and leaves in place, and holds
// it until the listener is closed; a server that finds it locked fails.
// A name in Linux's abstract namespace (starting with @) is no file and
// cannot go stale: it is listened on as it is.
func listenUnix(path string) (net.Listener, error) {
	if runtime.GOOS == "linux" && strings.HasPrefix(path, "@") {
		return net.Listen("unix", path)
	}
	lockPath := path + ".lock"
	// Read-only: flock needs no more, so a lock file that another user
	// left readable does not stop a server that may use the path.
	lock, err := os.OpenFile(lockPath, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("listen unix %s: another server holds its lock file %s", path, lockPath)
		}
		return nil, fmt.Errorf("listen unix %s: lock %s: %w", path, lockPath, err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			lock.Close()
			return nil, fmt.Errorf("listen unix %s: a server is listening on it", path)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			if beforeStaleRemove != nil {
				beforeStaleRemove()
			}
			os.Remove(path) // a stale socket from an earlier run
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &lockedListener{Listener: l, lock: lock}, nil
}

// lockedListener is a Unix listener that holds the lock on its path (see
// listenUnix) until it is closed.
type lockedListener struct {
	net.Listener
	once sync.Once
	lock *os.File
}

// Close closes the listener, which removes its socket, and then releases
// the lock, so that a server that takes the lock next finds the path free.
func (l *lockedListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { l.lock.Close() })
	return err
}
