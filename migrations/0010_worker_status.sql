-- What each BPJS sync worker knows only in memory, for the admin view: its circuit breaker's
-- state and since when, written every few seconds (the heartbeat) and at each change. A row
-- whose heartbeat is old belongs to a worker that stopped.
create table worker_status (
    worker_id     text primary key,
    breaker_state text not null check (breaker_state in ('closed', 'half_open', 'open')),
    breaker_since timestamptz not null,
    heartbeat_at  timestamptz not null default now()
);
grant select on worker_status to antrean_api;
grant select, insert, update on worker_status to antrean_worker;

-- The status strip counts a clinic's dead letters, matched by their Kafka key (the queue id):
-- the key only, never the message itself.
grant select (key) on dead_letter to antrean_api;

-- The oldest unsynced cancellation, per clinic (worker gauges) and of one clinic (status).
create index queue_ticket_unsynced_idx on queue_ticket (clinic_id, cancelled_at)
    where bpjs_sync in ('pending', 'failed');
