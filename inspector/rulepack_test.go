package inspector

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshwaf/meshwaf/inspector/rulepack"
)

// rulePackCase is one attack a rule of the pack catches. Without the
// rule (and without the rules in also, which catch it too), the request
// passes: the rule is what denies it.
type rulePackCase struct {
	name string
	id   int
	req  Request
	also []int // other rules (CRS's or the pack's) that catch it too
}

func packJSON(field, value string) Request {
	return send("POST", "HTTP/1.1", "/api/v1/items", "application/json", `{"`+field+`":`+jsonString(value)+`}`)
}

func packForm(field, value string) Request {
	return send("POST", "HTTP/1.1", "/api/v1/items", formCT, url.Values{field: {value}}.Encode())
}

func packQuery(field, value string) Request {
	return get("HTTP/1.1", "/api/v1/items?"+url.Values{field: {value}}.Encode())
}

func rulePackCases() []rulePackCase {
	return []rulePackCase{
		{name: "ldap-and-objectclass", id: 460100, req: packQuery("user", "(&(objectClass=*))")},
		{name: "ldap-or-mail", id: 460100, req: packForm("user", "*(|(mail=*))")},
		{name: "ldap-and-break", id: 460100, req: packQuery("user", "admin)(&(objectClass=*))"), also: []int{921200}},
		{name: "ldap-or-break", id: 460100, req: packJSON("user", "x)(|("), also: []int{921200}},
		{name: "ldap-wildcard-uid", id: 460101, req: packQuery("user", "(uid=*)(uid=*))")},
		{name: "ldap-wildcard-uid-or", id: 460101, req: packQuery("user", "*)(uid=*))(|(uid=*"), also: []int{460100, 921200}},
		{name: "ldap-wildcard-or", id: 460101, req: packForm("user", "admin*)((|userpassword=*)"), also: []int{460100}},
		{name: "crlf-json-encoded", id: 460200, req: packJSON("next", "/home%0d%0aSet-Cookie:session=attacker")},
		{name: "crlf-xss-protection", id: 460200, req: packForm("next", "/home\r\nX-XSS-Protection: 0")},
		{name: "crlf-unicode", id: 460200, req: packJSON("next", "/home\u560a\u560dSet-Cookie:a=b")},
		{name: "mail-bcc", id: 460210, req: packForm("email", "me@example.com\nBcc: victim@example.net")},
		{name: "mail-bcc-unicode", id: 460210, req: packJSON("email", "me@example.com\u560aBcc: victim@example.net")},
		{name: "mail-subject", id: 460210, req: packJSON("name", "Alice\r\nSubject: free money")},
		{name: "smtp-rcpt", id: 460300, req: packJSON("email", "me@example.com\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nhi\r\n.\r\n")},
		{name: "smtp-helo", id: 460300, req: packForm("from", "x\r\nHELO attacker.example\r\n")},
		{name: "imap-logout", id: 460310, req: packQuery("mailbox", "INBOX\r\nA1 LOGOUT")},
		{name: "imap-create", id: 460310, req: packJSON("mailbox", "INBOX\r\na0003 CREATE \"INBOX.test\"\r\n")},
		{name: "pop3-user-pass", id: 460310, req: packForm("msg", "1\r\nUSER bob\r\nPASS secret")},
		{name: "ssti-curly-arith", id: 460400, req: packJSON("title", "{{7*7}}")},
		{name: "ssti-dollar-arith", id: 460400, req: packQuery("name", "${7*7}"), also: []int{932130, 933135}},
		{name: "ssti-erb-arith", id: 460400, req: packJSON("name", "<%= 7*7 %>")},
		{name: "ssti-hash-arith", id: 460400, req: packForm("name", "#{ 7 * '7' }")},
		{name: "ssti-jinja-mro", id: 460410, req: packJSON("tpl", "{{ ''.__class__.__mro__[1].__subclasses__() }}")},
		{name: "ssti-jinja-config", id: 460410, req: packQuery("name", "{{config}}")},
		{name: "ssti-jinja-attr", id: 460410, req: packJSON("tpl", `{{request|attr('\x5f\x5fclass\x5f\x5f')}}`)},
		{name: "ssti-spel", id: 460420, req: packJSON("expr", "${T(java.lang.Runtime).getRuntime().exec('id')}"), also: []int{932130, 933135, 933160, 944100, 944110, 944130}},
		{name: "ssti-el-getclass", id: 460420, req: packForm("expr", "#{''.getClass().forName('x')}")},
		{name: "ssti-erb", id: 460420, req: packJSON("tpl", "<%= system('id') %>"), also: []int{933160}},
		{name: "ssti-erb-dir", id: 460420, req: packJSON("tpl", "<%= Dir.entries('.') %>")},
		{name: "ssti-freemarker", id: 460430, req: packJSON("tpl", `<#assign ex="freemarker.template.utility.Execute"?new()>${ex("id")}`), also: []int{932130, 933135, 944130}},
		{name: "ssti-velocity", id: 460430, req: packForm("tpl", "#set($x = $e.getClass())")},
		{name: "ssti-twig", id: 460430, req: packJSON("tpl", "{{_self.env.registerUndefinedFilterCallback('exec')}}")},
		{name: "nosql-json-key", id: 460500, req: send("POST", "HTTP/1.1", "/api/login", "application/json", `{"user":"admin","password":{"$ne":null}}`), also: []int{942290}},
		{name: "nosql-form-key", id: 460500, req: send("POST", "HTTP/1.1", "/api/login", formCT, "user=admin&password[$gt]="), also: []int{942290}},
		{name: "nosql-value-object", id: 460510, req: packJSON("password", `{"$gt": ""}`), also: []int{942290}},
		{name: "nosql-where", id: 460520, req: packQuery("user", "admin' && this.password.match(/.*/)//")},
		{name: "nosql-sleep", id: 460520, req: packJSON("user", "';sleep(5000);'"), also: []int{942160, 942540}},
		{name: "xpath-count-axis", id: 460600, req: packQuery("user", "count(/child::node())")},
		{name: "xpath-string-length", id: 460600, req: packJSON("user", "1 and string-length(name(/*[1]))=4"), also: []int{942100}},
		{name: "xpath-substring", id: 460600, req: packForm("user", "substring(//user[1]/password,1,1)"), also: []int{932130, 942151}},
		{name: "xpath-descendant", id: 460600, req: packJSON("path", "/descendant::*")},
		{name: "xpath-union", id: 460610, req: packQuery("user", "'] | //* | //*['")},
		{name: "xpath-or-name", id: 460610, req: packJSON("user", "x' or name()='username' or 'x'='y")},
		{name: "xpath-and-contains", id: 460610, req: packForm("user", "admin\" and contains(.,\"a\")")},
		{name: "rce-backtick", id: 460700, req: packQuery("name", "`id`")},
		{name: "rce-backtick-inside", id: 460700, req: packJSON("name", "a`sleep 60`5"), also: []int{932235}},
		{name: "rce-ruby-percent-x", id: 460700, req: packForm("name", "%x('ls -al /')")},
		{name: "rce-pipe-id", id: 460710, req: packQuery("file", "/index.html|id|")},
		{name: "rce-semicolon-read", id: 460710, req: packJSON("q", ";read;")},
		{name: "rce-netstat", id: 460710, req: packForm("host", ";netstat -a;"), also: []int{932235, 932260, 932380}},
		{name: "rce-quote-break", id: 460710, req: packJSON("q", `";id"`), also: []int{942540}},
		{name: "rce-nul", id: 460710, req: packQuery("q", "id%00|"), also: []int{920270}},
		{name: "rce-literal-newline", id: 460710, req: packJSON("q", `\nnetstat -a%\n`)},
		{name: "rce-ampersand-ping", id: 460710, req: packForm("host", "&ping -n 25 127.0.0.1&5"), also: []int{932235}},
		{name: "rce-json-key", id: 460710, req: send("POST", "HTTP/1.1", "/api/v1/items", "application/json", `{";read;":"x"}`)},
		{name: "rce-ifs", id: 460720, req: packQuery("q", "x;cat${IFS}/etc/passwd"), also: []int{930120, 932130, 932160, 933135}},
		{name: "rce-brace-expansion", id: 460720, req: packJSON("q", "{uname,-a}"), also: []int{932235, 932260, 932280}},
	}
}

