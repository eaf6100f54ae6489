package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"quest/internal/cluster"
)

// config is everything serve and migrate read from flags and the
// environment, resolved in one place. Flags win over the environment, which
// wins over the local cluster's defaults.
type config struct {
	DatabaseURL string   // the primary
	ReplicaURLs []string // the followers, in order
	FromCluster string   // the local cluster's state dir, when the URLs came from it
	StateDir    string
}

func (e environment) databaseConfig(flagURL, flagReplicas, dir string) (config, error) {
	cfg := config{StateDir: dir}
	cfg.DatabaseURL = firstNonEmpty(flagURL, e.getenv("DATABASE_URL"))
	replicas := firstNonEmpty(flagReplicas, e.getenv("REPLICA_URLS"))
	if cfg.DatabaseURL == "" {
		c, err := cluster.Open(dir)
		if err != nil {
			if errors.Is(err, cluster.ErrNotCluster) {
				return cfg, fmt.Errorf("no database: set DATABASE_URL (and REPLICA_URLS), or start the local cluster with: quest cluster up")
			}
			return cfg, err
		}
		cfg.DatabaseURL = c.PrimaryURL()
		cfg.FromCluster = c.Dir()
		if replicas == "" {
			cfg.ReplicaURLs = c.ReplicaURLs()
		}
	}
	for _, u := range strings.Split(replicas, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.ReplicaURLs = append(cfg.ReplicaURLs, u)
		}
	}
	return cfg, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// sessionKey returns the key that signs cookies: QUEST_SESSION_KEY when
// set, else a key generated once and kept in the state directory, so
// restarts and several instances on one machine share it.
func (e environment) sessionKey(stateDir string) ([]byte, error) {
	if k := e.getenv("QUEST_SESSION_KEY"); k != "" {
		if len(k) < 32 {
			return nil, errors.New("QUEST_SESSION_KEY is too short: use at least 32 characters (e.g. openssl rand -hex 32)")
		}
		return []byte(k), nil
	}
	path := filepath.Join(stateDir, "session.key")
	if b, err := os.ReadFile(path); err == nil {
		return decodeKey(path, b)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	// Written aside and linked into place: link fails if another instance
	// got there first, and then both use that one's key.
	tmp, err := os.CreateTemp(stateDir, "session.key.*")
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(hex.EncodeToString(raw) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("session key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("session key: %w", err)
		}
		return decodeKey(path, b)
	} else if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return raw, nil
}

func decodeKey(path string, b []byte) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("session key file %s is damaged; delete it to generate a new one (signed-in users will be signed out)", path)
	}
	return key, nil
}
