package cluster

import (
	"time"

	"github.com/meshwaf/meshwaf/install"
)

// Defaults of a Target that install's options do not give.
const (
	DefaultIstioNamespace = "istio-system"
	DefaultMeshConfigMap  = "istio"
	// DefaultMinTimeout: a 1 MiB body's CRS check takes tens of
	// milliseconds; below this, checks of large bodies time out.
	DefaultMinTimeout = 100 * time.Millisecond
	// DefaultMaxTimeout: above this, a hung meshwaf holds requests long
	// enough for clients to time out first.
	DefaultMaxTimeout = 5 * time.Second
)

// NewTarget is the Target of an install rendered with o; ParseConfig is
// left for the caller.
func NewTarget(o install.Options) Target {
	return Target{
		Namespace:      o.Namespace,
		ServiceName:    o.ServiceName,
		ProviderName:   o.ProviderName,
		IstioNamespace: DefaultIstioNamespace,
		MeshConfigMap:  DefaultMeshConfigMap,
		ClusterDomain:  o.ClusterDomain,
		GRPCPort:       o.GRPCPort,
		ConfigKey:      install.ConfigKey,
		OptInLabel:     o.OptInLabel,
		OptInValue:     o.OptInValue,
		MinTimeout:     DefaultMinTimeout,
		MaxTimeout:     DefaultMaxTimeout,
	}
}
