"""Notifier: Kafka consumer -> websocket fan-out to the staff UIs (CONTRACT.md §6)."""
