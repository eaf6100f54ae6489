// Package migrations embeds Quest's SQL migrations, applied by goose on the
// primary (`quest migrate up`); replicas get them through replication.
package migrations

import "embed"

// FS holds the numbered goose migrations.
//
//go:embed *.sql
var FS embed.FS
