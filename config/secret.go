package config

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// ErrWeakSecret is returned for a secret file shorter than 32 bytes.
var ErrWeakSecret = errors.New("secret shorter than 32 bytes")

// LoadSecret reads a key file. When path is empty it uses (and on first use
// creates) a development key at devPath and logs a warning: fine on a laptop,
// wrong in production, where every region must read the same routing key
// from the operator's secret store.
func LoadSecret(key, path, devPath string, log *slog.Logger) ([]byte, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if len(b) < 32 {
			return nil, fmt.Errorf("%s: %s: %w", key, path, ErrWeakSecret)
		}
		return b, nil
	}
	if b, err := os.ReadFile(devPath); err == nil && len(b) >= 32 {
		log.Warn("using a development secret; set it from your secret store in production", "key", key, "file", devPath)
		return b, nil
	}
	if err := os.MkdirAll(filepath.Dir(devPath), 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	// O_EXCL: when several nodes start at once, one writes and the others read.
	f, err := os.OpenFile(devPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadSecret(key, "", devPath, log)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	log.Warn("generated a development secret; set it from your secret store in production", "key", key, "file", devPath)
	return b, nil
}
