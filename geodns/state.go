package geodns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// state is the content of Config.StateFile: what must survive a restart.
type state struct {
	// FailedOver lists the regions failed over to their DR site and not
	// failed back by an operator, sorted.
	FailedOver []string `json:"failed_over"`
}

// loadState reads the state file; a missing file is the empty state.
func loadState(path string) (state, error) {
	var st state
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("geodns: state file: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("geodns: state file %s is unreadable (%v); fix or remove it: removing it fails every region back to its primary", path, err)
	}
	return st, nil
}

// saveState replaces the state file atomically (write, fsync, rename).
func saveState(path string, st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("geodns: state file: %w", err)
	}
	f, err := os.CreateTemp(dir, ".geodns-state-*")
	if err != nil {
		return fmt.Errorf("geodns: state file: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return fmt.Errorf("geodns: state file: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("geodns: state file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("geodns: state file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("geodns: state file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
