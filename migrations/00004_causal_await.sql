-- +goose Up
-- The causal strategy's in-band check, second form. The router calls it on
-- a replica, as the first statement of a read's batch, only when the
-- replica has not yet replayed the session's position (target). It returns
-- how long it waited as soon as replay reaches target. When its budget runs
-- out it raises SQLSTATE QW001, which aborts the batch's implicit
-- transaction: the read's own statements then never run on a replica that
-- cannot serve them. On a server that is not in recovery (a promoted
-- replica) it raises QW002. The budget is timeout_ms, or half the
-- session's statement_timeout when that is smaller, so the wait is never
-- what the timeout cancels. Installed on the primary, it replicates to
-- every standby.
-- +goose StatementBegin
CREATE FUNCTION quest_await_lsn(target pg_lsn, timeout_ms integer)
RETURNS double precision
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    started timestamptz := clock_timestamp();
    budget double precision := timeout_ms;
    limit_ms double precision := extract(epoch FROM current_setting('statement_timeout')::interval) * 1000;
    waited double precision := 0;
    pos pg_lsn;
BEGIN
    IF limit_ms > 0 THEN
        budget := least(budget, limit_ms / 2);
    END IF;
    LOOP
        IF NOT pg_is_in_recovery() THEN
            RAISE EXCEPTION 'quest_await_lsn: not a standby' USING ERRCODE = 'QW002';
        END IF;
        pos := pg_last_wal_replay_lsn();
        IF pos >= target THEN
            RETURN waited;
        END IF;
        IF waited >= budget THEN
            RAISE EXCEPTION 'quest_await_lsn: replay at %, short of % after % ms', pos, target, round(waited::numeric, 1)
                USING ERRCODE = 'QW001';
        END IF;
        PERFORM pg_sleep(0.0005);
        waited := extract(epoch FROM clock_timestamp() - started) * 1000;
    END LOOP;
END
$$;
-- +goose StatementEnd
DROP FUNCTION quest_wait_for_lsn(pg_lsn, integer);

-- +goose Down
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
            pos := NULL;
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
DROP FUNCTION quest_await_lsn(pg_lsn, integer);
