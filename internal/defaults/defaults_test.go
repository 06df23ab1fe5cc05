package defaults

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAddressesArePorts(t *testing.T) {
	require.Equal(t, ":"+strconv.Itoa(GRPCPort), GRPCAddress)
	require.Equal(t, ":"+strconv.Itoa(AdminPort), AdminAddress)
}
