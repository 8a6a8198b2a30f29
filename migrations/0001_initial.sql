-- Queue tickets, their audit trail, the transactional outbox and idempotency keys.

create table queue_ticket (
    id              bigserial primary key,
    clinic_id       text not null,
    room_id         text not null check (length(room_id) between 1 and 64),
    service_date    date not null,
    ticket_seq      integer not null,
    ticket_number   text not null,
    patient_mrn     text not null,
    patient_name    text not null,
    payer           text not null check (payer in ('BPJS', 'UMUM', 'ASURANSI')),
    bpjs            jsonb,
    status          text not null default 'waiting'
                    check (status in ('waiting', 'called', 'accepted', 'done', 'cancelled')),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    cancelled_at    timestamptz,
    cancelled_by_id text,
    cancelled_by_name text,
    reason_code     text check (reason_code in ('no_show', 're_registration', 'data_error', 'other')),
    reason_text     text,
    bpjs_sync       text check (bpjs_sync in ('pending', 'synced', 'failed', 'resolved_manually')),
    unique (clinic_id, room_id, service_date, ticket_seq),
    check (payer <> 'BPJS' or bpjs is not null),
    check ((status = 'cancelled') = (cancelled_at is not null))
);
create index queue_ticket_room_idx on queue_ticket (clinic_id, room_id, status, service_date, ticket_seq);
create index queue_ticket_status_idx on queue_ticket (clinic_id, status, service_date, ticket_seq);

-- Ticket numbers per clinic, room and day: the row lock serialises concurrent registrations,
-- and numbers are never reused (a cancelled ticket keeps its number).
create table ticket_counter (
    clinic_id    text not null,
    room_id      text not null,
    service_date date not null,
    last_seq     integer not null,
    primary key (clinic_id, room_id, service_date)
);

create table queue_audit (
    id          bigserial primary key,
    queue_id    bigint not null references queue_ticket (id),
    clinic_id   text not null,
    action      text not null,
    actor_id    text not null,
    actor_name  text not null,
    at          timestamptz not null default now(),
    from_status text,
    to_status   text,
    reason_code text,
    reason_text text,
    note        text,
    request_id  text
);
create index queue_audit_queue_idx on queue_audit (queue_id, id);

create table outbox (
    id           bigserial primary key,
    event_id     uuid not null unique,
    topic        text not null,
    kafka_key    text not null,
    event_type   text not null,
    payload      bytea not null,
    created_at   timestamptz not null default clock_timestamp(),
    published_at timestamptz
);
create index outbox_unpublished_idx on outbox (id) where published_at is null;
create index outbox_key_unpublished_idx on outbox (topic, kafka_key, id) where published_at is null;

create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('outbox', '');
    return null;
end $$;
create trigger outbox_notify after insert on outbox
    for each statement execute function outbox_notify();

create table idempotency_key (
    clinic_id     text not null,
    user_id       text not null,
    key           text not null,
    request_hash  text not null,
    status_code   integer not null,
    response_body jsonb not null,
    created_at    timestamptz not null default now(),
    primary key (clinic_id, user_id, key)
);
create index idempotency_key_created_idx on idempotency_key (created_at);
