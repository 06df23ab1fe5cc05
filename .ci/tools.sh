#!/usr/bin/env bash
# Builds the heavy tools of the real-check tests once per version and caches
# them outside the repo, so a second run skips the builds:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/meshwaf-ci/<tool>-<version>/<tool>
#
#   etcd            test/tools/etcd            (go.etcd.io/etcd/server/v3)
#   kube-apiserver  test/tools/kube-apiserver  (k8s.io/kubernetes)
#   istioctl        test/istio                 (istio.io/istio, the same version the xDS tests use)
#   prometheus      test/tools/prometheus      (github.com/prometheus/prometheus, tag remove_all_sd)
#   promtool        test/tools/prometheus      (the same module and tag)
#
# The version in each directory name is read from that module's go.mod, so a
# version bump there builds anew. Usage:
#
#   eval "$(.ci/tools.sh)"      # builds what is missing, prints export lines
#
# The exported variables (MESHWAF_ETCD, MESHWAF_KUBE_APISERVER,
# MESHWAF_ISTIOCTL, MESHWAF_PROMETHEUS, MESHWAF_PROMTOOL) are what test/cluster
# reads. Progress goes to stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/meshwaf-ci"
mkdir -p "$cache"

log() { echo "tools.sh: $*" >&2; }

# modversion DIR MODULE prints the version of MODULE that DIR's go.mod selects.
modversion() {
	(cd "$root/$1" && go list -m -f '{{.Version}}' "$2")
}

# build NAME DIR PACKAGE VERSION [LDFLAGS] builds PACKAGE inside module DIR to
# $cache/NAME-VERSION/NAME unless it is there already. The binary is written
# aside and moved into place, so an interrupted build never looks finished.
build() {
	local name=$1 dir=$2 pkg=$3 version=$4 ldflags=${5:-}
	local dest="$cache/$name-$version"
	if [ -x "$dest/$name" ]; then
		log "$name $version: cached in $dest"
		echo "$dest/$name"
		return
	fi
	log "$name $version: building (several minutes when cold)"
	local start=$SECONDS tmp
	tmp=$(mktemp -d "$cache/.$name.XXXXXX")
	(cd "$root/$dir" && CGO_ENABLED=0 go build -trimpath -buildvcs=false \
		-ldflags "-s -w $ldflags" -o "$tmp/$name" "$pkg") >&2
	mkdir -p "$dest"
	mv "$tmp/$name" "$dest/$name"
	rmdir "$tmp"
	log "$name $version: built in $((SECONDS - start))s"
	echo "$dest/$name"
}

etcd_version=$(modversion test/tools/etcd go.etcd.io/etcd/server/v3)
kube_version=$(modversion test/tools/kube-apiserver k8s.io/kubernetes)
istio_version=$(modversion test/istio istio.io/istio)
prom_version=$(modversion test/tools/prometheus github.com/prometheus/prometheus)

kube_minor=${kube_version#v1.}
kube_minor=${kube_minor%%.*}

etcd=$(build etcd test/tools/etcd go.etcd.io/etcd/server/v3 "$etcd_version")
apiserver=$(build kube-apiserver test/tools/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kube_version" \
	"-X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor -X k8s.io/component-base/version.gitTreeState=clean")
istioctl=$(build istioctl test/istio istio.io/istio/istioctl/cmd/istioctl "$istio_version")
# remove_all_sd leaves out the service-discovery plugins (cloud SDKs): the
# tests scrape nothing, and the build takes a fraction of the time.
prometheus=$(GOFLAGS=-tags=remove_all_sd build prometheus test/tools/prometheus github.com/prometheus/prometheus/cmd/prometheus "$prom_version")
promtool=$(GOFLAGS=-tags=remove_all_sd build promtool test/tools/prometheus github.com/prometheus/prometheus/cmd/promtool "$prom_version")

echo "export MESHWAF_ETCD='$etcd'"
echo "export MESHWAF_KUBE_APISERVER='$apiserver'"
echo "export MESHWAF_ISTIOCTL='$istioctl'"
echo "export MESHWAF_PROMETHEUS='$prometheus'"
echo "export MESHWAF_PROMTOOL='$promtool'"
