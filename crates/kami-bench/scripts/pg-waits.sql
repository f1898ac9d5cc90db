-- What Kami's PostgreSQL sessions wait on, sampled every 20 ms: one line per
-- sample and (wait event, state), with how many sessions. Run it beside a
-- benchmark and read the samples where most sessions wait on the same thing:
--
--   psql -h 127.0.0.1 -U postgres -At -F' ' -f crates/kami-bench/scripts/pg-waits.sql > waits.txt
--
-- (stop it with Ctrl-C). A storm's stalls read as one session in IO:WALSync
-- and the others in LWLock:WALWrite for the whole stall (docs/PERFORMANCE.md,
-- stop 23).
SELECT to_char(clock_timestamp(), 'HH24:MI:SS.MS'),
       coalesce(wait_event_type, '-') || ':' || coalesce(wait_event, '-'),
       state, count(*)
  FROM pg_stat_activity
 WHERE datname LIKE 'kami%' AND backend_type = 'client backend'
 GROUP BY 1, 2, 3 ORDER BY 2
\watch 0.02
