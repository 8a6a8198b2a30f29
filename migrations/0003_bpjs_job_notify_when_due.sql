-- Wake the workers only when a job becomes due now (a new job, or an admin's retry), not on
-- every stored attempt: each NOTIFY wakes every worker's pool for a claim query.

drop trigger bpjs_job_notify on bpjs_sync_job;

create trigger bpjs_job_notify_insert after insert on bpjs_sync_job
    for each statement execute function bpjs_job_notify();
create trigger bpjs_job_notify_due after update of next_attempt_at on bpjs_sync_job
    for each row
    when (new.next_attempt_at <= now() and new.next_attempt_at is distinct from old.next_attempt_at)
    execute function bpjs_job_notify();
