package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestEncodings(t *testing.T) {
	enc := map[string]func(string) string{}
	for _, e := range encodings {
		enc[e.name] = e.encode
	}
	for _, tc := range []struct{ kind, in, want string }{
		{"base64", "' OR 1=1", "JyBPUiAxPTE="},
		{"double-url", "a' b", "a%27%20b"},
		{"u-escape", "<a>é", "%u003Ca%u003E%u00E9"},
		{"u-escape", "😀", "%uD83D%uDE00"},
		{"full-width", "<a b>", "＜ａ\u3000ｂ＞"},
		{"html-entity", "<a b.c>", "&#x3C;a b&#x2E;c&#x3E;"},
	} {
		if got := enc[tc.kind](tc.in); got != tc.want {
			t.Errorf("%s(%q) = %q, want %q", tc.kind, tc.in, got, tc.want)
		}
	}
}

// TestSplit checks that the split is the documented hash of the text and
// holds out about 3 in 10.
func TestSplit(t *testing.T) {
	// sha256("a") begins ca978112ca1bbdca, mod 10 = 0: held out;
	// sha256("b") begins 3e23e8160039594a, mod 10 = 6: tuning.
	for s, want := range map[string]Split{"a": SplitHeldOut, "b": SplitTune} {
		if got := splitOf(s); got != want {
			t.Errorf("splitOf(%q) = %s, want %s", s, got, want)
		}
	}
	held := 0
	const n = 10000
	for i := range n {
		if splitOf(fmt.Sprintf("item %d", i)) == SplitHeldOut {
			held++
		}
	}
	if held < 2800 || held > 3200 {
		t.Errorf("%d of %d held out, want about 3000", held, n)
	}
}

// TestSelects checks which items each split keeps: fresh is held out and
// of generation 2 only, fresh3 held out and of generation 3 only, fresh4
// held out and of generation 4 only, fresh5 held out and of generation 5
// only, fresh6 held out and of generation 6 only; tune and heldout take every generation.
func TestSelects(t *testing.T) {
	for _, tc := range []struct {
		split, held Split
		gen         int
		want        bool
	}{
		{SplitTune, SplitTune, 1, true},
		{SplitTune, SplitTune, 2, true},
		{SplitTune, SplitHeldOut, 1, false},
		{SplitTune, SplitHeldOut, 2, false},
		{SplitHeldOut, SplitHeldOut, 1, true},
		{SplitHeldOut, SplitHeldOut, 2, true},
		{SplitHeldOut, SplitTune, 2, false},
		{SplitFresh, SplitHeldOut, 2, true},
		{SplitFresh, SplitHeldOut, 1, false},
		{SplitFresh, SplitHeldOut, 3, false},
		{SplitFresh, SplitTune, 2, false},
		{SplitFresh3, SplitHeldOut, 3, true},
		{SplitFresh3, SplitTune, 3, false},
		{SplitFresh3, SplitHeldOut, 2, false},
		{SplitFresh3, SplitHeldOut, 1, false},
		{SplitFresh3, SplitHeldOut, 4, false},
		{SplitFresh4, SplitHeldOut, 4, true},
		{SplitFresh4, SplitTune, 4, false},
		{SplitFresh4, SplitHeldOut, 3, false},
		{SplitFresh4, SplitHeldOut, 2, false},
		{SplitFresh4, SplitHeldOut, 1, false},
		{SplitFresh4, SplitHeldOut, 5, false},
		{SplitFresh5, SplitHeldOut, 5, true},
		{SplitFresh5, SplitTune, 5, false},
		{SplitFresh5, SplitHeldOut, 4, false},
		{SplitFresh5, SplitHeldOut, 3, false},
		{SplitFresh5, SplitHeldOut, 2, false},
		{SplitFresh5, SplitHeldOut, 1, false},
		{SplitFresh5, SplitHeldOut, 6, false},
		{SplitFresh6, SplitHeldOut, 6, true},
		{SplitFresh6, SplitTune, 6, false},
		{SplitFresh6, SplitHeldOut, 5, false},
		{SplitFresh6, SplitHeldOut, 4, false},
		{SplitFresh6, SplitHeldOut, 3, false},
		{SplitFresh6, SplitHeldOut, 2, false},
		{SplitFresh6, SplitHeldOut, 1, false},
		{SplitFresh6, SplitHeldOut, 7, false},
		{SplitFresh4, SplitHeldOut, 5, false},
		{SplitTune, SplitTune, 5, true},
		{SplitHeldOut, SplitHeldOut, 5, true},
		{SplitAll, SplitTune, 5, true},
		{SplitTune, SplitTune, 4, true},
		{SplitHeldOut, SplitHeldOut, 4, true},
		{SplitAll, SplitTune, 4, true},
		{SplitTune, SplitTune, 3, true},
		{SplitHeldOut, SplitHeldOut, 3, true},
		{SplitAll, SplitTune, 1, true},
		{SplitAll, SplitHeldOut, 2, true},
		{SplitAll, SplitHeldOut, 3, true},
	} {
		if got := selects(tc.split, tc.held, tc.gen); got != tc.want {
			t.Errorf("selects(%s, %s, gen %d) = %v, want %v", tc.split, tc.held, tc.gen, got, tc.want)
		}
	}
}

