-- One state machine for BPJS sync jobs (shared/sync_job): BPJS's own record read back, jobs
-- created from the ticket row when the event never arrived, per-clinic time zones and the daily
-- reconciliation.

-- The cancel's QueueCancelled event id, written by the cancel statement itself: a job created
-- from the ticket row (event lost or dead-lettered, or an admin acting first) refers to it.
alter table queue_ticket add column cancel_event_id uuid;
grant update (cancel_event_id) on queue_ticket to antrean_api;
-- The orphan sweeper's scan: BPJS cancellations still pending.
create index queue_ticket_bpjs_pending_idx on queue_ticket (cancelled_at)
    where bpjs_sync = 'pending';
-- The reconciliation report: a clinic's cancellations of a period.
create index queue_ticket_cancelled_idx on queue_ticket (clinic_id, cancelled_at)
    where cancelled_at is not null;

alter table bpjs_sync_job
    -- a `batal` whose reply never came: BPJS may have applied it, so a later refusal is not
    -- believed until BPJS's record is read back
    add column reply_lost boolean not null default false,
    -- the cancel was refused after such a lost reply: only the record read back decides
    add column refused_after_loss boolean not null default false,
    -- BPJS has a read API for this service (antreanrs `getlisttask` shows task 99)
    add column confirmable boolean not null default false,
    add column confirmed_at timestamptz,
    add column readback_at timestamptz,
    -- recorded, not_recorded (the last read of BPJS's record)
    add column readback_result text check (readback_result in ('recorded', 'not_recorded')),
    -- how the job came to be: the event, the orphan sweeper, or an admin's action
    add column origin text not null default 'event'
        check (origin in ('event', 'orphan', 'admin'));
create index bpjs_sync_job_confirm_idx on bpjs_sync_job (clinic_id, created_at)
    where confirmable and confirmed_at is null and status = 'synced';

-- The admin endpoints create a job for an unsynced ticket that has none (retry, resolve).
grant insert on bpjs_sync_job to antrean_api;

-- Each clinic's own time zone (WIB, WITA, WIT): its service day and its daily report.
create table clinic_setting (
    clinic_id  text primary key,
    time_zone  text not null,
    updated_at timestamptz not null default now()
);
grant select on clinic_setting to antrean_api, antrean_worker;

-- A reconciliation of one clinic's service day: requested by the worker's daily schedule or by
-- an admin; the worker reads BPJS's record of that day's cancellations and stores the results
-- on the jobs.
create table bpjs_reconciliation (
    clinic_id     text not null,
    service_date  date not null,
    requested_at  timestamptz not null default now(),
    requested_by  text,
    started_at    timestamptz,
    finished_at   timestamptz,
    checked       integer not null default 0,
    not_recorded  integer not null default 0,
    error         text,
    primary key (clinic_id, service_date)
);
create index bpjs_reconciliation_todo_idx on bpjs_reconciliation (requested_at)
    where finished_at is null;
grant select, insert, update on bpjs_reconciliation to antrean_api, antrean_worker;
