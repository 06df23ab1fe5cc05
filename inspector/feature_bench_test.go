package inspector

import (
	"context"
	"testing"
)

// featureVariant is the default profile with one inspection beyond CRS
// changed, or all of them off (Profile.CRSOnly).
type featureVariant struct {
	name string
	edit func(p Profile) Profile
}

func featureVariants() []featureVariant {
	off := func() *bool { f := false; return &f }
	return []featureVariant{
		{"default", func(p Profile) Profile { return p }},
		{"crs-only", Profile.CRSOnly},
		{"no-decodedViews", func(p Profile) Profile { p.DecodedViews = off(); return p }},
		{"no-headersAsArgs", func(p Profile) Profile { p.HeadersAsArgs.Enabled = off(); return p }},
		{"no-xmlAttributes", func(p Profile) Profile { p.XMLAttributes = off(); return p }},
		{"no-fileNames", func(p Profile) Profile { p.FileNames = off(); return p }},
		{"no-corroboration", func(p Profile) Profile { p.Corroboration = off(); return p }},
		{"no-rulePack", func(p Profile) Profile { p.RulePack = off(); return p }},
		{"allowUndecodedViews", func(p Profile) Profile { p.AllowUndecodedViews = true; return p }},
		{"allowXMLDeclarations", func(p Profile) Profile { p.AllowXMLDeclarations = true; return p }},
	}
}

// BenchmarkInspectFeatures runs BenchmarkInspect's default-profile shapes
// under each featureVariant, to split the cost of the default profile
// between its features:
//
//	go test -run '^$' -bench InspectFeatures -benchmem ./inspector
//	benchstat -col /profile OUT
func BenchmarkInspectFeatures(b *testing.B) {
	variants := featureVariants()
	profiles := make([]Profile, 0, len(variants))
	for _, v := range variants[1:] {
		profiles = append(profiles, v.edit(Profile{Name: v.name}))
	}
	rs, err := Compile(Profile{}, profiles...)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range benchCases(b) {
		if tc.profile != "" {
			continue
		}
		for _, v := range variants {
			name := v.name
			if name == "default" {
				name = ""
			}
			b.Run("shape="+tc.bench+"/profile="+v.name, func(b *testing.B) {
				row := tc
				row.profile = name
				checkBenchVerdict(b, rs, row)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := rs.Inspect(ctx, tc.req, name); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
