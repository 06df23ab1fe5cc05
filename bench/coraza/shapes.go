package main

import (
	"fmt"
	"strings"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/corpus"
)

// shape is one benchmark request and the decision both engines must reach.
type shape struct {
	name string
	req  inspector.Request
	deny bool
	// optIn shapes run only when -shapes names them: stock Coraza takes
	// minutes per op on them.
	optIn bool
}

// shapes returns the request shapes of the issue: a GET with ten ordinary
// headers, the seed SQLi (denied), JSON posts of 1, 16 and 128 KiB, a
// urlencoded form and a multipart upload.
func shapes() []shape {
	return []shape{
		{name: "GET", req: corpus.Get()},
		{name: "SQLi", req: corpus.SQLi(), deny: true},
		{name: "JSON1KiB", req: corpus.JSON1KiB()},
		{name: "JSON16KiB", req: jsonPost(856)},
		{name: "Form", req: form()},
		{name: "Multipart", req: multipart()},
		{name: "JSON128KiB", req: jsonPost(6848)}, // its heap would tax the next shape
		// An ordinary API body: a 1 MiB JSON list of records (58,200 leaves).
		{name: "JSONList1MiB", req: jsonPost(largeAPILeaves), optIn: true},
	}
}

// largeAPILeaves is the number of leaves of JSONList1MiB: 1 MiB of
// corpus.JSONBody.
const largeAPILeaves = 58200

func withBody(r inspector.Request, contentType string, body []byte) inspector.Request {
	r.Headers = []inspector.Header{
		{Name: "host", Value: r.Host},
		{Name: "user-agent", Value: "shop-www/1.4.2"},
		{Name: "accept", Value: "application/json"},
		{Name: "content-type", Value: contentType},
		{Name: "content-length", Value: fmt.Sprint(len(body))},
	}
	r.Body = body
	return r
}

// jsonPost is corpus.JSON1KiB with n leaf values (856: 16 KiB, 6848: 128 KiB).
func jsonPost(n int) inspector.Request {
	r := corpus.JSON1KiB()
	return withBody(r, "application/json", corpus.JSONBody(n))
}

// form is a 1 KiB urlencoded checkout form with 32 fields.
func form() inspector.Request {
	r := corpus.JSON1KiB()
	r.URI = "/checkout"
	var b strings.Builder
	for i := range 32 {
		if i > 0 {
			b.WriteByte('&')
		}
		fmt.Fprintf(&b, "field_%02d=value+number+%d+of+the+form", i, i)
	}
	return withBody(r, "application/x-www-form-urlencoded", []byte(b.String()))
}

// multipart is an upload of an 8 KiB text file with two form fields.
func multipart() inspector.Request {
	r := corpus.JSON1KiB()
	r.URI = "/api/v1/documents"
	const boundary = "----meshwafbench7d4bd6a29c1e"
	var b strings.Builder
	part := func(disposition, contentType, body string) {
		fmt.Fprintf(&b, "--%s\r\nContent-Disposition: %s\r\n", boundary, disposition)
		if contentType != "" {
			fmt.Fprintf(&b, "Content-Type: %s\r\n", contentType)
		}
		fmt.Fprintf(&b, "\r\n%s\r\n", body)
	}
	part(`form-data; name="title"`, "", "Quarterly report")
	part(`form-data; name="folder"`, "", "reports/2026")
	line := "The quarter closed with steady orders across all regions and no open incidents.\n"
	part(`form-data; name="file"; filename="report.txt"`, "text/plain", strings.Repeat(line, 8192/len(line)))
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return withBody(r, "multipart/form-data; boundary="+boundary, []byte(b.String()))
}
