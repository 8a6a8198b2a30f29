"""Test suite: unit/ (no I/O), integration/ and e2e/ (real PostgreSQL and Kafka), browser/."""
