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
	"sort"
	"strings"

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

// LoadPolicies reads AuthorizationPolicies from YAML files and directories
// (every *.yaml, *.yml and *.json below them, in name order). Files may hold
// several documents and `kind: List`; other kinds are skipped with a note.
// A policy's spec is decoded strictly: an unknown field is an error naming
// the file, the line of the document and the policy.
func LoadPolicies(paths ...string) (*PolicySet, error) {
	set := &PolicySet{}
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
			if err := set.add(f, data); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return set, errors.Join(errs...)
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
	var errs []error
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: invalid YAML: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if len(n.Content) == 0 {
			continue
		}
		if err := s.addNode(file, n.Content[0]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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

func (s *PolicySet) addNode(file string, n *yaml.Node) error {
	origin := fmt.Sprintf("%s:%d", file, n.Line)
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: want a Kubernetes object, got a %s", origin, kindName(n))
	}
	var h docHeader
	if err := n.Decode(&h); err != nil {
		return fmt.Errorf("%s: %s", origin, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if strings.HasSuffix(h.Kind, "List") && h.Items != nil {
		var errs []error
		for i := range h.Items {
			if err := s.addNode(file, &h.Items[i]); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	group, _, _ := strings.Cut(h.APIVersion, "/")
	if h.Kind != "AuthorizationPolicy" || group != "security.istio.io" {
		s.Notes = append(s.Notes, fmt.Sprintf("%s: ignored %s %s (not an AuthorizationPolicy)", origin, describeKind(h.APIVersion, h.Kind), h.Metadata.Name))
		return nil
	}
	id := h.Metadata.Namespace + "/" + h.Metadata.Name
	var raw map[string]any
	if err := n.Decode(&raw); err != nil {
		return fmt.Errorf("%s: AuthorizationPolicy %s: %s", origin, id, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	spec := raw["spec"]
	delete(raw, "spec")
	delete(raw, "status")
	js, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("%s: AuthorizationPolicy %s: %w", origin, id, err)
	}
	ap := &securityv1.AuthorizationPolicy{}
	if err := json.Unmarshal(js, ap); err != nil {
		return fmt.Errorf("%s: AuthorizationPolicy %s: %w", origin, id, err)
	}
	if spec != nil {
		sj, err := json.Marshal(spec)
		if err != nil {
			return fmt.Errorf("%s: AuthorizationPolicy %s: spec: %w", origin, id, err)
		}
		if err := protojson.Unmarshal(sj, &ap.Spec); err != nil {
			return fmt.Errorf("%s: AuthorizationPolicy %s: spec: %s", origin, id, strings.ReplaceAll(err.Error(), "\u00a0", " "))
		}
	}
	if ap.Name == "" {
		return fmt.Errorf("%s: AuthorizationPolicy: metadata.name: missing", origin)
	}
	s.Policies = append(s.Policies, Policy{Origin: origin, Object: ap})
	return nil
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
