package inspector

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/stretchr/testify/require"
)

// bareWAF is Coraza without rules, parsing every body with the processor
// its Content-Type names and no argument limit to speak of.
var bareWAF = sync.OnceValues(func() (coraza.WAF, error) {
	return coraza.NewWAF(coraza.NewWAFConfig().WithDirectives(`SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 1048576
SecArgumentsLimit 100000000
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application(?:/soap\+|/)|text/)xml" "id:1,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "@rx ^multipart/" "id:2,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=MULTIPART"`))
})

// corazaAdds returns what Coraza's processor added for body: for
// multipart the parts and the part header values, for XML the values.
func corazaAdds(t *testing.T, ct string, body []byte) (proc string, parts, headers, values int) {
	t.Helper()
	waf, err := bareWAF()
	require.NoError(t, err)
	tx := waf.NewTransaction()
	defer func() { require.NoError(t, tx.Close()) }()
	tx.AddRequestHeader("Content-Type", ct)
	tx.ProcessRequestHeaders()
	_, _, err = tx.WriteRequestBody(body)
	require.NoError(t, err)
	_, err = tx.ProcessRequestBody()
	require.NoError(t, err)
	vars := tx.(plugintypes.TransactionState).Variables()
	return vars.RequestBodyProcessor().Get(), len(vars.MultipartName().FindAll()),
		len(vars.MultipartPartHeaders().FindAll()),
		len(vars.RequestXML().Get("/*")) + len(vars.RequestXML().Get("//@*"))
}

// FuzzBodyNodes: the pre-scan never counts less than Coraza's processor
// adds (an undercount would let a bomb through): at least one per part,
// one per part header past freePartHeaders a part, one per XML value; and
// for XML no less than encoding/xml's tokens.
func FuzzBodyNodes(f *testing.F) {
	for _, tc := range bodyNodeCases {
		f.Add(tc.ct, []byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		if len(body) > 1<<20 {
			return
		}
		proc, parts, headers, values := corazaAdds(t, ct, body)
		n := countBodyNodes(proc, ct, body, 1<<30)
		switch proc {
		case "MULTIPART":
			require.GreaterOrEqual(t, n, parts, "parts")
			require.GreaterOrEqual(t, n, headers-freePartHeaders*parts, "part headers")
		case "XML":
			require.GreaterOrEqual(t, n, values, "xml values")
			require.GreaterOrEqual(t, n, decoderNodes(body), "xml nodes of encoding/xml")
		}
	})
}

// FuzzMultipartNodes is FuzzBodyNodes for multipart bodies of one
// boundary, which mutations of the Content-Type seldom keep.
func FuzzMultipartNodes(f *testing.F) {
	const ct = "multipart/form-data; boundary=x"
	for _, tc := range bodyNodeCases {
		if tc.ct == ct {
			f.Add([]byte(tc.body))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, parts, headers, _ := corazaAdds(t, ct, body)
		n := countBodyNodes("MULTIPART", ct, body, 1<<30)
		require.GreaterOrEqual(t, n, parts, "parts")
		require.GreaterOrEqual(t, n, headers-freePartHeaders*parts, "part headers")
	})
}

// FuzzXMLNodes: the XML scan counts at least encoding/xml's nodes, and
// exactly as many for an ASCII body without entities that the decoder
// reads to its end.
func FuzzXMLNodes(f *testing.F) {
	for _, tc := range bodyNodeCases {
		if tc.proc == "XML" {
			f.Add([]byte(tc.body))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, clean := decoderNodesEOF(body)
		got := xmlNodes(body, 1<<30)
		require.GreaterOrEqual(t, got, n)
		// Text the decoder makes blank (an entity, non-ASCII white space)
		// counts in the scan.
		if clean && !bytes.ContainsFunc(body, func(r rune) bool { return r == '&' || r >= utf8.RuneSelf }) {
			require.Equal(t, n, got, "an ASCII body without entities that the decoder reads to its end")
		}
	})
}

// decoderNodes is xmlNodes with encoding/xml's decoder, set up as Coraza
// sets it up.
func decoderNodes(body []byte) int {
	n, _ := decoderNodesEOF(body)
	return n
}

// decoderNodesEOF is decoderNodes, and whether the decoder ended at the
// end of the body rather than at an error.
func decoderNodesEOF(body []byte) (int, bool) {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	n := 0
	for {
		tok, err := d.RawToken()
		if err != nil {
			return n, errors.Is(err, io.EOF)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n += 1 + len(t.Attr)
		case xml.EndElement:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 {
				n++
			}
		default: // comment, processing instruction, declaration
			n++
		}
	}
}
