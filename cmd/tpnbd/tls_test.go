package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchio/threadpool/internal/nbd/testcerts"
	"github.com/stretchr/testify/require"
)

// These tests drive nbdinfo, nbdcopy (libnbd-bin) and qemu-img
// (qemu-utils) over TLS. The certificates are made at test time.

const tlsImageSize = 16 << 20

// tlsFiles are the certificate files of one test. Each client directory
// has the layout libnbd's tls-certificates and qemu's tls-creds-x509 dir
// read: ca-cert.pem (the CA that signed the server's certificate) and, for
// a client certificate, client-cert.pem and client-key.pem.
type tlsFiles struct {
	// serverFlags are tpnbd's -tls-cert, -tls-key and -tls-client-ca.
	serverFlags []string
	// client has a certificate signed by the server's CA.
	client string
	// anonymous has no client certificate.
	anonymous string
	// stranger has a client certificate signed by an unrelated CA.
	stranger string
}

func writeTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	ca := testcerts.NewCA(t, "tpnbd test CA")
	// qemu checks the name it connects to (over a Unix socket, the
	// tls-hostname it is given), libnbd the host of a TCP URI.
	server := ca.Server(t, "localhost", "127.0.0.1", "::1")
	dir := t.TempDir()
	f := &tlsFiles{
		serverFlags: []string{
			"-tls-cert", testcerts.WriteFile(t, dir, "server-cert.pem", server.CertPEM),
			"-tls-key", testcerts.WriteFile(t, dir, "server-key.pem", server.KeyPEM),
			"-tls-client-ca", testcerts.WriteFile(t, dir, "client-ca.pem", ca.PEM),
		},
	}
	clientDir := func(name string, cert *testcerts.Leaf) string {
		d := filepath.Join(dir, name)
		require.NoError(t, os.Mkdir(d, 0o700))
		testcerts.WriteFile(t, d, "ca-cert.pem", ca.PEM)
		if cert != nil {
			testcerts.WriteFile(t, d, "client-cert.pem", cert.CertPEM)
			testcerts.WriteFile(t, d, "client-key.pem", cert.KeyPEM)
		}
		return d
	}
	f.client = clientDir("client", ca.Client(t, "client"))
	f.anonymous = clientDir("anonymous", nil)
	f.stranger = clientDir("stranger", testcerts.NewCA(t, "unrelated CA").Client(t, "stranger"))
	return f
}

// tlsURI is libnbd's URI of the export over TLS on the Unix socket, with
// the client certificates in dir.
func (s *tpnbd) tlsURI(dir string) string {
	return "nbds+unix:///disk?socket=" + s.sock + "&tls-certificates=" + dir
}

// qemuTLS returns qemu-img's arguments that define the TLS credentials in
// dir and then open the export over the Unix socket (or, with tcp set, at
// that TCP address) through them; image-opts ends the list.
func (s *tpnbd) qemuTLS(dir, tcp string) (object, imageOpts string) {
	object = "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir
	server := "server.type=unix,server.path=" + s.sock + ",tls-hostname=localhost"
	if tcp != "" {
		host, port, _ := strings.Cut(tcp, ":")
		server = "server.type=inet,server.host=" + host + ",server.port=" + port
	}
	return object, "driver=nbd," + server + ",export=disk,tls-creds=tls0"
}

