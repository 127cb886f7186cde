package dashboard_test

import (
	"testing"

	"github.com/tasker-run/tasker/testsupport"
)

func TestMain(m *testing.M) { testsupport.Main(m) }
