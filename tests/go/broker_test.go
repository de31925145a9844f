// Package clienttests drives the real silt binary ($SILT_BIN) with franz-go
// (kgo and kadm): idempotent produce with every codec, consume, a consumer
// group of three that loses a member, and the admin API. One broker serves
// the whole package; TestMain starts it on 127.0.0.1 port 0 and requires a
// clean exit (code 0) on SIGTERM at the end.
package clienttests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	// opTimeout bounds one client operation (admin call, flush, a consume).
	opTimeout = 60 * time.Second
	// logLinesMax bounds the broker output kept for failure messages.
	logLinesMax = 20000
)

var readyRe = regexp.MustCompile(`broker ready.*kafka_listener="?([0-9.]+):(\d+)"?`)
var ansiRe = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

// broker is one silt process; bootstrap is its bound Kafka listener.
type broker struct {
	cmd       *exec.Cmd
	bootstrap string
	mu        sync.Mutex
	lines     []string
	exited    chan struct{}
	exitErr   error
}

var silt *broker

var names atomic.Int64

// unique names a topic or group once per broker, so that `go test -count=N`
// reruns each test against the same broker.
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, names.Add(1))
}

func (b *broker) logTail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	from := len(b.lines) - n
	if from < 0 {
		from = 0
	}
	return strings.Join(b.lines[from:], "\n")
}

// assertAlive fails the test, with the broker's log, if the broker has exited.
func (b *broker) assertAlive(t *testing.T) {
	t.Helper()
	select {
	case <-b.exited:
		t.Fatalf("silt exited: %v\n%s", b.exitErr, b.logTail(60))
	default:
	}
}

func startBroker(dir string) (*broker, error) {
	bin := os.Getenv("SILT_BIN")
	if st, err := os.Stat(bin); bin == "" || err != nil || st.IsDir() {
		return nil, fmt.Errorf("SILT_BIN must name the silt binary (got %q); tests/go/run sets it", bin)
	}
	cmd := exec.Command(bin, "broker")
	cmd.Dir = dir
	env := []string{}
	for _, kv := range os.Environ() {
		// The readiness line is an INFO event; an inherited RUST_LOG=warn would hide it.
		if !strings.HasPrefix(kv, "SILT_") && !strings.HasPrefix(kv, "RUST_LOG=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"NO_COLOR=1", "RUST_BACKTRACE=1",
		"SILT_STORAGE__DATA_DIR="+filepath.Join(dir, "data"),
		"SILT_KAFKA__LISTEN=127.0.0.1:0", "SILT_HTTP__LISTEN=127.0.0.1:0",
		// Short group timers, as the Python suite's group tests use.
		"SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS=0",
		"SILT_GROUPS__MIN_SESSION_TIMEOUT_MS=1000",
		"SILT_GROUPS__CONSUMER_HEARTBEAT_INTERVAL_MS=500",
		"SILT_GROUPS__CONSUMER_SESSION_TIMEOUT_MS=10000",
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &broker{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := ansiRe.ReplaceAllString(sc.Text(), "")
			b.mu.Lock()
			b.lines = append(b.lines, line)
			if len(b.lines) > logLinesMax {
				b.lines = b.lines[len(b.lines)-logLinesMax:]
			}
			b.mu.Unlock()
			if m := readyRe.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1] + ":" + m[2]:
				default:
				}
			}
		}
		b.exitErr = cmd.Wait()
		close(b.exited)
	}()
	select {
	case addr := <-ready:
		if strings.HasSuffix(addr, ":0") {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("broker advertised port 0")
		}
		b.bootstrap = addr
		return b, nil
	case <-b.exited:
		return nil, fmt.Errorf("silt exited (%v) before 'broker ready'\n%s", b.exitErr, b.logTail(60))
	case <-time.After(readyTimeout):
		_ = cmd.Process.Kill()
		<-b.exited
		return nil, fmt.Errorf("no 'broker ready' line within %v\n%s", readyTimeout, b.logTail(60))
	}
}

// stop sends SIGTERM and requires exit code 0 within stopTimeout.
func (b *broker) stop() error {
	select {
	case <-b.exited:
		return fmt.Errorf("silt exited on its own: %v\n%s", b.exitErr, b.logTail(60))
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(stopTimeout):
		_ = b.cmd.Process.Kill()
		<-b.exited
		return fmt.Errorf("silt did not exit within %v of SIGTERM\n%s", stopTimeout, b.logTail(60))
	}
	if b.exitErr != nil {
		return fmt.Errorf("silt exited with %v on SIGTERM (expected code 0)\n%s", b.exitErr, b.logTail(60))
	}
	return nil
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "silt-go-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	silt, err = startBroker(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting silt:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if err := silt.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: stopping silt:", err)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitUntil polls cond until it returns true or timeout passes, then fails
// naming what was awaited. The condition decides when to proceed.
func waitUntil(t *testing.T, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}
