-- A NOTIFY makes its transaction take one lock for the whole database cluster at commit and
-- hold it until the commit is flushed, so every notifying transaction commits one after the
-- other: with one per cancel, the cancels' commits could not share a WAL flush. A session that
-- wakes the relays itself once its transaction has committed (the cancel API's, see
-- shared/outbox.py `OutboxBell`) sets `antrean.outbox_notify = 'after_commit'` when it connects,
-- and its inserts notify nobody here. Every other writer keeps the notification.
create or replace function outbox_notify() returns trigger language plpgsql as $$
declare
    t text;
begin
    if current_setting('antrean.outbox_notify', true) = 'after_commit' then
        return null;
    end if;
    for t in select distinct topic from new_rows loop
        perform pg_notify('outbox', t);
    end loop;
    return null;
end $$;
