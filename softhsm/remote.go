package softhsm

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/keyrack/keyrack/hsm"
)

// The token in its own process: p11-kit-server loads libsofthsm2.so and
// exports one token on a unix socket; the appliance loads p11-kit-client.so,
// which forwards every PKCS#11 call over the socket. The keys' plaintext
// then lives only in the server's memory.

// ServerCandidates and ClientModuleCandidates are where Debian and Ubuntu
// (packages p11-kit and p11-kit-modules) put p11-kit's RPC server and client.
var (
	ServerCandidates = []string{
		"/usr/libexec/p11-kit/p11-kit-server",
		"/usr/lib/p11-kit/p11-kit-server",
	}
	ClientModuleCandidates = []string{
		"/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
		"/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
		"/usr/lib/pkcs11/p11-kit-client.so",
	}
)

// ErrNoP11Kit means p11-kit's RPC server or client module is not installed.
var ErrNoP11Kit = errors.New("softhsm: p11-kit-server or p11-kit-client.so not found (install p11-kit and p11-kit-modules: make deps)")

// ClientAddressEnv is the variable p11-kit-client.so reads, when the
// library is loaded, to find the server.
const ClientAddressEnv = "P11_KIT_SERVER_ADDRESS"

func firstExisting(paths []string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoP11Kit
}

// ClientModulePath returns p11-kit's RPC client module.
func ClientModulePath() (string, error) { return firstExisting(ClientModuleCandidates) }

// ServerPath returns p11-kit's RPC server program.
func ServerPath() (string, error) { return firstExisting(ServerCandidates) }

// Server is a p11-kit-server process exporting one SoftHSM token on a unix
// socket. It can be killed and started again on the same socket, as a token
// process restarted by systemd would be.
type Server struct {
	Token  *Token
	Socket string // the unix socket's path
	Client string // p11-kit-client.so
	// LogFile receives the server's output (the P11_KIT_SERVER_* lines and
	// any error); it is appended to across restarts.
	LogFile string

	prog string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// NewServer prepares a server for tok on socket without starting it. The
// socket's directory is created with mode 0700: only this user reaches the
// token through it.
func NewServer(tok *Token, socket string) (*Server, error) {
	prog, err := ServerPath()
	if err != nil {
		return nil, err
	}
	client, err := ClientModulePath()
	if err != nil {
		return nil, err
	}
	socket, err = filepath.Abs(socket)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	return &Server{Token: tok, Socket: socket, Client: client, LogFile: socket + ".log", prog: prog}, nil
}

// Serve is NewServer and Start.
func Serve(tok *Token, socket string) (*Server, error) {
	s, err := NewServer(tok, socket)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Address is the value of P11_KIT_SERVER_ADDRESS for a client of s.
func (s *Server) Address() string { return "unix:path=" + s.Socket }

// ClientEnv is the environment a client process (keyrackd) needs.
func (s *Server) ClientEnv() []string { return []string{ClientAddressEnv + "=" + s.Address()} }

// Config returns an hsm.Config that reaches the token through the client
// module. The caller must have ClientEnv in its environment before the
// module is opened.
func (s *Server) Config() hsm.Config {
	return hsm.Config{
		Path:       s.Client,
		TokenLabel: s.Token.Label,
		PIN:        hsm.PINSource{File: s.Token.PINFile},
	}
}

// Start runs the server in the foreground (as systemd would) and returns
// once its socket accepts connections. A socket left by a killed server
// needs no cleanup: p11-kit-server binds over it (measured, 0.24.1).
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("softhsm: p11-kit-server already running (pid %d)", s.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("softhsm: %w", err)
	}
	cmd := exec.Command(s.prog, "-f", "-n", s.Socket, "--provider", s.Token.Module, "pkcs11:token="+s.Token.Label)
	// The token's configuration goes to the server only: the client side
	// never needs to know where the token's files are.
	cmd.Env = append(os.Environ(), s.Token.Env()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A server outliving its parent (a test binary or a dev keyrackd
	// killed hard) would keep the token's files open and its socket bound.
	// Its own process group: p11-kit-server serves each connection from a
	// child process (p11-kit-remote), and "the token process died" means
	// all of them, as when systemd stops the token's unit.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// Linux sends the death signal when the *thread* that forked the
	// child ends, and Go ends a thread whenever a goroutine that locked
	// it exits (the idle signers do): fork from a locked goroutine that
	// lives until the server has exited.
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			runtime.UnlockOSThread()
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		logf.Close()
		close(done)
		// Exits still locked: the thread goes with it, harmlessly now.
	}()
	if err := <-started; err != nil {
		logf.Close()
		return fmt.Errorf("softhsm: starting p11-kit-server: %w", err)
	}
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", s.Socket)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			out, _ := os.ReadFile(s.LogFile)
			return fmt.Errorf("softhsm: p11-kit-server exited at start: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			s.killLocked()
			return fmt.Errorf("softhsm: p11-kit-server socket %s not ready: %w", s.Socket, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PID is the running server's process id, 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Kill ends the server and the children serving its connections with
// SIGKILL, as a crash of the token's unit would, and waits for the server.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}
