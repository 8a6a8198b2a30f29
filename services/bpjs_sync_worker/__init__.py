"""BPJS sync worker: consumes QueueCancelled, syncs BPJS cancellations, emits the outcome."""
