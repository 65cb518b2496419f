package header_test

import (
	"bytes"
	"fmt"

	"github.com/seed722d2a70/meshproxy/internal/header"
)

// The outbound proxy writes the header first in the TLS stream; the inbound
// proxy reads exactly the header (under a read deadline) and finds the app's
// bytes right behind it.
func Example() {
	var stream bytes.Buffer // stands in for the mTLS connection
	if err := header.Write(&stream, header.Header{Port: 8080, SessionProtocol: header.HTTP1}); err != nil {
		panic(err)
	}
	stream.WriteString("GET / HTTP/1.1\r\n")

	h, err := header.Read(&stream)
	if err != nil {
		fmt.Println("refused:", header.Reason(err))
		return
	}
	fmt.Println(h.Port, h.SessionProtocol)
	fmt.Printf("%q\n", stream.String())
	// Output:
	// 8080 http1
	// "GET / HTTP/1.1\r\n"
}

func ExampleReason() {
	_, err := header.Read(bytes.NewReader([]byte("SSH-2.0-OpenSSH_9.6\r\n")))
	fmt.Println(header.Reason(err))
	// Output: bad_preface
}
