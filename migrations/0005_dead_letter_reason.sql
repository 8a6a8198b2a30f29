-- A stable reason code on each dead letter (undecodable, invalid, unknown_ticket, event_mismatch),
-- apart from the free-text error, so operators can count and alert on forged events.

alter table dead_letter add column reason text;
update dead_letter set reason = case
    when error like 'unknown queue ticket%' then 'unknown_ticket'
    when error like 'not JSON%' then 'undecodable'
    else 'invalid'
end;
alter table dead_letter alter column reason set not null;
create index dead_letter_reason_idx on dead_letter (reason, created_at);
