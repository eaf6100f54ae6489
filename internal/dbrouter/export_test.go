package dbrouter

// SetAfterCommit makes the router call f between a write's COMMIT and the
// read of its WAL position, where a primary crash hurts most.
func SetAfterCommit(r *Router, f func()) { r.testAfterCommit = f }
