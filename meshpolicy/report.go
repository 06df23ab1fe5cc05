package meshpolicy

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Matrix cells.
const (
	CellAllowed     = 'A' // allowed, as planned
	CellDenied      = '.' // denied, as planned
	CellExtra       = '+' // allowed, not planned
	CellMissing     = '-' // planned, denied
	CellConditional = '~' // depends on what verify cannot evaluate
	CellL7          = '*' // allowed as planned, but for every request where planned for some, or the reverse
)

// WriteMatrix prints the reachability matrix: one row per destination
// port, one column per source (numbered, with a legend).
func (p *Plan) WriteMatrix(w io.Writer, want, got *Reachability) error {
	var b strings.Builder
	b.WriteString("reachability: rows are destination:port, columns are sources\n")
	fmt.Fprintf(&b, "  %c allowed as planned  %c denied as planned  %c extra  %c missing  %c conditional  %c broader or narrower\n",
		CellAllowed, CellDenied, CellExtra, CellMissing, CellConditional, CellL7)
	for i, s := range p.Sources {
		fmt.Fprintf(&b, "  [%d] %s\n", i+1, s.ID)
	}
	width := len(strconv.Itoa(len(p.Sources))) + 1
	rowName := 0
	for _, d := range p.Destinations {
		for _, dp := range d.Ports {
			rowName = max(rowName, len(fmt.Sprintf("%s:%d", d.ID, dp.Port)))
		}
	}
	fmt.Fprintf(&b, "%-*s", rowName+2, "")
	for i := range p.Sources {
		fmt.Fprintf(&b, "%*d", width, i+1)
	}
	b.WriteString("\n")
	for i, d := range p.Destinations {
		for j, dp := range d.Ports {
			k := p.DestPortIndex(i, j)
			fmt.Fprintf(&b, "%-*s", rowName+2, fmt.Sprintf("%s:%d", d.ID, dp.Port))
			for s := range p.Sources {
				fmt.Fprintf(&b, "%*c", width, cell(want, got, k, s))
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func cell(want, got *Reachability, k, s int) rune {
	planned := want.Allowed[k].Has(s)
	switch {
	case got.Conditional[k].Has(s):
		return CellConditional
	case got.Allowed[k].Has(s) && !planned:
		return CellExtra
	case !got.Allowed[k].Has(s) && planned:
		return CellMissing
	case planned && want.Partial[k].Has(s) != got.Partial[k].Has(s):
		return CellL7
	case planned:
		return CellAllowed
	}
	return CellDenied
}

// WriteDiff lists every flow of d by kind, then a one-line summary.
func (d Diff) WriteDiff(w io.Writer, strict bool) error {
	var b strings.Builder
	section := func(title string, flows []Flow, suffix func(int) string) {
		if len(flows) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s (%d):\n", title, len(flows))
		for i, f := range flows {
			b.WriteString("  " + f.String())
			if suffix != nil {
				b.WriteString(suffix(i))
			}
			b.WriteString("\n")
		}
	}
	section("missing: planned but denied", d.Missing, nil)
	section("extra: allowed but not planned", d.Extra, nil)
	section("broader: planned for some methods or paths, allowed for every request", d.Broader, nil)
	section("narrower: planned for every request, allowed only for some methods or paths", d.Narrower, nil)
	section("conditional: decided by attributes verify cannot evaluate", d.Conditional, func(i int) string {
		if d.Planned[i] {
			return " (planned)"
		}
		return " (not planned)"
	})
	if len(d.Requests) > 0 {
		fmt.Fprintf(&b, "requests: planned and allowed for other methods or paths (%d):\n", len(d.Requests))
		for _, r := range d.Requests {
			b.WriteString("  " + r.String() + "\n")
		}
	}
	section("unresolved: which requests are allowed is decided by attributes verify cannot evaluate", d.Unresolved, nil)
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{len(d.Missing), "missing"}, {len(d.Extra), "extra"}, {len(d.Broader), "broader"}, {len(d.Narrower), "narrower"}, {len(d.Requests), "with other requests"}, {len(d.Conditional), "conditional"}, {len(d.Unresolved), "unresolved"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	switch {
	case d.Mismatch(strict):
		fmt.Fprintf(&b, "MISMATCH: %s\n", strings.Join(parts, ", "))
	case len(parts) > 0:
		fmt.Fprintf(&b, "OK except %s flows (not counted without --strict)\n", strings.Join(parts, ", "))
	default:
		b.WriteString("OK: the policies allow exactly the planned flows\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