// rulePackBenign are requests of ordinary API text near the pack's shapes:
// none of the pack's rules may match them.
func rulePackBenign() []Request {
	return []Request{
		packJSON("template", "Hello {{name}}, your order {{ order.id }} ships {{#if express}}today{{/if}}."),
		packJSON("template", "{% if user %}Hi {{ user.first_name|title }}{% endif %}"),
		packJSON("note", "It costs $5 + $3 shipping, total ${total} (about 8 dollars)."),
		packJSON("note", "Call me (maybe) at 5 (or 6) - see notes (a)(b)."),
		packJSON("address", "Jane Doe\r\nMain Street 5\r\nLocation of the door: back"),
		packJSON("message", "Hi team,\nthe data is ready.\nTo: everyone\nThanks"),
		packJSON("description", "Steps:\n1. Open the app\n2. Login with your account\n3. Close it"),
		packJSON("bio", "Python tip: use obj.__class__.__name__ to get the type name."),
		packJSON("query", `{"price": {"min": 5, "max": 10}, "tags": ["$5 deal"]}`),
		send("POST", "HTTP/1.1", "/api/schema", "application/json", `{"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x","$ref":"#/defs/a","$type":"Shop.Item"}`),
		packQuery("$filter", "price gt 5"),
		packQuery("q", "shoes (red|blue) size=42"),
		packForm("comment", "Dear Sir,\r\nplease find the data attached.\r\nRegards"),
		packJSON("js", "const label = `${user.name} (${count})`;"),
		packJSON("sql", "SELECT count(*) FROM orders WHERE name = 'x'"),
		packJSON("php", "public function __construct() { parent::__construct(); return self::$instance; }"),
		packJSON("rust", "let v = Self::new(); use self::models::User; std::mem::take(&mut x)"),
		packJSON("note", "Bob's or Alice's name (both) - count (approx.) is 5; see [1] | [2]"),
		packQuery("path", "/docs/api/v1/users[0]/name"),
		packQuery("fields", "name;id;email"),
		packJSON("scopes", "create;read;update;delete"),
		packJSON("pets", "dog;cat;fish"),
		packJSON("body", "| id | name | type |\n|---|---|---|\n| 1 | a | b |"),
		packJSON("note", "Items; set $5 each. I need rest; sleep 8 hours a night"),
		packJSON("body", "See `ls -la` output, and run `rm -rf dist` first."),
		packJSON("description", "like `chown -R`"),
		send("POST", "HTTP/1.1", "/api/v1/packages", "application/json", `{"scripts":{"build":"npm run lint; tsc","prepare":"tshy && bash ./scripts/fixup.sh","test":"xo && ava | node"}}`),
		packJSON("quote", "Read; then write. The id, i.e. id est, is the self; read on."),
		packQuery("q", "a=1&id=5&type=x"),
		packQuery("fields", "{id,name}"),
	}
}

