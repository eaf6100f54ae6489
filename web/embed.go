// Package web embeds Quest's static files (CSS, images), served under
// /static/. Nothing is loaded from outside: Quest works offline.
package web

import "embed"

// FS holds the static/ directory.
//
//go:embed static
var FS embed.FS
