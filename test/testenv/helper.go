package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the client that runs inside governed cgroups:
// TestMain calls RunHelper, which acts when the environment asks it to.
const helperEnv = "TOLLGATE_TEST_HELPER"

// DialResult is what a helper client reports about one dial.
type DialResult struct {
	OK    bool   `json:"ok"`
	Err   string `json:"err,omitempty"`
	Peer  string `json:"peer,omitempty"`  // getpeername after connect
	Local string `json:"local,omitempty"` // getsockname after connect
	Reply string `json:"reply,omitempty"` // everything the server sent
	PID   int    `json:"pid"`
}

// extraHelpers are helper modes a test package adds with RegisterHelper.
var extraHelpers = map[string]func(args []string) any{}

// RegisterHelper adds a helper mode: f runs in the helper process and its
// result is printed as JSON. Call it in TestMain before RunHelper.
func RegisterHelper(mode string, f func(args []string) any) { extraHelpers[mode] = f }

// RunHelper runs the helper client when the test binary was started as one,
// and exits. Call it first in TestMain.
func RunHelper() {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	var args []string
	json.Unmarshal([]byte(os.Getenv(helperEnv+"_ARGS")), &args)
	var out any
	if f, ok := extraHelpers[mode]; ok {
		json.NewEncoder(os.Stdout).Encode(f(args))
		os.Exit(0)
	}
	switch mode {
	case "dial": // network, address, payload, mark
		mark, _ := strconv.Atoi(args[3])
		out = dial(args[0], args[1], args[2], mark)
	case "dialmany": // network, count, addresses... (each dial sends its address)
		n, _ := strconv.Atoi(args[1])
		res := make([]DialResult, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				a := args[2+i%(len(args)-2)]
				res[i] = dial(args[0], a, a, 0)
			}(i)
		}
		wg.Wait()
		out = res
	case "hold": // network, address: relay stdin lines to the connection, replies to stdout
		hold(args[0], args[1])
		os.Exit(0)
	case "sendto": // address: an unconnected UDP datagram
		out = sendto(args[0])
	case "spawn": // run a dial from a child process (fork/exec inheritance)
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=dial")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		os.Exit(2)
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(0)
}

func dial(network, address, payload string, mark int) DialResult {
	r := DialResult{PID: os.Getpid()}
	d := net.Dialer{Timeout: 5 * time.Second}
	if mark != 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, mark) })
			return serr
		}
	}
	var c net.Conn
	var err error
	if network == "tcp6mapped" {
		c, err = dialMapped(address)
	} else {
		c, err = d.Dial(network, address)
	}
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer c.Close()
	r.Local = c.LocalAddr().String()
	if tc, ok := c.(*net.TCPConn); ok {
		raw, _ := tc.SyscallConn()
		raw.Control(func(fd uintptr) {
			if sa, err := syscall.Getpeername(int(fd)); err == nil {
				r.Peer = sockaddrString(sa)
			}
		})
	} else {
		r.Peer = c.RemoteAddr().String()
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, payload); err != nil {
		r.Err = err.Error()
		return r
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	reply, err := io.ReadAll(c)
	r.Reply = string(reply)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.OK = true
	return r
}

func sendto(address string) DialResult {
	r := DialResult{PID: os.Getpid()}
	network := "udp4"
	if strings.HasPrefix(address, "[") {
		network = "udp6"
	}
	pc, err := net.ListenPacket(network, "")
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer pc.Close()
	ua, err := net.ResolveUDPAddr(network, address)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	if _, err := pc.WriteTo([]byte("x"), ua); err != nil {
		r.Err = err.Error()
		return r
	}
	r.OK = true
	return r
}

func sockaddrString(sa syscall.Sockaddr) string {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	return fmt.Sprint(sa)
}

// Helper is a command that runs the test binary as a helper client.
func Helper(mode string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	enc, _ := json.Marshal(args)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_ARGS="+string(enc))
	return cmd
}

// RunJSON runs cmd, which must print one JSON value, into out.
func RunJSON(t testing.TB, cmd *exec.Cmd, out any) {
	t.Helper()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstderr: %s", cmd, err, stderr.String())
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		t.Fatalf("helper output %q: %v", stdout, err)
	}
}

// Dial runs a helper client in cgroup c that dials address, sends payload
// and reads the reply.
func Dial(t testing.TB, c Cgroup, network, address, payload string) DialResult {
	t.Helper()
	cmd := Helper("dial", network, address, payload, "0")
	InCgroup(t, cmd, c)
	var r DialResult
	RunJSON(t, cmd, &r)
	return r
}

// dialMapped connects an AF_INET6 socket to an IPv4-mapped address
// (::ffff:a.b.c.d), which Go's dialer would turn into an AF_INET socket.
func dialMapped(address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "mapped")
	defer f.Close()
	if err := syscall.Connect(fd, &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}); err != nil {
		return nil, fmt.Errorf("connect %s: %w", address, err)
	}
	return net.FileConn(f)
}

// hold keeps one connection open: each line read from stdin is sent and one
// reply line is printed, until stdin ends. "connected" or "error: ..." is
// printed first.
func hold(network, address string) {
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer c.Close()
	fmt.Println("connected")
	in := bufio.NewScanner(os.Stdin)
	rd := bufio.NewReader(c)
	for in.Scan() {
		if _, err := fmt.Fprintln(c, in.Text()); err != nil {
			fmt.Println("error:", err)
			return
		}
		line, err := rd.ReadString('\n')
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Print(line)
	}
}

// Held is a helper client holding a connection open.
type Held struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// Hold starts a helper in cgroup c that keeps a connection to address open.
// It fails the test unless the connection is established.
func Hold(t testing.TB, c Cgroup, network, address string) *Held {
	t.Helper()
	cmd := Helper("hold", network, address)
	InCgroup(t, cmd, c)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Process.Kill(); cmd.Wait() })
	h := &Held{cmd: cmd, in: in, out: bufio.NewReader(out)}
	if line := h.line(); line != "connected" {
		t.Fatalf("hold %s: %s", address, line)
	}
	return h
}

func (h *Held) line() string {
	l, err := h.out.ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSuffix(l, "\n")
}

// Send sends one line and returns the reply line (or "error: ...").
func (h *Held) Send(line string) string {
	fmt.Fprintln(h.in, line)
	return h.line()
}
