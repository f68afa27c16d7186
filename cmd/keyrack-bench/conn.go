package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The timed phase sends prepared requests over kept-alive connections
// with a minimal HTTP/1.1 client: the load generator shares the machine
// with the appliance, so every microsecond it spends is one the token
// does not get. net/http's client costs about 0.2 ms of CPU per request
// here, this one a fraction of that; what the appliance does is the same.

// rawRequest is a complete HTTP/1.1 request, ready to write.
func rawRequest(host, path, apiKey, contentType string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\napi-key: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		path, host, apiKey, contentType, len(body))
	b.Write(body)
	return b.Bytes()
}

// rawConn is one kept-alive connection to the appliance.
type rawConn struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
	body []byte
}

func (rc *rawConn) close() {
	if rc.c != nil {
		rc.c.Close()
		rc.c = nil
	}
}

// do sends req and reads the answer: its status, content type and body
// (valid until the next call). A connection the server closed is opened
// again once.
func (rc *rawConn) do(req []byte) (status int, ctype string, body []byte, err error) {
	for attempt := 0; ; attempt++ {
		status, ctype, body, err = rc.try(req)
		if err == nil || attempt == 1 {
			return status, ctype, body, err
		}
		rc.close()
	}
}

func (rc *rawConn) try(req []byte) (int, string, []byte, error) {
	if rc.c == nil {
		c, err := net.DialTimeout("tcp", rc.addr, 10*time.Second)
		if err != nil {
			return 0, "", nil, err
		}
		rc.c, rc.r = c, bufio.NewReaderSize(c, 16<<10)
	}
	rc.c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := rc.c.Write(req); err != nil {
		return 0, "", nil, err
	}
	line, err := rc.r.ReadSlice('\n')
	if err != nil {
		return 0, "", nil, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, "", nil, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, "", nil, fmt.Errorf("bad status line %q", line)
	}
	length, ctype, closing := -1, "", false
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return 0, "", nil, err
		}
		h := bytes.TrimRight(line, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, "", nil, fmt.Errorf("bad header line %q", h)
		}
		v = bytes.TrimSpace(v)
		switch strings.ToLower(string(k)) {
		case "content-length":
			if length, err = strconv.Atoi(string(v)); err != nil || length < 0 {
				return 0, "", nil, fmt.Errorf("bad Content-Length %q", v)
			}
		case "content-type":
			ctype = string(v)
		case "connection":
			closing = bytes.EqualFold(v, []byte("close"))
		case "transfer-encoding":
			return 0, "", nil, errors.New("chunked answer: the appliance sends Content-Length for whole bodies")
		}
	}
	if length < 0 {
		return 0, "", nil, errors.New("answer without Content-Length")
	}
	if cap(rc.body) < length {
		rc.body = make([]byte, length)
	}
	body := rc.body[:length]
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return 0, "", nil, err
	}
	if closing {
		rc.close()
	}
	return status, ctype, body, nil
}
