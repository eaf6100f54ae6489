-- +goose Up
-- The causal strategy's in-band check. It runs on a replica as the first
-- statement of a read's batch: it returns the replay position as soon as it
-- reaches the session's token, or after timeout_ms, whichever comes first,
-- and how long it waited (0 when the replica already had the position).
-- The router counts the read only when pos >= target. Installed on the
-- primary, it replicates to every standby.
-- +goose StatementBegin
CREATE FUNCTION quest_wait_for_lsn(target pg_lsn, timeout_ms integer,
                                   OUT pos pg_lsn, OUT waited_ms double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    started timestamptz := clock_timestamp();
BEGIN
    waited_ms := 0;
    LOOP
        IF NOT pg_is_in_recovery() THEN
            pos := NULL; -- not a replica (promoted?): no position to vouch for
            RETURN;
        END IF;
        pos := pg_last_wal_replay_lsn();
        IF pos >= target OR waited_ms >= timeout_ms THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(0.0005);
        waited_ms := extract(epoch FROM clock_timestamp() - started) * 1000;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION quest_wait_for_lsn(pg_lsn, integer);
