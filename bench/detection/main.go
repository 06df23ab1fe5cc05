// Command detection measures how well meshwaf's profiles tell attacks from
// benign traffic: it sends a corpus (corpus/, see its README) through the
// inspector, each payload in each placement (query, form, JSON value and
// key, cookie, custom header, XML text and attribute, multipart field and
// file name; with -grpc a gRPC message field too, and every check through
// meshwaf's ext_authz gRPC server on 127.0.0.1), and prints detection and
// false-positive rates per class, encoding and placement for meshwaf's
// default profile next to plain CRS at paranoia levels 1 and 2 on the same
// engine, and the rules behind the false positives.
//
//	go run -tags no_fs_access ./bench/detection -split tune
//	go run -tags no_fs_access ./bench/detection -split fresh6 -grpc -json
//
// Build it as the product is built (scripts/build.sh), with -tags
// no_fs_access: without it Coraza writes multipart file parts to
// temporary files, which the product never does, so it refuses to run
// unless -allow-fs-access is given.
//
// The held-out items (splitOf) are for reporting only: never tune on them.
// The gen-1 held-out items were inspected while tuning, and -split fresh
// (held out and of generation 2), -split fresh3 (generation 3) and -split
// fresh4 (generation 4), fresh5 (generation 5) and fresh6 (generation 6)
// have each been run once: a further change needs a new generation to be
// judged on; heldout keeps every generation.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meshwaf/meshwaf/inspector"
)

type options struct {
	split    string
	grpc     bool
	profiles string
	classes  string
	json     bool
	workers  int
	corpus   string
	top      int
	dump     string
	// allowFSAccess runs a build without the no_fs_access tag.
	allowFSAccess bool
}

func main() {
	var o options
	flag.StringVar(&o.split, "split", "tune", "corpus split: tune, heldout, fresh (held out, generation 2 only), fresh3 (held out, generation 3 only), fresh4 (held out, generation 4 only), fresh5 (held out, generation 5 only), fresh6 (held out, generation 6 only) or all")
	flag.BoolVar(&o.grpc, "grpc", false, "check through meshwaf's ext_authz gRPC server on 127.0.0.1, and add the gRPC message-field placement")
	flag.StringVar(&o.profiles, "profiles", "default,crs-pl1,crs-pl2", "comma-separated profiles: default, crs-pl1 ... crs-pl4")
	flag.StringVar(&o.classes, "class", "", "comma-separated classes to keep (default all)")
	flag.BoolVar(&o.json, "json", false, "print the report as JSON")
	flag.IntVar(&o.workers, "workers", 0, "concurrent checks (0: GOMAXPROCS)")
	flag.StringVar(&o.corpus, "corpus", "", "directory holding corpus/*.jsonl (default: the corpus built into the binary)")
	flag.IntVar(&o.top, "top", 10, "rules listed per profile as sources of false positives")
	flag.StringVar(&o.dump, "dump", "", "also write every check's outcome per profile to this file, one JSON object a line")
	flag.BoolVar(&o.allowFSAccess, "allow-fs-access", false, "run even if built without -tags no_fs_access (Coraza then writes multipart uploads to temporary files)")
	flag.Parse()
	if !builtNoFSAccess && !o.allowFSAccess {
		fmt.Fprintln(os.Stderr, "bench/detection: built without -tags no_fs_access, unlike the product (scripts/build.sh); "+
			"run go run -tags no_fs_access ./bench/detection ..., or pass -allow-fs-access")
		os.Exit(2)
	}
	if err := run0(context.Background(), o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench/detection:", err)
		os.Exit(1)
	}
}

