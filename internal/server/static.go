package server

import (
	"io/fs"
	"net/http"
	"strings"
)

// handleStatic serves the files of web/static, and only files: a name
// that is not a valid path in it (invalid UTF-8 such as %ff or an
// overlong %c0%ae, dot segments, an empty name) or that names a
// directory is "not found". http.FileServer answers the first with a 500
// (fs.ErrInvalid) and the second with a listing. The route answers GET
// and HEAD only.
func handleStatic(files fs.FS) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/static/")
		if !fs.ValidPath(name) {
			http.NotFound(w, r)
			return
		}
		if st, err := fs.Stat(files, name); err != nil || st.IsDir() {
			http.NotFound(w, r)
			return
		}
		http.ServeFileFS(w, r, files, name)
	}
}
