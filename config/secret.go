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

// Secret loads the secret of config key key from path, as LoadSecret
// does, under the federation's mode. In production
// (federation.production) a secret without a file is an error naming the
// key (no generated development key), and so is a key file that group or
// others may read (mode & 0o077); outside production such a file is
// accepted with a warning. devPath may be empty for a secret without a
// development default (it must then be configured in any mode).
func (c *Config) Secret(key, path, devPath string, log *slog.Logger) ([]byte, error) {
	if path == "" && c.Federation.Production {
		return nil, invalid(key, "not set: federation.production refuses generated development keys; point it at a key file from your secret store")
	}
	if path != "" {
		if err := c.CheckKeyFile(key, path, log); err != nil {
			return nil, err
		}
	}
	return LoadSecret(key, path, devPath, log)
}

// CheckKeyFile checks the permissions of the private key file of config
// key key (a secret or a TLS key): readable by group or others is an error
// in production and a warning otherwise. A file that cannot be read is
// left to its reader to report.
func (c *Config) CheckKeyFile(key, path string, log *slog.Logger) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		if c.Federation.Production {
			return invalid(key, "%s is readable by group or others (mode %04o); federation.production refuses it: chmod 600 %s", path, m, path)
		}
		if log != nil {
			log.Warn("key file is readable by group or others; chmod 600 it (refused with federation.production)", "key", key, "file", path, "mode", fmt.Sprintf("%04o", m))
		}
	}
	return nil
}

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
