package metrics

import (
	"strconv"
	"syscall"
)

// errnoName returns the errno label value for e: "" for none (a clean close,
// or an error that was not an OS error, such as a TLS alert or a deadline),
// the symbolic name for the errors connections commonly end with, and
// "errno_N" for the rest. The set stays bounded, as error numbers are.
func errnoName(e syscall.Errno) string {
	switch e {
	case 0:
		return ""
	case syscall.ECONNRESET:
		return "ECONNRESET"
	case syscall.ECONNREFUSED:
		return "ECONNREFUSED"
	case syscall.ECONNABORTED:
		return "ECONNABORTED"
	case syscall.ETIMEDOUT:
		return "ETIMEDOUT"
	case syscall.EPIPE:
		return "EPIPE"
	case syscall.EHOSTUNREACH:
		return "EHOSTUNREACH"
	case syscall.ENETUNREACH:
		return "ENETUNREACH"
	case syscall.ENETDOWN:
		return "ENETDOWN"
	case syscall.ENETRESET:
		return "ENETRESET"
	case syscall.EHOSTDOWN:
		return "EHOSTDOWN"
	case syscall.ENOTCONN:
		return "ENOTCONN"
	case syscall.EADDRINUSE:
		return "EADDRINUSE"
	case syscall.EADDRNOTAVAIL:
		return "EADDRNOTAVAIL"
	case syscall.EIO:
		return "EIO"
	case syscall.ENOBUFS:
		return "ENOBUFS"
	case syscall.ENOMEM:
		return "ENOMEM"
	case syscall.EMFILE:
		return "EMFILE"
	case syscall.ENFILE:
		return "ENFILE"
	case syscall.EACCES:
		return "EACCES"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EPROTO:
		return "EPROTO"
	default:
		return "errno_" + strconv.Itoa(int(e))
	}
}
