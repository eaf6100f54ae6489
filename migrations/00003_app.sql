-- +goose Up
-- Sessions, stored by scs through the router (the columns scs's pgx store uses).
CREATE TABLE sessions (
    token  text PRIMARY KEY,
    data   bytea NOT NULL,
    expiry timestamptz NOT NULL
);
CREATE INDEX sessions_expiry_idx ON sessions (expiry);

-- The lightsaber catalog: shared data.
CREATE TABLE items (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    wielder     text NOT NULL,
    color       text NOT NULL,
    description text NOT NULL
);

INSERT INTO items (name, wielder, color, description) VALUES
  ('Luke''s green lightsaber', 'Luke Skywalker', 'green', 'Built by Luke in the Tatooine hut before Jabba''s palace. Single blade, classic hilt.'),
  ('Vader''s red lightsaber', 'Darth Vader', 'red', 'A Sith blade bled red by the dark side. Heavy black hilt.'),
  ('Kylo Ren''s crossguard', 'Kylo Ren', 'red', 'Unstable cracked kyber crystal, vented through two quillons.'),
  ('Ahsoka''s shoto pair', 'Ahsoka Tano', 'white', 'Two blades, one short, held in a reverse grip.'),
  ('Mace Windu''s purple lightsaber', 'Mace Windu', 'purple', 'The only purple blade of the Jedi Council. Electrum finish.'),
  ('Obi-Wan''s blue lightsaber', 'Obi-Wan Kenobi', 'blue', 'An elegant weapon for a more civilized age.'),
  ('Darth Maul''s saberstaff', 'Darth Maul', 'red', 'Two red blades from one long hilt.'),
  ('Yoda''s shoto', 'Yoda', 'green', 'Small hilt, great wielder.'),
  ('Rey''s yellow lightsaber', 'Rey', 'yellow', 'Built from a quarterstaff on Tatooine.'),
  ('The Darksaber', 'Pre Vizsla', 'black', 'A black blade with a white edge; the Mandalorians'' ancient weapon.');

-- A user's wishlist: own data. The same item may be wished for twice, as in
-- the article ("now I have two lightsabers").
CREATE TABLE wishlist_entries (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    item_id    bigint NOT NULL REFERENCES items (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wishlist_entries_user_idx ON wishlist_entries (user_id, created_at);

-- The help forum: shared data.
CREATE TABLE threads (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id  bigint NOT NULL REFERENCES users (id),
    title      text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threads_created_idx ON threads (created_at DESC, id DESC);

CREATE TABLE comments (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id  bigint NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    author_id  bigint NOT NULL REFERENCES users (id),
    body       text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 5000),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_thread_idx ON comments (thread_id, id);

-- +goose Down
DROP TABLE comments;
DROP TABLE threads;
DROP TABLE wishlist_entries;
DROP TABLE items;
DROP TABLE sessions;
