package httpproxy

import (
	"syscall"
	"unsafe"
)

// peekClosed is the RawConn.Read callback of open: a non-blocking one-byte
// MSG_PEEK. Data or the end of the stream mean the conn is done for; would
// block means nothing arrived. It never asks to wait.
func (c *UpstreamConn) peekClosed(fd uintptr) bool {
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	c.closed = errno != syscall.EAGAIN
	return true
}