func TestRulePack(t *testing.T) {
	off := false
	var minus []Exclusion
	for _, c := range rulePackCases() {
		minus = append(minus, Exclusion{PathPrefix: "/minus/" + c.name, RuleIDs: append([]int{c.id}, c.also...)})
		if len(c.also) > 0 {
			minus = append(minus, Exclusion{PathPrefix: "/crs-minus/" + c.name, RuleIDs: c.also})
		}
	}
	// Decoded views and corroboration off: they catch some of these attacks
	// without the pack (the url2 view of "%0d%0aSet-Cookie:" reaches CRS
	// 921120, the paranoia-level-2 rules 921151 and 942180 run), and each
	// case must be allowed without its rule.
	rs, err := Compile(Profile{Exclusions: minus, DecodedViews: &off, Corroboration: &off},
		Profile{Name: "no-pack", RulePack: &off},
		Profile{Name: "no-tag", Exclusions: []Exclusion{{Tags: []string{rulepack.Tag}}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rs.Close() })
	ctx := context.Background()
	inspect := func(r Request, profile string) Verdict {
		t.Helper()
		v, err := rs.Inspect(ctx, r, profile)
		require.NoError(t, err)
		return v
	}
	at := func(r Request, prefix string) Request {
		r.URI = prefix + r.URI
		return r
	}
	seen := map[int]bool{}
	for _, c := range rulePackCases() {
		t.Run(c.name, func(t *testing.T) {
			seen[c.id] = true
			v := inspect(c.req, "")
			require.Equal(t, Deny, v.Decision, "%+v", v.Matches)
			require.Contains(t, v.RuleIDs(), c.id)
			if len(c.also) > 0 { // the rule alone denies it
				v = inspect(at(c.req, "/crs-minus/"+c.name), "")
				require.Equal(t, Deny, v.Decision, "%+v", v.Matches)
			}
			v = inspect(at(c.req, "/minus/"+c.name), "")
			require.Equal(t, Allow, v.Decision, "without rule %d: %+v", c.id, v.Matches)
			for _, p := range []string{"no-pack", "no-tag"} {
				v = inspect(c.req, p)
				require.False(t, slices.ContainsFunc(v.RuleIDs(), isPackRule), "%s: %v", p, v.RuleIDs())
			}
		})
	}
	for i, r := range rulePackBenign() {
		t.Run(fmt.Sprintf("benign-%d", i), func(t *testing.T) {
			v := inspect(r, "")
			require.False(t, slices.ContainsFunc(v.RuleIDs(), isPackRule), "%s %s: %+v", r.URI, r.Body, v.Matches)
		})
	}
	// Every rule of the pack has a case, and rule pre-selection analyses
	// it (only the paranoia-level gate, which reads TX, is always run).
	kept := rs.def.plan.Kept()
	for _, id := range packRuleIDs(t, rs) {
		require.True(t, seen[id], "rule %d has no case", id)
		_, k := kept[id]
		require.False(t, k, "rule %d is not analysed by pre-selection: %s", id, kept[id])
	}
	require.Contains(t, kept, 460012)
}

func isPackRule(id int) bool { return id >= rulepack.FirstID && id <= rulepack.LastID }

// packRuleIDs returns the ids of the pack's rules that log (not its gate).
func packRuleIDs(t *testing.T, rs *RuleSet) []int {
	t.Helper()
	var ids []int
	for id := range rs.def.ruleIDs {
		if isPackRule(id) && id%100 != 12 { // 460012: the paranoia-level gate
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	require.NotEmpty(t, ids)
	return ids
}

// TestRulePackNotBinary: no pattern of the pack escapes a byte over 0x7F
// or a code point over 0xFF (\x{560a}): Coraza compiles such patterns with
// binaryregexp, which gets neither the DFA nor the literal prefilter and
// backtracks on every value. Such characters are written as themselves.
func TestRulePackNotBinary(t *testing.T) {
	escape := regexp.MustCompile(`\\x(?:\{[0-9a-fA-F]{3,}\}|\{?[89a-fA-F][0-9a-fA-F])`)
	require.Empty(t, escape.FindAllString(rulepack.SecLang(), -1))
}
