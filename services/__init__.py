"""The project's services, each started with `python -m services.<name>`."""
