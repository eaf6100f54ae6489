package server

import (
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"quest/internal/dbrouter"
	"quest/internal/store"
)

type profilePage struct {
	Profile  store.User
	Wishlist []store.WishlistLine
	Own      bool
	Form     *form
}

// handleProfile shows the signed-in user's own profile, editable: own data.
func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) {
	me := currentUser(r)
	u, err := s.store.User(r.Context(), dbrouter.Own, me.ID)
	if err != nil {
		s.serverError(w, r, gone(err))
		return
	}
	f := newForm()
	f.Values.Set("display_name", u.DisplayName)
	f.Values.Set("bio", u.Bio)
	s.render(w, r, http.StatusOK, "profile.html", profilePage{Profile: u, Own: true, Form: f})
}

func (s *Server) handleProfilePost(w http.ResponseWriter, r *http.Request) {
	me := currentUser(r)
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	display := f.name("display_name", "Display name", 1, 64)
	bio := f.text("bio", "Bio", 0, 2000)
	if f.Valid() && staffName(display) {
		// Only an admin may go by a staff name (the seeded admin does).
		admin, err := s.store.IsAdmin(r.Context(), me.ID)
		if err != nil {
			s.serverError(w, r, gone(err))
			return
		}
		if !admin {
			f.fail("display_name", reservedName)
		}
	}
	if !f.Valid() {
		u, err := s.store.User(r.Context(), dbrouter.Own, me.ID)
		if err != nil {
			s.serverError(w, r, gone(err))
			return
		}
		s.render(w, r, http.StatusUnprocessableEntity, "profile.html", profilePage{Profile: u, Own: true, Form: f})
		return
	}
	// Only ever the signed-in user's own row: the id comes from the session.
	if err := s.store.UpdateProfile(r.Context(), me.ID, display, bio); err != nil {
		s.serverError(w, r, err)
		return
	}
	s.flash(w, "Profile saved.")
	http.Redirect(w, r, "/profile", http.StatusSeeOther)
}

// reservedName is what someone who picked a staff name is told.
const reservedName = "That name is reserved for Quest's staff; pick another."

// gone turns "not found" for the signed-in user's own row into
// store.ErrUserGone: the account was deleted, so the session ends.
func gone(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return store.ErrUserGone
	}
	return err
}

// handleUser shows anyone's profile, read-only, with their public
// wishlist: shared data, even when it is your own page.
func (s *Server) handleUser(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(chi.URLParam(r, "id"))
	if !ok {
		s.serverError(w, r, problem(http.StatusNotFound, "There is no such user."))
		return
	}
	u, err := s.store.User(r.Context(), dbrouter.Shared, id)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	list, err := s.store.Wishlist(r.Context(), dbrouter.Shared, id)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	me := currentUser(r)
	s.render(w, r, http.StatusOK, "user.html", profilePage{Profile: u, Wishlist: list, Own: me != nil && me.ID == id})
}
