-- The W3C trace context of the cancel flow (docs/ARCHITECTURE.md, traces): the outbox row keeps
-- the `traceparent` its event carries (the relay sets it as a Kafka header too), and a sync job
-- keeps the one its attempts continue. Null for rows written before, or without a trace. The
-- services' roles have table-wide grants on both tables, so no grant is needed here.
alter table outbox
    add column traceparent text,
    add constraint outbox_traceparent_w3c
        check (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
alter table bpjs_sync_job
    add column traceparent text,
    add constraint bpjs_sync_job_traceparent_w3c
        check (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
