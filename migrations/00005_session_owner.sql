-- +goose Up
-- Whose each session is, so a user's sessions end with one DELETE: when
-- the account is deleted (the foreign key) and when its password or its
-- admin right changes (the trigger below), whoever changes them — quest
-- seed, psql, the app. The user is also inside the session's data, which
-- scs encodes; SQL cannot read it, so the sessions from before this
-- migration cannot say whose they are: they are deleted, and everyone
-- signs in again once.
DELETE FROM sessions;
ALTER TABLE sessions ADD COLUMN user_id bigint REFERENCES users (id) ON DELETE CASCADE;
CREATE INDEX sessions_user_idx ON sessions (user_id) WHERE user_id IS NOT NULL;

-- +goose StatementBegin
CREATE FUNCTION quest_end_user_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sessions WHERE user_id = NEW.id;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER users_credentials_end_sessions
    AFTER UPDATE OF password_hash, is_admin ON users
    FOR EACH ROW
    WHEN (OLD.password_hash IS DISTINCT FROM NEW.password_hash OR OLD.is_admin IS DISTINCT FROM NEW.is_admin)
    EXECUTE FUNCTION quest_end_user_sessions();

-- +goose Down
DROP TRIGGER users_credentials_end_sessions ON users;
DROP FUNCTION quest_end_user_sessions();
DROP INDEX sessions_user_idx;
ALTER TABLE sessions DROP COLUMN user_id;
