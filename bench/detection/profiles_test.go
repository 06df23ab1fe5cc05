package main

import (
	"encoding/base64"
	"net/url"
	"reflect"
	"testing"

	"github.com/meshwaf/meshwaf/inspector"
)

// TestCRSProfileIsPlainCRS checks that every knob of inspector.Profile
// that adds detection beyond CRS is off in crsProfile: each *bool knob
// (but Preselect, which changes no verdict) is false, headers are not
// arguments and XML declarations are allowed.
func TestCRSProfileIsPlainCRS(t *testing.T) {
	for _, pl := range []int{1, 2} {
		p := crsProfile(pl)
		if p.ParanoiaLevel != pl {
			t.Errorf("crs-pl%d: paranoia level %d", pl, p.ParanoiaLevel)
		}
		v := reflect.ValueOf(p)
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Type != reflect.TypeFor[*bool]() || f.Name == "Preselect" {
				continue
			}
			if b := v.Field(i).Interface().(*bool); b == nil || *b {
				t.Errorf("crs-pl%d: %s is on", pl, f.Name)
			}
		}
		if e := p.HeadersAsArgs.Enabled; e == nil || *e {
			t.Errorf("crs-pl%d: HeadersAsArgs is on", pl)
		}
		if !p.AllowXMLDeclarations {
			t.Errorf("crs-pl%d: XML declarations denied", pl)
		}
	}
}

// TestCRSProfileVerdicts checks on requests that only meshwaf's additions
// catch that the default profile denies them and plain CRS at PL1 does not.
func TestCRSProfileVerdicts(t *testing.T) {
	profs, err := profilesNamed("default,crs-pl1")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := inspector.Compile(profs[0], profs[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	get := func(uri string, hdr ...string) inspector.Request {
		r := inspector.Request{Method: "GET", URI: uri, Protocol: "HTTP/1.1", Host: "api.example.com",
			Headers: []inspector.Header{{Name: "accept", Value: "application/json"}, {Name: "user-agent", Value: "client/1.0"}}}
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Headers = append(r.Headers, inspector.Header{Name: hdr[i], Value: hdr[i+1]})
		}
		return r
	}
	xxe := get("/orders", "content-type", "application/xml")
	xxe.Method = "POST"
	xxe.Body = []byte(`<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>`)
	for name, req := range map[string]inspector.Request{
		"decoded view":  get("/search?q=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("<script>alert(1)</script>")))),
		"header as arg": get("/search", "x-filter", ";cat /etc/passwd"),
		"rule pack":     get("/users?name=" + url.QueryEscape("{{7*7}}")),
		"doctype":       xxe,
	} {
		for _, p := range profs {
			v, err := rs.Inspect(t.Context(), req, p.Name)
			if err != nil {
				t.Fatal(err)
			}
			if want := p.Name == ProfileDefault; v.Allowed() == want {
				t.Errorf("%s: %s allowed=%v, want denied=%v (rules %v)", name, p.Name, v.Allowed(), want, v.RuleIDs())
			}
		}
	}
}
