-- Outbox rows Kafka refuses for a reason of their own (too large, say) are counted and, after
-- OUTBOX_MAX_ATTEMPTS refusals, quarantined: kept (never published, so never purged) but
-- neither claimed again nor holding back later rows of their key. Outages never count here.
alter table outbox
    add column attempts integer not null default 0,
    add column last_error text,
    add column quarantined_at timestamptz,
    add constraint outbox_quarantined_never_published
        check (quarantined_at is null or published_at is null);

-- The claim and its per-key order check read only rows that may still be published.
create index outbox_topic_claimable_idx on outbox (topic, id)
    where published_at is null and quarantined_at is null;
create index outbox_key_claimable_idx on outbox (topic, kafka_key, id)
    where published_at is null and quarantined_at is null;
drop index outbox_topic_unpublished_idx;
drop index outbox_key_unpublished_idx;
-- The quarantined rows' gauge and the admins' list.
create index outbox_quarantined_idx on outbox (topic, id) where quarantined_at is not null;
