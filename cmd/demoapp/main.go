// Command demoapp is the workload behind the proxies in `make demo`: an HTTP
// server that says who it is and echoes requests, and a TCP echo server for
// opaque traffic.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:18080", "HTTP listen address")
	echoAddr := flag.String("echo", "127.0.0.1:17000", "TCP echo listen address")
	dial := flag.String("dial", "", "client mode: connect to this address, send -send, print the reply")
	send := flag.String("send", "hello", "client mode: what to send")
	flag.Parse()
	if *dial != "" {
		if err := client(*dial, *send); err != nil {
			fmt.Fprintln(os.Stderr, "demoapp:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *httpAddr, *echoAddr); err != nil {
		fmt.Fprintln(os.Stderr, "demoapp:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, httpAddr, echoAddr string) error {
	echoLn, err := net.Listen("tcp", echoAddr)
	if err != nil {
		return err
	}
	go serveEcho(echoLn)
	defer echoLn.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the demo app: %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	})
	srv := &http.Server{Addr: httpAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	log.Printf("demoapp: HTTP on %s, TCP echo on %s", httpAddr, echoLn.Addr())
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
	}
}

// client sends msg, half-closes, and prints what comes back until EOF: a
// stand-in for nc where it is not installed.
func client(addr, msg string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(os.Stdout, c)
	return err
}
