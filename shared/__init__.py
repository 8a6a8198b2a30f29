"""Code shared by every service: wire contracts, settings, auth, Kafka/PostgreSQL helpers."""
