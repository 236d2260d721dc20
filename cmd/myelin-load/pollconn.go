package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// pollConn is one keep-alive HTTP/1.1 connection that sends GET requests and reads
// their answers itself, for the fanout listeners' long-polls. net/http's client spends
// about half of the tool's CPU per delivery in its per-connection read and write
// goroutines; the tool shares the cores with the server it measures, so its own cost
// shows up as delivery latency. Only plain http:// homeservers use it (https goes
// through net/http).
type pollConn struct {
	addr string // host:port
	host string // Host header
	conn net.Conn
	br   *bufio.Reader
	req  bytes.Buffer
}

// newPollConn returns a pollConn for hs, or nil when hs is not plain http.
func newPollConn(hs string) *pollConn {
	u, err := url.Parse(hs)
	if err != nil || u.Scheme != "http" || u.Path != "" && u.Path != "/" {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &pollConn{addr: addr, host: u.Host}
}

// errBadAnswer is an answer this minimal client cannot read.
var errBadAnswer = errors.New("malformed HTTP answer")

// get sends GET path and returns the status and body. The whole exchange must end
// within timeout; ctx cancels it. Any error closes the connection (the next get
// dials again).
func (p *pollConn) get(ctx context.Context, path, token string, timeout time.Duration) (int, []byte, error) {
	if p.conn == nil {
		c, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return 0, nil, err
		}
		p.conn, p.br = c, bufio.NewReaderSize(c, 16<<10)
	}
	conn := p.conn
	_ = conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	status, body, keep, err := p.exchange(path, token)
	if err != nil || !keep {
		_ = conn.Close()
		p.conn, p.br = nil, nil
	}
	if err != nil && ctx.Err() != nil {
		return 0, nil, ctx.Err()
	}
	return status, body, err
}

func (p *pollConn) exchange(path, token string) (status int, body []byte, keep bool, err error) {
	p.req.Reset()
	fmt.Fprintf(&p.req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: myelin-load\r\n", path, p.host)
	if token != "" {
		fmt.Fprintf(&p.req, "Authorization: Bearer %s\r\n", token)
	}
	p.req.WriteString("\r\n")
	if _, err := p.conn.Write(p.req.Bytes()); err != nil {
		return 0, nil, false, err
	}
	line, err := p.line()
	if err != nil {
		return 0, nil, false, err
	}
	// "HTTP/1.1 200 OK"
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	if !strings.HasPrefix(proto, "HTTP/1.") {
		return 0, nil, false, errBadAnswer
	}
	if status, err = strconv.Atoi(code); err != nil {
		return 0, nil, false, errBadAnswer
	}
	length, chunked := -1, false
	keep = proto == "HTTP/1.1"
	for {
		h, err := p.line()
		if err != nil {
			return 0, nil, false, err
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return 0, nil, false, errBadAnswer
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			if length, err = strconv.Atoi(value); err != nil || length < 0 {
				return 0, nil, false, errBadAnswer
			}
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
		case "connection":
			keep = !strings.EqualFold(value, "close")
		}
	}
	switch {
	case chunked:
		body, err = p.chunked()
	case length >= 0:
		body = make([]byte, length)
		_, err = io.ReadFull(p.br, body)
	default: // the body runs to the end of the connection
		body, err = io.ReadAll(p.br)
		keep = false
	}
	if err != nil {
		return 0, nil, false, err
	}
	return status, body, keep, nil
}

// line reads one header line without its CRLF.
func (p *pollConn) line() (string, error) {
	b, err := p.br.ReadSlice('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// chunked reads a chunked body (trailers are skipped).
func (p *pollConn) chunked() ([]byte, error) {
	var body []byte
	for {
		line, err := p.line()
		if err != nil {
			return nil, err
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 || n > 64<<20 {
			return nil, errBadAnswer
		}
		if n == 0 {
			for {
				t, err := p.line()
				if err != nil {
					return nil, err
				}
				if t == "" {
					return body, nil
				}
			}
		}
		start := len(body)
		body = append(body, make([]byte, n)...)
		if _, err := io.ReadFull(p.br, body[start:]); err != nil {
			return nil, err
		}
		if crlf, err := p.line(); err != nil || crlf != "" {
			return nil, errBadAnswer
		}
	}
}
