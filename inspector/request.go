package inspector

// Header is one request header as received; names are kept as given.
type Header struct {
	Name  string
	Value string
}

// Peer is one end of the inspected connection.
type Peer struct {
	Address   string // IP address, without port
	Port      int
	Principal string // SPIFFE id under mTLS; kept for logs only
}

// Request is one HTTP request as the inspector sees it. It carries no
// transport types: callers map their own representation onto it.
type Request struct {
	ID       string // request id (x-request-id), used as the transaction id
	Method   string
	URI      string // raw request target: path and query, not decoded
	Protocol string // "HTTP/1.1", "HTTP/2", ...
	Host     string
	Headers  []Header
	Body     []byte
	// BodyTruncated reports that the caller cut the body before sending it.
	BodyTruncated bool
	Source        Peer
	Destination   Peer
}

// Decision is the outcome of one inspection.
type Decision string

const (
	// Allow: nothing reached the profile's blocking conditions.
	Allow Decision = "allow"
	// Deny: the request must be refused.
	Deny Decision = "deny"
	// Detect: the request would have been denied, but the profile is in
	// detect mode, so it passes.
	Detect Decision = "detect"
)

// Match is one matched rule that carries a message.
type Match struct {
	ID       int      `json:"id"`
	Msg      string   `json:"msg"`
	Data     string   `json:"data,omitempty"`
	Severity string   `json:"severity,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	// Targets are the variables the rule matched in, in the form an
	// Exclusion's Targets take ("ARGS:comment", "REQUEST_HEADERS:x-note",
	// "REQUEST_URI"): the rule's own matches (not those of its chained
	// rules), sorted, without repeats, the first MaxMatchTargets.
	// A variable whose key an Exclusion cannot name is left out.
	Targets []string `json:"targets,omitempty"`
}

// Verdict is the answer for one request.
type Verdict struct {
	Decision     Decision `json:"decision"`
	Status       int      `json:"status,omitempty"` // HTTP status when Decision is Deny
	AnomalyScore int      `json:"anomalyScore"`
	Profile      string   `json:"profile"`
	// InterruptingRule is the id of the rule that decided a deny or detect.
	InterruptingRule int     `json:"interruptingRule,omitempty"`
	Matches          []Match `json:"matches,omitempty"`
	// UndecodedViews counts the encoded values left undecoded because of a
	// bound of the decoded views: rule RuleUndecodedViews denied the request,
	// or the profile allows it (allowUndecodedViews).
	UndecodedViews UndecodedViews `json:"undecodedViews,omitzero"`
	// Preselect is what rule pre-selection did for this check.
	Preselect PreselectStats `json:"-"`
}

// UndecodedViews counts, for one check, the values whose decoded views were
// not all made because of a bound (both request phases summed).
type UndecodedViews struct {
	// OverValueLimit counts values longer than the decoding's per-value
	// limit (64 KiB) to which a decoding applies; Longest is the longest.
	OverValueLimit int `json:"overValueLimit,omitempty"`
	Longest        int `json:"longest,omitempty"`
	// OverBudget counts values with a view left out because the phase had
	// added its budget of views (256 KiB); BudgetViewBytes is the bytes of
	// the views left out.
	OverBudget      int `json:"overBudget,omitempty"`
	BudgetViewBytes int `json:"budgetViewBytes,omitempty"`
	// OverDepth counts values with a view at the nesting limit (2
	// decodings) that would still decode: its decoded text is not made.
	OverDepth int `json:"overDepth,omitempty"`
}

// Any reports whether a value was left undecoded.
func (u UndecodedViews) Any() bool {
	return u.OverValueLimit > 0 || u.OverBudget > 0 || u.OverDepth > 0
}

// PreselectStats counts, for one check, the profile's rules in the request
// phases, those rule pre-selection analysed (Candidates) and those it
// removed as unable to match.
type PreselectStats struct {
	Rules      int
	Candidates int
	Removed    int
	// Canary is set when this check also ran every rule (the profile's
	// preselectCanary sample); the verdict is then that full evaluation's.
	Canary bool
	// Disagreement names the rules on which the two evaluations of a canary
	// check differed (0: they differed in score or status only); empty when
	// they agreed. Any entry means pre-selection removed a rule that
	// mattered: report it.
	Disagreement []int
}

// Allowed reports whether the request may pass (allow or detect).
func (v Verdict) Allowed() bool { return v.Decision != Deny }
