"""The one place that names what a job may ask for: the student families and the loss
terms, each with its pydantic parameter schema and defaults.

Both floors read it: the gateway validates a job against these schemas (a 422 at
submission, not a failed job) and lists them (GET /v1/students, GET /v1/losses); the
engine (distill) builds its students and losses from the same parsed parameters. It
imports pydantic only, never torch, so the gateway stays light."""
