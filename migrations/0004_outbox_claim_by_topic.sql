-- Each service's outbox relay claims only its own topics' rows (its Kafka principal may write
-- nothing else): the claim scans that topic's unpublished rows in id order, never the other
-- service's backlog.
create index outbox_topic_unpublished_idx on outbox (topic, id) where published_at is null;
drop index outbox_unpublished_idx;
