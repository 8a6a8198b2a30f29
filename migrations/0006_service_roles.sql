-- One database role per service with only the privileges its SQL uses (docs/SECURITY.md).
-- The migrating user stays the owner of every object. The roles are created NOLOGIN: a
-- deployment gives each a login and password of its own (`make up` and the tests use fixed dev
-- ones). A later migration that adds a table grants it to the roles that use it.

-- Roles belong to the whole cluster and several databases may be migrated at once (tests):
-- create each only when it does not exist, and accept losing the race to a parallel migration.
do $$
declare
    r text;
begin
    foreach r in array array['antrean_api', 'antrean_worker'] loop
        if not exists (select 1 from pg_roles where rolname = r) then
            begin
                execute format('create role %I nologin', r);
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
    end loop;
end $$;

grant usage on schema public to antrean_api, antrean_worker;

-- Cancel API: tickets (register, move, cancel), audit rows (insert only: the trail is never
-- changed or deleted), ticket numbers, its outbox and relay (publish, purge old published rows),
-- idempotency keys (purged after retention), and the BPJS sync admin (list, retry, resolve).
grant select, insert on queue_ticket to antrean_api;
grant update (status, updated_at, cancelled_at, cancelled_by_id, cancelled_by_name,
              reason_code, reason_text, bpjs_sync) on queue_ticket to antrean_api;
grant insert on queue_audit to antrean_api;
grant select, insert, update on ticket_counter to antrean_api;
grant select, insert, update, delete on outbox to antrean_api;
grant select, insert, delete on idempotency_key to antrean_api;
grant select, update on bpjs_sync_job to antrean_api;
grant usage on sequence queue_ticket_id_seq, queue_audit_id_seq, outbox_id_seq to antrean_api;

-- BPJS sync worker: reads tickets and may change only their BPJS sync state; its jobs; its
-- result events through the outbox (and the relay's FOR UPDATE and published_at); dead letters.
grant select on queue_ticket to antrean_worker;
grant update (bpjs_sync, updated_at) on queue_ticket to antrean_worker;
grant select, insert, update on bpjs_sync_job to antrean_worker;
grant select, insert, update on outbox to antrean_worker;
grant select, insert on dead_letter to antrean_worker;
grant usage on sequence outbox_id_seq, dead_letter_id_seq to antrean_worker;
