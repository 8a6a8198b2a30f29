"""Notifier: Kafka consumer -> websocket fan-out to the staff UIs (docs/WEBSOCKET.md)."""
