package fielderr

import (
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPathString(t *testing.T) {
	tests := []struct {
		path Path
		want string
	}{
		{nil, ""},
		{At("grpcAddress"), "grpcAddress"},
		{At("profiles").Index(0).Field("match").Field("hosts"), "profiles[0].match.hosts"},
		{At("metadata", "labels").Key("app"), "metadata.labels[app]"},
		{Path{}.Index(2).Field("name"), "[2].name"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.path.String())
	}
}

// Extending a path never changes it or another path built from it.
func TestPathIsAValue(t *testing.T) {
	base := make(Path, 0, 8)
	base = base.Field("profiles")
	a, b := base.Index(0), base.Index(1)
	require.Equal(t, "profiles[0]", a.String())
	require.Equal(t, "profiles[1]", b.String())
	require.Equal(t, "profiles", base.String())
	c := a.Append(At("mode"))
	require.Equal(t, "profiles[0].mode", c.String())
	require.Equal(t, "profiles[0]", a.String())
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{Errorf(At("mode"), "%q is not a mode", "Blok"), `mode: "Blok" is not a mode`},
		{&Error{File: "c.yaml", Line: 3, Path: At("logLevel"), Err: errors.New("bad")}, "c.yaml:3: logLevel: bad"},
		{&Error{File: "g.yaml", Line: 3, Column: 7, Path: At("spec"), Err: errors.New("bad")}, "g.yaml:3:7: spec: bad"},
		{&Error{File: "g.yaml", Err: errors.New("empty file")}, "g.yaml: empty file"},
		{&Error{File: "g.yaml", Column: 7, Err: errors.New("x")}, "g.yaml: x"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.err.Error())
	}
	require.ErrorIs(t, Errorf(nil, "reading: %w", io.EOF), io.EOF, "%w wraps")
}

func TestPrefix(t *testing.T) {
	require.NoError(t, Prefix(At("x"), nil))

	inner := Errorf(At("ruleIds"), "rule 1 does not exist")
	got := Prefix(At("exclusions").Index(0), inner)
	var fe *Error
	require.ErrorAs(t, got, &fe)
	require.Equal(t, "exclusions[0].ruleIds", fe.Path.String())
	require.Equal(t, "ruleIds", inner.Path.String(), "the original is not modified")
	require.Equal(t, "exclusions[0].ruleIds: rule 1 does not exist", got.Error())

	plain := errors.New("compiling rules: boom")
	joined := Prefix(At("profiles").Index(1), errors.Join(inner, plain))
	parts := Split(joined)
	require.Len(t, parts, 2)
	require.Equal(t, "profiles[1].ruleIds: rule 1 does not exist", parts[0].Error())
	require.Equal(t, "profiles[1]: compiling rules: boom", parts[1].Error())
	require.ErrorIs(t, parts[1], plain)
}

func TestSplit(t *testing.T) {
	a, b, c := errors.New("a"), errors.New("b"), errors.New("c")
	require.Nil(t, Split(nil))
	require.Equal(t, []error{a}, Split(a))
	require.Equal(t, []error{a, b, c}, Split(errors.Join(a, errors.Join(b, c))))
}
