package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// The binaries of this checkout, built at most once per test binary.
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binaries builds this checkout's commands (./cmd/... and ./examples/...)
// once per test binary and returns the directory holding them. A package
// that calls it removes the directory in TestMain with RemoveBinaries.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		root := strings.TrimSuffix(strings.TrimSpace(string(out)), "/go.mod")
		if err != nil || root == "" {
			buildErr = fmt.Errorf("finding the module root: %v", err)
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "meridian-bin-"); buildErr != nil {
			return
		}
		c := exec.Command("go", "build", "-o", buildDir+"/", "./cmd/...", "./examples/...")
		c.Dir = root
		if out, err := c.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// RemoveBinaries deletes what Binaries built; call it from TestMain after
// the tests ran.
func RemoveBinaries() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}
