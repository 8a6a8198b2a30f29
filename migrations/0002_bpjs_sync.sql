-- BPJS sync jobs (one per QueueCancelled event of a BPJS ticket) and undecodable messages.

create table bpjs_sync_job (
    queue_id          bigint primary key references queue_ticket (id),
    cancel_event_id   uuid not null unique,
    clinic_id         text not null,
    ticket_number     text not null,
    service           text not null check (service in ('antreanrs', 'antreanfktp')),
    event_data        jsonb not null,
    -- pending: not synced yet, no warning sent; failed: warning sent (will_retry says whether
    -- the worker keeps trying); synced; resolved_manually (done by hand in the BPJS portal).
    status            text not null default 'pending'
                      check (status in ('pending', 'failed', 'synced', 'resolved_manually')),
    will_retry        boolean not null default true,
    warned            boolean not null default false,
    cancel_done       boolean not null default false,
    task99_done       boolean not null default false,
    attempts          integer not null default 0,
    last_error        text,
    last_error_kind   text,
    last_bpjs_code    integer,
    last_bpjs_message text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    first_phase_until timestamptz not null,
    horizon_at        timestamptz not null,
    next_attempt_at   timestamptz not null default now(),
    last_attempt_at   timestamptz,
    finished_at       timestamptz,
    lease_owner       text,
    last_worker       text,
    lease_until       timestamptz,
    resolved_by_id    text,
    resolved_by_name  text,
    resolved_note     text,
    resolved_at       timestamptz
);
create index bpjs_sync_job_due_idx on bpjs_sync_job (next_attempt_at)
    where will_retry and status in ('pending', 'failed');
create index bpjs_sync_job_warn_idx on bpjs_sync_job (first_phase_until)
    where status = 'pending' and not warned;
create index bpjs_sync_job_clinic_idx on bpjs_sync_job (clinic_id, status);

create function bpjs_job_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('bpjs_job', '');
    return null;
end $$;
create trigger bpjs_job_notify after insert or update of next_attempt_at on bpjs_sync_job
    for each statement execute function bpjs_job_notify();

create table dead_letter (
    id         bigserial primary key,
    consumer   text not null,
    topic      text not null,
    partition  integer not null,
    "offset"   bigint not null,
    key        bytea,
    value      bytea,
    error      text not null,
    created_at timestamptz not null default now(),
    unique (consumer, topic, partition, "offset")
);
