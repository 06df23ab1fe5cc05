package meshpolicy

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSameRequests(t *testing.T) {
	paths := func(p ...string) Requests { return Requests{{Paths: p}} }
	tests := []struct {
		name    string
		a, b    Requests
		same    bool
		example Request // when different
	}{
		{"same lists in another order", paths("/b", "/a", "/a"), paths("/a", "/b"), true, Request{}},
		{"split into two matches", Requests{{Methods: []string{"GET", "POST"}, Paths: []string{"/a"}}},
			Requests{{Methods: []string{"POST"}, Paths: []string{"/a"}}, {Methods: []string{"GET"}, Paths: []string{"/a"}}}, true, Request{}},
		{"comma split", paths("/x,y"), paths("/x", "y"), false, Request{"z", "/x"}},
		{"exact widened to a prefix", paths("/admin/users"), paths("/admin/*"), false, Request{"z", "/admin/z"}},
		{"prefix covered by a shorter prefix", paths("/a/*", "/ab*"), paths("/a*"), false, Request{"z", "/az"}},
		{"prefix with its exact value", paths("/a/*", "/a/"), paths("/a/*"), true, Request{}},
		{"* is any non-empty path", paths("*"), Requests{{}}, true, Request{}},
		{"* is not /*", paths("*"), paths("/*"), false, Request{"z", "z"}},
		{"suffix and prefix meet", paths("/a/*"), Requests{{Paths: []string{"/a/*"}, NotPaths: []string{"*.json"}}}, false, Request{"z", "/a/z.json"}},
		{"notPaths short of an exact path", paths("/a"), Requests{{Paths: []string{"/a*"}, NotPaths: []string{"/a/*", "/ab*"}}}, false, Request{"z", "/az"}},
		{"notPaths equal to a list", paths("/a", "/b"), Requests{{Paths: []string{"/a", "/b", "/c"}, NotPaths: []string{"/c"}}}, true, Request{}},
		{"notMethods", Requests{{Methods: []string{"GET"}}}, Requests{{Methods: []string{"*"}, NotMethods: []string{"POST"}}}, false, Request{"z", "z"}},
		{"method wildcard", Requests{{Methods: []string{"P*"}}}, Requests{{Methods: []string{"POST", "PUT", "PATCH"}}}, false, Request{"Pz", "z"}},
		{"dropped method", Requests{{Methods: []string{"GET", "POST"}}}, Requests{{Methods: []string{"GET"}}}, false, Request{"POST", "z"}},
		{"nothing vs something", nil, paths("/a"), false, Request{"z", "/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			same, ex := SameRequests(tt.a, tt.b)
			require.Equal(t, tt.same, same)
			if !same {
				require.NotEqual(t, tt.a.Matches(ex), tt.b.Matches(ex), "the example must tell them apart")
				require.Equal(t, tt.example, ex)
			}
			same2, _ := SameRequests(tt.b, tt.a)
			require.Equal(t, same, same2, "symmetric")
		})
	}
}

// SameRequests against brute force: random unions of matches over a small
// alphabet, compared on every path of up to six characters (longer than
// any probe), with the methods of a small set. Where brute force finds a
// difference SameRequests must too, and its example must be one.
func TestSameRequestsAgainstBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 5))
	const alphabet = "ab/"
	literal := func() string {
		b := make([]byte, 1+r.IntN(2))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	pattern := func() string {
		switch r.IntN(6) {
		case 0:
			return "*"
		case 1, 2:
			return literal() + "*"
		case 3:
			return "*" + literal()
		}
		return literal()
	}
	list := func(max int) []string {
		out := make([]string, r.IntN(max+1))
		for i := range out {
			out[i] = pattern()
		}
		return out
	}
	methods := []string{"GET", "POST", "PUT"}
	union := func() Requests {
		rs := make(Requests, r.IntN(3))
		for i := range rs {
			rs[i] = RequestMatch{Paths: list(3), NotPaths: list(1)}
			for _, m := range methods {
				if r.IntN(3) == 0 {
					rs[i].Methods = append(rs[i].Methods, m)
				}
			}
		}
		return rs
	}
	var paths []string
	var grow func(prefix string)
	grow = func(prefix string) {
		if prefix != "" {
			paths = append(paths, prefix)
		}
		if len(prefix) == 6 {
			return
		}
		for _, c := range alphabet + "c" {
			grow(prefix + string(c))
		}
	}
	grow("")
	differ, probed := 0, 0
	for range 400 {
		a, b := union(), union()
		if r.IntN(2) == 0 {
			// the same requests, one path per match
			b = nil
			for _, m := range a {
				if len(m.Paths) == 0 {
					b = append(b, m)
				}
				for _, p := range m.Paths {
					b = append(b, RequestMatch{Methods: m.Methods, Paths: []string{p}, NotPaths: m.NotPaths})
				}
			}
			r.Shuffle(len(b), func(i, j int) { b[i], b[j] = b[j], b[i] })
		}
		brute := true
		for _, m := range append(methods, "PATCH") {
			for _, p := range paths {
				if a.Matches(Request{m, p}) != b.Matches(Request{m, p}) {
					brute = false
				}
			}
		}
		same, ex := SameRequests(a, b)
		require.Equal(t, brute, same, "a=%v b=%v", a, b)
		if same && !sameMatchSets(a, b) {
			probed++
		}
		if !same {
			differ++
			require.NotEqual(t, a.Matches(ex), b.Matches(ex), "example %v: a=%v b=%v", ex, a, b)
		}
	}
	t.Logf("%d pairs differ, %d are equal though listed differently", differ, probed)
	require.Greater(t, differ, 50)
	require.Greater(t, probed, 50, "some pairs must be equal without being listed alike")
}
