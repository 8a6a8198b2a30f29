"""End-to-end tests: service processes against real PostgreSQL and Kafka."""
