package server

import (
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"quest/internal/store"
)

type forumPage struct {
	Threads []store.Thread
	Page    int
	Pages   int
	Form    *form
}

// handleForum lists threads, newest first: shared data.
func (s *Server) handleForum(w http.ResponseWriter, r *http.Request) {
	page, ok := pageParam(r)
	if !ok {
		s.serverError(w, r, problem(http.StatusBadRequest, "That is not a page number."))
		return
	}
	s.renderForum(w, r, http.StatusOK, page, newForm())
}

func (s *Server) renderForum(w http.ResponseWriter, r *http.Request, status, page int, f *form) {
	threads, pages, err := s.store.Threads(r.Context(), page)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	s.render(w, r, status, "forum.html", forumPage{Threads: threads, Page: page, Pages: pages, Form: f})
}

type threadPage struct {
	Thread   store.Thread
	Comments []store.Comment
	Page     int
	Pages    int
	Form     *form
}

// handleThread shows a thread's comments, oldest first: shared data.
func (s *Server) handleThread(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(chi.URLParam(r, "id"))
	if !ok {
		s.serverError(w, r, problem(http.StatusNotFound, "There is no such thread."))
		return
	}
	page, ok := pageParam(r)
	if !ok {
		s.serverError(w, r, problem(http.StatusBadRequest, "That is not a page number."))
		return
	}
	s.renderThread(w, r, http.StatusOK, id, page, newForm())
}

func (s *Server) renderThread(w http.ResponseWriter, r *http.Request, status int, id int64, page int, f *form) {
	t, comments, pages, err := s.store.Thread(r.Context(), id, page)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	s.render(w, r, status, "thread.html", threadPage{Thread: t, Comments: comments, Page: page, Pages: pages, Form: f})
}

// handleThreadCreate starts a thread and redirects to it.
func (s *Server) handleThreadCreate(w http.ResponseWriter, r *http.Request) {
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	title := f.name("title", "Title", 1, 200)
	body := f.text("body", "Your post", 1, 5000)
	if !f.Valid() {
		s.renderForum(w, r, http.StatusUnprocessableEntity, 1, f)
		return
	}
	id, err := s.store.CreateThread(r.Context(), currentUser(r).ID, title, body)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	s.flash(w, "Thread started.")
	http.Redirect(w, r, fmt.Sprintf("/forum/%d", id), http.StatusSeeOther) // #nosec G710 -- a path built from a number
}

// handleCommentCreate appends a comment and redirects to the page showing it.
func (s *Server) handleCommentCreate(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(chi.URLParam(r, "id"))
	if !ok {
		s.serverError(w, r, problem(http.StatusNotFound, "There is no such thread."))
		return
	}
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	body := f.text("body", "Your comment", 1, 5000)
	if !f.Valid() {
		s.renderThread(w, r, http.StatusUnprocessableEntity, id, 1, f)
		return
	}
	page, err := s.store.AddComment(r.Context(), id, currentUser(r).ID, body)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	s.flash(w, "Comment posted.")
	http.Redirect(w, r, fmt.Sprintf("/forum/%d?page=%d#latest", id, page), http.StatusSeeOther) // #nosec G710 -- built from numbers
}