// TestSplitFlag checks that -split takes every split selects knows and
// refuses others before loading anything.
func TestSplitFlag(t *testing.T) {
	for _, sp := range splits() {
		if _, fresh := freshGen(sp); !fresh && sp != SplitTune && sp != SplitHeldOut && sp != SplitAll {
			t.Errorf("split %s is neither fresh nor tune, heldout or all", sp)
		}
	}
	for _, sp := range []Split{SplitFresh3, SplitFresh4, SplitFresh5, SplitFresh6} {
		if !slices.Contains(splits(), sp) {
			t.Errorf("splits() = %v lacks %s", splits(), sp)
		}
	}
	err := run0(t.Context(), options{split: "fresh7"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `-split "fresh7" is not tune, heldout, fresh, fresh3, fresh4, fresh5, fresh6 or all`) {
		t.Errorf("run0(-split fresh7) = %v, want the list of splits", err)
	}
}

// TestLoadCorpusGen checks the gen field: absent is generation 1, a
// positive number is kept, anything else is an error; and each split
// loads the items it selects. "a" is held out, "b" is not (TestSplit).
func TestLoadCorpusGen(t *testing.T) {
	corpus := func(attacks string) fstest.MapFS {
		return fstest.MapFS{
			"corpus/attacks.jsonl": {Data: []byte(attacks)},
			"corpus/seeds.jsonl":   {Data: []byte(`{"class": "xxe", "gen": 2, "payload": "a", "source": "s"}` + "\n")},
			"corpus/benign.jsonl":  {Data: []byte(`{"class": "text", "source": "s", "value": "a"}` + "\n")},
		}
	}
	// raw texts and generations of the items loaded, in file order;
	// xxe has no encoded variants, so each line is one item.
	const two = `{"class": "xxe", "payload": "a", "source": "s"}` + "\n" + `{"class": "xxe", "gen": 2, "payload": "b", "source": "s"}` + "\n"
	for _, tc := range []struct {
		name    string
		attacks string
		split   Split
		want    string // text/gen of each item, or the error's end
	}{
		{"all", two, SplitAll, "a/1 b/2 a/2 a/1"},
		{"tune", two, SplitTune, "b/2"},
		{"heldout", two, SplitHeldOut, "a/1 a/2 a/1"},
		{"fresh", two, SplitFresh, "a/2"},
		{"gen 3 not fresh", `{"class": "xxe", "gen": 3, "payload": "a", "source": "s"}`, SplitFresh, "a/2"},
		{"fresh3", `{"class": "xxe", "gen": 3, "payload": "a", "source": "s"}`, SplitFresh3, "a/3"},
		{"gen 1 and 2 not fresh3", two, SplitFresh3, ""},
		{"gen 4 not fresh3", `{"class": "xxe", "gen": 4, "payload": "a", "source": "s"}`, SplitFresh3, ""},
		{"fresh4", `{"class": "xxe", "gen": 4, "payload": "a", "source": "s"}`, SplitFresh4, "a/4"},
		{"gen 1 and 2 not fresh4", two, SplitFresh4, ""},
		{"gen 3 not fresh4", `{"class": "xxe", "gen": 3, "payload": "a", "source": "s"}`, SplitFresh4, ""},
		{"gen 5 not fresh4", `{"class": "xxe", "gen": 5, "payload": "a", "source": "s"}`, SplitFresh4, ""},
		{"fresh5", `{"class": "xxe", "gen": 5, "payload": "a", "source": "s"}`, SplitFresh5, "a/5"},
		{"gen 1 and 2 not fresh5", two, SplitFresh5, ""},
		{"gen 4 not fresh5", `{"class": "xxe", "gen": 4, "payload": "a", "source": "s"}`, SplitFresh5, ""},
		{"gen 6 not fresh5", `{"class": "xxe", "gen": 6, "payload": "a", "source": "s"}`, SplitFresh5, ""},
		{"fresh6", `{"class": "xxe", "gen": 6, "payload": "a", "source": "s"}`, SplitFresh6, "a/6"},
		{"gen 1 and 2 not fresh6", two, SplitFresh6, ""},
		{"gen 5 not fresh6", `{"class": "xxe", "gen": 5, "payload": "a", "source": "s"}`, SplitFresh6, ""},
		{"gen 0", `{"class": "xxe", "gen": 0, "payload": "a", "source": "s"}`, SplitAll, "corpus/attacks.jsonl:1: gen 0 is not positive"},
		{"gen negative", `{"class": "xxe", "gen": -1, "payload": "a", "source": "s"}`, SplitAll, "corpus/attacks.jsonl:1: gen -1 is not positive"},
		{"gen not a number", `{"class": "xxe", "gen": "2", "payload": "a", "source": "s"}`, SplitAll, "cannot unmarshal string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items, err := loadCorpus(corpus(tc.attacks), tc.split)
			var got []string
			for _, it := range items {
				got = append(got, fmt.Sprintf("%s/%d", it.Text, it.Gen))
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want %q", err, tc.want)
				}
				return
			}
			if s := strings.Join(got, " "); s != tc.want {
				t.Errorf("items %q, want %q", s, tc.want)
			}
		})
	}
}