// toolFails runs a client tool that must fail and returns its output.
func toolFails(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s %s succeeded:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

// TestTLSRequireWithClientCertificates serves with -tls=require and
// client verification, and checks that libnbd's and qemu's clients work
// over TLS with a good certificate and are refused without TLS, without a
// client certificate, or with one from another CA.
func TestTLSRequireWithClientCertificates(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	nbdcopy := requireTool(t, "nbdcopy", "libnbd-bin")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	certs := writeTLSFiles(t)
	s := startTpnbd(t, tlsImageSize, true, append([]string{"-tls=require", "-tcp", "127.0.0.1:0"}, certs.serverFlags...)...)
	tcp := strings.TrimSuffix(strings.TrimPrefix(s.tcpURI, "nbd://"), "/disk")
	dir := t.TempDir()

	out := runTool(t, nbdinfo, s.tlsURI(certs.client))
	require.Contains(t, out, "with TLS")
	require.Contains(t, out, "export-size: 16777216")
	out = runTool(t, nbdinfo, "nbds://"+tcp+"/disk?tls-certificates="+certs.client)
	require.Contains(t, out, "with TLS")

	// nbdcopy out of the server and into it.
	copied := filepath.Join(dir, "copy.img")
	runTool(t, nbdcopy, s.tlsURI(certs.client), copied)
	requireSameFile(t, s.file, copied)
	in := filepath.Join(dir, "in.img")
	writeImage(t, in, tlsImageSize, true)
	runTool(t, nbdcopy, in, s.tlsURI(certs.client))
	requireSameFile(t, in, s.file)

	// qemu-img over TCP (it checks the address against the certificate)
	// and over the Unix socket (with tls-hostname).
	for _, addr := range []string{tcp, ""} {
		object, opts := s.qemuTLS(certs.client, addr)
		out := filepath.Join(dir, "qemu.img")
		runTool(t, qemuImg, "convert", "--object", object, "--image-opts", opts, "-O", "raw", out)
		requireSameFile(t, s.file, out)
		writeImage(t, in, tlsImageSize, true)
		runTool(t, qemuImg, "convert", "--object", object, "-n", "-f", "raw", in, "--target-image-opts", opts)
		requireSameFile(t, in, s.file)
	}

	// Refused: a client without TLS learns only that TLS is required.
	out = toolFails(t, qemuImg, "info", s.uri)
	require.Contains(t, out, "TLS is required")
	require.NotContains(t, out, "16777216")
	toolFails(t, nbdinfo, s.uri)
	// Refused: no client certificate, or one from another CA.
	for _, d := range []string{certs.anonymous, certs.stranger} {
		toolFails(t, nbdinfo, s.tlsURI(d))
		object, opts := s.qemuTLS(d, tcp)
		toolFails(t, qemuImg, "info", "--object", object, "--image-opts", opts)
	}
}

// TestTLSOptional serves with -tls=on and no client verification: a
// client may use TLS, with or without a certificate, or plain text.
func TestTLSOptional(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	certs := writeTLSFiles(t)
	s := startTpnbd(t, tlsImageSize, true, "-tls=on", certs.serverFlags[0], certs.serverFlags[1], certs.serverFlags[2], certs.serverFlags[3])
	require.Contains(t, runTool(t, nbdinfo, s.uri), "without TLS")
	require.Contains(t, runTool(t, nbdinfo, s.tlsURI(certs.anonymous)), "with TLS")
	require.Contains(t, runTool(t, nbdinfo, s.tlsURI(certs.stranger)), "with TLS")
	object, opts := s.qemuTLS(certs.anonymous, "")
	require.Contains(t, runTool(t, qemuImg, "compare", "--object", object, "--image-opts", "driver=file,filename="+s.file, opts), "identical")
}

// TestTLSSparse checks block status and structured reads over TLS with
// real clients: nbdinfo --map sees the holes of a sparse image, and nbdcopy
// copies it into a file that stays sparse.
func TestTLSSparse(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	nbdcopy := requireTool(t, "nbdcopy", "libnbd-bin")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	certs := writeTLSFiles(t)
	s := startTpnbd(t, imageSize, false, append([]string{"-tls=require"}, certs.serverFlags...)...)
	dataSize, holes := makeSparse(t, s.file)
	require.Equal(t, wantMap(holes), nbdinfoMap(t, nbdinfo, s.tlsURI(certs.client)), "nbdinfo --map over TLS")
	out := filepath.Join(t.TempDir(), "copy.img")
	runTool(t, nbdcopy, s.tlsURI(certs.client), out)
	requireSparseCopy(t, qemuImg, s.file, out, dataSize)
}

// requireSameFile checks that two files hold the same bytes.
func requireSameFile(t *testing.T, a, b string) {
	t.Helper()
	da, err := os.ReadFile(a)
	require.NoError(t, err)
	db, err := os.ReadFile(b)
	require.NoError(t, err)
	require.True(t, bytes.Equal(da, db), "%s and %s differ", a, b)
}

func TestTLSFlags(t *testing.T) {
	certs := writeTLSFiles(t)
	file := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, file, 1<<20, false)
	for _, args := range [][]string{
		{"-tls=maybe"},
		{"-tls=on"},
		{"-tls=require", "-tls-cert", certs.serverFlags[1]},
		{"-tls-cert", certs.serverFlags[1], "-tls-key", certs.serverFlags[3]},
		{"-tls-client-ca", certs.serverFlags[5]},
	} {
		var stderr bytes.Buffer
		_, err := parseFlags(append(args, file), &stderr)
		require.Error(t, err, "%v", args)
		require.Contains(t, stderr.String(), "-tls", "%v", args)
	}

	// Files that cannot be used make run fail before serving.
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, args := range [][]string{
		{"-tls=on", "-tls-cert", missing, "-tls-key", certs.serverFlags[3]},
		{"-tls=on", "-tls-cert", certs.serverFlags[1], "-tls-key", certs.serverFlags[1]},
		{"-tls=on", "-tls-cert", certs.serverFlags[1], "-tls-key", certs.serverFlags[3], "-tls-client-ca", missing},
		{"-tls=on", "-tls-cert", certs.serverFlags[1], "-tls-key", certs.serverFlags[3], "-tls-client-ca", file},
	} {
		cfg, err := parseFlags(append(append([]string{"-q", "-unix", filepath.Join(t.TempDir(), "s")}, args...), file), io.Discard)
		require.NoError(t, err, "%v", args)
		err = run(context.Background(), cfg, io.Discard, nil)
		require.ErrorContains(t, err, "TLS", "%v", args)
	}
}
