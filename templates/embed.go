// Package templates embeds Quest's HTML templates, parsed once at start by
// the server.
package templates

import "embed"

// FS holds base.html, the layout, and one file per page.
//
//go:embed *.html
var FS embed.FS
