package views

import "github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"

func pluginOpts(args string) plugintypes.OperatorOptions {
	return plugintypes.OperatorOptions{Arguments: args}
}