// TestTinyCorpus runs the tool on a corpus of one SQL injection and one
// sentence: the injection must be detected where CRS PL1 reads it and the
// sentence pass everywhere, and every check must be counted once.
func TestTinyCorpus(t *testing.T) {
	for _, grpc := range []bool{false, true} {
		t.Run(fmt.Sprintf("grpc=%v", grpc), func(t *testing.T) {
			var out bytes.Buffer
			err := run0(t.Context(), options{split: "all", profiles: "crs-pl1,default", json: true, corpus: "testdata/tiny", grpc: grpc, top: 5}, &out, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var r Report
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if r.Items[Attack] != 1+len(encodings) || r.Items[Benign] != 1 {
				t.Errorf("items %v, want %d attack and 1 benign", r.Items, 1+len(encodings))
			}
			// raw: query, form, json, json-key, cookie, header, xml-text,
			// xml-attr, multipart, file name (+ grpc)
			rawChecks := 10
			benignChecks := 8 // no json-key, no file name for a sentence
			if grpc {
				rawChecks++
				benignChecks++
			}
			for _, p := range []string{"crs-pl1", "default"} {
				if got := r.Detection["class"]["sqli"][p]; got.N != rawChecks {
					t.Errorf("%s: sqli checks %+v, want %d", p, got, rawChecks)
				}
				if got := r.Detection["encoding"]["base64"][p]; got.N != 3 {
					t.Errorf("%s: base64 checks %+v, want 3 (query, json, header)", p, got)
				}
				for _, place := range []string{PlaceQuery, PlaceForm, PlaceJSON, PlaceMultipart} {
					if got := r.Detection["placement"][place][p]; got != (Rate{Hits: 1, N: 1}) {
						t.Errorf("%s: %s %+v, want detected", p, place, got)
					}
				}
				if grpc {
					if got := r.Detection["placement"][PlaceGRPC][p]; got != (Rate{Hits: 1, N: 1}) {
						t.Errorf("%s: grpc %+v, want detected", p, got)
					}
				}
				if got := r.FalsePositive["overall"]["all"][p]; got != (Rate{Hits: 0, N: benignChecks}) {
					t.Errorf("%s: benign %+v, want 0 of %d denied", p, got, benignChecks)
				}
				missed := 0
				for _, n := range r.Misses[p] {
					missed += n
				}
				det := r.Detection["class"]["sqli"][p]
				if missed != det.N-det.Hits {
					t.Errorf("%s: %d misses listed, detection says %d", p, missed, det.N-det.Hits)
				}
			}
		})
	}
}

// TestFalsePositiveRules checks that the rules of a denied benign check
// are counted, without CRS's scoring rules, and those of a denied attack.
func TestFalsePositiveRules(t *testing.T) {
	r := newReport(SplitAll, "in-process", []string{"p"})
	items := []Item{{Kind: Benign, Class: "text", Encoding: "raw"}, {Kind: Attack, Class: "sqli", Encoding: "raw"}}
	checks := []check{{item: items[0], place: PlaceQuery}, {item: items[0], place: PlaceForm}, {item: items[1], place: PlaceQuery}}
	outs := [][]outcome{{{denied: true, rules: detections([]int{942100, 949110, 980170})}}, {{denied: false, rules: []int{942100}}}, {{denied: true, rules: []int{942100}}}}
	tally(r, items, checks, outs)
	if got := r.FPRules["p"]; len(got) != 1 || got[942100] != 1 {
		t.Errorf("FP rules %v, want only 942100 once", got)
	}
	if got := r.FalsePositive["placement"][PlaceQuery]["p"]; got != (Rate{Hits: 1, N: 1}) {
		t.Errorf("query FP %+v", got)
	}
	if got := r.Detection["overall"]["all"]["p"]; got != (Rate{Hits: 1, N: 1}) {
		t.Errorf("detection %+v", got)
	}
	if got := r.DetRules["p"]; len(got) != 1 || got[942100] != 1 || r.SoleRules["p"][942100] != 1 {
		t.Errorf("detection rules %v, sole %v, want 942100 once", got, r.SoleRules["p"])
	}
	if got := topRules(map[int]int{1: 2, 3: 5, 2: 5}, 2); fmt.Sprint(got) != "[2 3]" {
		t.Errorf("topRules = %v, want [2 3]", got)
	}
}
