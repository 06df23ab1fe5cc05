package istio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
)

// Policy is one AuthorizationPolicy read for verification, with where it
// came from ("file:line").
type Policy struct {
	Origin string
	Object *securityv1.AuthorizationPolicy
}

// PolicySet is what LoadPolicies read: the AuthorizationPolicies and a note
// for every document it ignored.
type PolicySet struct {
	Policies []Policy
	Notes    []string
}

// eachFile calls read with every file policyFiles finds below paths and
// its contents, and joins every error, read's included; it never stops early.
func eachFile(paths []string, read func(file string, data []byte) error) error {
	var errs []error
	for _, p := range paths {
		files, err := policyFiles(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, read(f, data))
		}
	}
	return errors.Join(errs...)
}

// LoadPolicies reads AuthorizationPolicies from YAML files and directories
// (every *.yaml, *.yml and *.json below them, in name order). Files may hold
// several documents and `kind: List`; other kinds are skipped with a note.
// A policy's spec is decoded strictly: an unknown field is an error naming
// the file, the line of the document and the policy.
func LoadPolicies(paths ...string) (*PolicySet, error) {
	set := &PolicySet{}
	return set, eachFile(paths, set.add)
}

func policyFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	sort.Strings(files)
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("%s: no .yaml, .yml or .json files", path)
	}
	return files, err
}

// AddDocuments reads the YAML documents in data (named file in messages).
func (s *PolicySet) AddDocuments(file string, data []byte) error { return s.add(file, data) }

func (s *PolicySet) add(file string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var nodes []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: invalid YAML: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if len(n.Content) > 0 {
			nodes = append(nodes, n.Content[0])
		}
	}
	// Decoding the documents dominates; do it on every CPU, keep the order.
	results := make([]docResult, len(nodes))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(nodes)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(nodes); i += workers {
				results[i] = decodeDocument(file, nodes[i])
			}
		}()
	}
	wg.Wait()
	var errs []error
	for _, r := range results {
		s.Policies = append(s.Policies, r.policies...)
		s.Notes = append(s.Notes, r.notes...)
		errs = append(errs, r.errs...)
	}
	return errors.Join(errs...)
}

// docResult is what one YAML document held.
type docResult struct {
	policies []Policy
	notes    []string
	errs     []error
}

type docHeader struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Items []yaml.Node `yaml:"items"`
}

func decodeDocument(file string, n *yaml.Node) docResult {
	var r docResult
	origin := fmt.Sprintf("%s:%d", file, n.Line)
	fail := func(format string, args ...any) docResult {
		r.errs = append(r.errs, fmt.Errorf("%s: "+format, append([]any{origin}, args...)...))
		return r
	}
	if n.Kind != yaml.MappingNode {
		return fail("want a Kubernetes object, got a %s", kindName(n))
	}
	var h docHeader
	if err := n.Decode(&h); err != nil {
		return fail("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if strings.HasSuffix(h.Kind, "List") && h.Items != nil {
		for i := range h.Items {
			item := decodeDocument(file, &h.Items[i])
			r.policies = append(r.policies, item.policies...)
			r.notes = append(r.notes, item.notes...)
			r.errs = append(r.errs, item.errs...)
		}
		return r
	}
	group, _, _ := strings.Cut(h.APIVersion, "/")
	if h.Kind != "AuthorizationPolicy" || group != "security.istio.io" {
		r.notes = append(r.notes, fmt.Sprintf("%s: ignored %s %s (not an AuthorizationPolicy)", origin, describeKind(h.APIVersion, h.Kind), h.Metadata.Name))
		return r
	}
	id := h.Metadata.Namespace + "/" + h.Metadata.Name
	var raw map[string]any
	if err := n.Decode(&raw); err != nil {
		return fail("AuthorizationPolicy %s: %s", id, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	spec := raw["spec"]
	delete(raw, "spec")
	delete(raw, "status")
	js, err := json.Marshal(raw)
	if err != nil {
		return fail("AuthorizationPolicy %s: %w", id, err)
	}
	ap := &securityv1.AuthorizationPolicy{}
	if err := json.Unmarshal(js, ap); err != nil {
		return fail("AuthorizationPolicy %s: %w", id, err)
	}
	if spec != nil {
		sj, err := json.Marshal(spec)
		if err != nil {
			return fail("AuthorizationPolicy %s: spec: %w", id, err)
		}
		if err := protojson.Unmarshal(sj, &ap.Spec); err != nil {
			return fail("AuthorizationPolicy %s: spec: %s", id, strings.ReplaceAll(err.Error(), "\u00a0", " "))
		}
	}
	if ap.Name == "" {
		return fail("AuthorizationPolicy: metadata.name: missing")
	}
	r.policies = append(r.policies, Policy{Origin: origin, Object: ap})
	return r
}

func describeKind(apiVersion, kind string) string {
	if kind == "" {
		return "a document without kind"
	}
	if apiVersion == "" {
		return kind
	}
	return apiVersion + " " + kind
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	}
	return "node"
}
