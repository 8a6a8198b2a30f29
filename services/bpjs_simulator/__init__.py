"""Fake BPJS Antrean gateway for dev and tests: verifies signatures, keeps state, injects faults."""
