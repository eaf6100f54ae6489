package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"quest/internal/dbrouter"
	"quest/internal/store"
)

type catalogPage struct {
	Items []store.Item
}

// handleCatalog lists the lightsabers: shared data.
func (s *Server) handleCatalog(w http.ResponseWriter, r *http.Request) {
	items, err := s.store.Catalog(r.Context())
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "catalog.html", catalogPage{Items: items})
}

type wishlistPage struct {
	Lines []store.WishlistLine
	Total int
}

// handleWishlist shows the signed-in user's own wishlist: own data, read
// right after the redirect that follows "Add to wishlist" — the article's
// exact timeline.
func (s *Server) handleWishlist(w http.ResponseWriter, r *http.Request) {
	lines, err := s.store.Wishlist(r.Context(), dbrouter.Own, currentUser(r).ID)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	total := 0
	for _, l := range lines {
		total += l.Count
	}
	s.render(w, r, http.StatusOK, "wishlist.html", wishlistPage{Lines: lines, Total: total})
}

// handleWishlistAdd adds item_id to the wishlist and redirects to it.
// Adding an item twice adds it twice.
func (s *Server) handleWishlistAdd(w http.ResponseWriter, r *http.Request) {
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	itemID, ok := parseID(f.Get("item_id"))
	if !ok {
		s.serverError(w, r, problem(http.StatusBadRequest, "Choose a lightsaber from the catalog."))
		return
	}
	if err := s.store.AddToWishlist(r.Context(), currentUser(r).ID, itemID); err != nil {
		s.serverError(w, r, err)
		return
	}
	s.flash(w, "Added to your wishlist.")
	http.Redirect(w, r, "/wishlist", http.StatusSeeOther)
}

// handleWishlistDelete removes one of the user's own entries; another
// user's entry is "not found".
func (s *Server) handleWishlistDelete(w http.ResponseWriter, r *http.Request) {
	entryID, ok := parseID(chi.URLParam(r, "id"))
	if !ok {
		s.serverError(w, r, problem(http.StatusNotFound, "There is no such wishlist entry."))
		return
	}
	if err := s.store.RemoveWishlistEntry(r.Context(), currentUser(r).ID, entryID); err != nil {
		s.serverError(w, r, err)
		return
	}
	s.flash(w, "Removed from your wishlist.")
	http.Redirect(w, r, "/wishlist", http.StatusSeeOther)
}
