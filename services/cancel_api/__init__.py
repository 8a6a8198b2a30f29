"""Cancel API: cancels waiting queue tickets, writes QueueCancelled to the outbox, serves the UI."""