func run0(ctx context.Context, o options, stdout, stderr io.Writer) error {
	split := Split(o.split)
	if !slices.Contains(splits(), split) {
		return fmt.Errorf("-split %q is not tune, heldout, fresh, fresh3, fresh4, fresh5, fresh6 or all", o.split)
	}
	var fsys fs.FS = corpusFS
	if o.corpus != "" {
		fsys = os.DirFS(o.corpus)
	}
	items, err := loadCorpus(fsys, split)
	if err != nil {
		return err
	}
	if o.classes != "" {
		keep := strings.Split(o.classes, ",")
		items = slices.DeleteFunc(items, func(it Item) bool { return !slices.Contains(keep, it.Class) })
	}
	if len(items) == 0 {
		return errors.New("no corpus items selected")
	}
	profs, err := profilesNamed(o.profiles)
	if err != nil {
		return err
	}
	rs, err := inspector.Compile(profs[0], profs[1:]...)
	if err != nil {
		return err
	}
	defer rs.Close()
	names := make([]string, len(profs))
	for i, p := range profs {
		names[i] = p.Name
	}

	workers := o.workers
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	c, transport := inProcess(rs), "in-process"
	if o.grpc {
		var stop func()
		if c, stop, err = viaGRPC(rs, workers); err != nil {
			return err
		}
		defer stop()
		transport = "grpc"
	}
	checks := checksFor(items, placements(o.grpc))
	t0 := time.Now()
	outs, err := run(ctx, checks, names, c, workers)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d items, %d checks × %d profiles in %s\n", len(items), len(checks), len(names), time.Since(t0).Round(time.Millisecond))
	r := newReport(split, transport, names)
	tally(r, items, checks, outs)
	if o.dump != "" {
		if err := dumpChecks(o.dump, checks, names, outs); err != nil {
			return err
		}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printReport(stdout, r, o.top)
	return nil
}

// printReport writes the report as plain-text tables.
func printReport(w io.Writer, r *Report, top int) {
	fmt.Fprintf(w, "split %s, %s, CRS %s; %d attack and %d benign items\n", r.Split, r.Transport, inspector.CRSVersion, r.Items[Attack], r.Items[Benign])
	section := func(title string, m map[string]map[string]map[string]Rate, dims ...string) {
		fmt.Fprintf(w, "\n%s\n", title)
		fmt.Fprintf(w, "%-28s", "")
		for _, p := range r.Profiles {
			fmt.Fprintf(w, " %16s", p)
		}
		fmt.Fprintln(w)
		for _, dim := range dims {
			values := make([]string, 0, len(m[dim]))
			for v := range m[dim] {
				values = append(values, v)
			}
			sort.Strings(values)
			for _, v := range values {
				fmt.Fprintf(w, "%-28s", dim+" "+v)
				for _, p := range r.Profiles {
					rt := m[dim][v][p]
					fmt.Fprintf(w, " %16s", fmt.Sprintf("%5.1f%% %5d/%-5d", rt.Percent(), rt.Hits, rt.N))
				}
				fmt.Fprintln(w)
			}
		}
	}
	section("DETECTION (attack checks denied; class and placement: raw payloads; encoding: all classes)", r.Detection, "overall", "class", "encoding", "placement")
	section("FALSE POSITIVES (benign checks denied)", r.FalsePositive, "overall", "class", "placement")
	fmt.Fprintf(w, "\nRULES IN FALSE POSITIVES (rule: benign checks denied in which it matched)\n")
	for _, p := range r.Profiles {
		var parts []string
		for _, id := range topRules(r.FPRules[p], top) {
			parts = append(parts, fmt.Sprintf("%d:%d", id, r.FPRules[p][id]))
		}
		fmt.Fprintf(w, "%-10s %s\n", p, strings.Join(parts, " "))
	}
	fmt.Fprintf(w, "\nRULES IN DETECTIONS (rule: attack checks denied in which it matched / in which it was the only detection rule)\n")
	for _, p := range r.Profiles {
		var parts []string
		for _, id := range topRules(r.DetRules[p], top) {
			parts = append(parts, fmt.Sprintf("%d:%d/%d", id, r.DetRules[p][id], r.SoleRules[p][id]))
		}
		fmt.Fprintf(w, "%-10s %s\n", p, strings.Join(parts, " "))
	}
}

// dumpLine is one check's outcome in one profile, as -dump writes it.
type dumpLine struct {
	Kind     Kind   `json:"kind"`
	Class    string `json:"class"`
	Encoding string `json:"encoding"`
	Place    string `json:"place"`
	Text     string `json:"text"`
	Profile  string `json:"profile"`
	Denied   bool   `json:"denied"`
	Rules    []int  `json:"rules"`
}

// dumpChecks writes every check's outcome per profile to path.
func dumpChecks(path string, checks []check, profiles []string, outs [][]outcome) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for i, c := range checks {
		for j, p := range profiles {
			o := outs[i][j]
			if err := enc.Encode(dumpLine{c.item.Kind, c.item.Class, c.item.Encoding, c.place, c.item.Text, p, o.denied, o.rules}); err != nil {
				_ = f.Close()
				return err
			}
		}
	}
	return f.Close()
}
