-- The outbox notification names the topics of the inserted rows: each service's relay claims
-- only its own topics, so it wakes only for them (the worker's relay no longer runs an empty
-- claim for every cancel, nor the API's for every sync result). One notification per topic
-- and statement (PostgreSQL folds equal notifications of a transaction into one).
create or replace function outbox_notify() returns trigger language plpgsql as $$
declare
    t text;
begin
    for t in select distinct topic from new_rows loop
        perform pg_notify('outbox', t);
    end loop;
    return null;
end $$;
drop trigger outbox_notify on outbox;
create trigger outbox_notify after insert on outbox
    referencing new table as new_rows
    for each statement execute function outbox_notify();
