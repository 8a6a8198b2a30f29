"""The BPJS sync job: its state machine (pure) and the one module that writes its rows."""
