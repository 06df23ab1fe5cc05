package inspector_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector"
	"github.com/meshwaf/meshwaf/internal/corpus"
)

// psFuzzContentTypes are the content types FuzzPreselect chooses from: one
// per body processor meshwaf selects (none, form, multipart, JSON, XML,
// gRPC) and a few spellings of each.
var psFuzzContentTypes = []string{
	"",
	"application/x-www-form-urlencoded",
	"multipart/form-data; boundary=" + psBoundary,
	"application/json",
	"application/merge-patch+json",
	"application/cloudevents+json; charset=utf-8",
	"text/xml; charset=utf-8",
	"application/xml",
	"application/soap+xml",
	"application/grpc",
	"application/grpc-web+proto",
	"text/plain",
}

// FuzzPreselect compares pre-selection on and off over whole requests:
// method, request target, User-Agent, Cookie, a header value sent as
// Referer and as a custom header, a content type, the body, and the
// profile (psFuzzProfiles). Verdicts must be equal, logged data included,
// except logged data and messages where reruns of each side differ alike
// (psSameUnderReruns, which also fails when a side's verdict varies).
// Seeds are the case table, the benchmark requests and one request per
// generated place.
func FuzzPreselect(f *testing.F) {
	if inspector.RaceEnabled {
		f.Skip("compiling every profile twice takes minutes under the race detector")
	}
	header := func(r inspector.Request, name string) string {
		for _, h := range r.Headers {
			if strings.EqualFold(h.Name, name) {
				return h.Value
			}
		}
		return ""
	}
	profiles := psFuzzProfiles()
	profileIndex := func(name string) uint8 {
		for i, p := range profiles {
			if p.Name == name {
				return uint8(i)
			}
		}
		return 0
	}
	add := func(r inspector.Request, profile string) {
		ct, choice := strings.ToLower(header(r, "content-type")), 0
		for i, c := range psFuzzContentTypes {
			if c != "" && strings.HasPrefix(ct, strings.SplitN(c, ";", 2)[0]) {
				choice = i
			}
		}
		ref := header(r, "referer")
		if ref == "" {
			ref = header(r, "x-api-note")
		}
		f.Add(r.Method, r.URI, header(r, "user-agent"), header(r, "cookie"), ref, uint8(choice), r.Body, profileIndex(profile))
	}
	for _, c := range inspector.DiffCases() {
		add(c.Request, c.Profile)
	}
	for _, b := range corpus.Bench {
		add(b.Request(), "")
	}
	rng := rand.New(rand.NewPCG(psSeed, psSeed))
	for i, p := range psPlaces {
		r := psBase()
		p.put(&r, "1' UNION SELECT <script>alert(1)</script> ../../etc/passwd;cat /etc/passwd evil", rng)
		add(r, profiles[i%len(profiles)].Name)
	}

	f.Fuzz(func(t *testing.T, method, uri, ua, cookie, ref string, ct uint8, body []byte, profile uint8) {
		r := ftwBase()
		r.Method, r.URI, r.Host = method, uri, "shop.example.com"
		r.Headers = []inspector.Header{
			{Name: "Host", Value: r.Host},
			{Name: "User-Agent", Value: ua},
			{Name: "Accept", Value: "application/json"},
			{Name: "Cookie", Value: cookie},
			{Name: "Referer", Value: ref},
			{Name: "X-Api-Note", Value: ref},
		}
		if c := psFuzzContentTypes[int(ct)%len(psFuzzContentTypes)]; c != "" {
			r.Headers = append(r.Headers, inspector.Header{Name: "Content-Type", Value: c})
		}
		r.Body = body
		req := diffRequest{Name: "fuzz", Profile: profiles[int(profile)%len(profiles)].Name, Req: r}
		pair := psPairOf(t, req.Profile)
		x := psInspect(pair, req)
		if x.offStats.Candidates != 0 || x.offStats.Removed != 0 {
			t.Fatalf("pre-selection ran with Preselect false: %+v", x.offStats)
		}
		if d := psDiff(x.on, x.off); d != "" && (!sameVerdict(x.on, x.off) || !psSameUnderReruns(t, pair, req, x)) {
			t.Fatalf("[%s] pre-selection on vs off: %s\nrequest: %s", psName(req.Profile), d, psDescribe(r))
		}
	})
}

// psFuzzProfiles are the profiles FuzzPreselect chooses from: one of each
// shape of psProfiles (PL1 block, PL4 detect, CRS's policy in beforeCRS,
// exclusions, user rules).
func psFuzzProfiles() []inspector.Profile {
	keep := map[string]bool{"": true, inspector.DefaultProfileName: true, profPL4Detect: true, "crs-stock": true, "excl-remove": true,
		profExclusions: true, profUserTransform: true, profUserMultiMatch: true, profUserSkip: true, profUserNegated: true,
		profBeyond: true, profBeyondPL4: true}
	var out []inspector.Profile
	for _, p := range psProfiles() {
		if keep[p.Name] {
			out = append(out, p)
		}
	}
	return out
}

var psFuzzSets sync.Map // profile name -> *psLazyPair

type psLazyPair struct {
	once sync.Once
	pair psPair
	err  error
}

// psPairOf compiles the named profile of psFuzzProfiles with pre-selection
// on and off, alone, on first use: a fuzz worker compiles only what its
// inputs need, while it fuzzes.
func psPairOf(tb testing.TB, name string) psPair {
	tb.Helper()
	v, _ := psFuzzSets.LoadOrStore(name, &psLazyPair{})
	l := v.(*psLazyPair)
	l.once.Do(func() {
		for _, p := range psFuzzProfiles() {
			if p.Name != name {
				continue
			}
			no := false
			off := p
			off.Preselect = &no
			var errOn, errOff error
			l.pair.on, errOn = inspector.Compile(p)
			l.pair.off, errOff = inspector.Compile(off)
			l.err = errorsJoin(errOn, errOff)
			return
		}
		l.err = fmt.Errorf("no fuzz profile %q", name)
	})
	require.NoError(tb, l.err, "compiling profile %q", name)
	return l.pair
}
